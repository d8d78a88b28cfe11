//! Checks each IPC message of a trace before an Arrow reader sees it.
//!
//! Arrow readers trust the lengths a message claims: a damaged length prefix of a compressed
//! buffer makes them allocate whatever the prefix says (petabytes) and abort the process
//! (arrow-rs and polars both; cargo-fuzz found it). [`CheckedStream`] reads the IPC framing
//! itself and hands out only whole messages whose metadata, body length, row counts and
//! compressed-buffer prefixes are plausible; a failed check is an `InvalidData` read error
//! carrying the reason. It is `Read + Seek`, so any Arrow reader can sit on top:
//! [`crate::TraceReader`] puts arrow-rs there, the analyzer polars.
//!
//! It also keeps what the Arrow readers do not say: whether the stream ended with its
//! end-of-stream marker (they stop silently at the end of the file either way), and the class
//! of the damage that stopped it ([`CheckedStream::broken`]). Every reader builds its verdict
//! from these, so all of them agree.

use std::io::{self, Read, Seek, SeekFrom};

use crate::{
    checksum::{self, CHECKSUMS_CRC32, CHECKSUMS_KEY},
    damage::{DamageKind, StreamEnd},
};

/// Largest IPC metadata block accepted (ours are a few KiB).
const MAX_META: usize = 16 << 20;
/// Largest batch body accepted; the writer's batches stay far below.
const MAX_BODY: u64 = 1 << 31;
/// Largest row count of one batch.
const MAX_ROWS: i64 = 1 << 28;
/// LZ4 cannot expand more than ~255:1.
const MAX_LZ4_RATIO: u64 = 256;
/// Zstandard's run-length blocks expand 3 bytes to up to 128 KiB.
const MAX_ZSTD_RATIO: u64 = 1 << 16;
/// No buffer of a trace column holds more than this per row (u64 values, names up to
/// KSYM_NAME_LEN plus a module): a tighter bound than the ratio where a codec compresses zeros
/// as well as Zstandard does.
const MAX_BYTES_PER_ROW: u64 = 1024;

/// Hands out one whole, checked message at a time. Seeks stay inside the current message
/// (polars seeks only to skip the buffers of columns it does not read).
pub struct CheckedStream<R> {
    src: R,
    buf: Vec<u8>,
    /// Read position inside `buf`.
    pos: usize,
    /// File offset of `buf[0]`.
    start: u64,
    messages: u64,
    ended: bool,
    /// The stream ended with the end-of-stream marker (continuation, then length 0).
    marker: bool,
    /// The schema promises a checksum on every batch message ([`crate::checksum`]).
    checksums: bool,
    /// Why the first message could not be read ahead ([`CheckedStream::peek_schema`]): the
    /// first read reports it.
    failed: Option<String>,
    /// What stopped the stream, once something did.
    broken: Option<Broken>,
    /// Longest message accepted, metadata and body ([`CheckedStream::with_message_limit`]).
    limit: u64,
}

/// Why a message was refused: the class of the damage and what is wrong, to follow "batch N".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    pub kind: DamageKind,
    pub why: String,
}

impl Broken {
    fn truncated(why: String) -> Broken {
        Broken {
            kind: DamageKind::Truncated,
            why,
        }
    }

    fn corrupt(why: String) -> Broken {
        Broken {
            kind: DamageKind::Corrupt,
            why,
        }
    }
}

impl<R> CheckedStream<R> {
    /// Bytes of the stream handed on so far.
    pub fn offset(&self) -> u64 {
        self.start + self.pos as u64
    }

    /// Whether the stream ended with its end-of-stream marker: false while it is being read,
    /// and for a stream that just stops (a recording that never finished).
    pub fn saw_end_marker(&self) -> bool {
        self.marker
    }

    /// The damage a read failed on, if one did.
    pub fn broken(&self) -> Option<&Broken> {
        self.broken.as_ref()
    }

    /// How the stream stopped, for [`crate::ReadSoFar::verdict`].
    pub fn stopped(&self) -> StreamEnd<'_> {
        StreamEnd {
            saw_end_marker: self.marker,
            broken: self.broken.as_ref().map(|b| (b.kind, b.why.as_str())),
            offset: self.offset(),
        }
    }

    /// Whether every batch message is checked against a checksum (known once the schema is
    /// read): then a reader may leave columns undecoded and still see all damage.
    pub fn checks_checksums(&self) -> bool {
        self.checksums && checksum::VERIFIED
    }
}

impl<R: Read> CheckedStream<R> {
    /// The stream's schema, read ahead of any reader: the first message is kept and still
    /// handed out whole. None if the stream does not start with a readable schema (the reader
    /// that reads it says why).
    pub fn peek_schema(&mut self) -> Option<arrow_schema::Schema> {
        if self.messages == 0 && self.buf.is_empty() && self.failed.is_none() {
            match self.load() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    (self.buf, self.pos, self.failed) = (Vec::new(), 0, Some(e.why));
                    return None;
                }
            }
        }
        if self.messages != 1 || self.pos != 0 {
            return None;
        }
        // A continuation marker, then the metadata length (checked by `load`).
        let at = if self.buf.starts_with(&[0xff; 4]) {
            8
        } else {
            4
        };
        let len = i32::from_le_bytes(self.buf.get(at - 4..at)?.try_into().ok()?) as usize;
        let message = arrow_ipc::root_as_message(self.buf.get(at..at + len)?).ok()?;
        arrow_ipc::convert::try_fb_to_schema(message.header_as_schema()?).ok()
    }

    pub fn new(src: R) -> CheckedStream<R> {
        CheckedStream {
            src,
            buf: Vec::new(),
            pos: 0,
            start: 0,
            messages: 0,
            ended: false,
            marker: false,
            checksums: false,
            failed: None,
            broken: None,
            limit: MAX_META as u64 + MAX_BODY,
        }
    }

    /// Refuses any message longer than `bytes`, metadata and body: for a reader of a
    /// connection, whose memory must stay bounded whatever the other end claims.
    pub fn with_message_limit(mut self, bytes: u64) -> CheckedStream<R> {
        self.limit = bytes;
        self
    }

    /// The next whole message, checked, framing included (the bytes a trace file holds): None
    /// at the end of the stream, where [`Self::saw_end_marker`] tells a finished stream from
    /// one that stops. For a reader that passes messages on instead of decoding them (`tracer
    /// collect`); not to be mixed with reading through [`Read`].
    pub fn next_message(&mut self) -> Result<Option<&[u8]>, Broken> {
        self.pos = self.buf.len();
        match self.load() {
            Ok(true) => {
                self.pos = self.buf.len();
                Ok(Some(&self.buf))
            }
            Ok(false) => Ok(None),
            Err(b) => {
                self.broken = Some(b.clone());
                Err(b)
            }
        }
    }

    /// Replaces `buf` with the next message; false at the end of the stream.
    fn load(&mut self) -> Result<bool, Broken> {
        self.start += self.buf.len() as u64;
        self.buf.clear();
        self.pos = 0;
        if self.ended {
            return Ok(false);
        }
        let at = self.start;
        let mut word = [0u8; 4];
        match read_full(&mut self.src, &mut word)? {
            0 => return Ok(self.end(false)),
            4 => {}
            k => {
                return Err(Broken::truncated(format!(
                    "{k} bytes of a message header at byte {at}"
                )));
            }
        }
        self.buf.extend_from_slice(&word);
        // Since Arrow 0.15 a message starts with 0xFFFFFFFF, then the metadata length; pfnscope
        // has always written that form. Without it (zeros where a crash left blocks unwritten,
        // say), the old form's end marker, four zero bytes, would pass for a clean end.
        if word != [0xff; 4] {
            return Err(if self.messages == 0 {
                Broken::corrupt("no Arrow IPC stream header".into())
            } else {
                Broken::corrupt(format!(
                    "is invalid: no message starts at byte {at} (found {word:02x?}, not the continuation marker)"
                ))
            });
        }
        match read_full(&mut self.src, &mut word)? {
            4 => {}
            k => {
                return Err(Broken::truncated(format!(
                    "{} bytes of a message header at byte {at}",
                    4 + k
                )));
            }
        }
        self.buf.extend_from_slice(&word);
        let meta_len = i32::from_le_bytes(word);
        if meta_len == 0 {
            self.buf.clear();
            return Ok(self.end(true));
        }
        if meta_len < 0 || meta_len as usize > MAX_META {
            return Err(Broken::corrupt(format!(
                "is invalid: impossible metadata length {meta_len}"
            )));
        }
        let limit = self.limit;
        let too_long = |len: u64| {
            Broken::corrupt(format!(
                "is invalid: a message of over {len} bytes, more than the {limit} this reader takes"
            ))
        };
        if meta_len as u64 > limit {
            return Err(too_long(meta_len as u64));
        }
        let meta_at = self.buf.len();
        self.take(meta_len as u64)?;
        let message = arrow_ipc::root_as_message(&self.buf[meta_at..])
            .map_err(|e| Broken::corrupt(format!("is invalid: corrupt metadata ({e})")))?;
        let body_len = message.bodyLength();
        if body_len < 0 || body_len as u64 > MAX_BODY {
            return Err(Broken::corrupt(format!(
                "is invalid: impossible body length {body_len}"
            )));
        }
        if meta_len as u64 + body_len as u64 > limit {
            return Err(too_long(meta_len as u64 + body_len as u64));
        }
        let (compressed, most) = compressed_buffers(&message, body_len as u64)
            .map_err(|e| Broken::corrupt(format!("is invalid: {e}")))?;
        let (promise, stamp) = expected_stamp(&message, &self.buf[meta_at..], self.checksums)?;
        if let Some(p) = promise {
            self.checksums = p;
        }
        let body_at = self.buf.len();
        self.take(body_len as u64)?;
        let body = &self.buf[body_at..];
        if let Some(stamp) = stamp
            && checksum::VERIFIED
            && !checksum::matches(stamp, &self.buf[meta_at..body_at], body)
        {
            return Err(Broken::corrupt(
                "does not match its checksum: bytes changed after they were written".into(),
            ));
        }
        check_prefixes(body, &compressed, most)
            .map_err(|e| Broken::corrupt(format!("is invalid: {e}")))?;
        self.messages += 1;
        Ok(true)
    }

    fn end(&mut self, marker: bool) -> bool {
        self.ended = true;
        self.marker = marker;
        false
    }

    /// Appends `len` bytes of the current message from the source, in steps, so a damaged
    /// length is never one huge allocation.
    fn take(&mut self, len: u64) -> Result<(), Broken> {
        let had = self.buf.len();
        let got = (&mut self.src)
            .take(len)
            .read_to_end(&mut self.buf)
            .map_err(unreadable)?;
        if got as u64 != len {
            return Err(Broken::truncated(format!(
                "{} of the {} bytes of a message at byte {}",
                had + got,
                had as u64 + len,
                self.start
            )));
        }
        Ok(())
    }
}

fn unreadable(e: io::Error) -> Broken {
    Broken::corrupt(format!("cannot be read: {e}"))
}

/// The schema says whether batches carry checksums (the first value, for a schema message);
/// each batch message, which one (the second), and it must have one if `promised`.
fn expected_stamp(
    message: &arrow_ipc::Message,
    meta: &[u8],
    promised: bool,
) -> Result<(Option<bool>, Option<checksum::Stamp>), Broken> {
    if let Some(schema) = message.header_as_schema() {
        let key = schema
            .custom_metadata()
            .and_then(|m| m.iter().find(|kv| kv.key() == Some(CHECKSUMS_KEY)))
            .map(|kv| kv.value().unwrap_or(""));
        return match key {
            None => Ok((Some(false), None)),
            Some(CHECKSUMS_CRC32) => Ok((Some(true), None)),
            Some(other) => Err(Broken::corrupt(format!(
                "is invalid: unknown checksum `{other}` (a newer pfnscope wrote it?)"
            ))),
        };
    }
    if message.header_as_record_batch().is_none() && message.header_as_dictionary_batch().is_none()
    {
        return Ok((None, None));
    }
    match checksum::stamped(message, meta) {
        Err(e) => Err(Broken::corrupt(format!("is invalid: {e}"))),
        Ok(None) if promised => Err(Broken::corrupt(
            "has no checksum, though the trace promises one on every batch".into(),
        )),
        Ok(crc) => Ok((None, crc)),
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, Broken> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(unreadable(e)),
        }
    }
    Ok(n)
}

/// What a compressed buffer of a batch may claim as its uncompressed length.
#[derive(Clone, Copy, Default)]
struct Expansion {
    ratio: u64,
    rows: u64,
}

impl Expansion {
    fn most(self, compressed: u64) -> u64 {
        (compressed.saturating_mul(self.ratio) + 4096)
            .min(self.rows.saturating_mul(MAX_BYTES_PER_ROW) + 4096)
    }
}

/// (offset, length) of each buffer of a compressed record batch or dictionary (the names
/// columns' values), checked against the body, and how far they may expand.
fn compressed_buffers(
    message: &arrow_ipc::Message,
    body_len: u64,
) -> Result<(Vec<(u64, u64)>, Expansion), String> {
    let batch = message
        .header_as_record_batch()
        .or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()));
    let Some(batch) = batch else {
        return Ok((vec![], Expansion::default()));
    };
    if batch.length() < 0 || batch.length() > MAX_ROWS {
        return Err(format!("impossible row count {}", batch.length()));
    }
    for node in batch.nodes().iter().flatten() {
        if node.length() < 0 || node.length() > batch.length() {
            return Err(format!(
                "a column claims {} rows of {}",
                node.length(),
                batch.length()
            ));
        }
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
    let ratio = match batch.compression().map(|c| c.codec()) {
        None => {
            out.clear();
            0
        }
        Some(arrow_ipc::CompressionType::LZ4_FRAME) => MAX_LZ4_RATIO,
        Some(arrow_ipc::CompressionType::ZSTD) => MAX_ZSTD_RATIO,
        Some(c) => return Err(format!("unknown compression codec {}", c.0)),
    };
    Ok((
        out,
        Expansion {
            ratio,
            rows: batch.length() as u64,
        },
    ))
}

/// Each compressed buffer starts with its uncompressed length (i64; -1: stored as is).
fn check_prefixes(body: &[u8], buffers: &[(u64, u64)], most: Expansion) -> Result<(), String> {
    for &(off, len) in buffers {
        if len < 8 {
            continue;
        }
        let at = off as usize;
        let claimed = i64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        if claimed != -1 && (claimed < 0 || claimed as u64 > most.most(len - 8)) {
            return Err(format!(
                "a compressed buffer of {len} bytes claims {claimed} bytes uncompressed"
            ));
        }
    }
    Ok(())
}

impl<R: Read> Read for CheckedStream<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            if let Some(e) = self.failed.take() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            match self.load() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(b) => {
                    let e = io::Error::new(io::ErrorKind::InvalidData, b.why.clone());
                    self.broken = Some(b);
                    return Err(e);
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl<R: Read> Seek for CheckedStream<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let here = self.start + self.pos as u64;
        let target = match to {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::Current(d) => here as i128 + d as i128,
            SeekFrom::End(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a stream has no end to seek from",
                ));
            }
        };
        let (lo, hi) = (
            self.start as i128,
            self.start as i128 + self.buf.len() as i128,
        );
        if target < lo || target > hi {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("seek to {target} leaves the current message ({lo}..{hi})"),
            ));
        }
        self.pos = (target - lo) as usize;
        Ok(target as u64)
    }
}
