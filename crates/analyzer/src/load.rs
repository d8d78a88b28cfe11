//! Loading a trace into polars: read and validated batch by batch by `pfnscope_trace` (which
//! also reads older schemas into the current form and hands the loss counters out apart),
//! handed to polars through Arrow's C data interface ([`crate::arrow_ffi`]), and narrowed as it
//! goes so a 10 M-event trace stays well under 1 GiB.
//!
//! The full table has 41 columns, mostly 8-byte integers, and every string a 16-byte view: over
//! 3 GiB at 10 M rows. The compact form keeps the dozen columns the tables and plots use, turns
//! strings into categoricals (4 bytes a row), and derives `vma_kind` and `fault_type` from the
//! raw flags so those do not have to be kept.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use pfnscope_trace::{Damage, LossCounters, TraceMeta, TraceReader};
use polars::prelude::*;

use crate::{
    arrow_ffi,
    compact::{Batch, Compactor, Parts},
    error::{AnalyzerError, Result},
};

/// What to keep of each row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Columns {
    /// The analysis columns (see [`Trace::events`]).
    Compact,
    /// Every event row and every column of the trace plus `vma_kind` and `fault_type` (for
    /// export).
    Full,
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub columns: Columns,
    /// Advanced by bytes read; hidden unless the caller made it visible.
    pub progress: ProgressBar,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            columns: Columns::Compact,
            progress: ProgressBar::hidden(),
        }
    }
}

/// A trace in polars form.
#[derive(Clone, Debug)]
pub struct Trace {
    pub path: PathBuf,
    pub meta: TraceMeta,
    /// One row per event. In [`Columns::Full`] mode: every event row (the loss counters are
    /// not rows: see `counters`) and every column of the file, with `seq` and absolute ids, plus
    /// `vma_kind` and `fault_type`. Compact columns: `ts_ns`, `latency_ns`, `hook`,
    /// `driver`, `vma_kind`, `fault_type`, `comm`, `pid`, `ret`, `fault_flags`, `is_fault`
    /// (a page fault: `handle_mm_fault` or a fault tracepoint) and `vm_fault_ret` (`ret`
    /// holds VM_FAULT bits).
    pub events: DataFrame,
    /// Rows with a cache mode requested or obtained, counted per `hook`, `driver`,
    /// `cache_req`, `cache_out` (`count`).
    /// Empty in [`Columns::Full`] mode, where `events` has them.
    pub pat: DataFrame,
    /// The tracer's final loss counters per CPU.
    pub counters: LossCounters,
    /// Set when the file is not whole (cut short, truncated, corrupt): what was lost and how
    /// much was kept, as every reader of the trace says it.
    pub damage: Option<Damage>,
    /// Rows read from the file, counter rows included.
    pub rows: u64,
}

impl Trace {
    /// Loads a trace. A damaged tail is not an error (see [`Trace::damage`]); a trace that yields
    /// no events is ([`AnalyzerError::NoEvents`]).
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Trace> {
        let t = Trace::load_allow_empty(path, opts)?;
        if t.events.height() == 0 {
            return Err(AnalyzerError::NoEvents {
                path: path.to_owned(),
                damage: t.damage.map(Box::new),
            });
        }
        Ok(t)
    }

    /// Like [`Trace::load`], but a trace without events loads as empty frames.
    pub fn load_allow_empty(path: &Path, opts: &LoadOptions) -> Result<Trace> {
        // pfnscope_trace decides what is a trace: empty files, foreign files and newer schema
        // versions are refused there, with its wording; it also says what damage stopped it,
        // as it does for the replay.
        let unread = match opts.columns {
            Columns::Compact => COMPACT_UNREAD,
            Columns::Full => &[],
        };
        let mut reader = TraceReader::open_without(path, unread)?;
        let meta = reader.meta().clone();
        let pl = |what: &'static str| {
            move |err| AnalyzerError::Polars {
                path: path.to_owned(),
                what,
                err,
            }
        };
        opts.progress
            .set_length(std::fs::metadata(path).map_or(0, |m| m.len()));
        let mut compactor =
            Compactor::new(meta.vm_bits(false)).map_err(pl("preparing categories"))?;
        let mut parts: Vec<Parts> = Vec::new();
        let mut failed = None;
        // Reading and decompressing the next batch overlaps with compacting this one.
        let damage = reader.pipelined(TraceReader::next_arrow, |rb, bytes| {
            opts.progress.set_position(bytes);
            if failed.is_some() {
                return;
            }
            let part = arrow_ffi::import(&rb).and_then(|(fields, arrays)| {
                let b = Batch::new(&fields, &arrays, rb.num_rows());
                match opts.columns {
                    Columns::Compact => compactor.compact(&b),
                    Columns::Full => full(&mut compactor, &b, fields.clone(), arrays.clone()),
                }
            });
            match part {
                Ok(p) => parts.push(p),
                Err(e) => failed = Some(e),
            }
        });
        if let Some(e) = failed {
            return Err(pl("narrowing a batch")(e));
        }
        opts.progress.finish_and_clear();

        let (events, pat) = if parts.is_empty() {
            let p = match opts.columns {
                Columns::Compact => compactor.compact(&Batch::empty()),
                Columns::Full => full(&mut compactor, &Batch::empty(), vec![], vec![]),
            }
            .map_err(pl("narrowing"))?;
            (p.events, p.pat)
        } else {
            let mut events = Vec::with_capacity(parts.len());
            let mut pat = Vec::with_capacity(parts.len());
            for p in parts {
                events.push(p.events);
                pat.push(p.pat);
            }
            (
                stack(events).map_err(pl("joining batches"))?,
                stack(pat).map_err(pl("joining batches"))?,
            )
        };
        let events = if opts.columns == Columns::Compact {
            one_row_per_fault(events).map_err(pl("choosing the fault rows"))?
        } else {
            events
        };
        Ok(Trace {
            path: path.to_owned(),
            meta,
            events,
            pat,
            counters: reader.counters().clone(),
            damage,
            rows: reader.rows_read(),
        })
    }

    /// Whether any event has a latency (tracepoint-mode traces have none).
    pub fn has_latency(&self) -> bool {
        self.events
            .column("latency_ns")
            .map(|c| c.len() > c.null_count())
            .unwrap_or(false)
    }

    /// Whether any page fault (see [`pfnscope_abi::Hook::is_fault`]) has a latency.
    pub fn has_fault_latency(&self) -> bool {
        let (Ok(f), Ok(l)) = (
            self.events.column("is_fault"),
            self.events.column("latency_ns"),
        ) else {
            return false;
        };
        let (Ok(f), Ok(l)) = (f.bool(), l.u64()) else {
            return false;
        };
        f.iter()
            .zip(l.iter())
            .any(|(f, l)| f == Some(true) && l.is_some())
    }

    /// First and last `ts_ns` of the events.
    pub fn time_range(&self) -> Option<(u64, u64)> {
        let ts = self.events.column("ts_ns").ok()?.u64().ok()?;
        Some((ts.min()?, ts.max()?))
    }
}

/// The columns the compact form is not made from, left compressed: the compact form reads
/// `ts_ns`, `latency_ns`, `pid`, `comm`, `hook`, `driver`, `file_id`, `vma_flags`,
/// `fault_flags`, `error_code`, `ret`, `cache_req` and `cache_out`.
const COMPACT_UNREAD: &[&str] = &[
    "id",
    "parent",
    "cpu",
    "tid",
    "mode",
    "address",
    "vma_id",
    "vma_start",
    "vma_end",
    "vma_pgoff",
    "vma_prot",
    "vma_cache",
    "mm_id",
    "pte",
    "page",
    "pfn",
    "size",
    "prot",
    "prot_out",
    "write",
    "ino",
    "index",
    "dev",
    "child_pid",
    "dropped",
    "unpaired",
    "read_failed",
    "pfn_flags",
];

fn no_pat() -> DataFrame {
    DataFrame::empty_with_schema(&Schema::from_iter([Field::new(
        "hook".into(),
        DataType::String,
    )]))
}

/// Every column of the batch (`fields` and `arrays`, the rows of `b`, with `seq` and the ids
/// as the trace crate writes them out) plus `vma_kind` and `fault_type`.
fn full(
    compactor: &mut Compactor,
    b: &Batch,
    fields: Vec<polars_arrow::datatypes::Field>,
    arrays: Vec<Box<dyn polars_arrow::array::Array>>,
) -> PolarsResult<Parts> {
    let schema = fields.into_iter().map(|f| (f.name.clone(), f)).collect();
    let rb = polars_arrow::record_batch::RecordBatchT::try_new(b.height, Arc::new(schema), arrays)?;
    let mut df = DataFrame::from(rb);
    let (kind, ftype) = compactor.labels(b);
    df.hstack_mut(&[kind, ftype])?;
    Ok(Parts {
        events: df,
        pat: no_pat(),
    })
}

/// Where `handle_mm_fault` was probed, the fault tracepoints (if also recorded) see the same
/// faults again: only the probed calls count as faults then.
fn one_row_per_fault(events: DataFrame) -> PolarsResult<DataFrame> {
    let probed = col("hook").eq(lit("handle_mm_fault"));
    let any = events
        .clone()
        .lazy()
        .select([probed.clone().any(true)])
        .collect()?;
    if any.column("hook")?.bool()?.get(0) != Some(true) {
        return Ok(events);
    }
    events
        .lazy()
        .with_column(col("is_fault").and(probed).alias("is_fault"))
        .collect()
}

fn stack(dfs: Vec<DataFrame>) -> PolarsResult<DataFrame> {
    let mut it = dfs.into_iter();
    let mut acc = it.next().unwrap_or_default();
    for df in it {
        acc.vstack_mut_owned(df)?;
    }
    // No rechunk: it would copy every column once more (2x peak memory at 10 M rows), and the
    // queries and the plot loops read chunked columns as they are.
    Ok(acc)
}
