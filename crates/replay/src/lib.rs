//! Replays a pfnscope trace against a reference model of the x86-64 page-fault path for PFN
//! and special mappings, and tells where the kernel and the model disagree.
//!
//! A trace (see `docs/trace-format.md`) records the probed calls of the fault path with
//! `parent` links. The [`Engine`] reassembles each call tree, and the model re-executes it:
//! `vm_normal_page` decisions, PFN inserts with PAT's cache-mode lookup, `remap_pfn_range` with
//! whole/partial PAT tracking, PAT memtype reservations as an interval map, fork copies, unmap
//! and untrack, `handle_mm_fault` outcomes including the 6.12+ VMA-lock RETRY, COW of PFN
//! mappings and the truncate rule. Kernel-version differences live in [`pfnscope_abi::kernel::TABLE`]; the
//! rules in [`rules::Rule`], each with the kernel source that justifies it.
//!
//! Results go to a [`Sink`] and are of two kinds, kept apart: **divergences** (kernel != model)
//! and **findings** (kernel == model, but a driver author should look: a WC request that PAT
//! turned into UC-, aliases with different cache modes, a leaked reservation, ...). Where the
//! trace lacks what a rule needs, the rule does not fire: it counts as *not checkable*.
//!
//! The library does no I/O except in [`run`], which streams a trace file through the engine.
//!
//! ```
//! use pfnscope_abi::{Cache, kernel::Series};
//! use replay::{check_records, kernel::KernelRules, synth::TraceBuilder};
//!
//! // A TTM-style driver asks for WC on VRAM that has no reservation: PAT maps it UC-.
//! let mut b = TraceBuilder::new(Series::V6_12);
//! let bits = b.bits;
//! let vma = b.vma(0x7f00_0000_0000, 1, true, bits.pfnmap | bits.io, Some("drm_gem_ttm_vm_ops [ttm]"));
//! b.fault_insert(&vma, vma.start, 0xfd000, Cache::WC, false);
//! let report = check_records(&b.meta(), KernelRules::for_series(Series::V6_12), b.records(), "doc");
//! assert_eq!(report.summary.divergences, 0);
//! assert_eq!(report.findings[0].rule.id(), "find.wc_downgrade");
//! ```
//!
//! # The `replay check --json` report
//! One JSON object (`schema` = [`replay_report::CHECK_SCHEMA`], `pfnscope.replay.check/1`;
//! its types, which the analyzer reads it with, are `replay_report`'s):
//! - `trace`, `kernel_release` (from the trace), `rules` (`6.1`, `6.12` or `6.16+`),
//!   `rules_note` (null, or why the rule set is a guess), `events` (rows replayed),
//!   `damage` (null for a whole trace, else {`kind`: `cut_short` / `truncated` / `corrupt`,
//!   `batch`, `records_kept`, `batches_kept`, `bytes_kept`, `file_bytes`, `message`}: see
//!   [`pfnscope_trace::Damage`]), `truncated` (null, or the damage's message),
//!   `losses` {`dropped`, `unpaired`, `read_failed`} (the tracer's final counters);
//! - `summary` {`divergences`, `findings`, `finding_groups`, `checks`, `not_checkable`,
//!   `not_checkable_share` (not checkable over all applications of a rule)};
//! - `rule_table`: one object per rule, in catalogue order: `id`, `kind` (`divergence` /
//!   `finding`), `what`, `source` (kernel `file:function`, commit where known), `held`,
//!   `failed`, `not_checkable`;
//! - `divergences`: `rule` (id), `expected`, `observed` (text), `seqs` and `ids` (the events
//!   involved, the deciding one first), `source`; at most 10 000 listed,
//!   `divergences_omitted` counts the rest;
//! - `findings`: grouped by rule and driver: `rule`, `driver`, `count`,
//!   `message`, `seqs`, `ids` (of the first occurrence), `source`.
//!
//! Exit status of `replay check` ([`pfnscope_trace::ExitStatus`]): 0 no divergence, 1
//! divergences, 2 the trace is damaged or incomplete (what it has is replayed), 3 unusable
//! input.

pub mod allocator;
pub mod engine;
pub mod feed;
#[cfg(feature = "test-fixtures")]
pub mod honest;
pub mod hook;
pub mod kernel;
pub mod memtype;
pub mod model;
#[cfg(feature = "test-fixtures")]
pub mod mutate;
pub mod overhead;
pub mod report;
#[cfg(test)]
mod rule_tests;
pub mod rules;
pub mod run;
#[cfg(any(test, feature = "test-fixtures"))]
pub mod synth;
pub mod tree;

/// Keys are call ids, vma ids, pfns and small tuples of them, none chosen by an adversary that
/// sees the hash: rustc's Fx hash is several times cheaper than SipHash here.
pub type IdMap<K, V> = std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>;

pub use engine::Engine;
pub use report::{Divergence, Finding, Report, Results, Sink};
pub use rules::Rule;
pub use run::{
    CheckOptions, ReplayError, check_file, check_records, check_trace, each_batch, overhead_file,
};
