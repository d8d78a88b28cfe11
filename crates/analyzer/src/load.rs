//! Loading a trace into polars: validated by `pfnscope_trace`, read batch by batch with polars'
//! own IPC reader, and narrowed as it goes so a 10 M-event trace stays well under 1 GiB.
//!
//! The full table has 41 columns, mostly 8-byte integers, and every string a 16-byte view: over
//! 3 GiB at 10 M rows. The compact form keeps the dozen columns the tables and plots use, turns
//! strings into categoricals (4 bytes a row), and derives `vma_kind` and `fault_type` from the
//! raw flags so those do not have to be kept.

use std::{
    fs::File,
    io::{self, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use indicatif::ProgressBar;
use pfnscope_trace::{CheckedStream, Damage, ReadSoFar, TraceMeta, TraceReader};
use polars::prelude::*;
use polars_arrow::io::ipc::read::{StreamReader, StreamState, read_stream_metadata};

use crate::{
    compact::{Batch, Compactor, Parts},
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
    /// Rows with a cache mode requested or obtained, counted per `hook`, `driver`,
    /// `cache_req`, `cache_out` (`count`).
    /// Empty in [`Columns::Full`] mode, where `events` has them.
    pub pat: DataFrame,
    /// Final tracer counters per CPU: `cpu`, `dropped`, `unpaired`, `read_failed`.
    pub counters: DataFrame,
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
        // versions are refused there, with its wording.
        let (meta, checked) = {
            let r = TraceReader::open(path)?;
            (r.meta().clone(), r.checks_checksums())
        };
        let pl = |what: &'static str| {
            move |err| AnalyzerError::Polars {
                path: path.to_owned(),
                what,
                err,
            }
        };
        let file = File::open(path).map_err(|err| {
            AnalyzerError::Trace(pfnscope_trace::TraceError::Open {
                path: path.to_owned(),
                err,
            })
        })?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        opts.progress.set_length(len);
        // Every message is checked before polars sees it: its IPC reader trusts claimed lengths.
        // The checks also classify what stops the stream, so that this reader and the replay's
        // agree on the damage (see `pfnscope_trace::ReadSoFar`).
        let mut input = CheckedStream::new(Progressed {
            inner: BufReader::with_capacity(1 << 20, file),
            pos: 0,
            bar: opts.progress.clone(),
        });
        let md = read_stream_metadata(&mut input).map_err(pl("reading the schema"))?;
        let bits = meta.vm_bits(false);

        let names: Vec<String> = md.schema.iter_names().map(|n| n.to_string()).collect();
        // Without checksums, damage in a column shows only when the column is decompressed:
        // read them all, as the replay then does, so that both see the same damage.
        let projection: Vec<usize> = match opts.columns {
            Columns::Compact if checked => names
                .iter()
                .enumerate()
                .filter(|(_, n)| COMPACT_INPUT.contains(&n.as_str()))
                .map(|(i, _)| i)
                .collect(),
            _ => (0..names.len()).collect(),
        };
        let batch_names: Vec<String> = projection.iter().map(|&i| names[i].clone()).collect();
        let empty_input = DataFrame::empty_with_schema(&Schema::from_arrow_schema(&md.schema));
        let mut compactor = Compactor::new(bits).map_err(pl("preparing categories"))?;

        let mut parts: Vec<Parts> = Vec::new();
        let mut read = ReadSoFar::new(path, input.offset(), Some(len));
        let mut error = None;
        let at = AtomicU64::new(input.offset());
        // Reading and decompressing the next batch overlaps with compacting this one.
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = std::sync::mpsc::sync_channel(2);
            let tracked = Tracked {
                stream: &mut input,
                at: &at,
            };
            let mut reader = StreamReader::new(tracked, md, Some(projection));
            let at = &at;
            scope.spawn(move || {
                loop {
                    // A panic in the IPC reader on crafted bytes is a corrupt batch.
                    let item = match pfnscope_trace::guard_panics(|| reader.next()) {
                        Ok(Some(item)) => item,
                        Ok(None) => break,
                        Err(e) => Err(PolarsError::ComputeError(e.into())),
                    };
                    let end = !matches!(item, Ok(StreamState::Some(_)));
                    if tx.send((item, at.load(Ordering::Relaxed))).is_err() || end {
                        break;
                    }
                }
            });
            for (item, end) in rx {
                match item {
                    // The end of the file between two batches; the end-of-stream marker ends
                    // the channel. Which one it was is the verdict's business.
                    Ok(StreamState::Waiting) => break,
                    Ok(StreamState::Some(rb)) => {
                        let first_seq = read.records;
                        read.batch(rb.height() as u64, end);
                        let b = Batch::new(&batch_names, &rb);
                        let part = match opts.columns {
                            Columns::Compact => compactor.compact(&b),
                            Columns::Full => {
                                full(&mut compactor, &b, DataFrame::from(rb.clone()), first_seq)
                            }
                        };
                        parts.push(part.map_err(pl("narrowing a batch"))?);
                    }
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
            Ok(())
        })?;
        let damage = read.verdict(&input, error);
        let rows = read.records;
        opts.progress.finish_and_clear();

        let (events, pat, counters) = if parts.is_empty() {
            let p = match opts.columns {
                Columns::Compact => compactor.compact(&Batch::empty()),
                Columns::Full => full(&mut compactor, &Batch::empty(), empty_input, 0),
            }
            .map_err(pl("narrowing"))?;
            (p.events, p.pat, p.counters)
        } else {
            let mut events = Vec::with_capacity(parts.len());
            let mut pat = Vec::with_capacity(parts.len());
            let mut counters = Vec::with_capacity(parts.len());
            for p in parts {
                events.push(p.events);
                pat.push(p.pat);
                counters.push(p.counters);
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

/// The columns the compact form is made from.
const COMPACT_INPUT: &[&str] = &[
    "ts_ns",
    "latency_ns",
    "cpu",
    "pid",
    "comm",
    "hook",
    "driver",
    "file_id",
    "vma_flags",
    "fault_flags",
    "error_code",
    "ret",
    "cache_req",
    "cache_out",
    "dropped",
    "unpaired",
    "read_failed",
];

fn no_pat() -> DataFrame {
    DataFrame::empty_with_schema(&Schema::from_iter([Field::new(
        "hook".into(),
        DataType::String,
    )]))
}

/// Every column of the batch (`df`, the same rows as `b`, the first of them row `first_seq` of
/// the file) plus `vma_kind` and `fault_type`; the counters apart as well.
fn full(
    compactor: &mut Compactor,
    b: &Batch,
    mut df: DataFrame,
    first_seq: u64,
) -> PolarsResult<Parts> {
    // Schema 3 stores no `seq`: it is the row's position in the file, which is what replay
    // reports cite, so an export carries it as schema 1 and 2 traces did.
    if df.column("seq").is_err() {
        let seq: Vec<u64> = (first_seq..first_seq + df.height() as u64).collect();
        df.insert_column(0, Column::new("seq".into(), seq))?;
    }
    // Schema 4 stores each id as the difference from the row before it in the batch (Int64,
    // wrapping); an export carries the ids themselves, as schema 1 to 3 stored them.
    if let Ok(deltas) = df.column("id").and_then(|c| c.i64().cloned()) {
        let ids = pfnscope_trace::ids_from_deltas(deltas.iter().map(|d| d.unwrap_or(0)));
        df.replace("id", Column::new("id".into(), ids))?;
    }
    let (kind, ftype) = compactor.labels(b);
    let is_counter = compactor.counter_mask(b)?;
    df.hstack_mut(&[kind, ftype])?;
    let counters = df
        .filter(&is_counter)?
        .lazy()
        .select(["cpu", "dropped", "unpaired", "read_failed"].map(|c| {
            col(c).cast(if c == "cpu" {
                DataType::UInt32
            } else {
                DataType::UInt64
            })
        }))
        .collect()?;
    Ok(Parts {
        events: df,
        pat: no_pat(),
        counters,
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

/// The stream polars reads, publishing how far it got to the thread that compacts batches
/// (polars keeps its reader to itself).
struct Tracked<'a, R> {
    stream: &'a mut CheckedStream<R>,
    at: &'a AtomicU64,
}

impl<R: Read> Read for Tracked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.at.store(self.stream.offset(), Ordering::Relaxed);
        Ok(n)
    }
}

impl<R: Read> Seek for Tracked<'_, R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let p = self.stream.seek(to)?;
        self.at.store(p, Ordering::Relaxed);
        Ok(p)
    }
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
