//! A CRC-32 over every batch message, so flipped bits are found by every reader.
//!
//! Arrow IPC has no checksums. Without one, a flipped bit inside a compressed column either
//! fails to decompress (and only a reader that decompresses that column sees it) or decodes
//! into other values that nothing can tell from real ones. The writer puts a CRC-32 into each
//! dictionary and record batch message's `custom_metadata` (a field of the IPC format that
//! Arrow readers skip), and says so in the schema metadata under [`CHECKSUMS_KEY`];
//! [`crate::CheckedStream`] checks every message before any reader decodes it.
//!
//! The CRC covers the message's metadata (padded, with the CRC's own 8 hex digits read as
//! `00000000`) and its body: everything but the 8-byte prefix, whose damage breaks the
//! framing anyway. Traces without the key (written before 2026-12) still read, unchecked.

use arrow_ipc::{
    BodyCompression, BodyCompressionArgs, Buffer, DictionaryBatch, DictionaryBatchArgs, FieldNode,
    KeyValue, KeyValueArgs, Message, MessageArgs, MessageHeader, RecordBatch, RecordBatchArgs,
    writer::EncodedData,
};
use flatbuffers::{FlatBufferBuilder, WIPOffset};

/// Schema-metadata key whose presence promises a checksum on every batch message.
pub const CHECKSUMS_KEY: &str = "pfnscope.checksums";
/// Its value: the algorithm.
pub const CHECKSUMS_CRC32: &str = "crc32";
/// Message custom-metadata key holding the message's CRC-32 as 8 hex digits.
const MESSAGE_KEY: &str = "pfnscope.crc32";

/// Whether readers compare the checksums. Not under `cargo fuzz`: mutated input would then
/// never get past them to the decoders the fuzzer is there to exercise. Readers then decode
/// every column, as for a trace without checksums, so all of them still find the same damage.
pub const VERIFIED: bool = !cfg!(fuzzing);

/// Where a message's CRC-32 sits in its metadata, and its value.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    crc: u32,
    /// Offset of the 8 hex digits in the metadata.
    at: usize,
}

/// The digits a CRC-32 is computed with, in place of its own.
const PLACEHOLDER: &str = "00000000";

/// The stamp of `message`, parsed from `meta` (its metadata bytes): `Ok(None)` when it has
/// none, `Err` when its value is not 8 hex digits.
pub fn stamped(message: &Message, meta: &[u8]) -> Result<Option<Stamp>, String> {
    let Some(kv) = message
        .custom_metadata()
        .and_then(|m| m.iter().find(|kv| kv.key() == Some(MESSAGE_KEY)))
    else {
        return Ok(None);
    };
    let v = kv.value().unwrap_or("");
    let at = (v.as_ptr() as usize).wrapping_sub(meta.as_ptr() as usize);
    match u32::from_str_radix(v, 16) {
        Ok(crc) if v.len() == 8 && at + 8 <= meta.len() => Ok(Some(Stamp { crc, at })),
        _ => Err(format!("checksum `{v}` is not 8 hex digits")),
    }
}

/// Whether the message's metadata and body match its stamp.
pub fn matches(stamp: Stamp, meta: &[u8], body: &[u8]) -> bool {
    crc32(stamp.at, meta, body) == stamp.crc
}

fn crc32(at: usize, meta: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&meta[..at]);
    h.update(PLACEHOLDER.as_bytes());
    h.update(&meta[at + 8..]);
    h.update(body);
    h.finalize()
}

/// `m` (a dictionary or record batch message as arrow encoded it) with a placeholder for its
/// CRC-32 in its custom metadata, and the placeholder's offset in the metadata: [`seal`] fills
/// it in once the message is framed. The message is rebuilt field by field: flatbuffers cannot
/// add a field to a finished table.
pub fn stamp(m: EncodedData) -> Result<(EncodedData, usize), String> {
    let message =
        arrow_ipc::root_as_message(&m.ipc_message).map_err(|e| format!("encoded message: {e}"))?;
    let mut fbb = FlatBufferBuilder::new();
    let header = match message.header_type() {
        MessageHeader::RecordBatch => {
            let b = message.header_as_record_batch().ok_or("no record batch")?;
            copy_batch(&mut fbb, &b).as_union_value()
        }
        MessageHeader::DictionaryBatch => {
            let d = message
                .header_as_dictionary_batch()
                .ok_or("no dictionary")?;
            let data = d.data().map(|b| copy_batch(&mut fbb, &b));
            DictionaryBatch::create(
                &mut fbb,
                &DictionaryBatchArgs {
                    id: d.id(),
                    data,
                    isDelta: d.isDelta(),
                },
            )
            .as_union_value()
        }
        other => return Err(format!("cannot stamp a {other:?} message")),
    };
    let (key, value) = (
        fbb.create_string(MESSAGE_KEY),
        fbb.create_string(PLACEHOLDER),
    );
    let kv = KeyValue::create(
        &mut fbb,
        &KeyValueArgs {
            key: Some(key),
            value: Some(value),
        },
    );
    let custom_metadata = Some(fbb.create_vector(&[kv]));
    let root = Message::create(
        &mut fbb,
        &MessageArgs {
            version: message.version(),
            header_type: message.header_type(),
            header: Some(header),
            bodyLength: message.bodyLength(),
            custom_metadata,
        },
    );
    fbb.finish(root, None);
    let ipc_message = fbb.finished_data().to_vec();
    let message = arrow_ipc::root_as_message(&ipc_message).map_err(|e| e.to_string())?;
    let at = stamped(&message, &ipc_message)?
        .ok_or("the stamp went missing")?
        .at;
    Ok((
        EncodedData {
            ipc_message,
            arrow_data: m.arrow_data,
        },
        at,
    ))
}

/// Fills in the CRC-32 of a framed message (`meta_and_body`: everything after its 8-byte
/// prefix) whose placeholder [`stamp`] put at `at`.
pub fn seal(meta_and_body: &mut [u8], at: usize) {
    let crc = crc32(at, meta_and_body, &[]);
    meta_and_body[at..at + 8].copy_from_slice(format!("{crc:08x}").as_bytes());
}

fn copy_batch<'a>(fbb: &mut FlatBufferBuilder<'a>, b: &RecordBatch) -> WIPOffset<RecordBatch<'a>> {
    let nodes: Vec<FieldNode> = b
        .nodes()
        .map(|v| v.iter().copied().collect())
        .unwrap_or_default();
    let buffers: Vec<Buffer> = b
        .buffers()
        .map(|v| v.iter().copied().collect())
        .unwrap_or_default();
    let variadic: Option<Vec<i64>> = b.variadicBufferCounts().map(|v| v.iter().collect());
    let nodes = Some(fbb.create_vector(&nodes));
    let buffers = Some(fbb.create_vector(&buffers));
    let variadic = variadic.map(|v| fbb.create_vector(&v));
    let compression = b.compression().map(|c| {
        BodyCompression::create(
            fbb,
            &BodyCompressionArgs {
                codec: c.codec(),
                method: c.method(),
            },
        )
    });
    RecordBatch::create(
        fbb,
        &RecordBatchArgs {
            length: b.length(),
            nodes,
            buffers,
            compression,
            variadicBufferCounts: variadic,
        },
    )
}
