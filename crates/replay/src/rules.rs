//! The rule catalogue: every check the replay makes, with the kernel source that justifies it.

use serde::Serialize;

/// Divergence rules compare the kernel with the model; finding rules flag what the kernel did
/// correctly but a driver author should look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Divergence,
    Finding,
}

macro_rules! rules {
    ($($var:ident = $id:literal, $kind:ident, $what:literal, $source:literal;)*) => {
        /// A rule id. `Rule::ALL` lists them in report order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Rule { $($var),* }

        impl Rule {
            pub const ALL: &'static [Rule] = &[$(Rule::$var),*];
            pub const COUNT: usize = Rule::ALL.len();

            /// Stable id used in reports (`fault.ret`, `pat.reserve`, ...).
            pub fn id(self) -> &'static str {
                match self { $(Rule::$var => $id),* }
            }

            pub fn kind(self) -> Kind {
                match self { $(Rule::$var => Kind::$kind),* }
            }

            /// One sentence: what must hold (divergences) or what is reported (findings).
            pub fn what(self) -> &'static str {
                match self { $(Rule::$var => $what),* }
            }

            /// Where in the kernel the rule comes from: `file:function` and a commit where known.
            pub fn source(self) -> &'static str {
                match self { $(Rule::$var => $source),* }
            }

            pub fn by_id(id: &str) -> Option<Rule> {
                Rule::ALL.iter().copied().find(|r| r.id() == id)
            }
        }

        impl Serialize for Rule {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.id())
            }
        }
    };
}

rules! {
    FaultFlags = "fault.flags", Divergence,
        "handle_mm_fault is only passed FAULT_FLAG_* bits the kernel series defines (no VMA_LOCK before per-VMA locks)",
        "include/linux/mm_types.h:enum fault_flag; arch/x86/mm/fault.c:do_user_addr_fault (0bff0aaea03e)";
    FaultRet = "fault.ret", Divergence,
        "handle_mm_fault returns only defined VM_FAULT_* bits, and RETRY only when ALLOW_RETRY or VMA_LOCK allowed it",
        "include/linux/mm_types.h:enum vm_fault_reason; mm/memory.c:handle_mm_fault";
    FaultOutcome = "fault.outcome", Divergence,
        "a failed fault (VM_FAULT_ERROR) installs no PTE: its page is not seen present later unless another fault at that page came first; and only a driver's ->fault returns VM_FAULT_NOPAGE, never an anonymous vma",
        "mm/memory.c:handle_mm_fault, do_anonymous_page, __do_fault; mm/memory.c:zap_present_ptes (vm_normal_page on every present PTE)";
    FaultSanitize = "fault.sanitize", Divergence,
        "6.12+: a write fault on a vma without VM_MAYWRITE, or without VM_WRITE on a non-COW vma, is SIGSEGV before any driver call",
        "mm/memory.c:sanitize_fault_flags";
    FaultVmaLock = "fault.vma_lock", Divergence,
        "6.12+: under the per-VMA lock a driver without ->map_pages is not called: the fault returns RETRY and is redone under mmap_lock",
        "mm/memory.c:vmf_can_call_fault, do_read_fault/do_shared_fault; arch/x86/mm/fault.c:do_user_addr_fault";
    FaultInsertResult = "fault.insert_result", Divergence,
        "a fault whose PFN insert for the faulting page succeeded does not report an error or RETRY",
        "mm/memory.c:__do_fault, do_fault; drivers return the vmf_insert_* result";
    InsertVmaFlags = "insert.vma_flags", Divergence,
        "vmf_insert_pfn* BUG unless exactly one of VM_PFNMAP/VM_MIXEDMAP is set and a VM_PFNMAP vma is not COW: such a call never returns",
        "mm/memory.c:vmf_insert_pfn_prot (BUG_ON), vmf_insert_pfn_pmd_prot";
    InsertMixed = "insert.mixed", Divergence,
        "vmf_insert_mixed on a vma without VM_MIXEDMAP: BUG on 6.1, SIGBUS on 6.12+",
        "mm/memory.c:__vm_insert_mixed, vm_mixed_ok";
    InsertRet = "insert.ret", Divergence,
        "vmf_insert_* returns SIGBUS outside the vma, else NOPAGE or OOM (SIGBUS also for an L1TF-refused non-present prot)",
        "mm/memory.c:vmf_insert_pfn_prot, insert_pfn, pfn_modify_allowed";
    InsertPatLookup = "insert.pat_lookup", Divergence,
        "every PFN insert inside its vma asks PAT for the cache mode (track_pfn_insert / pfnmap_setup_cachemode) before mapping",
        "mm/memory.c:vmf_insert_pfn_prot, __vm_insert_mixed, vmf_insert_pfn_pmd_prot";
    PatLookup = "pat.lookup", Divergence,
        "the insert's cache mode is lookup_memtype(pfn): the covering reservation, WB in the ISA hole, stable while no reservation changes; only the cache bits of the prot change",
        "arch/x86/mm/pat/memtype.c:track_pfn_insert / pfnmap_setup_cachemode, lookup_memtype";
    PatReserve = "pat.reserve", Divergence,
        "memtype_reserve: overlapping reservations of one type impose it, disagreeing ones give -EBUSY, none give the request (WB may become UC- by MTRR)",
        "arch/x86/mm/pat/memtype.c:memtype_reserve, memtype_check_conflict (memtype_interval.c)";
    PatFree = "pat.free", Divergence,
        "memtype_free of a range the model holds (exact or end match) succeeds; the ISA hole always succeeds",
        "arch/x86/mm/pat/memtype.c:memtype_free, memtype_erase";
    PatRemap = "pat.remap", Divergence,
        "a whole-vma remap reserves its range (result decides prot and return; a forbidden change frees and gives -EINVAL); a partial remap reserves nothing",
        "arch/x86/mm/pat/memtype.c:track_pfn_remap / pfnmap_track, reserve_pfn_range";
    PatUntrack = "pat.untrack", Divergence,
        "untracking a VM_PAT vma frees exactly its range (and clears VM_PAT); a vma without VM_PAT frees nothing",
        "arch/x86/mm/pat/memtype.c:untrack_pfn / pfnmap_untrack, free_pfn_range";
    RemapRet = "remap.ret", Divergence,
        "remap_pfn_range: -EINVAL for a partial COW remap or a failed PAT track, else 0 (or -ENOMEM); PAT is asked first",
        "mm/memory.c:remap_pfn_range, remap_pfn_range_notrack";
    RemapVma = "remap.vma", Divergence,
        "after a successful remap the vma has VM_IO|VM_PFNMAP|VM_DONTEXPAND|VM_DONTDUMP, and a COW vma's vm_pgoff is the first pfn",
        "mm/memory.c:remap_pfn_range_notrack";
    PteState = "pte.state", Divergence,
        "a PTE shown to vm_normal_page maps the pfn, special bit and cache mode the model installed there (insert, remap, COW copy, fork)",
        "mm/memory.c:insert_pfn, remap_pte_range, wp_page_copy, copy_present_pte";
    PteWritable = "pte.writable", Divergence,
        "a raw PFN in a COW vma is never writable (a write there must fault and copy), and a PTE that a fault or a fork shows to vm_normal_page is writable only in a VM_WRITE vma",
        "mm/mprotect.c:change_pte_range (write-protects when VM_WRITE goes); mm/memory.c:copy_present_pte, wp_page_copy (maybe_mkwrite), remap_pfn_range (a private vm_page_prot has no write bit)";
    PteZeroPage = "pte.zero_page", Divergence,
        "in an anonymous vma (no vm_ops, no file, neither VM_PFNMAP nor VM_MIXEDMAP) the only special PTE is the shared zero page's: vm_normal_page reports any other as a bad page map",
        "mm/memory.c:do_anonymous_page (pte_mkspecial(pfn_pte(my_zero_pfn(...)))), vm_normal_page (print_bad_pte)";
    VnpSpecial = "vnp.special", Divergence,
        "vm_normal_page never returns a page for a special PTE on x86",
        "mm/memory.c:vm_normal_page (7e675137a8e1, pte_special)";
    VnpNormal = "vnp.normal", Divergence,
        "vm_normal_page returns the page of a non-special PTE whose pfn is within the memmap (at or below a pfn already seen with a page)",
        "mm/memory.c:vm_normal_page (highest_memmap_pfn check)";
    VnpLinear = "vnp.linear", Divergence,
        "in a COW VM_PFNMAP vma the special bit agrees with the generic linear rule (pfn == vm_pgoff + page index means raw PFN)",
        "mm/memory.c:vm_normal_page, generic branch (6aab341e0a28)";
    ForkCopy = "fork.copy", Divergence,
        "6.1/6.12: fork of a VM_PFNMAP vma runs track_pfn_copy, a strict reservation of the vma at the first PTE's pfn and cache mode; its error is fork's",
        "mm/memory.c:copy_page_range; arch/x86/mm/pat/memtype.c:track_pfn_copy";
    UnmapUntrack = "unmap.untrack", Divergence,
        "6.1/6.12: zapping a VM_PFNMAP vma is preceded by untrack_pfn on it, so the zap never sees VM_PAT",
        "mm/memory.c:unmap_single_vma";
    TruncateMapped = "truncate.mapped", Divergence,
        "no PTE maps a page-cache page at its file index after mm_filemap_delete_from_page_cache removed it",
        "mm/truncate.c:truncate_inode_pages_range, mm/filemap.c:filemap_fault (page lock across PTE install)";
    TraceFaultVma = "trace.fault_vma", Divergence,
        "the vma recorded with a page-fault tracepoint contains the faulting address (the eBPF side looks it up with bpf_find_vma and caches it per process)",
        "kernel/bpf/task_iter.c:bpf_find_vma; pfnscope tracer: crates/tracer-ebpf/src/tracepoints.rs (VMA_CACHE)";
    TraceParent = "trace.parent", Divergence,
        "a nested call's parent is in the trace unless the tracer counted a loss (dropped/unpaired)",
        "pfnscope tracer: per-task call stack (crates/tracer-ebpf/src/context.rs)";
    FindWcDowngrade = "find.wc_downgrade", Finding,
        "a WC/WT cache mode requested by the driver was silently replaced by UC-/UC by PAT",
        "arch/x86/mm/pat/memtype.c:lookup_memtype (no reservation: UC-), track_pfn_insert";
    FindAlias = "find.alias", Finding,
        "one pfn is mapped with different cache modes at the same time (aliases)",
        "arch/x86/mm/pat/memtype.c (2009 thread: vmf_insert_* reserves nothing, RAM is not refcounted)";
    FindLeak = "find.pat_leak", Finding,
        "a PAT reservation made in the trace outlived its owner without memtype_free: the vma was untracked, the fork copy failed, or the process that made it outside any mapping (a driver's open or mmap) exited",
        "arch/x86/mm/pat/memtype.c:track_pfn_copy (6.12.0 leaks on a failed copy), untrack_pfn, memtype_reserve; kernel/exit.c:do_exit (nothing frees a driver's reservation for it)";
    FindForkCow = "find.fork_cow_first_page", Finding,
        "fork failed because PAT could not recover the vma's cache mode from its first page, which was COWed to anonymous memory",
        "arch/x86/mm/pat/memtype.c:track_pfn_copy (follow_phys on vm_start)";
    FindBadNonSpecial = "find.bad_pte_nonspecial", Finding,
        "vm_normal_page returned no page for a non-special PTE (pfn above the memmap: a bad page map report)",
        "mm/memory.c:vm_normal_page, print_bad_pte";
    FindBadSpecial = "find.bad_pte_special", Finding,
        "a special PTE in a driver vma that is neither VM_PFNMAP nor VM_MIXEDMAP nor devmap (a bad page map report)",
        "mm/memory.c:vm_normal_page, print_bad_pte";
    FindPfnAfterTruncate = "find.pfn_after_truncate", Finding,
        "a driver's special PTE still maps a pfn after that page left the page cache (truncated, purged): user space keeps a page the kernel may free and reuse",
        "mm/filemap.c:__filemap_remove_folio (rmap unmaps only normal pages); mm/memory.c:insert_pfn (special PTEs: no rmap, no reference); drivers/gpu/drm/drm_gem_shmem_helper.c:drm_gem_shmem_purge (zaps before it truncates)";
    FindWcToWb = "find.wc_to_wb", Finding,
        "an uncached, WC or WT cache mode requested by the driver was mapped WB: the pfn's memtype is WB (RAM nobody set otherwise, or a WB reservation), so the user mapping is cached where the driver asked it not to be",
        "arch/x86/mm/pat/memtype.c:lookup_memtype, get_page_memtype (RAM is WB unless set_memory_*/set_pages_* changed it), reserve_pfn_range (RAM: 'map pfn RAM range req X, got WB'); 2009 PAT thread";
    FindCacheChanged = "find.cache_changed", Finding,
        "PAT mapped a cache mode other than the one requested, neither a WC/WT downgrade to uncached nor a change to WB (those have their own findings): an older reservation or the MTRRs decided",
        "arch/x86/mm/pat/memtype.c:lookup_memtype, reserve_pfn_range, pat_x_mtrr_type, memtype_check_conflict";
    FindLinearAlias = "find.linear_alias", Finding,
        "a user PTE maps a RAM page with a cache mode other than the page's memtype, which the kernel's linear map uses: two mappings of one page with different cache modes",
        "arch/x86/mm/pat/memtype.c:memtype_kernel_map_sync (reservations keep the linear map in step); mm/memory.c:vm_insert_page, wp_page_copy (map with vma->vm_page_prot, no PAT lookup); 2009 PAT thread";
    FindInsertOverPresent = "find.insert_over_present", Finding,
        "a PFN insert of a different pfn at an address whose PTE is already present: the kernel keeps the old PTE and returns NOPAGE, so the pfn the driver meant to map is silently not mapped",
        "mm/memory.c:insert_pfn (!pte_none: the PTE is left as it is unless mkwrite of the same pfn)";
    FindFaultMissesPage = "find.fault_misses_page", Finding,
        "a driver's fault returned VM_FAULT_NOPAGE after inserting PFNs, none of them at the faulting page: the access faults again",
        "mm/memory.c:__do_fault (NOPAGE: the driver installed the PTE itself), vmf_insert_pfn_prot (maps the address it is given)";
    FindNopageLoop = "find.nopage_loop", Finding,
        "a task faults on the same page again and again, each fault returning VM_FAULT_NOPAGE without mapping anything: the access never completes",
        "mm/memory.c:__do_fault, do_fault (NOPAGE means the driver installed the PTE itself); arch/x86/mm/fault.c:do_user_addr_fault (the access is retried)";
    FindPartialUntrack = "find.partial_untrack", Finding,
        "unmapping part of a VM_PAT mapping untracks a piece that no reservation starts or ends at: PAT refuses it ('freeing invalid memtype') and the reservation outlives that part of the mapping",
        "arch/x86/mm/pat/memtype.c:untrack_pfn, memtype_free, memtype_erase (exact or end match only); mm/memory.c:unmap_single_vma (6.1/6.12: untrack on every unmap of a VM_PFNMAP vma)";
    FindPerPagePat = "find.per_page_pat", Finding,
        "a driver maps a large range of device memory page by page with no reservation: every fault pays a PAT lookup in the memtype tree and maps UC-, where one reservation (io_mapping, arch_io_reserve_memtype_wc) or one remap at mmap time would do",
        "arch/x86/mm/pat/memtype.c:lookup_memtype (memtype_lookup under memtype_lock on every insert); mm/memory.c:vmf_insert_pfn_prot; 2009 PAT thread";
    FindPageForDevice = "find.page_for_device", Finding,
        "a normal (non-special) PTE maps a pfn outside System RAM and outside device memory with struct pages: a driver handed out a struct page for device memory, whose refcount and rmap then point nowhere real",
        "mm/memory.c:vm_insert_page, finish_fault/set_pte_range (vmf->page), vm_normal_page (a page for any pfn up to highest_memmap_pfn); the 2004 thread on ->nopage returning non-RAM";
    FindRamMemtype = "find.ram_memtype", Finding,
        "PAT answered a non-UC- cache mode for a pfn with no reservation in the trace: RAM with a set_memory_*/set_pages_* type, or a reservation older than the trace",
        "arch/x86/mm/pat/memtype.c:lookup_memtype, get_page_memtype";
}

/// One rule as `replay rules` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RuleInfo {
    pub id: &'static str,
    pub kind: Kind,
    pub what: &'static str,
    pub source: &'static str,
}

impl Rule {
    pub fn info(self) -> RuleInfo {
        RuleInfo {
            id: self.id(),
            kind: self.kind(),
            what: self.what(),
            source: self.source(),
        }
    }

    /// The rule as a reader of a report wants it explained: id and kind, what must hold, and
    /// where in the kernel that comes from.
    pub fn to_human(self) -> String {
        let kind = match self.kind() {
            Kind::Divergence => "a divergence when the kernel breaks it",
            Kind::Finding => "a finding when the kernel does it",
        };
        format!(
            "{}  ({kind})\n    {}\n    kernel: {}\n",
            self.id(),
            self.what(),
            self.source()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_well_formed() {
        let mut ids: Vec<_> = Rule::ALL.iter().map(|r| r.id()).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "duplicate rule ids");
        assert!(
            Rule::ALL
                .iter()
                .filter(|r| r.kind() == Kind::Divergence)
                .count()
                >= 15
        );
        for r in Rule::ALL {
            assert_eq!(Rule::by_id(r.id()), Some(*r));
            assert!(
                r.source().contains(':'),
                "{} has no file:function source",
                r.id()
            );
        }
    }
}
