//! Front ends that read a trace file and drive the engine. The model itself never does I/O;
//! this is the one place that opens files.

use std::io::Read;
use std::path::Path;

use pfnscope_trace::{
    Damage, LossCounters, Record, Rows, Trace, TraceError, TraceMeta, TraceReader,
};

use crate::engine::Engine;
use crate::kernel::{BadRelease, KernelRules};
use crate::overhead::Overhead;
use crate::report::{Report, ReportHead, Results};
use replay_report::OverheadReport;

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

/// Replays records already in memory, as from a tracer that lost nothing: a call whose parent
/// is missing is a divergence. For a trace read from a file, [`check_trace`] brings its loss
/// counters.
pub fn check_records(
    meta: &TraceMeta,
    rules: KernelRules,
    records: impl IntoIterator<Item = Record>,
    trace: &str,
) -> Report {
    check_with(meta, rules, records, None, None, trace)
}

/// Replays a trace read whole ([`pfnscope_trace::read_trace`]) as [`check_file`] replays the
/// file: with the tracer's loss counters (where it counted a loss, a call whose parent never
/// came is not checkable, not a divergence) and its damage.
pub fn check_trace(t: &Trace, rules: KernelRules, name: &str) -> Report {
    check_with(
        &t.meta,
        rules,
        t.records.iter().cloned(),
        Some(&t.counters),
        t.damage.clone(),
        name,
    )
}

fn check_with(
    meta: &TraceMeta,
    rules: KernelRules,
    records: impl IntoIterator<Item = Record>,
    counters: Option<&LossCounters>,
    damage: Option<Damage>,
    trace: &str,
) -> Report {
    let head_rules = rules.clone();
    let mut e = Engine::new(meta, rules, Results::new());
    e.push_all(records);
    if let Some(c) = counters {
        e.set_losses(c);
    }
    let (c, losses, events) = e.finish();
    Report::from_results(
        c,
        ReportHead {
            trace: trace.to_string(),
            kernel_release: meta.kernel_release.clone(),
            rules: head_rules.series().to_string(),
            rules_note: head_rules.note,
            events,
            damage,
            losses,
        },
    )
}

/// Columns no rule reads, left compressed (decompressing a trace is a third of a replay's CPU
/// time; these were 2% of it). A rule that starts to read one panics in the debug-build tests
/// until it leaves this list.
pub const CHECK_UNREAD: &[&str] = &["mode", "error_code", "vma_cache", "write", "ino", "dev"];

/// What `replay overhead` leaves compressed: it reads calls' tree links, timing, hook, page
/// (address, pfn, address space) and driver, and the counter rows.
pub const OVERHEAD_UNREAD: &[&str] = &[
    "tid",
    "comm",
    "mode",
    "fault_flags",
    "error_code",
    "vma_id",
    "vma_start",
    "vma_end",
    "vma_pgoff",
    "vma_flags",
    "vma_prot",
    "vma_cache",
    "file_id",
    "pte",
    "page",
    "size",
    "prot",
    "cache_req",
    "prot_out",
    "cache_out",
    "write",
    "ret",
    "ino",
    "index",
    "dev",
    "child_pid",
    "pfn_flags",
];

/// Streams a trace file through the engine batch by batch. `progress(rows, bytes)` is called
/// after every batch with the rows replayed and the bytes of the file read so far. A trace that
/// is not whole is replayed up to the damage, which the report gives in `damage`.
pub fn check_file(
    path: &Path,
    opts: &CheckOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<Report, ReplayError> {
    let mut reader = TraceReader::open_without(path, CHECK_UNREAD)?;
    let meta = reader.meta().clone();
    let rules = rules_for(&meta, opts.kernel_rules.as_deref())?;
    let head_rules = rules.clone();
    let mut e = Engine::new(&meta, rules, Results::new());
    let mut rows = 0u64;
    let damage = each_batch(&mut reader, |batch, bytes| {
        rows += batch.len() as u64;
        e.push_rows(batch);
        progress(rows, bytes);
    });
    e.set_losses(reader.counters());
    let (c, losses, events) = e.finish();
    Ok(Report::from_results(
        c,
        ReportHead {
            trace: path.display().to_string(),
            kernel_release: meta.kernel_release.clone(),
            rules: head_rules.series().to_string(),
            rules_note: head_rules.note,
            events,
            damage,
            losses,
        },
    ))
}

/// `replay overhead`: streams a trace file through the per-page tally. `progress(rows, bytes)`
/// is called after every batch, as for [`check_file`]; the report's `damage` says whether the
/// trace was whole.
pub fn overhead_file(
    path: &Path,
    top: usize,
    mut progress: impl FnMut(u64, u64),
) -> Result<OverheadReport, TraceError> {
    let mut reader = TraceReader::open_without(path, OVERHEAD_UNREAD)?;
    let mut o = Overhead::default();
    let mut rows = 0u64;
    let damage = each_batch(&mut reader, |batch, bytes| {
        rows += batch.len() as u64;
        o.push_rows(batch);
        progress(rows, bytes);
    });
    let mut report = o.finish(&path.display().to_string(), top);
    report.damage = damage.as_ref().map(Into::into);
    Ok(report)
}

/// Hands every batch of `reader` to `f`, in order, checked and ready to be read a row at a
/// time ([`Rows`]), while another thread reads and decompresses the next ones
/// ([`TraceReader::pipelined`]). Returns the damage that ended a trace that is not whole.
pub fn each_batch<R: Read + Send>(
    reader: &mut TraceReader<R>,
    f: impl FnMut(Rows, u64),
) -> Option<Damage> {
    reader.pipelined(TraceReader::next_rows, f)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use arrow_array::{Int64Array, UInt64Array};
    use arrow_schema::{DataType, Field, Schema};
    use pfnscope_trace::{RecordBatch, SCHEMA_VERSION_KEY, TraceWriter};

    use super::*;

    /// A call whose parent never came is a divergence only where the tracer lost nothing: the
    /// counters a trace read whole comes with must reach the replay (they once did not, and
    /// real test-box traces with unpaired returns failed as if the kernel had diverged).
    #[test]
    fn a_lost_parent_is_a_divergence_only_without_a_counted_loss() {
        use crate::synth::workload;
        use pfnscope_abi::kernel::Series;
        use pfnscope_trace::CpuCounters;
        let b = workload(Series::V6_12);
        let mut records = b.records();
        let parent = records.iter().find(|r| r.parent != 0).unwrap().parent;
        records.retain(|r| r.id != parent);
        let mut t = Trace {
            meta: b.meta(),
            records,
            counters: LossCounters::default(),
            damage: None,
        };
        let rules = || KernelRules::for_series(Series::V6_12);
        let orphans = |r: &Report| {
            r.divergences
                .iter()
                .filter(|d| d.rule == crate::rules::Rule::TraceParent)
                .count()
        };
        let lossless = check_trace(&t, rules(), "t");
        assert_eq!(orphans(&lossless), 1, "{}", lossless.to_human());
        t.counters.update(CpuCounters {
            cpu: 0,
            unpaired: 1,
            ..Default::default()
        });
        let lossy = check_trace(&t, rules(), "t");
        assert_eq!(orphans(&lossy), 0, "{}", lossy.to_human());
        assert_eq!(lossy.losses.unpaired, 1);
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("replay-run-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join("t.arrows")
    }

    /// What the plain one-thread reader makes of a file.
    fn sequential(p: &Path) -> (Vec<Record>, Option<Damage>) {
        let mut r = TraceReader::open(p).unwrap();
        let mut records = vec![];
        loop {
            match r.next_batch() {
                Ok(Some(b)) => records.extend(b),
                Ok(None) => return (records, None),
                Err(d) => return (records, Some(d)),
            }
        }
    }

    fn pipelined(p: &Path) -> (Vec<Record>, Option<Damage>) {
        let mut r = TraceReader::open(p).unwrap();
        let mut records = vec![];
        let d = each_batch(&mut r, |b, _| {
            records.extend((0..b.len()).map(|i| b.record(i)))
        });
        (records, d)
    }

    const PER_BATCH: u64 = 8292;

    fn records(p: &Path, batches: u64) {
        let mut w = TraceWriter::create(p, &TraceMeta::default()).unwrap();
        for b in 0..batches {
            for i in 0..PER_BATCH {
                w.push(&Record {
                    seq: b * PER_BATCH + i,
                    hook: "handle_mm_fault".into(),
                    address: Some(i << 12),
                    ..Default::default()
                });
            }
            w.flush_batch().unwrap();
        }
        w.finish().unwrap();
    }

    /// Every batch here has a call whose parent never comes, which waits to the end: the
    /// batches are still let go (their waiting calls moved out), those calls come out as
    /// they were written, and the report is the one replaying the records gives.
    #[test]
    fn batches_with_waiting_calls_are_let_go_and_replay_the_same() {
        use crate::feed::{Consumer, Feed, HELD_ROWS};
        use crate::tree::Tree;
        use pfnscope_abi::Hook;

        let p = tmp("stragglers");
        let (batches, per) = (120u64, 2000u64);
        let mut w = TraceWriter::create(&p, &TraceMeta::default()).unwrap();
        let mut waiting = vec![];
        for b in 0..batches {
            for i in 0..per {
                let n = b * per + i;
                let r = Record {
                    seq: n,
                    id: n + 1,
                    parent: if i == 0 { (1 << 40) | n } else { 0 },
                    ts_ns: 10 * n,
                    latency_ns: Some(5),
                    hook: "handle_mm_fault".into(),
                    address: Some(0x7f00_0000_0000 + 0x1000 * i),
                    fault_flags: Some(0x255),
                    ret: Some(0),
                    ..Default::default()
                };
                w.push(&r);
                if i == 0 {
                    waiting.push(r);
                }
            }
            w.flush_batch().unwrap();
        }
        w.finish().unwrap();

        struct Nothing;
        impl Consumer for Nothing {
            fn call(&mut self, _: Option<Hook>) {}
            fn tree(&mut self, _: &Tree) {}
        }
        let mut feed = Feed::default();
        let mut most = 0;
        let mut r = TraceReader::open(&p).unwrap();
        assert!(
            each_batch(&mut r, |rows, _| {
                feed.push_rows(rows, &mut Nothing);
                most = most.max(feed.alive());
            })
            .is_none()
        );
        let bound = HELD_ROWS / per as usize + 2;
        assert!(
            most <= bound,
            "{most} batches held, at most {bound} expected"
        );
        let mut out = vec![];
        feed.finish(|t, why| {
            if why.is_some() {
                out.push(t.nodes[0].rec().to_record());
            }
        });
        assert_eq!(out, waiting);

        let from_file = check_file(&p, &CheckOptions::default(), |_, _| {}).unwrap();
        let meta = TraceMeta::default();
        let rules = rules_for(&meta, None).unwrap();
        let from_records = check_records(&meta, rules, sequential(&p).0, &p.display().to_string());
        assert_eq!(
            serde_json::to_string(&from_file).unwrap(),
            serde_json::to_string(&from_records).unwrap()
        );
        std::fs::remove_dir_all(p.parent().unwrap()).ok();
    }

    /// The bytes handed with each batch (what the progress bars show) only grow, and reach
    /// the last batch's end, a few bytes short of the file's (the end-of-stream marker).
    #[test]
    fn batches_come_with_the_bytes_read_so_far() {
        let p = tmp("bytes");
        records(&p, 4);
        let len = std::fs::metadata(&p).unwrap().len();
        let mut r = TraceReader::open(&p).unwrap();
        let mut seen = vec![];
        assert!(each_batch(&mut r, |_, bytes| seen.push(bytes)).is_none());
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert!(seen[0] > 0 && seen[0] < len / 2, "{seen:?} of {len}");
        let last = *seen.last().unwrap();
        assert!(last <= len && last + 16 >= len, "{last} of {len}");
    }

    #[test]
    fn the_pipeline_reads_what_the_plain_reader_reads() {
        // Clean, cut short, and a batch whose columns do not decode.
        let clean = tmp("clean");
        records(&clean, 6);
        let cut = tmp("cut");
        let bytes = std::fs::read(&clean).unwrap();
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let bad = tmp("bad");
        let schema = Arc::new(Schema::new_with_metadata(
            vec![
                Field::new("seq", DataType::UInt64, false),
                Field::new("hook", DataType::Int64, false),
            ],
            std::collections::HashMap::from([(SCHEMA_VERSION_KEY.to_string(), "1".to_string())]),
        ));
        let mut w =
            arrow_ipc::writer::StreamWriter::try_new(std::fs::File::create(&bad).unwrap(), &schema)
                .unwrap();
        for _ in 0..3 {
            let b = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(UInt64Array::from(vec![1, 2])),
                    Arc::new(Int64Array::from(vec![3, 4])),
                ],
            )
            .unwrap();
            w.write(&b).unwrap();
        }
        w.finish().unwrap();

        for (p, batches, damaged) in [(&clean, 6, false), (&cut, 1, true), (&bad, 0, true)] {
            let (want, want_d) = sequential(p);
            let (got, got_d) = pipelined(p);
            assert_eq!(got, want, "{}", p.display());
            assert_eq!(got_d, want_d, "{}", p.display());
            assert!(
                got.len() as u64 >= batches * PER_BATCH,
                "{}: {} records",
                p.display(),
                got.len()
            );
            assert_eq!(got_d.is_some(), damaged, "{}: {got_d:?}", p.display());
        }
        let (_, d) = pipelined(&bad);
        let d = d.unwrap();
        assert_eq!((d.kind, d.batch), (pfnscope_trace::DamageKind::Corrupt, 1));
        for p in [clean, cut, bad] {
            std::fs::remove_dir_all(p.parent().unwrap()).ok();
        }
    }
}
