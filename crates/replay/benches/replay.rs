//! `cargo xtask bench replay` (`cargo bench -p replay --profile release-lto`): replay throughput
//! on a generated 10M-event trace.
//!
//! - engine: records built in memory (the path of tests and mutants), pushed through
//!   reassembly and the model, one core;
//! - read: a trace file read into checked batches, nothing replayed (what the file phase's
//!   reader thread does for `replay check`, which leaves the columns no rule reads compressed),
//!   one core;
//! - file: the same file read and replayed, rows read in place (what `replay check` does):
//!   wall time, with reading on a second thread, and the CPU time of both. The file holds as
//!   many events as the engine run (~3 MiB per million) and is deleted afterwards;
//! - overhead: the same file through `replay overhead`'s per-page tally.
//!
//! The file and overhead phases run three times each, one line per run.
//!
//! `REPLAY_BENCH_EVENTS` overrides the 10M default; `REPLAY_BENCH_KEEP=PATH` keeps the file
//! there (to profile `replay check` on it).

use std::time::{Duration, Instant};

use pfnscope_abi::kernel::Series;
use pfnscope_abi::{Cache, bits::PAGE_SIZE};
use replay::kernel::KernelRules;
use replay::report::Results;
use replay::synth::TraceBuilder;
use replay::{CheckOptions, Engine, check_file, overhead_file};

/// The allocator the `replay` binary uses.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One round of a busy graphics-and-devmem workload: a TTM buffer faulted in page by page with a
/// WC request, a BAR remapped (and every 100th round forked), everything unmapped again. The
/// forked children never exit in this trace, so their strict reservations stay: forking every
/// round would grow the reservation list far beyond what a real system holds.
fn round(b: &mut TraceBuilder, n: u64) {
    let bits = b.bits;
    let mut ttm = b.vma(
        0x7f00_2000_0000,
        32,
        true,
        bits.pfnmap | bits.io | bits.dontexpand | bits.dontdump,
        Some("drm_gem_ttm_vm_ops [ttm]"),
    );
    for j in 0..32 {
        b.fault_insert(
            &ttm,
            ttm.start + j * PAGE_SIZE,
            0xfd000 + j,
            Cache::WC,
            false,
        );
    }
    let mut bar = b.vma(0x7f00_1000_0000, 16, true, 0, Some("pci_phys_vm_ops"));
    b.remap(&mut bar, 0xfe000, Cache::WC);
    if n.is_multiple_of(100) {
        b.fork(&bar, 4242);
    }
    b.munmap(&mut bar);
    b.munmap(&mut ttm);
}

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// User + system time of the whole process (all threads), from /proc/self/stat in clock ticks
/// (USER_HZ, 100 on Linux).
/// The CPU time of all threads and the rate per CPU-second it gives.
fn per_cpu_second(events: u64, cpu: Option<f64>) -> String {
    match cpu {
        // /proc counts CPU time in 10 ms ticks.
        Some(c) if c <= 0.0 => "under 10 ms of CPU time".into(),
        Some(c) => format!(
            "{c:.2} CPU-s: {:.2} M events per CPU-second",
            events as f64 / c / 1e6
        ),
        None => "CPU time unavailable".into(),
    }
}

/// Runs of the file and overhead phases.
const RUNS: usize = 3;

/// `f`'s result, wall time and CPU time (all threads).
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Option<f64>) {
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let out = f();
    let (el, cpu) = (t.elapsed(), cpu_seconds().zip(cpu).map(|(b, a)| b - a));
    (out, el, cpu)
}

fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() {
    // cargo passes `--bench`; a filter argument that is not ours means "not this bench".
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && a != "replay")
    {
        return;
    }
    // As the `replay` binary does.
    replay::allocator::tune();
    let target: u64 = std::env::var("REPLAY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let series = Series::V6_12;
    let mut b = TraceBuilder::new(series);
    let meta = b.meta();
    let mut engine = Engine::new(&meta, KernelRules::for_series(series), Results::new());
    let (mut fed, mut in_engine) = (0u64, Duration::ZERO);
    let mut chunk_rounds = 0;
    while fed < target {
        for i in 0..200 {
            round(&mut b, chunk_rounds + i);
        }
        chunk_rounds += 200;
        let chunk = b.drain(fed);
        fed += chunk.len() as u64;
        let t = Instant::now();
        engine.push_all(chunk);
        in_engine += t.elapsed();
    }
    let t = Instant::now();
    let (sink, _, events) = engine.finish();
    in_engine += t.elapsed();
    assert_eq!(
        sink.divergences_total, 0,
        "the generated workload must replay clean"
    );
    let eng_rate = events as f64 / in_engine.as_secs_f64();
    println!(
        "replay/engine: {events} events ({chunk_rounds} workload rounds) as records in memory (the path of tests and mutants) in {:.2} s: {:.2} M events/s on one core",
        in_engine.as_secs_f64(),
        eng_rate / 1e6
    );

    // End to end through a file.
    let file_events = target;
    let dir = std::env::temp_dir().join(format!("replay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bench.arrows");
    // Batches as large as the collector's (tracer's `MAX_BATCH`): the reader thread's work per
    // batch and the rows a batch keeps alive are those of a real recording.
    let batch_rows = 64 * 1024;
    let mut b = TraceBuilder::new(series);
    let mut w = pfnscope_trace::TraceWriter::create(&path, &meta).unwrap();
    let (mut written, mut rounds) = (0u64, 0u64);
    while written < file_events {
        for _ in 0..200 {
            round(&mut b, rounds);
            rounds += 1;
        }
        for r in b.drain(written) {
            w.push(&r);
            written += 1;
            if w.pending() >= batch_rows {
                w.flush_batch().unwrap();
            }
        }
    }
    w.finish().unwrap();
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let t = Instant::now();
    let mut reader =
        pfnscope_trace::TraceReader::open_without(&path, replay::run::CHECK_UNREAD).unwrap();
    let mut read = 0usize;
    while let Some(rows) = reader.next_rows().unwrap() {
        read += rows.len();
    }
    let el = t.elapsed();
    println!(
        "replay/read: {read} events read into checked batches (no replay: the reader thread's part of the file phase) in {:.2} s: {:.2} M events/s on one core",
        el.as_secs_f64(),
        read as f64 / el.as_secs_f64() / 1e6
    );
    // Three runs of each: the host's speed drifts, and one run can land in a slow second.
    for run in 1..=RUNS {
        let (rep, el, cpu) = timed(|| check_file(&path, &CheckOptions::default(), |_, _| {}));
        let rep = rep.unwrap();
        assert_eq!(rep.summary.divergences, 0);
        println!(
            "replay/file ({run}/{RUNS}): {} events ({:.0} MiB) read + replayed in {:.2} s: {:.2} M events/s wall (reading on a second thread); {}",
            rep.events,
            bytes as f64 / (1 << 20) as f64,
            el.as_secs_f64(),
            rep.events as f64 / el.as_secs_f64() / 1e6,
            per_cpu_second(rep.events, cpu)
        );
    }
    for run in 1..=RUNS {
        let (out, el, cpu) = timed(|| overhead_file(&path, 10, |_, _| {}));
        let rep = out.unwrap();
        assert!(rep.damage.is_none() && rep.faults > 0);
        println!(
            "replay/overhead ({run}/{RUNS}): {} events ({} faults, {} pages) read + tallied in {:.2} s: {:.2} M events/s wall; {}",
            rep.events,
            rep.faults,
            rep.pages,
            el.as_secs_f64(),
            rep.events as f64 / el.as_secs_f64() / 1e6,
            per_cpu_second(rep.events, cpu)
        );
    }
    if let Some(keep) = std::env::var_os("REPLAY_BENCH_KEEP") {
        std::fs::rename(&path, &keep).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(m) = peak_rss_mib() {
        println!("replay/peak-rss: {m:.0} MiB (includes the generator's chunk and the writer)");
    }
}
