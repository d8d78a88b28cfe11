use std::process::ExitCode;

use clap::Parser;
use pfnscope_trace::print_stdout;
use tracer::{
    cli::{Cli, Command},
    collect, doctor, record,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Doctor { json } => {
            let r = doctor::report();
            let text = if json {
                serde_json::to_string_pretty(&r).expect("report serialises") + "\n"
            } else {
                doctor::render_human(&r)
            };
            print_stdout(&text)
                .map_err(anyhow::Error::from)
                .map(|()| if r.ready { 0 } else { 1 })
        }
        Command::Record(args) => record::run(args),
        Command::Collect(args) => collect::run(args),
    };
    match res {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("tracer: {e:#}");
            ExitCode::from(2)
        }
    }
}
