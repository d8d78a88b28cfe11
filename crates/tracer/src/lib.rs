//! pfnscope's live tracer.
//!
//! Data flows one way: kernel -> eBPF programs (`tracer-ebpf`) -> ring buffer -> [`collector`]
//! -> trace file (`pfnscope-trace`). The pieces:
//!
//! - the hook table (probe points, their arguments and kernels) is `pfnscope_abi::hook`, shared
//!   with the eBPF programs, the replay and the analyzer;
//! - [`btf`], [`system`], [`plan`]: what the running kernel has, resolved into per-hook specs and
//!   struct offsets for the generic programs;
//! - [`attach`], [`session`]: loading and the attach ladder (fentry -> kprobe -> tracepoint);
//! - [`decode`], [`collector`]: events to records, records to disk; [`stacks`]: the stacks
//!   events name, symbolized;
//! - [`record`], [`doctor`]: the two commands.
//!

pub mod attach;
pub mod btf;
pub mod cli;
pub mod collect;
pub mod collector;
pub mod decode;
pub mod destination;
pub mod doctor;
pub mod iomem;
pub mod naming;
pub mod plan;
pub mod record;
pub mod send;
pub mod session;
pub mod sink;
pub mod stacks;
pub mod start_state;
pub mod system;
