//! Checks each IPC message of a trace before an Arrow reader sees it.
//!
//! Arrow readers trust the lengths a message claims: a damaged length prefix of a compressed
//! buffer makes them allocate whatever the prefix says (petabytes) and abort the process
//! (arrow-rs and polars both; cargo-fuzz found it). [`CheckedStream`] reads the IPC framing
//! itself and hands out only whole messages whose metadata, body length, row counts and
//! compressed-buffer prefixes are plausible; a failed check is an `InvalidData` read error
//! carrying the reason. It is `Read + Seek`, so any Arrow reader can sit on top:
//! [`crate::TraceReader`] puts arrow-rs there, the analyzer polars.

use std::io::{self, Read, Seek, SeekFrom};

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
    /// Why the first message could not be read ahead ([`CheckedStream::peek_schema`]): the
    /// first read reports it.
    failed: Option<String>,
}

impl<R> CheckedStream<R> {
    /// Bytes of the stream handed on so far.
    pub fn offset(&self) -> u64 {
        self.start + self.pos as u64
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
                    (self.buf, self.pos, self.failed) = (Vec::new(), 0, Some(e));
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
            failed: None,
        }
    }

    /// Replaces `buf` with the next message; false at the end of the stream.
    fn load(&mut self) -> Result<bool, String> {
        self.start += self.buf.len() as u64;
        self.buf.clear();
        self.pos = 0;
        if self.ended {
            return Ok(false);
        }
        let n = self.messages + 1;
        let mut word = [0u8; 4];
        match read_full(&mut self.src, &mut word)? {
            0 => return Ok(self.end()),
            4 => {}
            k => return Err(format!("the file ends {k} bytes into message {n}")),
        }
        self.buf.extend_from_slice(&word);
        // Since Arrow 0.15 a message starts with 0xFFFFFFFF, then the metadata length.
        if word == [0xff; 4] {
            if read_full(&mut self.src, &mut word)? != 4 {
                return Err(format!("the file ends inside the header of message {n}"));
            }
            self.buf.extend_from_slice(&word);
        } else if self.messages == 0 {
            return Err("no Arrow IPC stream header".into());
        }
        let meta_len = i32::from_le_bytes(word);
        if meta_len == 0 {
            self.buf.clear();
            return Ok(self.end());
        }
        if meta_len < 0 || meta_len as usize > MAX_META {
            return Err(format!(
                "message {n} has an impossible metadata length {meta_len}"
            ));
        }
        let meta_at = self.buf.len();
        self.take(meta_len as u64, n)?;
        let message = arrow_ipc::root_as_message(&self.buf[meta_at..])
            .map_err(|e| format!("message {n} has corrupt metadata: {e}"))?;
        let body_len = message.bodyLength();
        if body_len < 0 || body_len as u64 > MAX_BODY {
            return Err(format!(
                "message {n} has an impossible body length {body_len}"
            ));
        }
        let (compressed, most) = compressed_buffers(&message, body_len as u64)
            .map_err(|e| format!("message {n}: {e}"))?;
        let body_at = self.buf.len();
        self.take(body_len as u64, n)?;
        check_prefixes(&self.buf[body_at..], &compressed, most)
            .map_err(|e| format!("message {n}: {e}"))?;
        self.messages += 1;
        Ok(true)
    }

    fn end(&mut self) -> bool {
        self.ended = true;
        false
    }

    /// Appends `len` bytes from the source, in steps, so a damaged length is never one huge
    /// allocation.
    fn take(&mut self, len: u64, n: u64) -> Result<(), String> {
        let got = (&mut self.src)
            .take(len)
            .read_to_end(&mut self.buf)
            .map_err(|e| e.to_string())?;
        if got as u64 != len {
            return Err(format!("the file ends inside message {n}"));
        }
        Ok(())
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, String> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
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
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
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
