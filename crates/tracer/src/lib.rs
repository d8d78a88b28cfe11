//! pfnscope's live tracer.
//!
//! Data flows one way: kernel -> eBPF programs (`tracer-ebpf`) -> ring buffer -> [`collector`]
//! -> trace file (`pfnscope-trace`). The pieces:
//!
//! - [`hooks`]: the table of probe points, their arguments and kernels (the one place kernel
//!   differences live);
//! - [`btf`], [`system`], [`plan`]: what the running kernel has, resolved into per-hook specs and
//!   struct offsets for the generic programs;
//! - [`attach`], [`session`]: loading and the attach ladder (fentry -> kprobe -> tracepoint);
//! - [`decode`], [`collector`]: events to records, records to disk;
//! - [`record`], [`doctor`]: the two commands.
//!
//! ```
//! // The hook table is plain data: ask it what a hook is for and where it exists.
//! let h = tracer::hooks::by_name("track_pfn_insert").unwrap();
//! assert!(h.kernels.includes(6, 12) && !h.kernels.includes(6, 16));
//! ```

pub mod attach;
pub mod btf;
pub mod cli;
pub mod collector;
pub mod decode;
pub mod doctor;
pub mod hooks;
pub mod plan;
pub mod record;
pub mod session;
pub mod system;
