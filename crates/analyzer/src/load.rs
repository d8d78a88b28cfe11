//! Loading a trace into polars: validated by `pfnscope_trace`, read batch by batch with polars'
//! own IPC reader, and narrowed as it goes so a 10 M-event trace stays well under 1 GiB.
//!
//! The full table has 41 columns, mostly 8-byte integers, and every string a 16-byte view: over
//! 3 GiB at 10 M rows. The compact form keeps the dozen columns the tables and plots use, turns
//! strings into categoricals (4 bytes a row), and derives `vma_kind` and `fault_type` from the
//! raw flags so those do not have to be kept.

use std::{
    fs::File,
    io::{self, BufReader, Read},
    path::{Path, PathBuf},
};

use indicatif::ProgressBar;
use pfnscope_trace::{COUNTERS_HOOK, TraceMeta, TraceReader};
use polars::prelude::*;
use polars_arrow::io::ipc::read::{StreamReader, StreamState, read_stream_metadata};

use crate::{
    bits::{
        FAULT_FLAG_INSTRUCTION, FAULT_FLAG_UNSHARE, FAULT_FLAG_USER, FAULT_FLAG_WRITE, FAULT_HOOKS,
        VM_FAULT_HOOKS, VmFlagBits, X86_PF_INSTR, X86_PF_USER, X86_PF_WRITE,
    },
    error::{AnalyzerError, Result},
};

/// What to keep of each row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Columns {
    /// The analysis columns (see [`Trace::events`]).
    Compact,
    /// Every row and column of the trace plus `vma_kind` and `fault_type` (for export).
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
    /// One row per event. In [`Columns::Full`] mode: every row and column of the file plus
    /// `vma_kind` and `fault_type`. Compact (counter rows removed) columns: `ts_ns`, `latency_ns`, `hook`,
    /// `driver`, `vma_kind`, `fault_type`, `comm`, `pid`, `ret`, `fault_flags`, `is_fault`
    /// (a page fault: `handle_mm_fault` or a fault tracepoint) and `vm_fault_ret` (`ret`
    /// holds VM_FAULT bits).
    pub events: DataFrame,
    /// Rows with a cache mode requested or obtained: `hook`, `driver`, `cache_req`, `cache_out`.
    /// Empty in [`Columns::Full`] mode, where `events` has them.
    pub pat: DataFrame,
    /// Final tracer counters per CPU: `cpu`, `dropped`, `unpaired`, `read_failed`.
    pub counters: DataFrame,
    /// Set when the file is damaged: what was lost and how much was kept.
    pub damage: Option<String>,
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
                damage: t.damage,
            });
        }
        Ok(t)
    }

    /// Like [`Trace::load`], but a trace without events loads as empty frames.
    pub fn load_allow_empty(path: &Path, opts: &LoadOptions) -> Result<Trace> {
        // pfnscope_trace decides what is a trace: empty files, foreign files and newer schema
        // versions are refused there, with its wording.
        let meta = TraceReader::open(path)?.meta().clone();
        let pl = |what: &'static str| {
            move |source| AnalyzerError::Polars {
                path: path.to_owned(),
                what,
                source,
            }
        };
        let file = File::open(path).map_err(|source| {
            AnalyzerError::Trace(pfnscope_trace::TraceError::Open {
                path: path.to_owned(),
                source,
            })
        })?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        opts.progress.set_length(len);
        // Every message is checked before polars sees it: its IPC reader trusts claimed lengths.
        let mut input = pfnscope_trace::CheckedStream::new(Progressed {
            inner: BufReader::with_capacity(1 << 20, file),
            pos: 0,
            bar: opts.progress.clone(),
        });
        let md = read_stream_metadata(&mut input).map_err(pl("reading the schema"))?;
        let bits = VmFlagBits::from_meta(&meta.vm_flag_bits, false);

        let names: Vec<String> = md.schema.iter_names().map(|n| n.to_string()).collect();
        let projection: Vec<usize> = match opts.columns {
            Columns::Compact => names
                .iter()
                .enumerate()
                .filter(|(_, n)| COMPACT_INPUT.iter().any(|(w, _)| w == n))
                .map(|(i, _)| i)
                .collect(),
            Columns::Full => (0..names.len()).collect(),
        };
        // Columns a writer of an older (same-version) schema did not have read as null.
        let missing: Vec<Expr> = COMPACT_INPUT
            .iter()
            .filter(|(n, _)| !names.iter().any(|x| x == n))
            .map(|(n, d)| lit(NULL).cast(d.clone()).alias(*n))
            .collect();
        let empty_input = DataFrame::empty_with_schema(&Schema::from_arrow_schema(&md.schema))
            .select(projection.iter().map(|&i| names[i].as_str()))
            .map_err(pl("selecting columns"))?;

        let mut reader = StreamReader::new(&mut input, md, Some(projection));
        let mut parts: Vec<Parts> = Vec::new();
        let mut rows = 0u64;
        let mut damage = None;
        loop {
            let batch = parts.len() + 1;
            match reader.next() {
                // The end-of-stream marker, or the end of the file between two batches (what a
                // SIGKILLed recording leaves): everything was read.
                None | Some(Ok(StreamState::Waiting)) => break,
                Some(Ok(StreamState::Some(b))) => {
                    let df = DataFrame::from(b);
                    rows += df.height() as u64;
                    parts.push(
                        narrow(df, &missing, bits, opts.columns)
                            .map_err(pl("narrowing a batch"))?,
                    );
                }
                Some(Err(e)) => {
                    damage = Some(format!(
                        "{}: cannot read batch {batch} ({e}); kept the {rows} records of the {} complete batches before it (a recording that was killed or ran out of disk ends this way)",
                        path.display(),
                        batch - 1
                    ));
                    break;
                }
            }
        }
        drop(reader);
        opts.progress.finish_and_clear();

        let (events, pat, counters) = if parts.is_empty() {
            narrow(empty_input, &missing, bits, opts.columns).map_err(pl("narrowing"))?
        } else {
            let mut events = Vec::with_capacity(parts.len());
            let mut pat = Vec::with_capacity(parts.len());
            let mut counters = Vec::with_capacity(parts.len());
            for (e, p, c) in parts {
                events.push(e);
                pat.push(p);
                counters.push(c);
            }
            (
                stack(events).map_err(pl("joining batches"))?,
                stack(pat).map_err(pl("joining batches"))?,
                stack(counters).map_err(pl("joining batches"))?,
            )
        };
        let events = if opts.columns == Columns::Compact {
            one_row_per_fault(events).map_err(pl("choosing the fault rows"))?
        } else {
            events
        };
        let counters = counters
            .lazy()
            .group_by_stable([col("cpu")])
            .agg([
                col("dropped").last(),
                col("unpaired").last(),
                col("read_failed").last(),
            ])
            .sort(["cpu"], Default::default())
            .collect()
            .map_err(pl("reading counters"))?;
        Ok(Trace {
            path: path.to_owned(),
            meta,
            events,
            pat,
            counters,
            damage,
            rows,
        })
    }

    /// Whether any event has a latency (tracepoint-mode traces have none).
    pub fn has_latency(&self) -> bool {
        self.events
            .column("latency_ns")
            .map(|c| c.len() > c.null_count())
            .unwrap_or(false)
    }

    /// Whether any page fault (see [`crate::bits::FAULT_HOOKS`]) has a latency.
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

/// The columns the compact form is made from.
const COMPACT_INPUT: &[(&str, DataType)] = &[
    ("ts_ns", DataType::UInt64),
    ("latency_ns", DataType::UInt64),
    ("cpu", DataType::UInt32),
    ("pid", DataType::UInt32),
    ("comm", DataType::String),
    ("hook", DataType::String),
    ("driver", DataType::String),
    ("file_id", DataType::UInt32),
    ("vma_flags", DataType::UInt64),
    ("fault_flags", DataType::UInt32),
    ("error_code", DataType::UInt32),
    ("ret", DataType::Int64),
    ("cache_req", DataType::String),
    ("cache_out", DataType::String),
    ("dropped", DataType::UInt64),
    ("unpaired", DataType::UInt64),
    ("read_failed", DataType::UInt64),
];

type Parts = (DataFrame, DataFrame, DataFrame);

fn categorical() -> DataType {
    DataType::from_categories(Categories::global())
}

fn cat(name: &str) -> Expr {
    col(name).cast(categorical())
}

fn any_of(name: &str, values: &[&str]) -> Expr {
    values
        .iter()
        .map(|v| col(name).eq(lit(*v)))
        .reduce(|a, b| a.or(b))
        .unwrap_or(lit(false))
}

/// Labels rows by the first matching (condition, label) pair; rows matching none get null.
fn labels(cases: Vec<(Expr, &'static str)>) -> Expr {
    cases
        .into_iter()
        .rev()
        .fold(lit(NULL).cast(DataType::String), |rest, (c, l)| {
            when(c).then(lit(l)).otherwise(rest)
        })
}

fn has(name: &str, bit: u64, dtype: DataType) -> Expr {
    col(name)
        .and(lit(bit).cast(dtype.clone()))
        .neq(lit(0u64).cast(dtype))
}

/// anonymous (no vm_ops, no file), file, pfnmap, mixedmap or io; `special` for a vma with
/// vm_ops but neither a file nor a PFN flag (`_install_special_mapping`); null without a vma.
pub(crate) fn vma_kind_expr(bits: VmFlagBits) -> Expr {
    let f = |b| has("vma_flags", b, DataType::UInt64);
    // PFNMAP before IO: remap_pfn_range sets both, and the PFN nature is what matters here.
    let kind = labels(vec![
        (f(bits.pfnmap), "pfnmap"),
        (f(bits.mixedmap), "mixedmap"),
        (f(bits.io), "io"),
        (col("file_id").is_not_null(), "file"),
        (col("driver").is_null(), "anonymous"),
        (lit(true), "special"),
    ]);
    when(col("vma_flags").is_null())
        .then(lit(NULL).cast(DataType::String))
        .otherwise(kind)
        .alias("vma_kind")
}

/// read / write / exec (and unshare), `user` or `kernel`: from `fault_flags` for
/// handle_mm_fault, from the x86 error code for the fault tracepoints.
pub(crate) fn fault_type_expr() -> Expr {
    let ff = |b: u32| has("fault_flags", b as u64, DataType::UInt32);
    let ec = |b: u32| has("error_code", b as u64, DataType::UInt32);
    let hmf = col("fault_flags").is_not_null();
    let tp = col("error_code").is_not_null();
    labels(vec![
        (
            hmf.clone()
                .and(ff(FAULT_FLAG_INSTRUCTION))
                .and(ff(FAULT_FLAG_USER)),
            "user exec",
        ),
        (hmf.clone().and(ff(FAULT_FLAG_INSTRUCTION)), "kernel exec"),
        (
            hmf.clone()
                .and(ff(FAULT_FLAG_UNSHARE))
                .and(ff(FAULT_FLAG_USER)),
            "user unshare",
        ),
        (hmf.clone().and(ff(FAULT_FLAG_UNSHARE)), "kernel unshare"),
        (
            hmf.clone()
                .and(ff(FAULT_FLAG_WRITE))
                .and(ff(FAULT_FLAG_USER)),
            "user write",
        ),
        (hmf.clone().and(ff(FAULT_FLAG_WRITE)), "kernel write"),
        (hmf.clone().and(ff(FAULT_FLAG_USER)), "user read"),
        (hmf, "kernel read"),
        (
            tp.clone().and(ec(X86_PF_INSTR)).and(ec(X86_PF_USER)),
            "user exec",
        ),
        (tp.clone().and(ec(X86_PF_INSTR)), "kernel exec"),
        (
            tp.clone().and(ec(X86_PF_WRITE)).and(ec(X86_PF_USER)),
            "user write",
        ),
        (tp.clone().and(ec(X86_PF_WRITE)), "kernel write"),
        (tp.clone().and(ec(X86_PF_USER)), "user read"),
        (tp, "kernel read"),
    ])
    .alias("fault_type")
}

fn narrow(
    df: DataFrame,
    missing: &[Expr],
    bits: VmFlagBits,
    columns: Columns,
) -> PolarsResult<Parts> {
    let mut lf = df.lazy();
    if !missing.is_empty() {
        lf = lf.with_columns(missing);
    }
    let lf = lf.with_columns([vma_kind_expr(bits), fault_type_expr()]);
    let is_counter = col("hook").eq(lit(COUNTERS_HOOK));
    let counters = lf
        .clone()
        .filter(is_counter.clone())
        .select([
            col("cpu"),
            col("dropped"),
            col("unpaired"),
            col("read_failed"),
        ])
        .collect()?;
    if columns == Columns::Full {
        let no_pat = DataFrame::empty_with_schema(&Schema::from_iter([Field::new(
            "hook".into(),
            DataType::String,
        )]));
        return Ok((lf.collect()?, no_pat, counters));
    }
    let ev = lf.filter(is_counter.not());
    let pat = ev
        .clone()
        .filter(
            col("cache_req")
                .is_not_null()
                .or(col("cache_out").is_not_null()),
        )
        .select([
            cat("hook"),
            cat("driver"),
            cat("cache_req"),
            cat("cache_out"),
        ])
        .collect()?;
    let events = ev
        .select([
            col("ts_ns"),
            col("latency_ns"),
            cat("hook"),
            cat("driver"),
            cat("vma_kind"),
            cat("fault_type"),
            cat("comm"),
            col("pid"),
            col("ret"),
            col("fault_flags"),
            any_of("hook", FAULT_HOOKS).alias("is_fault"),
            any_of("hook", VM_FAULT_HOOKS).alias("vm_fault_ret"),
        ])
        .collect()?;
    Ok((events, pat, counters))
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

/// Counts bytes for the progress bar.
struct Progressed<R> {
    inner: R,
    pos: u64,
    bar: ProgressBar,
}

impl<R: Read> Read for Progressed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        self.bar.set_position(self.pos);
        Ok(n)
    }
}
