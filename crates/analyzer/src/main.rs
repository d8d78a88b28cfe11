//! `analyzer`: summaries, reports, exports and diffs of pfnscope traces.

use std::{
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use analyzer::{
    AnalyzerError, GroupBy, LoadOptions, Replay, ReportOptions, Summary, Trace, diff, export, text,
    write_report,
};
use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pfnscope_trace::{EXIT_STATUS_HELP, Existing, ExitStatus, print_stdout};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, v2).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Peak memory is what a 10 M-event report is judged on: each table's transient buffers were
/// kept for mimalloc's 10 ms purge delay and piled up (1.07 GiB peak for `summary`, 0.92 with
/// immediate purging). An explicit MIMALLOC_PURGE_DELAY still wins.
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option; mimalloc allows it at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

#[derive(Parser)]
#[command(
    version,
    about = "Fault-latency tables, plots and reports from pfnscope traces",
    after_help = EXIT_STATUS_HELP
)]
struct Cli {
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum By {
    Hook,
    Driver,
    VmaKind,
    Process,
    FaultType,
    /// Fault time by kernel+user stack, and the sites faults blocked at per driver (traces
    /// recorded with stacks and off-CPU time).
    Stack,
}

impl By {
    /// The latency table's grouping; None for `--by stack`, which has tables of its own.
    fn group(self) -> Option<GroupBy> {
        Some(match self {
            By::Hook => GroupBy::Hook,
            By::Driver => GroupBy::Driver,
            By::VmaKind => GroupBy::VmaKind,
            By::Process => GroupBy::Process,
            By::FaultType => GroupBy::FaultType,
            By::Stack => return None,
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Parquet,
    Csv,
    Json,
    Ndjson,
    /// A Perfetto timeline (TrackEvent protobuf) for ui.perfetto.dev.
    Perfetto,
}

#[derive(Subcommand)]
enum Cmd {
    /// Latency percentiles per group, VM_FAULT return mix, retries, PAT modes and losses.
    Summary {
        trace: PathBuf,
        #[arg(long)]
        json: bool,
        #[arg(long, value_enum, default_value = "driver")]
        by: By,
    },
    /// A directory with index.html, the tables and the plots (PNG and SVG); an existing
    /// directory is refreshed, but none of the inputs may be among what it writes.
    Report {
        trace: PathBuf,
        /// `replay check --json` and/or `replay overhead --json` output (repeatable).
        #[arg(long)]
        replay: Vec<PathBuf>,
        #[arg(short, long)]
        out: PathBuf,
        /// Pages in the per-page overhead chart.
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
    /// The whole trace, plus derived vma_kind and fault_type, for other tools.
    Export {
        trace: PathBuf,
        #[arg(long, value_enum)]
        format: Format,
        /// File to write: never the trace itself, and not an existing file without --force.
        #[arg(short, long)]
        out: PathBuf,
        /// Replace OUT if it exists (a regular file, not the trace).
        #[arg(long)]
        force: bool,
        /// With --format perfetto: a `replay check --json` report of this trace, whose
        /// divergences and findings become instants at their deciding calls.
        #[arg(long)]
        replay: Option<PathBuf>,
    },
    /// Per-driver fault latency of two traces, with a bootstrap test for noise.
    Diff {
        a: PathBuf,
        b: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn bar(quiet: bool, template: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    b.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b.enable_steady_tick(Duration::from_millis(200));
    b
}

fn loading(quiet: bool) -> LoadOptions {
    LoadOptions {
        progress: bar(quiet, "loading {bar:30} {bytes}/{total_bytes} ({eta})"),
        ..Default::default()
    }
}

fn load(path: &Path, quiet: bool) -> anyhow::Result<Trace> {
    let t = Trace::load(path, &loading(quiet))?;
    warn_damage(t.damage.as_ref());
    Ok(t)
}

/// The one line that says a trace is not whole; the output covers what was read.
fn warn_damage(damage: Option<&pfnscope_trace::Damage>) {
    if let Some(d) = damage {
        warn(&format!("analyzer: warning: {d}"));
    }
}

fn warn(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let q = cli.quiet;
    let damage = match cli.cmd {
        Cmd::Summary { trace, json, by } => {
            let t = load(&trace, q)?;
            let Some(by) = by.group() else {
                let w = analyzer::why::Why::compute(&trace)?;
                if json {
                    print_stdout(&format!("{}\n", serde_json::to_string_pretty(&w)?))?;
                } else {
                    print_stdout(&text::render_why(&w))?;
                }
                return Ok(ExitStatus::after_reading([t.damage.as_ref()], false));
            };
            let s = Summary::compute(&t, by)?;
            if json {
                print_stdout(&format!("{}\n", serde_json::to_string_pretty(&s)?))?;
            } else {
                print_stdout(&text::render(&s))?;
            }
            vec![t.damage]
        }
        Cmd::Report {
            trace,
            replay,
            out,
            top,
        } => {
            let inputs: Vec<&Path> = std::iter::once(trace.as_path())
                .chain(replay.iter().map(PathBuf::as_path))
                .collect();
            analyzer::report::check_output(&out, &inputs)?;
            // The replay files are read first: a typo there should not cost a 10 s load.
            let replay = Replay::load(&replay)?;
            let t = load(&trace, q)?;
            let opts = ReportOptions {
                top_pages: top,
                progress: bar(q, "report {bar:30} {pos}/{len} {msg}"),
            };
            let w = write_report(&t, &replay, &out, &opts)?;
            print_stdout(&format!(
                "{} ({} plots)\n",
                w.index.display(),
                w.images.len()
            ))?;
            vec![t.damage]
        }
        Cmd::Export {
            trace,
            format: Format::Perfetto,
            out,
            force,
            replay,
        } => {
            let existing = Existing::replace_if(force);
            let (w, damage) =
                analyzer::perfetto::export(&trace, replay.as_deref(), &out, existing)?;
            warn_damage(damage.as_ref());
            print_stdout(&format!(
                "{} rows on {} thread tracks, {} divergences and findings -> {}\n",
                w.rows,
                w.threads,
                w.rule_events,
                out.display()
            ))?;
            vec![damage]
        }
        Cmd::Export {
            trace,
            format,
            out,
            force,
            replay,
        } => {
            if replay.is_some() {
                bail!(
                    "--replay goes with --format perfetto (the table formats carry the trace's rows only)"
                );
            }
            let f = match format {
                Format::Parquet => export::Format::Parquet,
                Format::Csv => export::Format::Csv,
                Format::Json => export::Format::Json,
                Format::Ndjson => export::Format::Ndjson,
                Format::Perfetto => unreachable!("handled above"),
            };
            let existing = Existing::replace_if(force);
            let (rows, damage) = export::export(&trace, f, &out, existing, &loading(q))?;
            warn_damage(damage.as_ref());
            print_stdout(&format!("{} rows -> {}\n", rows, out.display()))?;
            vec![damage]
        }
        Cmd::Diff { a, b, json } => {
            let ta = load(&a, q).with_context(|| "trace A")?;
            let tb = load(&b, q).with_context(|| "trace B")?;
            let d = diff::diff(&ta, &tb)?;
            if json {
                print_stdout(&format!("{}\n", serde_json::to_string_pretty(&d)?))?;
            } else {
                print_stdout(&diff::render(&d))?;
            }
            vec![ta.damage, tb.damage]
        }
    };
    Ok(ExitStatus::after_reading(
        damage.iter().map(Option::as_ref),
        false,
    ))
}

fn main() -> ExitCode {
    purge_freed_memory_at_once();
    // Usage errors get the scheme's status, not clap's own 2 (a damaged trace).
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        let _ = e.print();
        std::process::exit(ExitStatus::after_arguments(e.use_stderr()).code().into())
    });
    match run(cli) {
        Ok(status) => status.into(),
        Err(e) => {
            // One line: the chain joined, as the issue asks for bad input.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            warn(&format!("analyzer: {}", msg.join(": ")));
            e.downcast_ref::<AnalyzerError>()
                .map_or(ExitStatus::Unusable, AnalyzerError::exit_status)
                .into()
        }
    }
}
