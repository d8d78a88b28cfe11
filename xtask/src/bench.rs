//! `cargo xtask bench overhead`: what tracing costs a fault storm, measured side by side.
//! `cargo xtask bench replay` and `cargo xtask bench analyzer` run those crates' `cargo bench`
//! (their results are entered in BENCHMARKS.md by hand, with what changed).
//!
//! The workload touches 1 GiB of fresh anonymous memory with 4 KiB pages (262,144 faults) and
//! reports the time of its touch loop alone, so start-up and attach costs of each tracer stay
//! out of the number. Modes run interleaved, the order rotating every round, and the report
//! gives medians and ratios to the untraced median of the same run.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::util::{self, replace_section};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Tracer overhead on a 1 GiB anonymous fault storm: untraced vs `tracer record` vs perf vs
    /// bpftrace, written to BENCHMARKS.md.
    Overhead {
        /// Rounds per mode (medians are taken over them).
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// MiB touched per run.
        #[arg(long, default_value_t = 1024)]
        mib: usize,
        /// Print only; do not rewrite BENCHMARKS.md.
        #[arg(long)]
        no_write: bool,
    },
    /// `tracer collect` with 1, 4 and 16 senders on loopback: events/s, collector CPU per
    /// million events, batch latency to disk; written to BENCHMARKS.md.
    Collect {
        /// Batches (of 4096 events) per row, split among its senders.
        #[arg(long, default_value_t = 960)]
        batches: u64,
        /// Print only; do not rewrite BENCHMARKS.md.
        #[arg(long)]
        no_write: bool,
    },
    /// Replay throughput on a generated trace (`cargo bench -p replay`): events per second on
    /// one core and per CPU-second of `replay check`, and peak memory.
    Replay {
        /// Events in the generated trace.
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
    },
    /// `analyzer summary` and `report` on a generated trace (`cargo bench -p analyzer`):
    /// median wall time and peak RSS.
    Analyzer {
        /// Rows in the generated trace.
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
    },
}

pub fn run(a: &Args) -> Result<()> {
    match a.what {
        What::Overhead {
            rounds,
            mib,
            no_write,
        } => overhead(rounds, mib, no_write),
        What::Collect { batches, no_write } => crate::bench_collect::collect(batches, no_write),
        // The profile `replay` is meant to be built with for large traces (see Cargo.toml).
        What::Replay { events } => cargo_bench(
            "replay",
            "replay",
            "release-lto",
            "REPLAY_BENCH_EVENTS",
            events,
        ),
        What::Analyzer { events } => cargo_bench(
            "analyzer",
            "report",
            "bench",
            "ANALYZER_BENCH_EVENTS",
            events,
        ),
    }
}

fn cargo_bench(krate: &str, bench: &str, profile: &str, size_var: &str, events: u64) -> Result<()> {
    util::run(
        Command::new("cargo")
            .current_dir(util::workspace_root())
            .args(["bench", "-p", krate, "--bench", bench, "--profile", profile])
            .env(size_var, events.to_string()),
    )
}

/// The fault generator (`cargo xtask __touch MIB`): prints `touch_ns=N pages=P`.
pub fn touch(mib: usize) -> Result<()> {
    let len = mib << 20;
    let m = workload::sys::Map::anon(len).with_context(|| format!("{mib} MiB to touch"))?;
    let start = Instant::now();
    m.write_all(1);
    let t = start.elapsed();
    drop(m);
    println!("touch_ns={} pages={}", t.as_nanos(), len / 4096);
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Untraced,
    /// Without stacks: the tracer as it was before stacks existed, the baseline they are held to.
    Tracer,
    /// The default: stacks of calls slower than 100us, decided at their return. No fault of the
    /// storm is that slow, so this should cost what `Tracer` costs.
    TracerStacks,
    /// Stacks of every call and every fault, to show what they cost (next to `perf record -g`).
    TracerStacksAll,
    /// `tracer record -o -` into a file: the streaming rhythm and encoding without a collector.
    TracerStdout,
    /// `tracer record -o tcp://...` to a `tracer collect` on loopback.
    TracerStream,
    /// Attached, every hit filtered out at once: the floor any tracepoint program pays here.
    TracerFloor,
    Perf,
    PerfStacks,
    Bpftrace,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Tracer => "tracer record --no-stacks",
            Mode::TracerStacks => "tracer record (stacks of calls over 100us, the default)",
            Mode::TracerStacksAll => "tracer record --stacks=all",
            Mode::TracerStdout => "tracer record --no-stacks -o - (stream form, no collector)",
            Mode::TracerStream => "tracer record --no-stacks -o tcp:// (collector on loopback)",
            Mode::TracerFloor => "tracer record --addr-range 0-1 (floor: all filtered)",
            Mode::Perf => "perf record -e exceptions:page_fault_user",
            Mode::PerfStacks => "perf record -g -e exceptions:page_fault_user",
            Mode::Bpftrace => "bpftrace count of exceptions:page_fault_user",
        }
    }
}

fn touch_ns(stdout: &str) -> Option<u64> {
    stdout
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("touch_ns="))
        })
        .and_then(|v| v.parse().ok())
}

struct Tools {
    xtask: PathBuf,
    tracer: PathBuf,
    perf: Option<PathBuf>,
    bpftrace: Option<PathBuf>,
    scratch: PathBuf,
    /// The loopback collector of [`Mode::TracerStream`]: its address and directory.
    collector: (String, PathBuf),
}

fn run_once(mode: Mode, t: &Tools, mib: usize) -> Result<(u64, Option<String>)> {
    let touch = |c: &mut Command| {
        c.arg(&t.xtask).args(["__touch", &mib.to_string()]);
    };
    let mut c;
    match mode {
        Mode::Untraced => {
            c = Command::new(&t.xtask);
            c.args(["__touch", &mib.to_string()]);
        }
        Mode::Tracer | Mode::TracerStacks | Mode::TracerStacksAll | Mode::TracerFloor => {
            c = Command::new(&t.tracer);
            // Each round replaces the last one's trace.
            c.args(["record", "--quiet", "--force", "-o"])
                .arg(t.scratch.join("bench.arrows"));
            match mode {
                Mode::TracerFloor => {
                    c.args(["--addr-range", "0-1"]);
                }
                Mode::Tracer => {
                    c.arg("--no-stacks");
                }
                Mode::TracerStacksAll => {
                    c.arg("--stacks=all");
                }
                _ => {}
            }
            c.arg("--");
            touch(&mut c);
        }
        Mode::TracerStdout => {
            c = Command::new(&t.tracer);
            c.args(["record", "--quiet", "--no-stacks", "-o", "-", "--"])
                .stdout(std::fs::File::create(t.scratch.join("stdout.arrows"))?);
            touch(&mut c);
        }
        Mode::TracerStream => {
            c = Command::new(&t.tracer);
            c.args(["record", "--quiet", "--no-stacks", "-o"])
                .arg(format!("tcp://{}", t.collector.0))
                .arg("--token-file")
                .arg(t.scratch.join("token"))
                .arg("--");
            touch(&mut c);
        }
        Mode::Perf | Mode::PerfStacks => {
            c = Command::new(t.perf.as_ref().unwrap());
            c.args(["record", "-q"]);
            if mode == Mode::PerfStacks {
                c.arg("-g");
            }
            c.args(["-e", "exceptions:page_fault_user", "-o"])
                .arg(t.scratch.join("perf.data"))
                .arg("--");
            touch(&mut c);
        }
        Mode::Bpftrace => {
            c = Command::new(t.bpftrace.as_ref().unwrap());
            let cmd = format!("{} __touch {mib}", t.xtask.display());
            c.args([
                "-e",
                "tracepoint:exceptions:page_fault_user /pid == cpid/ { @faults = count(); }",
                "-c",
                &cmd,
            ]);
        }
    }
    let out = c
        .output()
        .with_context(|| format!("running {}", util::show(&c)))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{} failed: {}", mode.name(), util::tail(&stderr, 5));
    }
    // With -o - the command's own output goes to standard error.
    let ns = touch_ns(if mode == Mode::TracerStdout {
        &stderr
    } else {
        &stdout
    })
    .with_context(|| format!("{}: no touch_ns in output: {stdout}", mode.name()))?;
    let note = match mode {
        Mode::Tracer | Mode::TracerStacks | Mode::TracerStacksAll => Some(tracer_check(
            &t.scratch.join("bench.arrows"),
            mib,
            mode == Mode::TracerStacksAll,
        )?),
        Mode::TracerStdout => Some(tracer_check(&t.scratch.join("stdout.arrows"), mib, false)?),
        Mode::TracerStream => {
            // The collector's file of this run (the only one: each is checked, then removed).
            let files: Vec<PathBuf> = std::fs::read_dir(&t.collector.1)?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()?;
            let [f] = &files[..] else {
                bail!("{} files from one streamed run: {files:?}", files.len());
            };
            let note = tracer_check(f, mib, false)?;
            std::fs::remove_file(f)?;
            Some(note)
        }
        _ => None,
    };
    Ok((ns, note))
}

/// The traced run must really have seen the storm, and without losses; with `--stacks=all`,
/// every fault of it must carry its stacks (else the row would time a tracer that took none).
fn tracer_check(path: &Path, mib: usize, all_stacks: bool) -> Result<String> {
    let t = pfnscope_trace::read_trace(path)?;
    let faults = t
        .events()
        .filter(|r| r.hook == "exceptions:page_fault_user" || r.hook == "handle_mm_fault")
        .count();
    let dropped: u64 = t.counters.total().dropped;
    let pages = (mib << 20) / 4096;
    if faults < pages {
        bail!("the traced run recorded {faults} faults for {pages} pages touched");
    }
    if dropped > 0 {
        bail!("the traced run dropped {dropped} events");
    }
    let stacked = t
        .events()
        .filter(|r| r.hook == "exceptions:page_fault_user" && r.kstack.is_some())
        .count();
    if all_stacks && stacked < pages {
        bail!("--stacks=all recorded stacks for {stacked} faults of {pages} pages touched");
    }
    Ok(format!(
        "{faults} faults recorded, 0 dropped, {stacked} user faults with a stack"
    ))
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn overhead(rounds: usize, mib: usize, no_write: bool) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("the overhead benchmark loads eBPF programs: run it as root");
    }
    let root = util::workspace_root();
    let tracer = util::release_tracer()?;
    let xtask = std::env::current_exe()?;
    let scratch = util::target_dir().join("bench");
    std::fs::create_dir_all(&scratch)?;
    let which = |n: &str| {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(n))
                .find(|p| p.is_file())
        })
    };
    let (mut collector, collector_at) = start_collector(&tracer, &scratch)?;
    let tools = Tools {
        xtask,
        tracer,
        perf: which("perf"),
        bpftrace: which("bpftrace"),
        scratch,
        collector: collector_at,
    };
    let mut modes = vec![
        Mode::Untraced,
        Mode::Tracer,
        Mode::TracerStacks,
        Mode::TracerStacksAll,
        Mode::TracerStdout,
        Mode::TracerStream,
        Mode::TracerFloor,
    ];
    let mut skipped = vec![];
    for (m, tool) in [
        (Mode::Perf, &tools.perf),
        (Mode::PerfStacks, &tools.perf),
        (Mode::Bpftrace, &tools.bpftrace),
    ] {
        match tool {
            None => skipped.push(format!(
                "{}: not installed (`cargo xtask setup` installs it)",
                m.name()
            )),
            // One trial run decides whether the tool works on this kernel at all.
            Some(_) => match run_once(m, &tools, 16) {
                Ok(_) => modes.push(m),
                Err(e) => skipped.push(format!("{}: does not run here: {e:#}", m.name())),
            },
        }
    }
    let mut times: Vec<Vec<u64>> = vec![vec![]; modes.len()];
    let mut notes: Vec<Option<String>> = vec![None; modes.len()];
    for round in 0..rounds {
        for k in 0..modes.len() {
            let i = (k + round) % modes.len();
            let (ns, note) = run_once(modes[i], &tools, mib)?;
            eprintln!(
                "round {}/{rounds}: {:<48} {:>8.1} ms",
                round + 1,
                modes[i].name(),
                ns as f64 / 1e6
            );
            times[i].push(ns);
            if note.is_some() {
                notes[i] = note;
            }
        }
    }
    // SAFETY: our own child's pid.
    unsafe { libc::kill(collector.id() as i32, libc::SIGTERM) };
    collector.wait()?;
    let base = median(&mut times[0].clone()) as f64;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let mut table = String::new();
    writeln!(
        table,
        "| mode | median touch time | ratio to untraced | note |"
    )?;
    writeln!(table, "|---|---|---|---|")?;
    for (i, m) in modes.iter().enumerate() {
        let med = median(&mut times[i].clone()) as f64;
        writeln!(
            table,
            "| {} | {:.1} ms | {:.3}x | {} |",
            m.name(),
            med / 1e6,
            med / base,
            notes[i].as_deref().unwrap_or("")
        )?;
    }
    for s in &skipped {
        writeln!(table, "\nSkipped: {s}")?;
    }
    let section = format!(
        "## tracer overhead\n\nCommand: `cargo xtask bench overhead --rounds {rounds} --mib {mib}` (as root).\n\
         Kernel {kernel}, {} CPUs. Workload: touch {mib} MiB of fresh anonymous memory, MADV_NOHUGEPAGE ({} faults); \
         the time is the touch loop only. Modes interleaved, order rotated each round; medians of {rounds} rounds.\n\n{table}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        (mib << 20) / 4096
    );
    println!("{section}");
    if !no_write {
        replace_section(&root.join("BENCHMARKS.md"), "## tracer overhead", &section)?;
        eprintln!("BENCHMARKS.md updated");
    }
    Ok(())
}

/// A `tracer collect` on a free loopback port for the streaming mode: the process, its address
/// and its directory.
fn start_collector(
    tracer: &Path,
    scratch: &Path,
) -> Result<(std::process::Child, (String, PathBuf))> {
    use std::io::BufRead;
    let dir = scratch.join("streams");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(scratch.join("token"), "bench-overhead-token-0123456789\n")?;
    let mut c = Command::new(tracer)
        .args(["collect", "--listen", "127.0.0.1:0", "-q", "-d"])
        .arg(&dir)
        .arg("--token-file")
        .arg(scratch.join("token"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(scratch.join("collect.log"))?)
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.take().expect("piped")).read_line(&mut line)?;
    let addr = line
        .strip_prefix("listening ")
        .context("the collector did not start")?
        .trim()
        .to_string();
    Ok((c, (addr, dir)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_touch_output() {
        assert_eq!(touch_ns("touch_ns=123456 pages=262144\n"), Some(123456));
        assert_eq!(
            touch_ns("Attaching 1 probe...\ntouch_ns=5 pages=1\n@faults: 1\n"),
            Some(5)
        );
        assert_eq!(touch_ns("nothing"), None);
    }

    #[test]
    fn section_replacement_keeps_other_sections() {
        let p = std::env::temp_dir().join(format!("bench-md-{}", std::process::id()));
        std::fs::write(
            &p,
            "# Benchmarks\n\n## replay\nfast\n\n## tracer overhead\nold\n\n## tracer overhead: why\nkept\n\n## analyzer\nok\n",
        )
        .unwrap();
        replace_section(&p, "## tracer overhead", "## tracer overhead\nnew\n").unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(
            s.contains("## replay\nfast")
                && s.contains("## analyzer\nok")
                && s.contains("new")
                && s.contains("## tracer overhead: why\nkept")
        );
        assert!(!s.contains("old"));
        replace_section(&p, "## other", "## other\nx\n").unwrap();
        assert!(
            std::fs::read_to_string(&p)
                .unwrap()
                .ends_with("## other\nx\n")
        );
    }
}
