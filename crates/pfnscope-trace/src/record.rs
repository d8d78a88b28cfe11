//! One row of a trace.

use crate::sym::Sym;

/// `hook` of the rows carrying cumulative per-CPU counters (written at every flush; the last row
/// per CPU holds the final values).
pub const COUNTERS_HOOK: &str = "pfnscope:counters";

/// A probed call or tracepoint hit, decoded. No field holds a kernel pointer: vmas, files and
/// mms are per-trace ids, `vm_ops` is a symbol name.
/// `Copy`, as every field is: decoding a row over a stale record drops nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Record {
    /// Position in the file.
    pub seq: u64,
    /// Unique per recording; `parent` is the id of the probed call this one ran inside (0: none).
    pub id: u64,
    pub parent: u64,
    /// CLOCK_MONOTONIC at entry.
    pub ts_ns: u64,
    /// Entry to return; None for tracepoints (they have no return).
    pub latency_ns: Option<u64>,
    pub cpu: u32,
    pub pid: u32,
    pub tid: u32,
    pub comm: Sym,
    /// Probe point as named in the traced kernel (`track_pfn_insert`, `pfnmap_track`, ...).
    pub hook: Sym,
    /// fentry, kprobe, tp_btf, raw_tp or tracepoint.
    pub mode: Sym,

    /// The user address the call is about.
    pub address: Option<u64>,
    /// FAULT_FLAG_* of handle_mm_fault.
    pub fault_flags: Option<u32>,
    /// x86 page-fault error code of `exceptions:page_fault_*`.
    pub error_code: Option<u32>,

    pub vma_id: Option<u32>,
    pub vma_start: Option<u64>,
    pub vma_end: Option<u64>,
    pub vma_pgoff: Option<u64>,
    pub vma_flags: Option<u64>,
    /// `vm_page_prot` bits and the cache mode they select.
    pub vma_prot: Option<u64>,
    pub vma_cache: Option<Sym>,
    /// The vma's `vm_ops` symbol (e.g. `drm_gem_ttm_vm_ops [ttm]`), or None for anonymous.
    pub driver: Option<Sym>,
    pub file_id: Option<u32>,
    pub mm_id: Option<u32>,

    /// The PTE value vm_normal_page was asked about; `page`: whether it returned a struct page.
    pub pte: Option<u64>,
    pub page: Option<bool>,

    pub pfn: Option<u64>,
    /// The PFN_* flags of a `pfn_t` argument as the kernel keeps them, in bits 52-63 (PFN_DEV
    /// 1 << 61, PFN_MAP 1 << 60, PFN_SPECIAL 1 << 59); None where the argument is a plain pfn
    /// (6.17+, vmf_insert_pfn_prot) or the trace predates the column.
    pub pfn_flags: Option<u64>,
    /// Bytes (remap, PAT range, memtype range).
    pub size: Option<u64>,
    /// Protection the caller asked for, and its cache mode.
    pub prot: Option<u64>,
    pub cache_req: Option<Sym>,
    /// Protection after the call (PAT may override it), and its cache mode.
    pub prot_out: Option<u64>,
    pub cache_out: Option<Sym>,
    /// The `write` argument of the PMD/PUD inserts.
    pub write: Option<bool>,
    /// Raw return: VM_FAULT_* bits for faults and inserts, 0 / -errno for int functions.
    pub ret: Option<i64>,

    /// `mm_filemap_delete_from_page_cache` fields.
    pub ino: Option<u64>,
    pub index: Option<u64>,
    pub dev: Option<u64>,
    /// `sched_process_fork`.
    pub child_pid: Option<u32>,

    /// Counter rows only (`hook == COUNTERS_HOOK`).
    pub dropped: Option<u64>,
    pub unpaired: Option<u64>,
    pub read_failed: Option<u64>,
}
