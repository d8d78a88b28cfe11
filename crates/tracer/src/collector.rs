//! The user-space end of the ring buffer: poll, decode, batch into the trace file or stream
//! ([`Sink`]).
//!
//! The programs submit with BPF_RB_NO_WAKEUP, so nothing ever wakes us: we poll every
//! millisecond (immediately again while there is data). A wakeup per event cost 1.83x on the
//! development VM; this costs ~1.07x (shared/docs/toolchain.md, BENCHMARKS.md).

use std::{
    collections::BTreeMap,
    future::Future,
    io::{IsTerminal, Write},
    os::fd::RawFd,
    time::{Duration, Instant},
};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use pfnscope_abi::{Event, counter};
use pfnscope_trace::CpuCounters;

use crate::{
    decode::Decoder,
    sink::{Delivered, Sink, SinkError},
};

/// The loss counters go out at least this often (as rows of a batch), whatever the sink's
/// rhythm.
const COUNTERS_EVERY: Duration = Duration::from_secs(1);
const POLL_EVERY: Duration = Duration::from_millis(1);

/// What a recording wrote, for the line the tracer prints at the end.
#[derive(Default, Debug)]
pub struct Recorded {
    pub events: u64,
    pub per_hook: BTreeMap<String, u64>,
    /// Final loss counters per CPU.
    pub per_cpu: Vec<CpuCounters>,
    pub elapsed: Duration,
}

impl Recorded {
    pub fn dropped(&self) -> u64 {
        self.per_cpu.iter().map(|c| c.dropped).sum()
    }
}

pub struct Collector {
    pub ring: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
    pub decoder: Decoder,
    pub sink: Sink,
    /// Print a status line on stderr (every second on a terminal, every 10 s otherwise).
    pub status: bool,
    pub ebpf_log: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// The loaded programs (kept open by the session): runs the kernel skipped are losses too.
    pub programs: Vec<RawFd>,
}

/// Runs of these programs the kernel skipped because the same program was already running on
/// that CPU (`recursion_misses` in their fdinfo, Linux 5.12+; absent before, then 0). It happens
/// when a task is preempted inside an fentry/fexit program (they run with migration, not
/// preemption, disabled) and another traced task hits the same hook on that CPU: a skipped
/// entry loses the call, a skipped return leaves it open. The kernel counts per program, not
/// per CPU.
pub fn recursion_misses(programs: &[RawFd]) -> u64 {
    programs
        .iter()
        .filter_map(|fd| std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok())
        .filter_map(|info| misses_in(&info))
        .sum()
}

fn misses_in(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("recursion_misses:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The summary and where the trace went, or the error that ended it early (with what was
/// recorded until then).
pub type Outcome = Result<(Recorded, Delivered), (SinkError, Recorded)>;

impl Collector {
    /// Moves events from the ring into the sink, up to `max_batch` pending.
    fn drain(&mut self, summary: &mut Recorded, max_batch: usize) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            if item.len() < size_of::<Event>() {
                continue;
            }
            // SAFETY: the programs submit whole `Event`s; the ring gives no alignment promise.
            let ev: Event = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) };
            drop(item);
            let Some(r) = self.decoder.decode(&ev) else {
                continue;
            };
            match summary.per_hook.get_mut(r.hook.as_str()) {
                Some(n) => *n += 1,
                None => {
                    summary.per_hook.insert(r.hook.to_string(), 1);
                }
            }
            self.sink.push(&r);
            n += 1;
            if self.sink.pending() >= max_batch {
                break;
            }
        }
        summary.events += n as u64;
        n
    }

    fn read_counters(&self) -> Vec<CpuCounters> {
        let get = |idx| {
            self.counters
                .get(&idx, 0)
                .map(|v| v.iter().copied().collect::<Vec<u64>>())
                .unwrap_or_default()
        };
        let (d, u, f) = (
            get(counter::DROPPED),
            get(counter::UNPAIRED),
            get(counter::READ_FAILED),
        );
        // Counted per program by the kernel: booked on CPU 0's row so the totals are right.
        let misses = recursion_misses(&self.programs);
        (0..d.len())
            .map(|cpu| CpuCounters {
                cpu: cpu as u32,
                dropped: d[cpu],
                unpaired: u.get(cpu).copied().unwrap_or(0) + if cpu == 0 { misses } else { 0 },
                read_failed: f.get(cpu).copied().unwrap_or(0),
            })
            .collect()
    }

    /// Queues the counters with the batch being written (the reader hands them out apart
    /// from the events) and returns them.
    fn push_counters(&mut self, now_ns: u64) -> Vec<CpuCounters> {
        let c = self.read_counters();
        self.sink.push_counters(&c, now_ns);
        c
    }

    /// Runs until `stop` resolves, then drains what is left and finishes the file or stream. A
    /// write error ends the run at once; everything flushed before it stays readable.
    pub async fn run<T>(self, stop: impl Future<Output = T>) -> (Outcome, Option<T>) {
        let mut why = None;
        let res = self.run_inner(stop, &mut why).await;
        (res, why)
    }

    async fn run_inner<T>(mut self, stop: impl Future<Output = T>, why: &mut Option<T>) -> Outcome {
        let mut summary = Recorded::default();
        let (flush_every, max_batch) = self.sink.rhythm();
        let started = Instant::now();
        let tty = std::io::stderr().is_terminal();
        let status_every = if tty {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        };
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_flush = Instant::now();
        let mut last_counters = Instant::now();
        let mut last_status = Instant::now();
        let mut events_at_status = 0u64;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                w = &mut stop => {
                    *why = Some(w);
                    break;
                }
                _ = tick.tick() => {}
            }
            while self.drain(&mut summary, max_batch) > 0 && self.sink.pending() < max_batch {}
            if let Some(l) = self.ebpf_log.as_mut() {
                l.flush();
            }
            let counters_due = last_counters.elapsed() >= COUNTERS_EVERY;
            if counters_due
                || self.sink.pending() >= max_batch
                || (self.sink.pending() > 0 && last_flush.elapsed() >= flush_every)
            {
                if counters_due {
                    summary.per_cpu = self.push_counters(monotonic_ns());
                    last_counters = Instant::now();
                }
                if let Err(e) = self.sink.flush_batch() {
                    summary.elapsed = started.elapsed();
                    return Err((e, summary));
                }
                last_flush = Instant::now();
            }
            if self.status && last_status.elapsed() >= status_every {
                let secs = last_status.elapsed().as_secs_f64();
                let rate = (summary.events - events_at_status) as f64 / secs;
                let line = format!(
                    "recording: {:>9.0} events/s, {} events, {} dropped, {} out",
                    rate,
                    summary.events,
                    summary.dropped(),
                    self.sink.rows_out()
                );
                let mut err = std::io::stderr().lock();
                if tty {
                    let _ = write!(err, "\r{line}\x1b[K");
                } else {
                    let _ = writeln!(err, "{line}");
                }
                let _ = err.flush();
                events_at_status = summary.events;
                last_status = Instant::now();
            }
        }
        // Probes are still attached: take everything already in the ring.
        while self.drain(&mut summary, max_batch) > 0 {
            if self.sink.pending() >= max_batch
                && let Err(e) = self.sink.flush_batch()
            {
                summary.elapsed = started.elapsed();
                return Err((e, summary));
            }
        }
        summary.per_cpu = self.push_counters(monotonic_ns());
        if self.status && tty {
            // Ignored like the status line: a closed terminal must not stop the last flush.
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
        summary.elapsed = started.elapsed();
        match self.sink.finish() {
            Ok(d) => Ok((summary, d)),
            Err(e) => Err((e, summary)),
        }
    }
}

/// CLOCK_MONOTONIC, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recursion_misses_come_from_a_programs_fdinfo() {
        // As Linux 6.18 prints it for a tp_btf program.
        let info = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nrun_time_ns:\t0\nrun_cnt:\t0\nrecursion_misses:\t7\nverified_insns:\t12\n";
        assert_eq!(misses_in(info), Some(7));
        // Before 5.12 the line is missing: nothing is known to be lost.
        assert_eq!(misses_in("pos:\t0\nprog_type:\t26\n"), None);
        // A closed fd contributes nothing.
        assert_eq!(recursion_misses(&[-1]), 0);
    }
}
