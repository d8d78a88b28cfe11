//! The column table, in one place: the [`Record`], the schema, the writer's builders and the row
//! reader ([`Rows`], [`Rec`]) are all generated from it (`table.rs`), so a column is declared
//! once. The Arrow type, nullability and dictionary encoding of each column kind are in
//! `kinds.rs` and `names.rs`; what older schemas wrote differently is in [`compat`].

#[macro_use]
mod table;
pub(crate) mod compat;
pub(crate) mod kinds;
mod names;
#[cfg(test)]
mod tests;

use arrow_array::RecordBatch;
use arrow_buffer::ScalarBuffer;
use arrow_schema::{ArrowError, Field, SchemaRef};

use crate::sym::{Interner, Sym};
use compat::Id;
use kinds::{Column, OptBool, OptI64, OptU32, OptU64, U32, U64, owned_column};
use names::{OptStr, Str};

columns! {
    /// Unique per recording; `parent` is the id of the probed call this one ran inside (0: none).
    id: Id,
    parent: U64,
    /// CLOCK_MONOTONIC at entry.
    ts_ns: U64,
    /// Entry to return; None for tracepoints (they have no return).
    latency_ns: OptU64,
    cpu: U32,
    pid: U32,
    tid: U32,
    comm: Str,
    /// Probe point as named in the traced kernel (`track_pfn_insert`, `pfnmap_track`, ...).
    hook: Str,
    /// fentry, kprobe, tp_btf, raw_tp or tracepoint.
    mode: Str,
    /// The user address the call is about.
    address: OptU64,
    /// FAULT_FLAG_* of handle_mm_fault.
    fault_flags: OptU32,
    /// x86 page-fault error code of `exceptions:page_fault_*`.
    error_code: OptU32,
    vma_id: OptU32,
    vma_start: OptU64,
    vma_end: OptU64,
    vma_pgoff: OptU64,
    vma_flags: OptU64,
    /// `vm_page_prot` bits and the cache mode they select.
    vma_prot: OptU64,
    vma_cache: OptStr,
    /// The vma's `vm_ops` symbol (e.g. `drm_gem_ttm_vm_ops [ttm]`), or None for anonymous.
    driver: OptStr,
    file_id: OptU32,
    mm_id: OptU32,
    /// The PTE value vm_normal_page was asked about; `page`: whether it returned a struct page.
    pte: OptU64,
    page: OptBool,
    pfn: OptU64,
    /// Bytes (remap, PAT range, memtype range).
    size: OptU64,
    /// Protection the caller asked for, and its cache mode.
    prot: OptU64,
    cache_req: OptStr,
    /// Protection after the call (PAT may override it), and its cache mode.
    prot_out: OptU64,
    cache_out: OptStr,
    /// The `write` argument of the PMD/PUD inserts.
    write: OptBool,
    /// Raw return: VM_FAULT_* bits for faults and inserts, 0 / -errno for int functions.
    ret: OptI64,
    /// `mm_filemap_delete_from_page_cache` fields.
    ino: OptU64,
    index: OptU64,
    dev: OptU64,
    /// `sched_process_fork`.
    child_pid: OptU32,
    /// Counter rows only (`hook == COUNTERS_HOOK`).
    dropped: OptU64,
    unpaired: OptU64,
    read_failed: OptU64,
    /// The PFN_* flags of a `pfn_t` argument as the kernel keeps them, in bits 52-63 (PFN_DEV
    /// 1 << 61, PFN_MAP 1 << 60, PFN_SPECIAL 1 << 59); None where the argument is a plain pfn
    /// (6.17+, vmf_insert_pfn_prot) or the trace predates the column.
    pfn_flags: OptU64,
    /// Time switched out between entry and return (the sum of the call's `sched:sched_switch`
    /// episodes); on a `sched:sched_switch` row, that episode's. None where off-CPU time was
    /// not traced (schema 4 and older, `--hooks` without the sched hooks).
    offcpu_ns: OptU64,
    /// Kernel and user stack, outermost frame first, frames joined by `;` (the folded form
    /// flame graphs read): kernel frames `function+0xoff [module]`, user frames
    /// `function+0xoff (binary)` or `build-id:HEX+0xoff` where the binary was not readable.
    /// Taken at the return of calls slower than the stack threshold; on a
    /// `sched:sched_switch` row, the kernel stack where the task blocked.
    kstack: OptStr,
    ustack: OptStr,
    /// `sched:sched_switch` rows: the function the task blocked in (`folio_wait_bit_common`,
    /// `rwsem_down_read_slowpath`, ...; `(preempted)` when it was still runnable), and who
    /// woke it (None when no wakeup was seen, as after a preemption).
    block_site: OptStr,
    preempted: OptBool,
    waker_tid: OptU32,
    waker_pid: OptU32,
    waker_comm: OptStr,
}
