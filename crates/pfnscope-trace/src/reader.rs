//! Reading a trace back, including damaged ones: everything before the damage is returned.

use std::{
    fs::File,
    io::{self, BufReader, Read},
    path::{Path, PathBuf},
};

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;

use crate::{
    checked::CheckedStream,
    columns::{Record, Rows, compat},
    counters::{self, COUNTER_COLUMNS, LossCounters},
    damage::{Damage, ReadSoFar, one_line},
    guard::guard_panics,
    meta::{CURRENT_SCHEMA_VERSION, META_KEY, SCHEMA_VERSION_KEY, TraceMeta},
};

// An I/O or polars error is part of the message, so it is a field named `err`, not `source`:
// front ends print the whole chain on one line, and a source would say it twice.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot open trace {path}: {err}")]
    Open { path: PathBuf, err: io::Error },
    #[error(
        "{path} is empty: the recording wrote nothing (was it killed before start-up finished?)"
    )]
    Empty { path: PathBuf },
    #[error("{path} is a directory: give the path of a trace file (.arrows)")]
    Directory { path: PathBuf },
    #[error(
        "{path} is not a pfnscope trace ({why}); traces are Arrow IPC streams written by `tracer record`"
    )]
    NotATrace { path: PathBuf, why: String },
    #[error(
        "{path} uses trace schema version {found}, this build reads up to {supported}: upgrade pfnscope"
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
}

/// A trace in memory.
#[derive(Debug, Default)]
pub struct Trace {
    pub meta: TraceMeta,
    /// The events (the loss counters' rows are in `counters`).
    pub records: Vec<Record>,
    /// The tracer's final loss counters per CPU.
    pub counters: LossCounters,
    /// Set when the file is not whole (cut short, truncated or corrupt): what went wrong and
    /// how much was recovered. `records` holds everything before the damage.
    pub damage: Option<Damage>,
}

impl Trace {
    /// The events: every record (the reader hands the counters out apart).
    pub fn events(&self) -> impl Iterator<Item = &Record> {
        self.records.iter()
    }
}

/// Streams batches of records; for traces too large to hold at once.
///
/// The IPC framing is read here, not by arrow: every message is checked (metadata verified,
/// body length bounded, compressed-buffer length prefixes plausible) before arrow decodes it, so
/// a corrupt file gives an error, never an abort on an absurd allocation.
pub struct TraceReader<R: Read> {
    inner: StreamReader<CheckedStream<R>>,
    meta: TraceMeta,
    read: ReadSoFar,
    done: bool,
    unread: &'static [&'static str],
    counters: LossCounters,
}

impl TraceReader<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        Self::open_without(path, &[])
    }

    /// [`Self::open`], leaving the columns named in `unread` compressed: they read as absent.
    /// For a consumer that never reads them (Zstandard decompression is a third of a replay),
    /// and whose tests run debug builds: there, [`Rows`] refuses to read an unread column.
    pub fn open_without(path: &Path, unread: &'static [&'static str]) -> Result<Self, TraceError> {
        let file = File::open(path).map_err(|err| TraceError::Open {
            path: path.to_owned(),
            err,
        })?;
        let m = file.metadata().ok();
        if m.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(TraceError::Directory {
                path: path.to_owned(),
            });
        }
        let len = m.map_or(0, |m| m.len());
        if len == 0 {
            return Err(TraceError::Empty {
                path: path.to_owned(),
            });
        }
        let mut r = TraceReader::from_reader_without(BufReader::new(file), path, unread)?;
        r.read.file_bytes = Some(len);
        Ok(r)
    }
}

impl<'a> TraceReader<&'a [u8]> {
    /// Reads a trace held in memory (`label` names it in messages).
    pub fn from_bytes(bytes: &'a [u8], label: &Path) -> Result<Self, TraceError> {
        if bytes.is_empty() {
            return Err(TraceError::Empty {
                path: label.to_owned(),
            });
        }
        let mut r = TraceReader::from_reader(bytes, label)?;
        r.read.file_bytes = Some(bytes.len() as u64);
        Ok(r)
    }
}

impl<R: Read> TraceReader<R> {
    /// Opens a stream from any reader: checks the Arrow stream header, the schema version and
    /// the metadata before any batch is read.
    pub fn from_reader(src: R, label: &Path) -> Result<Self, TraceError> {
        Self::from_reader_without(src, label, &[])
    }

    /// [`Self::from_reader`] leaving columns unread, as [`TraceReader::open_without`].
    pub fn from_reader_without(
        src: R,
        label: &Path,
        unread: &'static [&'static str],
    ) -> Result<Self, TraceError> {
        if let Some(c) = unread.iter().find(|c| !crate::COLUMNS.contains(c)) {
            panic!("no trace column is named `{c}`");
        }
        let not_a_trace = |why: String| TraceError::NotATrace {
            path: label.to_owned(),
            why: one_line(&why),
        };
        let inner = guard_panics(|| {
            let mut stream = CheckedStream::new(src);
            // Arrow skips the buffers of a column outside the projection, compressed. Only where
            // checksums cover those buffers: otherwise damage in them would go unseen by this
            // reader and be found by one that decodes them.
            let projection = match unread {
                [] => None,
                _ => stream
                    .peek_schema()
                    .filter(|_| stream.checks_checksums())
                    .map(|s| {
                        (0..s.fields().len())
                            .filter(|&i| {
                                let name = s.field(i).name().as_str();
                                !unread.contains(&name) || COUNTER_COLUMNS.contains(&name)
                            })
                            .collect()
                    }),
            };
            StreamReader::try_new(stream, projection).map(|r| {
                // SAFETY: arrow's own validation of every array (3.4% of a `replay check`,
                // mostly its pass over every dictionary key) is left out. Its batches reach
                // nothing but [`Rows::new`] (see `next_checked`): both read
                // them only through safe, bounds-checked accessors, and check themselves what
                // they rely on (column lengths, dictionary keys and values, plain strings).
                unsafe { r.with_skip_validation(true) }
            })
        })
        .map_err(|e| not_a_trace(format!("unreadable schema: {e}")))?
        .map_err(|e| {
            let e = e.to_string();
            not_a_trace(if e.contains("no Arrow IPC stream header") {
                "no Arrow IPC stream header".into()
            } else {
                format!("unreadable schema: {e}")
            })
        })?;
        let schema = inner.schema();
        let md = schema.metadata();
        let version = md.get(SCHEMA_VERSION_KEY).ok_or_else(|| {
            not_a_trace(format!(
                "an Arrow stream without the `{SCHEMA_VERSION_KEY}` key"
            ))
        })?;
        let found: u32 = version
            .parse()
            .map_err(|_| not_a_trace(format!("schema version `{version}` is not a number")))?;
        if found > CURRENT_SCHEMA_VERSION {
            return Err(TraceError::NewerSchema {
                path: label.to_owned(),
                found,
                supported: CURRENT_SCHEMA_VERSION,
            });
        }
        let meta = match md.get(META_KEY) {
            Some(json) => serde_json::from_str(json)
                .map_err(|e| not_a_trace(format!("metadata is not valid: {e}")))?,
            None => TraceMeta::default(),
        };
        Ok(TraceReader {
            read: ReadSoFar::new(label, inner.get_ref().offset(), None),
            inner,
            meta,
            done: false,
            unread,
            counters: LossCounters::default(),
        })
    }

    pub fn meta(&self) -> &TraceMeta {
        &self.meta
    }

    /// The tracer's loss counters per CPU, as of the last batch read: the final ones once
    /// every batch is read. The reader takes them out of the batches it hands on
    /// ([`crate::counters`]).
    pub fn counters(&self) -> &LossCounters {
        &self.counters
    }

    /// Whether the trace's batches are checked against checksums as they are read.
    pub fn checks_checksums(&self) -> bool {
        self.inner.get_ref().checks_checksums()
    }

    /// The next batch of records: `Ok(None)` at the end-of-stream marker, `Err(damage)` when
    /// the rest of the file cannot be read or the file stops without the marker (the damage
    /// says what and how much came before).
    pub fn next_batch(&mut self) -> Result<Option<Vec<Record>>, Damage> {
        self.next_checked(|b, first| {
            Rows::new(b, first).map(|r| (0..r.len()).map(|i| r.record(i)).collect())
        })
    }

    /// The next batch checked and kept for reading row by row (see [`Rows`]), where
    /// [`Self::next_batch`] builds a record of every row; damage as for `next_batch`.
    pub fn next_rows(&mut self) -> Result<Option<Rows>, Damage> {
        let unread = self.unread;
        self.next_checked(|b, first| {
            Rows::new(b, first).map(|mut r| {
                r.leave_unread(unread);
                r
            })
        })
    }

    /// The next batch as an Arrow batch in the current form, validated, with `seq` and absolute
    /// ids written out (see `compat::normalize`): for a reader that takes Arrow arrays as they
    /// are (the analyzer hands them to polars). Damage as for [`Self::next_batch`].
    pub fn next_arrow(&mut self) -> Result<Option<RecordBatch>, Damage> {
        self.next_checked(compat::normalize)
    }

    /// Rows of the file read so far, counter rows included.
    pub fn rows_read(&self) -> u64 {
        self.read.records
    }

    /// Bytes of the file read so far: what a progress bar can show before the number of rows
    /// is known.
    pub fn bytes_read(&self) -> u64 {
        self.inner.get_ref().offset()
    }

    /// The next batch as arrow decoded it, turned by `check` into what the caller reads. Arrow
    /// has not validated it (see [`TraceReader::from_reader`]): `check` must check what it
    /// uses, and a panic in it on a crafted batch is only a corrupt batch.
    fn next_checked<T>(
        &mut self,
        check: impl FnOnce(&RecordBatch, u64) -> Result<T, String>,
    ) -> Result<Option<T>, Damage> {
        if self.done {
            return Ok(None);
        }
        let next = guard_panics(|| self.inner.next())
            .unwrap_or_else(|e| Some(Err(arrow_schema::ArrowError::IpcError(e))));
        let decoded = match next {
            None => None,
            Some(Ok(batch)) => {
                let (first, rows) = (self.read.records, batch.num_rows() as u64);
                let counters = &mut self.counters;
                Some(
                    guard_panics(|| {
                        let (batch, found) = counters::split(batch, first)?;
                        let out = check(&batch, first)?;
                        found.into_iter().for_each(|c| counters.update(c));
                        Ok(out)
                    })
                    .and_then(|r| r)
                    .map(|out| (out, rows)),
                )
            }
            Some(Err(e)) => Some(Err(e.to_string())),
        };
        let error = match decoded {
            Some(Ok((out, rows))) => {
                self.read.batch(rows, self.inner.get_ref().offset());
                return Ok(Some(out));
            }
            Some(Err(e)) => Some(e),
            None => None,
        };
        self.done = true;
        match self.read.verdict(self.inner.get_ref().stopped(), error) {
            None => Ok(None),
            Some(d) => Err(d),
        }
    }
}

impl<R: Read + Send> TraceReader<R> {
    /// Hands every batch, as `next` reads it ([`Self::next_rows`], [`Self::next_arrow`]), to
    /// `f` in order, while another thread reads and decompresses the next ones. `f` also gets
    /// the bytes of the file read up to the end of the batch. Returns the damage that ended a
    /// trace that is not whole.
    pub fn pipelined<T: Send>(
        &mut self,
        next: fn(&mut Self) -> Result<Option<T>, Damage>,
        mut f: impl FnMut(T, u64),
    ) -> Option<Damage> {
        // Two batches wait between reading and the consumer, so that neither thread waits for
        // the other while one batch takes longer than usual.
        let (tx, rx) = std::sync::mpsc::sync_channel::<(T, u64)>(2);
        std::thread::scope(|s| {
            let read = s.spawn(move || {
                loop {
                    match next(self) {
                        Ok(Some(batch)) => {
                            if tx.send((batch, self.bytes_read())).is_err() {
                                return None;
                            }
                        }
                        Ok(None) => return None,
                        Err(d) => return Some(d),
                    }
                }
            });
            for (batch, bytes) in rx {
                f(batch, bytes);
            }
            read.join().expect("the trace reader thread panicked")
        })
    }
}

/// Reads a whole trace. A damaged tail is not an error: see [`Trace::damage`].
pub fn read_trace(path: &Path) -> Result<Trace, TraceError> {
    collect(TraceReader::open(path)?)
}

/// [`read_trace`] for a trace already in memory.
pub fn read_trace_bytes(bytes: &[u8]) -> Result<Trace, TraceError> {
    collect(TraceReader::from_bytes(bytes, Path::new("<memory>"))?)
}

fn collect<R: Read>(mut r: TraceReader<R>) -> Result<Trace, TraceError> {
    let mut trace = Trace {
        meta: r.meta.clone(),
        ..Default::default()
    };
    loop {
        match r.next_batch() {
            Ok(Some(mut batch)) => trace.records.append(&mut batch),
            Ok(None) => break,
            Err(d) => {
                trace.damage = Some(d);
                break;
            }
        }
    }
    trace.counters = r.counters;
    Ok(trace)
}
