//! Writing a trace in bounded, durable batches.

use std::{
    collections::HashMap,
    io::{self, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use arrow_ipc::{
    CompressionType,
    writer::{
        DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions, write_message,
    },
};
use arrow_schema::{ArrowError, Schema, SchemaRef};

use crate::{
    checksum::{CHECKSUMS_CRC32, CHECKSUMS_KEY, seal, stamp},
    columns::{Builders, Record, fields},
    counters::CpuCounters,
    meta::{CURRENT_SCHEMA_VERSION, META_KEY, SCHEMA_VERSION_KEY, TraceMeta},
    output::{Existing, NewFile, OutputError},
};

/// The IPC end-of-stream marker: continuation, then a metadata length of 0. Readers that find
/// the file ending without it know the recording did not finish.
pub(crate) const END_OF_STREAM: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];

// An I/O or polars error is part of the message, so it is a field named `err`, not `source`:
// front ends print the whole chain on one line, and a source would say it twice.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("cannot create trace file {path}: {err}")]
    Create { path: PathBuf, err: io::Error },
    #[error("writing trace file {path} failed{}: {err} ({rows} rows in {batches} batches are safely on disk{})", if is_full(.err) { " (disk full: free space or write elsewhere with -o)" } else { "" }, if *.cut_back { "; the partial batch was cut off, so every Arrow reader opens the file" } else { "" })]
    Write {
        path: PathBuf,
        err: io::Error,
        rows: u64,
        batches: u64,
        /// The file was cut back to the end of its last complete batch.
        cut_back: bool,
    },
}

fn is_full(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == io::ErrorKind::StorageFull
}

pub(crate) fn arrow_io(e: ArrowError) -> io::Error {
    match e {
        ArrowError::IoError(_, e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// Arrow's IPC encoding of one stream, message by message, each batch message stamped with
/// its checksum ([`crate::checksum`]). Shared with [`crate::stream`], which sends the same
/// messages over a connection.
pub(crate) struct Encoder {
    generator: IpcDataGenerator,
    dictionaries: DictionaryTracker,
    options: IpcWriteOptions,
    context: IpcWriteContext,
}

impl Encoder {
    pub(crate) fn new() -> Result<Encoder, ArrowError> {
        // Zstandard (level 3): most columns are null or repeat within a hook, and its run-length
        // blocks turn those back into zeros ~3x faster than LZ4 frames decode them, in half the
        // bytes (BENCHMARKS.md); arrow-rs, C++/pyarrow and polars all read it. Traces written
        // with LZ4 before still read: the codec is recorded per batch.
        let options =
            IpcWriteOptions::default().try_with_compression(Some(CompressionType::ZSTD))?;
        Ok(Encoder {
            generator: IpcDataGenerator::default(),
            dictionaries: DictionaryTracker::new(false),
            options,
            context: IpcWriteContext::default(),
        })
    }

    /// Makes the next batch carry every dictionary it uses, as if nothing had been sent after
    /// the schema: a batch that follows is then readable after the schema alone. The tracker
    /// also holds the dictionary ids the schema assigned; they are assigned again from the
    /// fields (without the metadata, which is large and plays no part in them).
    pub(crate) fn forget_dictionaries(&mut self, schema: &Schema) {
        self.dictionaries = DictionaryTracker::new(false);
        self.generator.schema_to_bytes_with_dictionary_tracker(
            &Schema::new(schema.fields().clone()),
            &mut self.dictionaries,
            &self.options,
        );
    }

    /// Appends the schema message to `out`.
    pub(crate) fn schema(&mut self, schema: &Schema, out: &mut Vec<u8>) -> Result<(), ArrowError> {
        let m = self.generator.schema_to_bytes_with_dictionary_tracker(
            schema,
            &mut self.dictionaries,
            &self.options,
        );
        write_message(out, m, &self.options).map(|_| ())
    }

    /// Appends the batch's dictionary messages, then the batch, to `out`.
    pub(crate) fn batch(
        &mut self,
        batch: &arrow_array::RecordBatch,
        out: &mut Vec<u8>,
    ) -> Result<(), ArrowError> {
        let (dictionaries, batch) = self.generator.encode(
            batch,
            &mut self.dictionaries,
            &self.options,
            &mut self.context,
        )?;
        for m in dictionaries.into_iter().chain([batch]) {
            let (m, at) = stamp(m).map_err(ArrowError::IpcError)?;
            let start = out.len();
            write_message(&mut *out, m, &self.options)?;
            // After the continuation marker and the metadata length.
            seal(&mut out[start + 8..], at);
        }
        Ok(())
    }
}

/// The schema of a trace with `meta`, stamped with the current schema version.
pub(crate) fn trace_schema(meta: &TraceMeta) -> SchemaRef {
    let mut meta = meta.clone();
    meta.schema_version = CURRENT_SCHEMA_VERSION;
    let json = serde_json::to_string(&meta).expect("trace metadata serialises");
    Arc::new(Schema::new_with_metadata(
        fields(),
        HashMap::from([
            (META_KEY.to_string(), json),
            (
                SCHEMA_VERSION_KEY.to_string(),
                CURRENT_SCHEMA_VERSION.to_string(),
            ),
            (CHECKSUMS_KEY.to_string(), CHECKSUMS_CRC32.to_string()),
        ]),
    ))
}

/// Appends records, writes them out as one Arrow batch on [`TraceWriter::flush_batch`] (the
/// collector calls it at least every second) and makes that batch durable with fdatasync, so a
/// crash loses at most what was pushed since.
///
/// Each batch goes to the file in one write of its encoded bytes. When a write fails (a full
/// disk), the file is cut back to the end of the last complete batch: arrow-rs and pyarrow
/// stop at a partial batch, but polars refuses the whole file.
pub struct TraceWriter {
    path: PathBuf,
    schema: SchemaRef,
    out: NewFile,
    encoder: Encoder,
    /// The encoded messages not yet written, reused between batches.
    bytes: Vec<u8>,
    pending: Builders,
    rows_on_disk: u64,
    batches_on_disk: u64,
    bytes_on_disk: u64,
}

impl TraceWriter {
    /// Creates the trace at `path`, replacing a regular file there (never a link or a device).
    pub fn create(path: &Path, meta: &TraceMeta) -> Result<TraceWriter, WriteError> {
        TraceWriter::create_with(path, meta, Existing::Replace)
    }

    /// Creates the trace at `path`; what is there already is refused or replaced as
    /// `existing` says (see [`crate::output`]). The file has its name as soon as its schema
    /// is on disk.
    pub fn create_with(
        path: &Path,
        meta: &TraceMeta,
        existing: Existing,
    ) -> Result<TraceWriter, WriteError> {
        let schema = trace_schema(meta);
        let create_err = |err| WriteError::Create {
            path: path.to_owned(),
            err,
        };
        let mut out = NewFile::create(path, existing, &[])?;
        let mut encoder = Encoder::new().map_err(|e| create_err(arrow_io(e)))?;
        let mut bytes = Vec::with_capacity(1 << 20);
        encoder
            .schema(&schema, &mut bytes)
            .map_err(|e| create_err(arrow_io(e)))?;
        // The schema alone makes a valid (empty) trace: get it onto disk now.
        let mut file = out.file();
        file.write_all(&bytes)
            .and_then(|_| file.sync_data())
            .map_err(create_err)?;
        out.place()?;
        Ok(TraceWriter {
            path: path.to_owned(),
            schema,
            out,
            encoder,
            bytes_on_disk: bytes.len() as u64,
            bytes,
            pending: Builders::default(),
            rows_on_disk: 0,
            batches_on_disk: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one record. Its `seq` is not written: readers take the row's position.
    pub fn push(&mut self, r: &Record) {
        self.pending.push(r);
    }

    /// Queues the tracer's loss counters, read at `ts_ns` (CLOCK_MONOTONIC): the writer stores
    /// them with the batch (see [`crate::counters`]); readers hand them out apart.
    pub fn push_counters(&mut self, counters: &[CpuCounters], ts_ns: u64) {
        for c in counters {
            self.pending.push(&c.to_record(ts_ns));
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn rows_on_disk(&self) -> u64 {
        self.rows_on_disk
    }

    /// Bytes of the file up to the end of its last complete batch.
    pub fn bytes_on_disk(&self) -> u64 {
        self.bytes_on_disk
    }

    /// Writes what is pending as one batch and syncs it to disk.
    pub fn flush_batch(&mut self) -> Result<(), WriteError> {
        let rows = self.pending.len() as u64;
        if rows == 0 {
            return Ok(());
        }
        let batch = self
            .pending
            .finish(self.schema.clone())
            .expect("columns match the schema");
        self.bytes.clear();
        if let Err(e) = self.encoder.batch(&batch, &mut self.bytes) {
            return Err(self.failed(arrow_io(e)));
        }
        self.write_bytes()?;
        self.rows_on_disk += rows;
        self.batches_on_disk += 1;
        Ok(())
    }

    /// Flushes and writes the end-of-stream marker.
    pub fn finish(mut self) -> Result<u64, WriteError> {
        self.flush_batch()?;
        self.bytes.clear();
        self.bytes.extend_from_slice(&END_OF_STREAM);
        self.write_bytes()?;
        Ok(self.rows_on_disk)
    }

    /// Writes `bytes` after the last complete batch and syncs them.
    fn write_bytes(&mut self) -> Result<(), WriteError> {
        let mut file = self.out.file();
        match file.write_all(&self.bytes).and_then(|_| file.sync_data()) {
            Ok(()) => {
                self.bytes_on_disk += self.bytes.len() as u64;
                Ok(())
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// The error for a failed write, once the file is back to its last complete batch.
    fn failed(&mut self, err: io::Error) -> WriteError {
        let mut file = self.out.file();
        let cut_back = file
            .set_len(self.bytes_on_disk)
            .and_then(|_| file.seek(SeekFrom::Start(self.bytes_on_disk)))
            .and_then(|_| file.sync_data())
            .is_ok();
        WriteError::Write {
            path: self.path.clone(),
            err,
            rows: self.rows_on_disk,
            batches: self.batches_on_disk,
            cut_back,
        }
    }
}
