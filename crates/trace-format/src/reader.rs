//! Reading a trace back, including damaged ones: everything before the damage is returned.

use std::{
    fs::File,
    io::{self, BufReader, Read},
    path::{Path, PathBuf},
};

use arrow_ipc::reader::StreamReader;

use crate::{
    columns::decode,
    meta::{CURRENT_SCHEMA_VERSION, META_KEY, SCHEMA_VERSION_KEY, TraceMeta},
    record::Record,
};

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot open trace {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "{path} is empty: the recording wrote nothing (was it killed before start-up finished?)"
    )]
    Empty { path: PathBuf },
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
    pub records: Vec<Record>,
    /// Set when the file ends early or has a corrupt batch: what went wrong and how much was
    /// recovered. `records` holds everything before the damage.
    pub damage: Option<String>,
}

impl Trace {
    /// Final counter values per CPU from the counter rows (cumulative; the last one wins).
    pub fn counters(&self) -> Vec<(u32, u64, u64, u64)> {
        let mut per_cpu = std::collections::BTreeMap::new();
        for r in self
            .records
            .iter()
            .filter(|r| r.hook == crate::COUNTERS_HOOK)
        {
            per_cpu.insert(
                r.cpu,
                (
                    r.dropped.unwrap_or(0),
                    r.unpaired.unwrap_or(0),
                    r.read_failed.unwrap_or(0),
                ),
            );
        }
        per_cpu
            .into_iter()
            .map(|(c, (d, u, f))| (c, d, u, f))
            .collect()
    }

    /// The events, without counter rows.
    pub fn events(&self) -> impl Iterator<Item = &Record> {
        self.records
            .iter()
            .filter(|r| r.hook != crate::COUNTERS_HOOK)
    }
}

/// Streams batches of records; for traces too large to hold at once.
/// Largest IPC metadata block accepted (ours are a few KiB).
const MAX_META: usize = 16 << 20;
/// Largest batch body accepted; the writer's batches stay far below.
const MAX_BODY: u64 = 1 << 31;
/// LZ4 cannot expand more than ~255:1, so a buffer claiming more is corrupt (the Arrow reader
/// would otherwise allocate whatever the damaged length prefix says before failing).
const MAX_LZ4_RATIO: u64 = 256;

/// Streams batches of records; for traces too large to hold at once.
///
/// The IPC framing is read here, not by arrow: every message is checked (metadata verified,
/// body length bounded, compressed-buffer length prefixes plausible) before arrow decodes it, so
/// a corrupt file gives an error, never an abort on an absurd allocation.
pub struct TraceReader<R: Read> {
    path: PathBuf,
    inner: StreamReader<Guard<R>>,
    meta: TraceMeta,
    batches: u64,
    rows: u64,
    done: bool,
}

/// Hands arrow only whole messages that passed [`Guard::next_message`]'s checks; a failed check
/// reaches arrow as an `InvalidData` read error carrying the reason.
struct Guard<R> {
    src: R,
    buf: Vec<u8>,
    pos: usize,
    messages: u64,
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            match self.next_message() {
                Ok(Next::Message(m)) => {
                    self.buf = m;
                    self.pos = 0;
                }
                Ok(Next::End) => return Ok(0),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl TraceReader<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let file = File::open(path).map_err(|source| TraceError::Open {
            path: path.to_owned(),
            source,
        })?;
        if file.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
            return Err(TraceError::Empty {
                path: path.to_owned(),
            });
        }
        TraceReader::from_reader(BufReader::new(file), path)
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
        TraceReader::from_reader(bytes, label)
    }
}

enum Next {
    Message(Vec<u8>),
    End,
}

impl<R: Read> TraceReader<R> {
    /// Opens a stream from any reader: checks the Arrow stream header, the schema version and
    /// the metadata before any batch is read.
    pub fn from_reader(src: R, label: &Path) -> Result<Self, TraceError> {
        let not_a_trace = |why: String| TraceError::NotATrace {
            path: label.to_owned(),
            why,
        };
        let guard = Guard {
            src,
            buf: vec![],
            pos: 0,
            messages: 0,
        };
        let inner = StreamReader::try_new(guard, None).map_err(|e| {
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
            path: label.to_owned(),
            inner,
            meta,
            batches: 0,
            rows: 0,
            done: false,
        })
    }

    pub fn meta(&self) -> &TraceMeta {
        &self.meta
    }

    /// The next batch of records: `Ok(None)` at a clean end, `Err(damage)` when the rest of the
    /// file cannot be read (the message says where and how much came before).
    pub fn next_batch(&mut self) -> Result<Option<Vec<Record>>, String> {
        if self.done {
            return Ok(None);
        }
        match self.inner.next() {
            None => {
                self.done = true;
                Ok(None)
            }
            Some(Ok(batch)) => {
                let mut out = Vec::with_capacity(batch.num_rows());
                if let Err(e) = decode(&batch, &mut out) {
                    self.done = true;
                    return Err(self.damage(&format!("batch {} is corrupt: {e}", self.batches + 1)));
                }
                self.batches += 1;
                self.rows += out.len() as u64;
                Ok(Some(out))
            }
            Some(Err(e)) => {
                self.done = true;
                Err(self.damage(&format!("cannot read batch {}: {e}", self.batches + 1)))
            }
        }
    }

    fn damage(&self, what: &str) -> String {
        format!(
            "{}: {what}; kept the {} records of the {} complete batches before it (a recording that was killed or ran out of disk ends this way)",
            self.path.display(),
            self.rows,
            self.batches
        )
    }
}

impl<R: Read> Guard<R> {
    /// One whole IPC message (prefix, metadata, body), checked; `End` at the end-of-stream
    /// marker or at a clean end of file between messages (what SIGKILL leaves).
    fn next_message(&mut self) -> Result<Next, String> {
        let mut word = [0u8; 4];
        match read_full(&mut self.src, &mut word) {
            0 => return Ok(Next::End),
            4 => {}
            n => return Err(format!("the file ends {n} bytes into a message header")),
        }
        let mut out = Vec::with_capacity(8);
        out.extend_from_slice(&word);
        // Since Arrow 0.15 a message starts with 0xFFFFFFFF, then the metadata length.
        let len_bytes = if word == [0xff; 4] {
            if read_full(&mut self.src, &mut word) != 4 {
                return Err("the file ends inside a message header".into());
            }
            out.extend_from_slice(&word);
            word
        } else if self.messages == 0 {
            return Err("no Arrow IPC stream header".into());
        } else {
            word
        };
        let meta_len = i32::from_le_bytes(len_bytes);
        if meta_len == 0 {
            return Ok(Next::End);
        }
        if meta_len < 0 || meta_len as usize > MAX_META {
            return Err(format!(
                "message {} has an impossible metadata length {meta_len}",
                self.messages + 1
            ));
        }
        let meta_start = out.len();
        if (&mut self.src)
            .take(meta_len as u64)
            .read_to_end(&mut out)
            .map_err(|e| e.to_string())?
            != meta_len as usize
        {
            return Err(format!(
                "the file ends inside message {}",
                self.messages + 1
            ));
        }
        let message = arrow_ipc::root_as_message(&out[meta_start..])
            .map_err(|e| format!("message {} has corrupt metadata: {e}", self.messages + 1))?;
        let body_len = message.bodyLength();
        if body_len < 0 || body_len as u64 > MAX_BODY {
            return Err(format!(
                "message {} has an impossible body length {body_len}",
                self.messages + 1
            ));
        }
        let limits = batch_limits(&message, body_len as u64)
            .map_err(|e| format!("message {}: {e}", self.messages + 1))?;
        let body_start = out.len();
        // Read incrementally: a damaged length must not become one huge allocation.
        if (&mut self.src)
            .take(body_len as u64)
            .read_to_end(&mut out)
            .map_err(|e| e.to_string())?
            != body_len as usize
        {
            return Err(format!(
                "the file ends inside message {}",
                self.messages + 1
            ));
        }
        check_compressed_lengths(&out[body_start..], &limits)
            .map_err(|e| format!("message {}: {e}", self.messages + 1))?;
        self.messages += 1;
        Ok(Next::Message(out))
    }
}

/// Reads until `buf` is full or the source ends; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    n
}

/// (offset, length) of each compressed buffer of a record batch, validated against the body.
fn batch_limits(message: &arrow_ipc::Message, body_len: u64) -> Result<Vec<(u64, u64)>, String> {
    let Some(batch) = message.header_as_record_batch() else {
        return Ok(vec![]);
    };
    if batch.length() < 0 || batch.length() > 1 << 28 {
        return Err(format!("impossible row count {}", batch.length()));
    }
    if batch.compression().is_none() {
        return Ok(vec![]);
    }
    let mut out = vec![];
    for b in batch.buffers().iter().flatten() {
        let (off, len) = (b.offset(), b.length());
        if off < 0 || len < 0 || off as u64 + len as u64 > body_len {
            return Err(format!(
                "buffer at {off}+{len} lies outside the {body_len}-byte body"
            ));
        }
        out.push((off as u64, len as u64));
    }
    Ok(out)
}

/// Each compressed buffer starts with its uncompressed length (i64, -1: stored uncompressed).
fn check_compressed_lengths(body: &[u8], buffers: &[(u64, u64)]) -> Result<(), String> {
    for &(off, len) in buffers {
        if len < 8 {
            continue;
        }
        let at = off as usize;
        let claimed = i64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        if claimed == -1 {
            continue;
        }
        if claimed < 0 || claimed as u64 > (len - 8) * MAX_LZ4_RATIO + 4096 {
            return Err(format!(
                "a compressed buffer of {len} bytes claims {claimed} bytes uncompressed"
            ));
        }
    }
    Ok(())
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
    Ok(trace)
}
