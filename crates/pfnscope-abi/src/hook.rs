//! The hook table: every probe point pfnscope knows, what its arguments mean, which kernels have
//! it and how it may be attached. Both ends read it: the eBPF programs by [`Hook`] id, the tracer
//! to resolve and decode arguments, the replay and the analyzer to tell calls apart. Traces store
//! [`Hook::name`]; nothing else spells a hook.
//!
//! Adding a hook: a [`Hook`] variant and its [`HOOKS`] row here, its eBPF program (a
//! `function_hook!` line in `tracer-ebpf`, or a tracepoint program), and its model handler in
//! `replay`. Presence is decided by probing the running kernel (BTF, kallsyms, tracefs), never by
//! version number: `kernels` is documentation, and the tests check it against
//! [`crate::kernel::TABLE`].

use core::fmt;

use crate::mode::Mode;

/// A probe point. The value is the id the eBPF programs write into `Event::hook` (ids only
/// name probe points within one build; traces store names). Functions come first, then
/// tracepoints from [`Hook::FIRST_TRACEPOINT`] on.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    HandleMmFault,
    VmNormalPage,
    VmfInsertPfnProt,
    VmfInsertPfn,
    VmfInsertMixed,
    VmfInsertMixedMkwrite,
    VmfInsertPfnPmd,
    VmfInsertPfnPmdProt,
    VmfInsertPfnPud,
    VmfInsertPfnPudProt,
    RemapPfnRange,
    TrackPfnInsert,
    TrackPfnRemap,
    TrackPfnCopy,
    UntrackPfn,
    PfnmapSetupCachemode,
    PfnmapTrack,
    PfnmapUntrack,
    MemtypeReserve,
    MemtypeFree,
    CopyPageRange,
    UnmapPageRange,
    VmInsertPage,
    SetPteRange,
    DoSetPte,
    RemapPfnRangeNotrack,
    VmIomapMemory,
    ArchIoReserveMemtypeWc,
    ArchIoFreeMemtypeWc,
    PageFaultUser,
    PageFaultKernel,
    FilemapDelete,
    FilemapAdd,
    SchedProcessFork,
    SchedProcessExit,
    SchedSwitch,
    SchedWaking,
}

/// What an argument slot means. Slots are found by parameter name in the kernel's BTF, so a
/// kernel that reorders or adds parameters is handled from its BTF rather than refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `struct vm_area_struct *`: its fields are snapshot at entry.
    Vma,
    /// `struct vm_fault *`: the programs read `vmf->vma` and record `vmf->address` in the slot.
    Vmf,
    /// A user virtual address.
    Addr,
    /// End of a user address range (size = end - addr).
    AddrEnd,
    /// A pfn, or a `pfn_t` (flags in the top bits are masked off when decoding).
    Pfn,
    /// Not in the table: what [`Role::Pfn`] resolves to where BTF types the parameter `pfn_t`
    /// (up to 6.16). Its PFN_* flags are kept, the model needs them (devmap, special).
    PfnT,
    /// `pgprot_t` passed by value.
    Prot,
    /// `pgprot_t *`: read at entry (requested) and at return (what PAT made of it).
    ProtPtr,
    /// Size in bytes.
    Size,
    /// `FAULT_FLAG_*`.
    FaultFlags,
    /// `pte_t` by value.
    Pte,
    /// `bool write` of the PMD/PUD inserts.
    Write,
    /// Physical range start / end of `memtype_*` (pfn = start >> PAGE_SHIFT, size = end - start).
    PhysStart,
    PhysEnd,
    /// `enum page_cache_mode` requested.
    CacheReq,
    /// `enum page_cache_mode *` written by the callee.
    CacheOutPtr,
    /// `struct page *`: the programs record its pfn.
    Page,
    /// A number of pages.
    Pages,
    /// Tracepoint fields: the x86 page-fault error code, the faulting instruction, a page
    /// cache page's inode, index and device, a fork's parent and child.
    ErrorCode,
    Ip,
    Ino,
    Index,
    Dev,
    ParentPid,
    ChildPid,
    /// `sched:sched_switch` rows: see [`crate::episode`] for the slots.
    Episode,
}

/// What a function returns, and so what a trace's `ret` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    /// `vm_fault_t` (32-bit VM_FAULT_* bits).
    VmFault,
    /// `int`: 0 or -errno.
    Errno,
    /// `struct page *`: only whether it is NULL is kept.
    Page,
    Void,
}

#[derive(Clone, Copy, Debug)]
pub struct Arg {
    /// Parameter names this role has had across kernels, most recent first.
    pub names: &'static [&'static str],
    pub role: Role,
}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A kernel function: fentry/fexit, then kprobe/kretprobe.
    Function { args: &'static [Arg], ret: Ret },
    /// A tracepoint, with the rungs this program set has for it, best first. Its programs are
    /// named `<event>_btf`, `<event>_raw` and `<event>_tp`, and record the fields in `fields`
    /// order in the event's argument slots.
    Tracepoint {
        group: &'static str,
        event: &'static str,
        rungs: &'static [Mode],
        fields: &'static [Role],
    },
}

/// Kernels that have a hook, by `(major, minor)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    All,
    /// Present up to and including this (major, minor).
    Until(u32, u32),
    /// Present from this (major, minor) on.
    Since(u32, u32),
}

impl Kernels {
    pub fn includes(self, major: u32, minor: u32) -> bool {
        match self {
            Kernels::All => true,
            Kernels::Until(a, b) => (major, minor) <= (a, b),
            Kernels::Since(a, b) => (major, minor) >= (a, b),
        }
    }
}

impl fmt::Display for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kernels::All => f.write_str("all supported kernels"),
            Kernels::Until(a, b) => write!(f, "up to {a}.{b}"),
            Kernels::Since(a, b) => write!(f, "{a}.{b} and later"),
        }
    }
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct HookDef {
    pub hook: Hook,
    /// The probe point's name in the kernel (symbol, or `group:event`) and in traces.
    pub name: &'static str,
    pub kind: Kind,
    /// Kernels that have it, for humans and for the table's own tests.
    pub kernels: Kernels,
    /// What a driver engineer learns from it.
    pub what: &'static str,
    /// Tracepoint hooks that stand in when no rung attaches this one.
    pub fallback: &'static [Hook],
    /// Where the kernel behaviour or the difference comes from.
    pub note: &'static str,
}

const fn a(names: &'static [&'static str], role: Role) -> Arg {
    Arg { names, role }
}

const VMA: Arg = a(&["vma"], Role::Vma);
const ADDR: Arg = a(&["addr", "address"], Role::Addr);
const PFN: Arg = a(&["pfn"], Role::Pfn);
const PAGE: Arg = a(&["page"], Role::Page);
/// `vmf_insert_pfn_pmd`/`_pud` (6.3+) and their `_prot` forms (until 6.2).
const HUGE_INSERT: &[Arg] = &[a(&["vmf"], Role::Vmf), PFN, a(&["write"], Role::Write)];
const HUGE_INSERT_PROT: &[Arg] = &[
    a(&["vmf"], Role::Vmf),
    PFN,
    a(&["pgprot"], Role::Prot),
    a(&["write"], Role::Write),
];
const SIZE: Arg = a(&["size"], Role::Size);
const PROT_PTR: Arg = a(&["prot"], Role::ProtPtr);
const TP_RUNGS: &[Mode] = &[Mode::TpBtf, Mode::RawTp, Mode::Tracepoint];
const FAULT_TPS: &[Hook] = &[Hook::PageFaultUser, Hook::PageFaultKernel];
/// `(unsigned long address, struct pt_regs *regs, unsigned long error_code)`; the classic form
/// has `ip` where the others have `regs`.
const FAULT_FIELDS: &[Role] = &[Role::Addr, Role::Ip, Role::ErrorCode];

const fn function(args: &'static [Arg], ret: Ret) -> Kind {
    Kind::Function { args, ret }
}

/// The table, indexed by `Hook as usize`.
pub static HOOKS: [HookDef; Hook::COUNT] = [
    HookDef {
        hook: Hook::HandleMmFault,
        name: "handle_mm_fault",
        kind: function(
            &[
                VMA,
                a(&["address"], Role::Addr),
                a(&["flags"], Role::FaultFlags),
            ],
            Ret::VmFault,
        ),
        kernels: Kernels::All,
        what: "every page fault: vma, FAULT_FLAG bits, VM_FAULT result, latency",
        fallback: FAULT_TPS,
        note: "mm/memory.c; 6.12+ user faults run first under the per-VMA lock and may RETRY",
    },
    HookDef {
        hook: Hook::VmNormalPage,
        name: "vm_normal_page",
        kind: function(&[VMA, ADDR, a(&["pte"], Role::Pte)], Ret::Page),
        kernels: Kernels::All,
        what: "the 'is there a struct page behind this PTE' decision (NULL for special/PFN PTEs)",
        fallback: &[],
        note: "mm/memory.c; pte_t by value: fentry slot 2 (older kernels refuse struct args in trampolines)",
    },
    HookDef {
        hook: Hook::VmfInsertPfnProt,
        name: "vmf_insert_pfn_prot",
        kind: function(&[VMA, ADDR, PFN, a(&["pgprot"], Role::Prot)], Ret::VmFault),
        kernels: Kernels::All,
        what: "a driver inserting a PFN with an explicit protection (TTM, DRM)",
        fallback: &[],
        note: "mm/memory.c; pfn_t until 6.17, plain unsigned long after",
    },
    HookDef {
        hook: Hook::VmfInsertPfn,
        name: "vmf_insert_pfn",
        kind: function(&[VMA, ADDR, PFN], Ret::VmFault),
        kernels: Kernels::All,
        what: "a driver inserting a PFN with the vma's protection (vgem, vvar)",
        fallback: &[],
        note: "mm/memory.c (the old vm_insert_pfn)",
    },
    HookDef {
        hook: Hook::VmfInsertMixed,
        name: "vmf_insert_mixed",
        kind: function(&[VMA, ADDR, PFN], Ret::VmFault),
        kernels: Kernels::All,
        what: "PFN insert into a VM_MIXEDMAP vma",
        fallback: &[],
        note: "mm/memory.c; failure BUGs in 6.1, returns SIGBUS in 6.12+",
    },
    HookDef {
        hook: Hook::VmfInsertMixedMkwrite,
        name: "vmf_insert_mixed_mkwrite",
        kind: function(&[VMA, ADDR, PFN], Ret::VmFault),
        kernels: Kernels::All,
        what: "the same, mapped writable at once: fs-dax write faults",
        fallback: &[],
        note: "mm/memory.c; fs/dax.c dax_fault_iter and dax_insert_pfn_mkwrite",
    },
    HookDef {
        hook: Hook::VmfInsertPfnPmd,
        name: "vmf_insert_pfn_pmd",
        kind: function(HUGE_INSERT, Ret::VmFault),
        kernels: Kernels::Since(6, 3),
        what: "2 MiB PFN insert",
        fallback: &[],
        note: "mm/huge_memory.c; in 6.1 a static inline over vmf_insert_pfn_pmd_prot",
    },
    HookDef {
        hook: Hook::VmfInsertPfnPmdProt,
        name: "vmf_insert_pfn_pmd_prot",
        kind: function(HUGE_INSERT_PROT, Ret::VmFault),
        kernels: Kernels::Until(6, 2),
        what: "2 MiB PFN insert with explicit protection",
        fallback: &[],
        note: "mm/huge_memory.c; folded into vmf_insert_pfn_pmd in 6.3",
    },
    HookDef {
        hook: Hook::VmfInsertPfnPud,
        name: "vmf_insert_pfn_pud",
        kind: function(HUGE_INSERT, Ret::VmFault),
        kernels: Kernels::Since(6, 3),
        what: "1 GiB PFN insert",
        fallback: &[],
        note: "mm/huge_memory.c",
    },
    HookDef {
        hook: Hook::VmfInsertPfnPudProt,
        name: "vmf_insert_pfn_pud_prot",
        kind: function(HUGE_INSERT_PROT, Ret::VmFault),
        kernels: Kernels::Until(6, 2),
        what: "1 GiB PFN insert with explicit protection",
        fallback: &[],
        note: "mm/huge_memory.c",
    },
    HookDef {
        hook: Hook::RemapPfnRange,
        name: "remap_pfn_range",
        kind: function(
            &[VMA, ADDR, PFN, SIZE, a(&["prot"], Role::Prot)],
            Ret::Errno,
        ),
        kernels: Kernels::All,
        what: "a driver mapping a whole PFN range at mmap time (/dev/mem, fbdev, PCI BARs)",
        fallback: &[],
        note: "mm/memory.c; sets VM_IO|VM_PFNMAP|VM_DONTEXPAND|VM_DONTDUMP",
    },
    HookDef {
        hook: Hook::TrackPfnInsert,
        name: "track_pfn_insert",
        kind: function(&[VMA, PROT_PTR, PFN], Ret::Void),
        kernels: Kernels::Until(6, 15),
        what: "PAT forcing the cache mode of a single-PFN insert",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c; became pfnmap_setup_cachemode in 6.16",
    },
    HookDef {
        hook: Hook::TrackPfnRemap,
        name: "track_pfn_remap",
        kind: function(&[VMA, PROT_PTR, PFN, ADDR, SIZE], Ret::Errno),
        kernels: Kernels::Until(6, 15),
        what: "PAT reservation of a remap (whole vma) or cache-mode lookup (partial)",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c; became pfnmap_track in 6.16",
    },
    HookDef {
        hook: Hook::TrackPfnCopy,
        name: "track_pfn_copy",
        kind: function(&[a(&["src_vma", "vma"], Role::Vma)], Ret::Errno),
        kernels: Kernels::Until(6, 15),
        what: "PAT reservation for a child on fork",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c; removed in 6.16 (tracking context refcounted instead)",
    },
    HookDef {
        hook: Hook::UntrackPfn,
        name: "untrack_pfn",
        kind: function(&[VMA, PFN, SIZE], Ret::Void),
        kernels: Kernels::Until(6, 15),
        what: "PAT release on unmap",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c; became pfnmap_untrack in 6.16",
    },
    HookDef {
        hook: Hook::PfnmapSetupCachemode,
        name: "pfnmap_setup_cachemode",
        kind: function(&[PFN, SIZE, PROT_PTR], Ret::Errno),
        kernels: Kernels::Since(6, 16),
        what: "PAT cache-mode lookup for inserts and partial remaps",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c; the _pfn form is a static inline and cannot be probed",
    },
    HookDef {
        hook: Hook::PfnmapTrack,
        name: "pfnmap_track",
        kind: function(&[PFN, SIZE, PROT_PTR], Ret::Errno),
        kernels: Kernels::Since(6, 16),
        what: "PAT reservation of a whole-vma remap",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c",
    },
    HookDef {
        hook: Hook::PfnmapUntrack,
        name: "pfnmap_untrack",
        kind: function(&[PFN, SIZE], Ret::Void),
        kernels: Kernels::Since(6, 16),
        what: "PAT release when the last vma holding the tracking context goes",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c",
    },
    HookDef {
        hook: Hook::MemtypeReserve,
        name: "memtype_reserve",
        kind: function(
            &[
                a(&["start"], Role::PhysStart),
                a(&["end"], Role::PhysEnd),
                a(&["req_type"], Role::CacheReq),
                a(&["new_type"], Role::CacheOutPtr),
            ],
            Ret::Errno,
        ),
        kernels: Kernels::All,
        what: "the memtype interval tree: reservation requested vs granted",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c",
    },
    HookDef {
        hook: Hook::MemtypeFree,
        name: "memtype_free",
        kind: function(
            &[a(&["start"], Role::PhysStart), a(&["end"], Role::PhysEnd)],
            Ret::Errno,
        ),
        kernels: Kernels::All,
        what: "the memtype interval tree: reservation released",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c",
    },
    HookDef {
        hook: Hook::CopyPageRange,
        name: "copy_page_range",
        kind: function(&[a(&["src_vma", "vma"], Role::Vma)], Ret::Errno),
        kernels: Kernels::All,
        what: "fork copying a vma's page tables: the context of track_pfn_copy and special-PTE copies",
        fallback: &[],
        note: "mm/memory.c",
    },
    HookDef {
        hook: Hook::UnmapPageRange,
        name: "unmap_page_range",
        kind: function(&[VMA, ADDR, a(&["end"], Role::AddrEnd)], Ret::Void),
        kernels: Kernels::All,
        what: "zapping a vma range: the context of vm_normal_page calls on unmap and of untrack",
        fallback: &[],
        note: "mm/memory.c",
    },
    HookDef {
        hook: Hook::VmInsertPage,
        name: "vm_insert_page",
        kind: function(&[VMA, ADDR, PAGE], Ret::Errno),
        kernels: Kernels::All,
        what: "a driver mapping a real page (normal PTE, the vma's protection, no PAT lookup)",
        fallback: &[],
        note: "mm/memory.c:vm_insert_page, insert_page; sets VM_MIXEDMAP on first use",
    },
    HookDef {
        hook: Hook::SetPteRange,
        name: "set_pte_range",
        kind: function(
            &[a(&["vmf"], Role::Vmf), PAGE, a(&["nr"], Role::Pages), ADDR],
            Ret::Void,
        ),
        kernels: Kernels::Since(6, 6),
        what: "a fault mapping the page its ->fault handed back (vmf->page), or fault-around",
        fallback: &[],
        note: "mm/memory.c:finish_fault; mm/filemap.c:filemap_map_pages; replaced do_set_pte in 6.6",
    },
    HookDef {
        hook: Hook::DoSetPte,
        name: "do_set_pte",
        kind: function(&[a(&["vmf"], Role::Vmf), PAGE, ADDR], Ret::Void),
        kernels: Kernels::Until(6, 5),
        what: "the same up to 6.5, one page at a time",
        fallback: &[],
        note: "mm/memory.c:finish_fault; mm/filemap.c:filemap_map_pages",
    },
    HookDef {
        hook: Hook::RemapPfnRangeNotrack,
        name: "remap_pfn_range_notrack",
        kind: function(
            &[VMA, ADDR, PFN, SIZE, a(&["prot"], Role::Prot)],
            Ret::Errno,
        ),
        kernels: Kernels::All,
        what: "a PFN range mapped with no PAT tracking: the cache mode is the driver's, unchecked",
        fallback: &[],
        note: "mm/memory.c; called by remap_pfn_range after PAT, and by drivers directly (io_mapping_map_user)",
    },
    HookDef {
        hook: Hook::VmIomapMemory,
        name: "vm_iomap_memory",
        kind: function(
            &[VMA, a(&["start"], Role::PhysStart), a(&["len"], Role::Size)],
            Ret::Errno,
        ),
        kernels: Kernels::All,
        what: "a driver mapping a physical range into a whole vma (fbdev, simple drivers): the context of its remap",
        fallback: &[],
        note: "mm/memory.c:vm_iomap_memory -> io_remap_pfn_range",
    },
    HookDef {
        hook: Hook::ArchIoReserveMemtypeWc,
        name: "arch_io_reserve_memtype_wc",
        kind: function(&[a(&["start"], Role::PhysStart), SIZE], Ret::Errno),
        kernels: Kernels::All,
        what: "a driver reserving device memory write-combining outside any mapping (GPU apertures)",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c:arch_io_reserve_memtype_wc -> memtype_reserve_io",
    },
    HookDef {
        hook: Hook::ArchIoFreeMemtypeWc,
        name: "arch_io_free_memtype_wc",
        kind: function(&[a(&["start"], Role::PhysStart), SIZE], Ret::Void),
        kernels: Kernels::All,
        what: "the release of such a reservation",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c:arch_io_free_memtype_wc -> memtype_free_io",
    },
    HookDef {
        hook: Hook::PageFaultUser,
        name: "exceptions:page_fault_user",
        kind: Kind::Tracepoint {
            group: "exceptions",
            event: "page_fault_user",
            rungs: TP_RUNGS,
            fields: FAULT_FIELDS,
        },
        kernels: Kernels::All,
        what: "every user-mode page fault (entry only: address, error code; vma via bpf_find_vma in tp_btf mode)",
        fallback: &[],
        note: "arch/x86/mm/fault.c",
    },
    HookDef {
        hook: Hook::PageFaultKernel,
        name: "exceptions:page_fault_kernel",
        kind: Kind::Tracepoint {
            group: "exceptions",
            event: "page_fault_kernel",
            rungs: TP_RUNGS,
            fields: FAULT_FIELDS,
        },
        kernels: Kernels::All,
        what: "page faults taken in kernel mode on user addresses (copy_to/from_user)",
        fallback: &[],
        note: "arch/x86/mm/fault.c",
    },
    HookDef {
        hook: Hook::FilemapDelete,
        name: "filemap:mm_filemap_delete_from_page_cache",
        kind: Kind::Tracepoint {
            group: "filemap",
            event: "mm_filemap_delete_from_page_cache",
            rungs: &[Mode::Tracepoint],
            fields: &[Role::Pfn, Role::Ino, Role::Index, Role::Dev],
        },
        kernels: Kernels::All,
        what: "a page leaving the page cache (truncate, invalidate): the fault-vs-truncate rule",
        fallback: &[],
        note: "mm/filemap.c",
    },
    HookDef {
        hook: Hook::FilemapAdd,
        name: "filemap:mm_filemap_add_to_page_cache",
        kind: Kind::Tracepoint {
            group: "filemap",
            event: "mm_filemap_add_to_page_cache",
            rungs: &[Mode::Tracepoint],
            // The same event class as the delete (mm_filemap_op_page_cache): same fields.
            fields: &[Role::Pfn, Role::Ino, Role::Index, Role::Dev],
        },
        kernels: Kernels::All,
        what: "a page entering the page cache: a pfn that left it may come back, at any index",
        fallback: &[],
        note: "mm/filemap.c:__filemap_add_folio; include/trace/events/filemap.h",
    },
    HookDef {
        hook: Hook::SchedProcessFork,
        name: "sched:sched_process_fork",
        kind: Kind::Tracepoint {
            group: "sched",
            event: "sched_process_fork",
            rungs: &[Mode::Tracepoint],
            fields: &[Role::ParentPid, Role::ChildPid],
        },
        kernels: Kernels::All,
        what: "fork: follows children of traced processes, and is the context of PAT copies",
        fallback: &[],
        note: "kernel/fork.c",
    },
    HookDef {
        hook: Hook::SchedProcessExit,
        name: "sched:sched_process_exit",
        kind: Kind::Tracepoint {
            group: "sched",
            event: "sched_process_exit",
            rungs: &[Mode::Tracepoint],
            // The exiting task is the event's own: no field is needed.
            fields: &[],
        },
        kernels: Kernels::All,
        what: "a task exiting: what a process reserved and never freed is a leak from then on",
        fallback: &[],
        note: "kernel/exit.c:do_exit",
    },
    HookDef {
        hook: Hook::SchedSwitch,
        name: "sched:sched_switch",
        kind: Kind::Tracepoint {
            group: "sched",
            event: "sched_switch",
            rungs: &[Mode::TpBtf],
            fields: &[Role::Episode],
        },
        kernels: Kernels::All,
        what: "off-CPU time inside a traced call: one row per episode, with the kernel stack where the task blocked and its waker",
        fallback: &[],
        note: "kernel/sched/core.c:__schedule (current is still the task switched out)",
    },
    HookDef {
        hook: Hook::SchedWaking,
        name: "sched:sched_waking",
        kind: Kind::Tracepoint {
            group: "sched",
            event: "sched_waking",
            rungs: &[Mode::TpBtf],
            // No rows of its own: it names the waker in the episode of the task it wakes.
            fields: &[],
        },
        kernels: Kernels::All,
        what: "who woke a task blocked inside a traced call (recorded in its sched_switch row)",
        fallback: &[],
        note: "kernel/sched/core.c:try_to_wake_up; sched_waking, not sched_wakeup, runs in the waker's context (sched_wakeup may run on the wakee's CPU from an IPI)",
    },
];

impl Hook {
    pub const COUNT: usize = Hook::SchedWaking as usize + 1;
    /// Function hooks come first; everything from here on is a tracepoint.
    pub const FIRST_TRACEPOINT: Hook = Hook::PageFaultUser;

    /// Every hook, in id order.
    pub fn all() -> impl Iterator<Item = Hook> {
        HOOKS.iter().map(|d| d.hook)
    }

    pub fn from_u16(id: u16) -> Option<Hook> {
        HOOKS.get(id as usize).map(|d| d.hook)
    }

    #[inline]
    pub fn def(self) -> &'static HookDef {
        &HOOKS[self as usize]
    }

    /// The name traces store: the kernel symbol, or `group:event` for tracepoints.
    #[inline]
    pub fn name(self) -> &'static str {
        self.def().name
    }

    /// A hook by [`Hook::name`]; tracepoints also without their group (`page_fault_user`).
    pub fn parse(name: &str) -> Option<Hook> {
        HOOKS
            .iter()
            .find(|d| d.name == name)
            .or_else(|| {
                HOOKS
                    .iter()
                    .find(|d| matches!(d.kind, Kind::Tracepoint { event, .. } if event == name))
            })
            .map(|d| d.hook)
    }

    pub fn is_function(self) -> bool {
        matches!(self.def().kind, Kind::Function { .. })
    }

    /// What the function returns (None for tracepoints).
    pub fn ret(self) -> Option<Ret> {
        match self.def().kind {
            Kind::Function { ret, .. } => Some(ret),
            Kind::Tracepoint { .. } => None,
        }
    }

    /// Rungs of the attach ladder for this hook, best first.
    pub fn rungs(self) -> &'static [Mode] {
        match self.def().kind {
            Kind::Function { .. } => &[Mode::Fentry, Mode::Kprobe],
            Kind::Tracepoint { rungs, .. } => rungs,
        }
    }

    /// Whether `mode` is a rung this hook attaches with.
    pub fn attaches_with(self, mode: Mode) -> bool {
        self.rungs().contains(&mode)
    }

    /// A row of this hook is one page fault: the probed `handle_mm_fault`, or a fault
    /// tracepoint where it could not be probed (those carry no return, so no latency).
    pub fn is_fault(self) -> bool {
        matches!(
            self,
            Hook::HandleMmFault | Hook::PageFaultUser | Hook::PageFaultKernel
        )
    }

    /// The scheduler hooks that measure off-CPU time inside traced calls.
    pub fn is_offcpu(self) -> bool {
        matches!(self, Hook::SchedSwitch | Hook::SchedWaking)
    }

    /// A driver's PFN insert, at any page-table level.
    pub fn is_insert(self) -> bool {
        self.insert_pages().is_some()
    }

    /// Pages one insert maps: 1 (PTE), 512 (PMD) or 512 * 512 (PUD); None for other hooks.
    pub fn insert_pages(self) -> Option<u64> {
        match self {
            Hook::VmfInsertPfnProt
            | Hook::VmfInsertPfn
            | Hook::VmfInsertMixed
            | Hook::VmfInsertMixedMkwrite => Some(1),
            Hook::VmfInsertPfnPmd | Hook::VmfInsertPfnPmdProt => Some(512),
            Hook::VmfInsertPfnPud | Hook::VmfInsertPfnPudProt => Some(512 * 512),
            _ => None,
        }
    }

    /// An insert into a VM_MIXEDMAP vma (`vm_mixed_ok` decides, not the vma's PFNMAP bit).
    pub fn is_mixed_insert(self) -> bool {
        matches!(self, Hook::VmfInsertMixed | Hook::VmfInsertMixedMkwrite)
    }

    /// PAT's cache-mode lookup on insert.
    pub fn is_insert_lookup(self) -> bool {
        matches!(self, Hook::TrackPfnInsert | Hook::PfnmapSetupCachemode)
    }

    /// PAT's tracking of a remap (whole vma: a reservation; partial: a lookup).
    pub fn is_remap_track(self) -> bool {
        matches!(
            self,
            Hook::TrackPfnRemap | Hook::PfnmapTrack | Hook::PfnmapSetupCachemode
        )
    }

    /// PAT and its memtype tree.
    pub fn is_pat(self) -> bool {
        matches!(
            self,
            Hook::TrackPfnInsert
                | Hook::TrackPfnRemap
                | Hook::TrackPfnCopy
                | Hook::UntrackPfn
                | Hook::PfnmapSetupCachemode
                | Hook::PfnmapTrack
                | Hook::PfnmapUntrack
                | Hook::MemtypeReserve
                | Hook::MemtypeFree
        )
    }

    /// The PAT hooks of the `track_pfn_*` family, renamed to `pfnmap_*` in 6.16
    /// ([`crate::kernel::Features::track_pfn_hooks`]).
    pub fn is_track_pfn_family(self) -> bool {
        matches!(
            self,
            Hook::TrackPfnInsert | Hook::TrackPfnRemap | Hook::TrackPfnCopy | Hook::UntrackPfn
        )
    }

    pub fn is_pfnmap_family(self) -> bool {
        matches!(
            self,
            Hook::PfnmapSetupCachemode | Hook::PfnmapTrack | Hook::PfnmapUntrack
        )
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests;
