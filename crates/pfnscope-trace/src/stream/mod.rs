//! A trace sent over a connection: `tracer record -o tcp://HOST:PORT` (or a virtio-serial port)
//! to `tracer collect`.
//!
//! The wire format is the trace format itself. After one handshake line, the sender writes an
//! Arrow IPC stream, the bytes a trace file holds, so any Arrow reader can read a live stream,
//! and the collector writes what it receives to its file message by message. Two things differ
//! from a file: each batch carries every dictionary it uses ([`StreamEncoder`]), so the schema
//! and any run of later batches read as a trace (a stream resumed on a new connection, the
//! rest kept in a local file when the collector is gone); and the collector answers on the
//! same connection, a line at a time, so the sender knows what is safe on the collector's disk
//! and what it must keep.
//!
//! ```text
//! sender    -> collector: pfnscope-stream 1 <id> <next> <token>\n
//! collector -> sender:    ok <id> <have>\n              (or error <why>\n, then it closes)
//! sender    -> collector: schema, then per batch its dictionaries and the batch, then the
//!                         end-of-stream marker
//! collector -> sender:    ack <id> <n>\n                (batch n is on disk)
//!                         done <id> <n>\n               (so is the end marker)
//!                         bye <id> <n>\n                (the collector stops: it finished
//!                                                       the file after batch n)
//!                         error <why>\n                 (it closes the connection)
//! ```
//!
//! Batches are numbered from 1. `id` (16 hex digits) names the stream across connections:
//! a sender whose connection broke says `next`, the first batch it still holds, and the
//! collector answers with `have`, the last batch of that stream on its disk (`next - 1` for a
//! stream it does not know); the sender goes on after `have`, the schema first again. One
//! connection may carry one stream after another (a virtio-serial port stays connected while
//! tracers come and go), each with its own handshake.
//!
//! [`Incoming`] is the collector's reader: every message is checked by [`crate::CheckedStream`]
//! (bounded in size, checksums compared) and every batch decoded as the trace readers decode
//! it, so what reaches the file is what every reader accepts.

mod encoder;
mod handshake;
mod incoming;

pub use encoder::{EncodedBatch, StreamEncoder};
pub use handshake::{Hello, HelloError, MAX_LINE, PROTOCOL, Reply, StreamId, Token, TokenError};
pub use incoming::{Incoming, IncomingError, Received};

/// The end-of-stream marker: a sender writes it last, and the collector's file ends with it
/// only when the sender's did.
pub const END_OF_STREAM: [u8; 8] = crate::writer::END_OF_STREAM;
