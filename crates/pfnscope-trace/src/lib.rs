//! The pfnscope trace file.
//!
//! A trace is an [Arrow IPC stream](https://arrow.apache.org/docs/format/Columnar.html#ipc-streaming-format):
//! one flat table, one row per probed call or tracepoint hit, readable without this project by
//! polars (`pl.read_ipc_stream`), pyarrow and DuckDB. The stream form (not the IPC *file* form,
//! which needs a footer) keeps everything up to the last complete batch readable after a crash
//! or a full disk. Recording metadata (kernel, hook plan, BTF offsets, clock, command line) is
//! JSON in the schema's metadata under [`META_KEY`].
//!
//! ```
//! use pfnscope_trace::{Record, TraceMeta, TraceWriter, read_trace};
//! let dir = std::env::temp_dir().join(format!("pfnscope-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("t.arrows");
//! let mut w = TraceWriter::create(&path, &TraceMeta::default()).unwrap();
//! w.push(&Record { hook: "handle_mm_fault".into(), address: Some(0x7f00_0000_0000), ..Default::default() });
//! w.finish().unwrap();
//! let t = read_trace(&path).unwrap();
//! assert_eq!(t.records[0].address, Some(0x7f00_0000_0000));
//! ```

mod checked;
mod checksum;
mod columns;
mod counters;
mod damage;
mod exit;
mod guard;
mod meta;
pub mod output;
mod reader;
mod stdout;
pub mod stream;
mod sym;
mod writer;

pub use arrow_array::RecordBatch;
pub use checked::{Broken, CheckedStream};
pub use checksum::CHECKSUMS_KEY;
pub use columns::compat::ids_from_deltas;
pub use columns::{COLUMNS, Rec, Record, Rows};
pub use counters::{CpuCounters, LossCounters};
pub use damage::{Damage, DamageKind, DamageReport, ReadSoFar, StreamEnd};
pub use exit::{EXIT_STATUS_HELP, ExitStatus};
pub use guard::guard_panics;
pub use meta::{
    CURRENT_SCHEMA_VERSION, IomemSpan, META_KEY, MemtypeSpan, PlanEntry, RungFailure,
    SCHEMA_VERSION_KEY, StacksMeta, StartState, TraceMeta,
};
pub use output::{Existing, NewFile, OutputError};
pub use reader::{Trace, TraceError, TraceReader, read_trace, read_trace_bytes};
pub use stdout::print_stdout;
pub use sym::{Interner, Sym};
pub use writer::{TraceWriter, WriteError};
