//! The sender's side: records in, the messages of an Arrow IPC stream out, each batch readable
//! after the schema alone.

use arrow_schema::{ArrowError, SchemaRef};

use crate::{
    columns::{Builders, Record},
    counters::CpuCounters,
    meta::TraceMeta,
    writer::{Encoder, trace_schema},
};

/// Encodes a recording as the messages of a stream: [`StreamEncoder::schema_message`] first,
/// then one [`EncodedBatch`] per [`StreamEncoder::batch`].
pub struct StreamEncoder {
    schema: SchemaRef,
    encoder: Encoder,
    pending: Builders,
    /// Counter rows among the pending ones (not events).
    pending_counters: u64,
    schema_bytes: Vec<u8>,
}

/// One batch's messages: its dictionaries, then the record batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedBatch {
    pub bytes: Vec<u8>,
    /// Events in it (rows that are not loss counters).
    pub events: u64,
}

impl StreamEncoder {
    pub fn new(meta: &TraceMeta) -> Result<StreamEncoder, ArrowError> {
        let schema = trace_schema(meta);
        let mut encoder = Encoder::new()?;
        let mut schema_bytes = Vec::new();
        encoder.schema(&schema, &mut schema_bytes)?;
        Ok(StreamEncoder {
            schema,
            encoder,
            pending: Builders::default(),
            pending_counters: 0,
            schema_bytes,
        })
    }

    /// The schema message, with the recording's metadata: what every stream and file starts
    /// with.
    pub fn schema_message(&self) -> &[u8] {
        &self.schema_bytes
    }

    /// Queues one record. Its `seq` is not written: readers take the row's position.
    pub fn push(&mut self, r: &Record) {
        self.pending.push(r);
    }

    /// Queues the tracer's loss counters, read at `ts_ns`, with the batch: stored as a file
    /// stores them ([`crate::counters`]), so the collector's file reads like the tracer's.
    pub fn push_counters(&mut self, counters: &[CpuCounters], ts_ns: u64) {
        for c in counters {
            self.pending.push(&c.to_record(ts_ns));
            self.pending_counters += 1;
        }
    }

    /// Rows pending, counter rows included.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// What is pending as one batch, with every dictionary it uses before it (not only the
    /// ones that changed, as a file has them); None when nothing is pending.
    pub fn batch(&mut self) -> Result<Option<EncodedBatch>, ArrowError> {
        let rows = self.pending.len() as u64;
        if rows == 0 {
            return Ok(None);
        }
        let events = rows - std::mem::take(&mut self.pending_counters);
        let batch = self.pending.finish(self.schema.clone())?;
        let mut bytes = Vec::new();
        self.encoder.forget_dictionaries(&self.schema);
        self.encoder.batch(&batch, &mut bytes)?;
        Ok(Some(EncodedBatch { bytes, events }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{read_trace_bytes, stream::END_OF_STREAM};

    fn record(hook: &str, comm: &str, address: u64) -> Record {
        Record {
            hook: hook.into(),
            comm: comm.into(),
            address: Some(address),
            ..Default::default()
        }
    }

    /// A stream reads exactly as the file the tracer would have written from the same records
    /// and loss counters: same events, same counters, same metadata.
    #[test]
    fn a_stream_reads_like_the_file_of_the_same_recording() {
        let meta = TraceMeta {
            host: "box".into(),
            kernel_release: "6.12.0".into(),
            ..Default::default()
        };
        let dir = std::env::temp_dir().join(format!("pfnscope-enc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.arrows");
        let mut file = crate::TraceWriter::create(&path, &meta).unwrap();
        let mut e = StreamEncoder::new(&meta).unwrap();
        let mut bytes = e.schema_message().to_vec();
        for b in 0..3u64 {
            for i in 0..5 {
                let r = record("handle_mm_fault", ["a", "b"][i % 2], b * 10 + i as u64);
                file.push(&r);
                e.push(&r);
            }
            let c = [0, 1].map(|cpu| CpuCounters {
                cpu,
                dropped: b + u64::from(cpu),
                unpaired: 2 * b,
                read_failed: 1,
            });
            file.push_counters(&c, 1000 + b);
            e.push_counters(&c, 1000 + b);
            file.flush_batch().unwrap();
            let batch = e.batch().unwrap().unwrap();
            assert_eq!(batch.events, 5, "counter rows are not events");
            bytes.extend_from_slice(&batch.bytes);
        }
        file.finish().unwrap();
        bytes.extend_from_slice(&END_OF_STREAM);
        let (f, s) = (
            crate::read_trace(&path).unwrap(),
            read_trace_bytes(&bytes).unwrap(),
        );
        assert_eq!(s.damage, None);
        assert_eq!(s.records, f.records);
        assert_eq!(s.counters, f.counters);
        assert_eq!(s.counters.total().dropped, 2 + 3);
        assert_eq!(s.meta, f.meta);
        std::fs::remove_dir_all(dir).ok();
    }

    /// The schema and any run of later batches read as a whole trace: every batch brings its
    /// own dictionaries.
    #[test]
    fn any_run_of_batches_after_the_schema_is_a_trace() {
        let meta = TraceMeta {
            host: "box".into(),
            ..Default::default()
        };
        let mut e = StreamEncoder::new(&meta).unwrap();
        let mut batches = vec![];
        for (i, comm) in ["a", "b", "c"].into_iter().enumerate() {
            e.push(&record("handle_mm_fault", comm, i as u64));
            e.push(&record("vm_normal_page", comm, i as u64 + 100));
            batches.push(e.batch().unwrap().unwrap());
        }
        assert_eq!(e.batch().unwrap(), None);
        for from in 0..batches.len() {
            let mut bytes = e.schema_message().to_vec();
            for b in &batches[from..] {
                bytes.extend_from_slice(&b.bytes);
            }
            bytes.extend_from_slice(&END_OF_STREAM);
            let t = read_trace_bytes(&bytes).unwrap();
            assert_eq!(t.damage, None, "from batch {from}");
            assert_eq!(t.meta.host, "box");
            let comms: Vec<&str> = t.records.iter().map(|r| r.comm.as_str()).collect();
            let want: Vec<&str> = ["a", "a", "b", "b", "c", "c"][2 * from..].to_vec();
            assert_eq!(comms, want);
            assert_eq!(t.records[0].address, Some(from as u64));
        }
    }
}
