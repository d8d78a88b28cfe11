//! What a trace says about how it was recorded.

use std::collections::BTreeMap;

use pfnscope_abi::{Cache, PatTable, bits::VmBits};
use serde::{Deserialize, Serialize};

/// Schema-metadata key holding [`TraceMeta`] as JSON.
pub const META_KEY: &str = "pfnscope.meta";
/// Schema-metadata key holding the schema version as a decimal string, readable without JSON.
pub const SCHEMA_VERSION_KEY: &str = "pfnscope.schema_version";
/// Bump on any change a reader of the previous version would misread. 4: `id` is stored as
/// differences (see `columns::Id`). 5: off-CPU episodes (`sched:sched_switch` rows, children
/// of the call they blocked in, which a reader that does not know them would take for calls)
/// and the stack and off-CPU columns.
pub const CURRENT_SCHEMA_VERSION: u32 = 5;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceMeta {
    pub schema_version: u32,
    pub tool: String,
    /// `uname -r` of the traced kernel.
    pub kernel_release: String,
    /// `uname -v`: distributions backport behaviour inside a series, so keep the build too.
    pub kernel_version: String,
    pub host: String,
    pub command_line: Vec<String>,
    /// Clock behind every `ts_ns`: `bpf_ktime_get_ns()`, i.e. CLOCK_MONOTONIC.
    pub clock: String,
    /// Wall-clock time (ns since the epoch) and CLOCK_MONOTONIC at the start, to convert.
    pub started_unix_ns: u64,
    pub started_monotonic_ns: u64,
    /// One entry per requested hook: the symbol used and the rung that attached, or why none did.
    pub hook_plan: Vec<PlanEntry>,
    /// Struct field offsets and tracepoint field offsets from the kernel's BTF / tracefs.
    pub offsets: BTreeMap<String, u32>,
    /// vm_flags bit values used to decode `vma_flags` (from the kernel's BTF where it has them).
    pub vm_flag_bits: BTreeMap<String, u64>,
    /// Cache mode per PAT index (PWT | PCD << 1 | PAT << 2) assumed when decoding protections.
    pub pat_table: Vec<String>,
    /// The filters applied in the kernel, in words.
    pub filters: Vec<String>,
    pub ring_buffer_bytes: u64,
    /// "System RAM" ranges from /proc/iomem as [first pfn, end pfn) pairs: the PAT rules
    /// differ for RAM (page-flag memtypes, WB by default) and everything else. Empty when not
    /// readable (addresses read as zero without root).
    #[serde(default)]
    pub system_ram: Vec<[u64; 2]>,
    /// The shared zero page's pfn (`empty_zero_page`): special PTEs of it sit in ordinary vmas
    /// (anonymous read faults, fs-dax holes). None when kallsyms has no data symbols.
    #[serde(default)]
    pub zero_pfn: Option<u64>,
    /// The kernel's PAT and physical-memory state when recording started: what happened before
    /// the trace that its rules depend on (a GPU driver reserves WC at probe time). None in
    /// traces recorded before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_state: Option<StartState>,
    /// What stacks and off-CPU time this recording asked for and what it could have. None in
    /// traces recorded before either existed (schema 4 and older).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacks: Option<StacksMeta>,
}

/// `tracer record --stacks`: the threshold the programs applied, and what was missing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StacksMeta {
    /// As given (`100us`, `all`, `off`).
    pub requested: String,
    /// Calls at least this slow got their stacks at their return; None: no stacks.
    pub threshold_ns: Option<u64>,
    /// Entry-only fault tracepoints got their stacks too (`--stacks=all`).
    pub at_entry: bool,
    /// Off-CPU episodes were traced (`sched:sched_switch` attached).
    pub offcpu: bool,
    /// What could not be had, one sentence each (a bad threshold, a rung without returns).
    pub missing: Vec<String>,
}

/// State older than the trace, read when recording started. Each part is None when it could not
/// be read, with the reason in `notes`: a rule that needs it then says "not checkable" rather
/// than guess. No kernel pointers: physical ranges only, and none inside the kernel image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StartState {
    /// PAT's memtype tree (debugfs `x86/pat_memtype_list`): the reservations of non-RAM ranges.
    pub memtypes: Option<Vec<MemtypeSpan>>,
    /// RAM pages whose memtype is not WB: PAT keeps RAM types in page flags, not in the tree
    /// (arch/x86/mm/pat/memtype.c:get_page_memtype), read from /proc/kpageflags.
    pub ram_memtypes: Option<Vec<MemtypeSpan>>,
    /// /proc/iomem outside System RAM: device memory and who owns it.
    pub iomem: Vec<IomemSpan>,
    /// Why a part is missing, one sentence each.
    pub notes: Vec<String>,
}

/// A physical range with one memtype, as pfns [start, end).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemtypeSpan {
    pub start_pfn: u64,
    pub end_pfn: u64,
    pub cache: Cache,
}

/// One /proc/iomem resource: physical [start, end), its name, how deep it nests, and the PCI
/// device (`0000:00:02.0`) it belongs to, when it is under one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IomemSpan {
    pub start: u64,
    pub end: u64,
    pub name: String,
    pub depth: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<String>,
}

impl TraceMeta {
    /// The `vm_flags` bits to decode `vma_flags` with: the recorded ones, the x86 defaults for
    /// the rest (VM_PAT only where the kernel has it).
    pub fn vm_bits(&self, has_vm_pat: bool) -> VmBits {
        VmBits::from_names(
            self.vm_flag_bits.iter().map(|(k, v)| (k.as_str(), *v)),
            has_vm_pat,
        )
    }

    /// The PAT table protections were decoded with (Linux's own when not recorded).
    pub fn pat(&self) -> PatTable {
        PatTable::from_names(self.pat_table.iter().map(String::as_str))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanEntry {
    pub hook: String,
    /// The kernel symbol or tracepoint that serves it (None: nothing in this kernel).
    pub symbol: Option<String>,
    /// The rung that attached: fentry, kprobe, tp_btf, raw_tp or tracepoint.
    pub mode: Option<String>,
    /// Rungs tried before (or instead of) the one that attached, each with the reason it failed.
    pub failures: Vec<RungFailure>,
    /// When no rung attached: the hooks that stand in for it (handle_mm_fault falls back to the
    /// `exceptions:page_fault_*` tracepoints).
    #[serde(default)]
    pub served_by: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RungFailure {
    pub mode: String,
    pub error: String,
}
