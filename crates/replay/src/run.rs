//! Front ends that read a trace file and drive the engine. The model itself never does I/O;
//! this is the one place that opens files.

use std::io::Read;
use std::path::Path;
use std::sync::mpsc::sync_channel;

use pfnscope_trace::{Record, TraceError, TraceMeta, TraceReader};

use crate::engine::Engine;
use crate::kernel::{BadRelease, KernelRules};
use crate::report::{Collector, Report, ReportHead};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Rules(#[from] BadRelease),
}

/// Options of a check run.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Force a rule set (`6.1`, `6.12`, `6.18`, a full release) instead of the trace's.
    pub kernel_rules: Option<String>,
}

/// The rules for a trace: forced, or from its metadata.
pub fn rules_for(meta: &TraceMeta, forced: Option<&str>) -> Result<KernelRules, BadRelease> {
    match forced {
        Some(v) => KernelRules::from_release(v),
        None => Ok(KernelRules::from_meta_release(&meta.kernel_release)),
    }
}

/// Replays records already in memory.
pub fn check_records(
    meta: &TraceMeta,
    rules: KernelRules,
    records: impl IntoIterator<Item = Record>,
    trace: &str,
) -> Report {
    let head_rules = rules.clone();
    let mut e = Engine::new(meta, rules, Collector::new());
    e.push_all(records);
    let (c, losses, events) = e.finish();
    Report::from_collector(
        c,
        ReportHead {
            trace: trace.to_string(),
            kernel_release: meta.kernel_release.clone(),
            rules: head_rules.series().to_string(),
            rules_note: head_rules.note,
            events,
            truncated: None,
            losses,
        },
    )
}

/// Streams a trace file through the engine batch by batch. `progress(rows)` is called after
/// every batch. A damaged tail is replayed up to the damage and reported in `truncated`.
pub fn check_file(
    path: &Path,
    opts: &CheckOptions,
    mut progress: impl FnMut(u64),
) -> Result<Report, ReplayError> {
    let mut reader = TraceReader::open(path)?;
    let meta = reader.meta().clone();
    let rules = rules_for(&meta, opts.kernel_rules.as_deref())?;
    let head_rules = rules.clone();
    let mut e = Engine::new(&meta, rules, Collector::new());
    let mut rows = 0u64;
    let truncated = each_batch(&mut reader, |batch| {
        rows += batch.len() as u64;
        e.push_all(batch);
        progress(rows);
    });
    let (c, losses, events) = e.finish();
    Ok(Report::from_collector(
        c,
        ReportHead {
            trace: path.display().to_string(),
            kernel_release: meta.kernel_release.clone(),
            rules: head_rules.series().to_string(),
            rules_note: head_rules.note,
            events,
            truncated,
            losses,
        },
    ))
}

/// Hands every batch of `reader` to `f`, in order, while a second thread reads and decompresses
/// the next ones: reading is about as costly as replaying, so the two overlap. Returns the
/// damage that ended a truncated trace.
pub fn each_batch<R: Read + Send>(
    reader: &mut TraceReader<R>,
    mut f: impl FnMut(Vec<Record>),
) -> Option<String> {
    // Two batches in flight bound the memory to what the reader held before.
    let (tx, rx) = sync_channel::<Vec<Record>>(2);
    std::thread::scope(|s| {
        let read = s.spawn(move || {
            loop {
                match reader.next_batch() {
                    Ok(Some(batch)) => {
                        if tx.send(batch).is_err() {
                            return None;
                        }
                    }
                    Ok(None) => return None,
                    Err(d) => return Some(d),
                }
            }
        });
        for batch in rx {
            f(batch);
        }
        read.join().expect("the trace reader thread panicked")
    })
}
