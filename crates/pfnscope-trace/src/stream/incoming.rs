//! The collector's side: one stream off a connection, message by message, each checked and
//! each batch decoded before it may reach a file.

use std::{io::Read, path::Path};

use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;

use crate::{
    checked::{Broken, CheckedStream},
    columns::Rows,
    counters::{self, CpuCounters},
    damage::DamageKind,
    guard::guard_panics,
    meta::TraceMeta,
    reader::{TraceError, TraceReader},
};

/// What came next on a stream.
#[derive(Debug)]
pub enum Received<'a> {
    /// The first message: the recording's metadata, and the message as it came.
    Schema {
        meta: Box<TraceMeta>,
        bytes: &'a [u8],
    },
    /// One batch: its dictionaries and the record batch, as they came.
    Batch {
        bytes: &'a [u8],
        /// Rows that are events (the others carry loss counters).
        events: u64,
        /// The loss counters the batch carries, taken out as every trace reader takes them
        /// ([`crate::LossCounters::update`] keeps the latest per CPU).
        counters: Vec<CpuCounters>,
    },
    /// The end-of-stream marker: the sender finished.
    End,
}

/// Why a stream cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum IncomingError {
    /// The bytes stopped between two messages without the end marker: the sender went away.
    #[error("the stream stopped without its end-of-stream marker")]
    Stopped,
    #[error("not an Arrow IPC stream ({0})")]
    NotArrow(String),
    /// A schema that is no trace schema, or one newer than this build reads.
    #[error(transparent)]
    Schema(TraceError),
    #[error("the stream does not start with its schema")]
    NoSchema,
    /// A message failed its checks or its batch does not decode: the class and what is wrong.
    #[error("batch {batch} {}", .broken.why)]
    Damage { batch: u64, broken: Broken },
}

/// Reads one stream from `src` (the collector hands it a connection's buffered reader).
pub struct Incoming<R> {
    stream: CheckedStream<R>,
    decoder: StreamDecoder,
    label: String,
    /// The current batch's messages: dictionaries until the record batch arrives.
    unit: Vec<u8>,
    unit_done: bool,
    limit: u64,
    messages: u64,
    batches: u64,
    /// Rows of the batches read so far, counter rows included: the next batch's first `seq`.
    rows: u64,
}

impl<R: Read> Incoming<R> {
    /// `label` names the stream in messages (its peer); no message or batch may be longer
    /// than `limit` bytes.
    pub fn new(src: R, label: &str, limit: u64) -> Incoming<R> {
        Incoming {
            stream: CheckedStream::new(src).with_message_limit(limit),
            decoder: StreamDecoder::new(),
            label: label.to_string(),
            unit: Vec::new(),
            unit_done: false,
            limit,
            messages: 0,
            batches: 0,
            rows: 0,
        }
    }

    /// The next schema, batch or end marker.
    pub fn next_message(&mut self) -> Result<Received<'_>, IncomingError> {
        if self.unit_done {
            self.unit.clear();
            self.unit_done = false;
        }
        loop {
            let batch = self.batches + 1;
            let first = self.messages == 0;
            let message = match self.stream.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => {
                    return match self.stream.saw_end_marker() {
                        true => Ok(Received::End),
                        false => Err(IncomingError::Stopped),
                    };
                }
                Err(b) if first && b.why.contains("no Arrow IPC stream header") => {
                    return Err(IncomingError::NotArrow(
                        "it does not start with the IPC continuation marker".into(),
                    ));
                }
                Err(broken) => return Err(IncomingError::Damage { batch, broken }),
            };
            self.messages += 1;
            let header = header_of(message);
            let damage = |why: String| IncomingError::Damage {
                batch,
                broken: Broken {
                    kind: DamageKind::Corrupt,
                    why,
                },
            };
            if first {
                if header != arrow_ipc::MessageHeader::Schema {
                    return Err(IncomingError::NoSchema);
                }
                let meta = TraceReader::from_bytes(message, Path::new(&self.label))
                    .map(|r| r.meta().clone())
                    .map_err(IncomingError::Schema)?;
                feed(&mut self.decoder, message).map_err(|e| damage(format!("schema: {e}")))?;
                self.unit.extend_from_slice(message);
                self.unit_done = true;
                return Ok(Received::Schema {
                    meta: Box::new(meta),
                    bytes: &self.unit,
                });
            }
            match header {
                arrow_ipc::MessageHeader::DictionaryBatch => {
                    if (self.unit.len() + message.len()) as u64 > self.limit {
                        return Err(damage(format!(
                            "has dictionaries of over {} bytes, more than this reader takes",
                            self.limit
                        )));
                    }
                    self.unit.extend_from_slice(message);
                    let fed = feed(&mut self.decoder, message);
                    fed.map_err(|e| damage(format!("cannot be decoded ({e})")))?;
                }
                arrow_ipc::MessageHeader::RecordBatch => {
                    self.unit.extend_from_slice(message);
                    let decoded = feed(&mut self.decoder, message)
                        .map_err(|e| damage(format!("cannot be decoded ({e})")))?
                        .ok_or_else(|| damage("decodes to no batch".into()))?;
                    // As the trace readers read it: counters taken out, every event row decoded.
                    let first = self.rows;
                    let rows = decoded.num_rows() as u64;
                    let (events, counters) = guard_panics(|| {
                        let (events, counters) = counters::split(decoded, first)?;
                        Rows::new(&events, first).map(|r| (r.len() as u64, counters))
                    })
                    .and_then(|r| r)
                    .map_err(|e| damage(format!("cannot be decoded ({e})")))?;
                    self.batches += 1;
                    self.rows += rows;
                    self.unit_done = true;
                    return Ok(Received::Batch {
                        bytes: &self.unit,
                        events,
                        counters,
                    });
                }
                other => {
                    return Err(damage(format!(
                        "is a {other:?} message, where a batch belongs"
                    )));
                }
            }
        }
    }

    /// Complete batches read so far.
    pub fn batches(&self) -> u64 {
        self.batches
    }
}

/// The message's header type (its framing was checked: continuation, length, metadata).
fn header_of(message: &[u8]) -> arrow_ipc::MessageHeader {
    let len = i32::from_le_bytes(message[4..8].try_into().expect("framing")) as usize;
    arrow_ipc::root_as_message(&message[8..8 + len])
        .map(|m| m.header_type())
        .unwrap_or(arrow_ipc::MessageHeader::NONE)
}

/// Hands one message to arrow's decoder; a panic in it is a message it cannot decode.
fn feed(
    decoder: &mut StreamDecoder,
    message: &[u8],
) -> Result<Option<arrow_array::RecordBatch>, String> {
    guard_panics(|| {
        let mut buf = Buffer::from(message.to_vec());
        let mut out = None;
        while !buf.is_empty() {
            if let Some(b) = decoder.decode(&mut buf)? {
                out = Some(b);
            }
        }
        Ok::<_, arrow_schema::ArrowError>(out)
    })?
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        columns::Record,
        stream::{END_OF_STREAM, StreamEncoder},
    };

    fn encoded(batches: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let meta = TraceMeta {
            host: "box".into(),
            kernel_release: "6.12.0".into(),
            ..Default::default()
        };
        let mut e = StreamEncoder::new(&meta).unwrap();
        let mut out = vec![];
        for b in 0..batches {
            for i in 0..10u64 {
                e.push(&Record {
                    hook: "handle_mm_fault".into(),
                    address: Some(i),
                    ..Default::default()
                });
            }
            e.push_counters(
                &[CpuCounters {
                    cpu: 1,
                    dropped: b as u64,
                    ..Default::default()
                }],
                7,
            );
            out.push(e.batch().unwrap().unwrap().bytes);
        }
        (e.schema_message().to_vec(), out)
    }

    #[test]
    fn a_stream_reads_back_message_by_message() {
        let (schema, batches) = encoded(3);
        let mut wire = schema.clone();
        for b in &batches {
            wire.extend_from_slice(b);
        }
        wire.extend_from_slice(&END_OF_STREAM);
        let mut r = Incoming::new(&wire[..], "peer", 1 << 20);
        match r.next_message().unwrap() {
            Received::Schema { meta, bytes } => {
                assert_eq!(meta.host, "box");
                assert_eq!(bytes, &schema[..]);
            }
            other => panic!("{other:?}"),
        }
        for (i, b) in batches.iter().enumerate() {
            match r.next_message().unwrap() {
                Received::Batch {
                    bytes,
                    events,
                    counters,
                } => {
                    assert_eq!(bytes, &b[..]);
                    assert_eq!(events, 10);
                    let want = CpuCounters {
                        cpu: 1,
                        dropped: i as u64,
                        ..Default::default()
                    };
                    assert_eq!(counters, [want]);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(r.next_message().unwrap(), Received::End));
        assert_eq!(r.batches(), 3);
    }

    /// The collector reads whatever a peer sends: flipped bytes and cuts of a real stream end in an error or the end marker, never a panic or a batch that is not the one
    /// sent.
    #[test]
    fn flipped_bytes_and_cuts_are_errors_never_panics() {
        let (schema, batches) = encoded(2);
        let mut wire = schema.clone();
        batches.iter().for_each(|b| wire.extend_from_slice(b));
        wire.extend_from_slice(&END_OF_STREAM);
        let read_all = |bytes: &[u8]| -> Result<Vec<Vec<u8>>, String> {
            let mut r = Incoming::new(bytes, "peer", 1 << 20);
            let mut got = vec![];
            loop {
                match r.next_message() {
                    Ok(Received::End) => return Ok(got),
                    Ok(Received::Batch { bytes, .. }) => got.push(bytes.to_vec()),
                    Ok(Received::Schema { .. }) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        assert_eq!(read_all(&wire).unwrap(), batches);
        // Every 13th byte (a debug build takes ~4 ms a read), and every byte of the first
        // batch's framing and metadata, where the lengths are.
        let framing = schema.len()..schema.len() + 64;
        for at in (0..wire.len()).filter(|&i| i % 13 == 0 || framing.contains(&i)) {
            assert!(read_all(&wire[..at]).is_err(), "cut at {at} read as whole");
            let mut w = wire.clone();
            w[at] ^= 0x41;
            // A flip in a field no check covers (padding, the schema's own metadata) may pass,
            // but then only with the batches as they were sent.
            if let Ok(got) = read_all(&w) {
                assert_eq!(got, batches, "flip at {at} changed a batch unnoticed");
            }
        }
    }

    #[test]
    fn what_is_no_stream_is_refused_by_its_kind() {
        let (schema, batches) = encoded(2);
        let check = |wire: &[u8], limit: u64, want: &str| {
            let mut r = Incoming::new(wire, "peer", limit);
            let e = loop {
                match r.next_message() {
                    Ok(Received::End) => panic!("{want}: read to the end"),
                    Ok(_) => {}
                    Err(e) => break e,
                }
            };
            let text = format!("{e:?} {e}");
            assert!(text.contains(want), "{want}: {text}");
        };
        check(b"hello world, not arrow", 1 << 20, "NotArrow");
        check(&batches[0], 1 << 20, "NoSchema");
        // Stops between batches: the sender went away.
        check(&[&schema[..], &batches[0]].concat(), 1 << 20, "Stopped");
        // Stops inside a batch.
        let cut = [&schema[..], &batches[0][..batches[0].len() / 2]].concat();
        check(&cut, 1 << 20, "Truncated");
        // A flipped bit in a batch.
        let mut flipped = [&schema[..], &batches[0][..]].concat();
        let at = flipped.len() - 20;
        flipped[at] ^= 0x10;
        check(&flipped, 1 << 20, "checksum");
        // Messages over the limit.
        check(
            &[&schema[..], &batches[0]].concat(),
            600,
            "more than the 600",
        );
        // An Arrow stream whose schema is not a trace's.
        let mut foreign = Vec::new();
        {
            let s = arrow_schema::Schema::new(vec![arrow_schema::Field::new(
                "x",
                arrow_schema::DataType::Int32,
                false,
            )]);
            let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut foreign, &s).unwrap();
            w.finish().unwrap();
        }
        check(&foreign, 1 << 20, "is not a pfnscope trace");
    }
}
