use std::process::ExitCode;

use clap::Parser;
use tracer::{
    cli::{Cli, Command},
    doctor, record,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Doctor { json } => {
            let r = doctor::report();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r).expect("report serialises")
                );
            } else {
                doctor::print_human(&r);
            }
            Ok(if r.ready { 0 } else { 1 })
        }
        Command::Record(args) => record::run(args),
    };
    match res {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("tracer: {e:#}");
            ExitCode::from(2)
        }
    }
}
