//! Where the ring-buffer consumer puts records: a trace file, standard output, or a collector.
//! Each kind has its own rhythm: a file is flushed and synced every second; a stream sends a
//! batch at least every [`STREAM_FLUSH`] (or every [`STREAM_BATCH`] events), so a crash of the
//! traced machine loses at most that much.

use std::{
    io::{self, Write},
    time::Duration,
};

use pfnscope_trace::{
    CpuCounters, Record, TraceMeta, TraceWriter, WriteError, stream::StreamEncoder,
};

use crate::send::{Delivery, Greeted, Sender};

/// A stream's batches leave at least this often while there are events.
pub const STREAM_FLUSH: Duration = Duration::from_millis(100);
/// And hold at most this many events.
pub const STREAM_BATCH: usize = 4096;
/// A file's batches: flushed and synced every second, at most this many events each.
const FILE_FLUSH: Duration = Duration::from_secs(1);
const FILE_BATCH: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    File(#[from] WriteError),
    #[error(
        "writing the trace to standard output failed after {rows} rows: {err} (the reader went away?)"
    )]
    Stdout { err: io::Error, rows: u64 },
    #[error("encoding a batch: {0}")]
    Encode(String),
}

/// How a recording ended up where it went.
pub enum Delivered {
    /// Rows in the file or on standard output.
    Rows(u64),
    Stream(Delivery),
}

pub enum Sink {
    File(TraceWriter),
    Stdout(Streamed<io::Stdout>),
    Collector(Streamed<Sender>),
}

/// A recording encoded as stream messages, and where they go.
pub struct Streamed<T> {
    encoder: StreamEncoder,
    to: T,
    /// Events that left.
    rows_out: u64,
}

impl Sink {
    /// Standard output: the schema goes out at once.
    pub fn stdout(meta: &TraceMeta) -> Result<Sink, SinkError> {
        let encoder = StreamEncoder::new(meta).map_err(|e| SinkError::Encode(e.to_string()))?;
        let mut to = io::stdout();
        to.write_all(encoder.schema_message())
            .and_then(|()| to.flush())
            .map_err(|err| SinkError::Stdout { err, rows: 0 })?;
        Ok(Sink::Stdout(Streamed::new(encoder, to)))
    }

    /// A collector reached before the recording started.
    pub fn collector(link: Greeted, meta: &TraceMeta) -> Result<Sink, SinkError> {
        let encoder = StreamEncoder::new(meta).map_err(|e| SinkError::Encode(e.to_string()))?;
        let sender = link.start(encoder.schema_message().to_vec(), meta);
        Ok(Sink::Collector(Streamed::new(encoder, sender)))
    }

    /// How often batches go out, and their most events.
    pub fn rhythm(&self) -> (Duration, usize) {
        match self {
            Sink::File(_) => (FILE_FLUSH, FILE_BATCH),
            Sink::Stdout(_) | Sink::Collector(_) => (STREAM_FLUSH, STREAM_BATCH),
        }
    }

    pub fn push(&mut self, r: &Record) {
        match self {
            Sink::File(w) => w.push(r),
            Sink::Stdout(s) => s.encoder.push(r),
            Sink::Collector(s) => s.encoder.push(r),
        }
    }

    /// Queues the loss counters read at `ts_ns`: a file keeps them with its batch; a stream
    /// carries them as rows of the batch, as the file format stores them.
    pub fn push_counters(&mut self, counters: &[CpuCounters], ts_ns: u64) {
        match self {
            Sink::File(w) => w.push_counters(counters, ts_ns),
            Sink::Stdout(s) => s.encoder.push_counters(counters, ts_ns),
            Sink::Collector(s) => s.encoder.push_counters(counters, ts_ns),
        }
    }

    pub fn pending(&self) -> usize {
        match self {
            Sink::File(w) => w.pending(),
            Sink::Stdout(s) => s.encoder.pending(),
            Sink::Collector(s) => s.encoder.pending(),
        }
    }

    /// Rows that left: on disk, written to standard output, or handed to the sender thread.
    pub fn rows_out(&self) -> u64 {
        match self {
            Sink::File(w) => w.rows_on_disk(),
            Sink::Stdout(s) => s.rows_out,
            Sink::Collector(s) => s.rows_out,
        }
    }

    /// Sends or writes what is pending as one batch.
    pub fn flush_batch(&mut self) -> Result<(), SinkError> {
        match self {
            Sink::File(w) => Ok(w.flush_batch()?),
            Sink::Stdout(s) => s.flush(|out, bytes, _, rows| {
                out.write_all(&bytes)
                    .and_then(|()| out.flush())
                    .map_err(|err| SinkError::Stdout { err, rows })
            }),
            Sink::Collector(s) => s.flush(|sender, bytes, events, _| {
                sender.send(bytes, events);
                Ok(())
            }),
        }
    }

    /// Flushes, ends the stream (the end-of-stream marker) and says where it all went.
    pub fn finish(mut self) -> Result<Delivered, SinkError> {
        self.flush_batch()?;
        match self {
            Sink::File(w) => Ok(Delivered::Rows(w.finish()?)),
            Sink::Stdout(mut s) => {
                let rows = s.rows_out;
                s.to.write_all(&pfnscope_trace::stream::END_OF_STREAM)
                    .and_then(|()| s.to.flush())
                    .map_err(|err| SinkError::Stdout { err, rows })?;
                Ok(Delivered::Rows(rows))
            }
            Sink::Collector(s) => Ok(Delivered::Stream(s.to.finish())),
        }
    }
}

impl<T> Streamed<T> {
    fn new(encoder: StreamEncoder, to: T) -> Streamed<T> {
        Streamed {
            encoder,
            to,
            rows_out: 0,
        }
    }

    /// Encodes what is pending and hands it to `out` (bytes, events, rows out so far).
    fn flush(
        &mut self,
        out: impl FnOnce(&mut T, Vec<u8>, u64, u64) -> Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        let Some(batch) = self
            .encoder
            .batch()
            .map_err(|e| SinkError::Encode(e.to_string()))?
        else {
            return Ok(());
        };
        out(&mut self.to, batch.bytes, batch.events, self.rows_out)?;
        self.rows_out += batch.events;
        Ok(())
    }
}
