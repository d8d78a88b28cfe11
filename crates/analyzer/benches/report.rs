//! 10 M-event trace to a full report (and a summary): wall time and peak RSS of the `analyzer`
//! binary. `cargo bench -p analyzer` (set ANALYZER_BENCH_EVENTS to change the size). The trace
//! is generated once with `pfnscope_trace::TraceWriter` and kept in the target dir.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{Shape, fault_trace};

/// Runs the command and returns (wall time, peak RSS in bytes) from wait4's rusage.
fn measure(args: &[&str]) -> (Duration, u64) {
    let start = Instant::now();
    // Reaped by wait4 below, which std's Child::wait cannot replace: it drops the rusage.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(env!("CARGO_BIN_EXE_analyzer"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run analyzer");
    let mut status = 0;
    // SAFETY: plain syscall on our own child; the rusage is fully written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert!(
        pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "analyzer {args:?} failed"
    );
    (wall, usage.ru_maxrss as u64 * 1024)
}

fn main() {
    // `cargo test --benches` runs this too: only measure under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let events: u64 = std::env::var("ANALYZER_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("analyzer-bench");
    std::fs::create_dir_all(&dir).unwrap();
    // v2: Zstandard batches (v1 traces were LZ4 and are not reused).
    let trace = dir.join(format!("trace-{events}-v2.arrows"));
    if !trace.exists() {
        let t = Instant::now();
        // The generator makes 2.6 rows per fault on average (retries, inserts, PAT lookups).
        let faults = (events as f64 / 2.6) as usize;
        let tmp = dir.join("generating.arrows");
        let rows = fault_trace(
            &tmp,
            &Shape {
                faults,
                batches: 100,
                dropped: 120,
                ..Shape::default()
            },
        );
        std::fs::rename(&tmp, &trace).unwrap();
        println!(
            "generated {rows} rows in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let size = std::fs::metadata(&trace).unwrap().len();
    println!(
        "trace: {} ({:.0} MiB)",
        trace.display(),
        size as f64 / (1 << 20) as f64
    );
    let t = trace.to_str().unwrap();
    let out = dir.join("report");
    for (what, args) in [
        ("summary", vec!["summary", t, "--quiet"]),
        (
            "report",
            vec!["report", t, "-o", out.to_str().unwrap(), "--quiet"],
        ),
    ] {
        let runs: Vec<(Duration, u64)> = (0..3).map(|_| measure(&args)).collect();
        let mut walls: Vec<f64> = runs.iter().map(|r| r.0.as_secs_f64()).collect();
        walls.sort_by(|a, b| a.total_cmp(b));
        let rss = runs.iter().map(|r| r.1).max().unwrap();
        println!(
            "analyzer {what}: median {:.2} s (min {:.2}, max {:.2}) over 3 runs, peak RSS {:.0} MiB",
            walls[1],
            walls[0],
            walls[2],
            rss as f64 / (1 << 20) as f64
        );
    }
}
