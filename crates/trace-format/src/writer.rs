//! Writing a trace in bounded, durable batches.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use arrow_ipc::{
    CompressionType,
    writer::{IpcWriteOptions, StreamWriter},
};
use arrow_schema::{ArrowError, Schema, SchemaRef};

use crate::{
    columns::{Builders, fields},
    meta::{CURRENT_SCHEMA_VERSION, META_KEY, SCHEMA_VERSION_KEY, TraceMeta},
    output::{Existing, NewFile, OutputError},
    record::Record,
};

// An I/O or polars error is part of the message, so it is a field named `err`, not `source`:
// front ends print the whole chain on one line, and a source would say it twice.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("cannot create trace file {path}: {err}")]
    Create { path: PathBuf, err: io::Error },
    #[error("writing trace file {path} failed{}: {err} ({rows} rows in {batches} batches are safely on disk)", if is_full(.err) { " (disk full: free space or write elsewhere with -o)" } else { "" })]
    Write {
        path: PathBuf,
        err: io::Error,
        rows: u64,
        batches: u64,
    },
}

fn is_full(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc_enospc()) || e.kind() == io::ErrorKind::StorageFull
}

const fn libc_enospc() -> i32 {
    28
}

fn arrow_io(e: ArrowError) -> io::Error {
    match e {
        ArrowError::IoError(_, e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// Appends records, writes them out as one Arrow batch on [`TraceWriter::flush_batch`] (the
/// collector calls it at least every second) and makes that batch durable with fdatasync, so a
/// crash loses at most what was pushed since.
pub struct TraceWriter {
    path: PathBuf,
    schema: SchemaRef,
    stream: StreamWriter<BufWriter<File>>,
    pending: Builders,
    rows_on_disk: u64,
    batches_on_disk: u64,
    /// Keeps the file's name (see [`crate::output`]).
    _out: NewFile,
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
        let mut meta = meta.clone();
        meta.schema_version = CURRENT_SCHEMA_VERSION;
        let json = serde_json::to_string(&meta).expect("trace metadata serialises");
        let schema = Arc::new(Schema::new_with_metadata(
            fields(),
            HashMap::from([
                (META_KEY.to_string(), json),
                (
                    SCHEMA_VERSION_KEY.to_string(),
                    CURRENT_SCHEMA_VERSION.to_string(),
                ),
            ]),
        ));
        let create_err = |err| WriteError::Create {
            path: path.to_owned(),
            err,
        };
        let mut out = NewFile::create(path, existing, &[])?;
        let file = out.file().try_clone().map_err(create_err)?;
        // Zstandard (level 3): most columns are null or repeat within a hook, and its run-length
        // blocks turn those back into zeros ~3x faster than LZ4 frames decode them, in half the
        // bytes (BENCHMARKS.md); arrow-rs, C++/pyarrow and polars all read it. Traces written
        // with LZ4 before still read: the codec is recorded per batch.
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::ZSTD))
            .map_err(|e| create_err(arrow_io(e)))?;
        let mut stream = StreamWriter::try_new_with_options(
            BufWriter::with_capacity(1 << 20, file),
            &schema,
            options,
        )
        .map_err(|e| create_err(arrow_io(e)))?;
        // The schema alone makes a valid (empty) trace: get it onto disk now.
        stream.flush().map_err(|e| create_err(arrow_io(e)))?;
        stream.get_mut().get_ref().sync_data().map_err(create_err)?;
        out.place()?;
        Ok(TraceWriter {
            path: path.to_owned(),
            schema,
            stream,
            pending: Builders::default(),
            rows_on_disk: 0,
            batches_on_disk: 0,
            _out: out,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one record. Its `seq` is not written: readers take the row's position.
    pub fn push(&mut self, r: &Record) {
        self.pending.push(r);
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn rows_on_disk(&self) -> u64 {
        self.rows_on_disk
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
        let res = self
            .stream
            .write(&batch)
            .and_then(|_| self.stream.flush())
            .map_err(arrow_io)
            .and_then(|_| self.stream.get_mut().get_ref().sync_data());
        if let Err(err) = res {
            return Err(WriteError::Write {
                path: self.path.clone(),
                err,
                rows: self.rows_on_disk,
                batches: self.batches_on_disk,
            });
        }
        self.rows_on_disk += rows;
        self.batches_on_disk += 1;
        Ok(())
    }

    /// Flushes and writes the end-of-stream marker.
    pub fn finish(mut self) -> Result<u64, WriteError> {
        self.flush_batch()?;
        let res = self
            .stream
            .finish()
            .and_then(|_| {
                self.stream
                    .get_mut()
                    .flush()
                    .map_err(|e| ArrowError::IoError(e.to_string(), e))
            })
            .map_err(arrow_io)
            .and_then(|_| self.stream.get_mut().get_ref().sync_data());
        res.map_err(|err| WriteError::Write {
            path: self.path.clone(),
            err,
            rows: self.rows_on_disk,
            batches: self.batches_on_disk,
        })?;
        Ok(self.rows_on_disk)
    }
}

impl Drop for TraceWriter {
    fn drop(&mut self) {
        // Best effort on an error path: whatever is pending is worth a try.
        let _ = self.stream.flush();
        let _ = self.stream.get_mut().flush();
    }
}
