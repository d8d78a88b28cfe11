//! `replay`: the command line over the replay library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pfnscope_trace::{EXIT_STATUS_HELP, ExitStatus, print_stdout};
use replay::rules::Rule;
use replay::{CheckOptions, ReplayError, check_file, overhead_file};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "replay",
    version,
    about = "Replay pfnscope traces against a reference model of the PFN fault path",
    after_help = EXIT_STATUS_HELP
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Re-execute a trace against the model. Exit 0: no divergence, 1: divergences, 2: trace
    /// damaged or incomplete (what it has is replayed), 3: unusable input.
    #[command(after_help = EXIT_STATUS_HELP)]
    Check {
        trace: PathBuf,
        /// Print the JSON report (shape documented in the crate docs).
        #[arg(long)]
        json: bool,
        /// Use this kernel's rules (6.1, 6.12, 6.18, or a release string) instead of the trace's.
        #[arg(long, value_name = "V")]
        kernel_rules: Option<String>,
    },
    /// What each rule checks and the kernel source behind it (all rules, or the ones named).
    Rules {
        /// Rule ids as reports print them (`pat.lookup`, `find.wc_downgrade`, ...).
        ids: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Where fault time goes, per page and per driver, and the tracer's own cost.
    #[command(after_help = EXIT_STATUS_HELP)]
    Overhead {
        trace: PathBuf,
        #[arg(long, default_value_t = 20)]
        top: usize,
        #[arg(long)]
        json: bool,
    },
}

/// Traces smaller than this replay in well under a second: no bar.
const BAR_MIN_BYTES: u64 = 64 << 20;

fn progress_bar(path: &Path) -> Option<ProgressBar> {
    let len = std::fs::metadata(path).ok()?.len();
    if len < BAR_MIN_BYTES {
        return None;
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}] {wide_bar} ~{percent}%")
            .ok()?,
    );
    Some(pb)
}

/// The bar's length is the file's size: rows are not known up front, bytes read are.
fn advance(pb: &Option<ProgressBar>, rows: u64, bytes: u64) {
    if let Some(pb) = pb {
        pb.set_position(bytes);
        pb.set_message(format!("{rows} events"));
    }
}

fn main() -> ExitCode {
    replay::allocator::tune();
    // Usage errors get the scheme's status, not clap's own 2 (a damaged trace).
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        let _ = e.print();
        std::process::exit(ExitStatus::after_arguments(e.use_stderr()).code().into())
    });
    match run(cli) {
        Ok(status) => status.into(),
        Err(e) => {
            eprintln!("replay: {e:#}");
            ExitStatus::Unusable.into()
        }
    }
}

/// The one line that says a trace is not whole; the rest of the output covers what was read.
fn warn_damage(damage: Option<&replay_report::DamageReport>) {
    if let Some(d) = damage {
        eprintln!("replay: warning: {d}");
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    match cli.cmd {
        Cmd::Check {
            trace,
            json,
            kernel_rules,
        } => {
            let pb = progress_bar(&trace);
            let opts = CheckOptions { kernel_rules };
            let report = check_file(&trace, &opts, |rows, bytes| advance(&pb, rows, bytes));
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            let report = match report {
                Ok(r) => r,
                Err(ReplayError::Trace(e)) => return Err(anyhow::anyhow!(e)),
                Err(e) => return Err(anyhow::anyhow!(e)).context("--kernel-rules"),
            };
            if json {
                print_stdout(&format!("{}\n", report.to_json()))?;
            } else {
                print_stdout(&report.to_human())?;
            }
            warn_damage(report.damage.as_ref());
            Ok(ExitStatus::after_reading(
                [report.damage.as_ref()],
                report.summary.divergences > 0,
            ))
        }
        Cmd::Rules { ids, json } => {
            let rules = if ids.is_empty() {
                Rule::ALL.to_vec()
            } else {
                ids.iter()
                    .map(|id| {
                        Rule::by_id(id).with_context(|| {
                            format!("unknown rule `{id}`: `replay rules` lists every rule id")
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?
            };
            if json {
                let infos: Vec<_> = rules.iter().map(|r| r.info()).collect();
                print_stdout(&format!("{}\n", serde_json::to_string_pretty(&infos)?))?;
            } else {
                let text: Vec<String> = rules.iter().map(|r| r.to_human()).collect();
                print_stdout(&text.join("\n"))?;
            }
            Ok(ExitStatus::Ok)
        }
        Cmd::Overhead { trace, top, json } => {
            let pb = progress_bar(&trace);
            let done = overhead_file(&trace, top, |rows, bytes| advance(&pb, rows, bytes));
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            let rep = done?;
            if json {
                print_stdout(&format!("{}\n", serde_json::to_string_pretty(&rep)?))?;
            } else {
                print_stdout(&rep.to_human())?;
            }
            warn_damage(rep.damage.as_ref());
            Ok(ExitStatus::after_reading([rep.damage.as_ref()], false))
        }
    }
}
