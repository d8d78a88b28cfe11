//! Front ends that read a trace file and drive the engine. The model itself never does I/O;
//! this is the one place that opens files.

use std::path::Path;

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
    let mut truncated = None;
    loop {
        match reader.next_batch() {
            Ok(Some(batch)) => {
                rows += batch.len() as u64;
                e.push_all(batch);
                progress(rows);
            }
            Ok(None) => break,
            Err(d) => {
                truncated = Some(d);
                break;
            }
        }
    }
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
