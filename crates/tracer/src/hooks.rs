//! The hook table: every probe point pfnscope knows, what its arguments mean, which kernels have
//! it and how it may be attached. This is the one place kernel-version differences live; the
//! eBPF programs are generic and the decoder follows this table.
//!
//! Presence is decided by probing the running kernel (BTF, kallsyms, tracefs), never by version
//! number: `kernels` is documentation, and the tests check it against the kernels we have.

use pfnscope_abi::{Mode, hook};

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
}

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
    /// A tracepoint, with the rungs this program set has for it, best first.
    Tracepoint {
        group: &'static str,
        event: &'static str,
        rungs: &'static [Mode],
    },
}

#[derive(Clone, Copy, Debug)]
pub struct HookDef {
    pub id: u16,
    pub kind: Kind,
    /// Kernels that have it, for humans and for the table's own tests.
    pub kernels: Kernels,
    /// What a driver engineer learns from it.
    pub what: &'static str,
    /// Tracepoint hooks that stand in when no rung attaches this one.
    pub fallback: &'static [u16],
    /// Where the kernel behaviour or the difference comes from.
    pub note: &'static str,
}

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

    pub fn describe(self) -> String {
        match self {
            Kernels::All => "all supported kernels".into(),
            Kernels::Until(a, b) => format!("up to {a}.{b}"),
            Kernels::Since(a, b) => format!("{a}.{b} and later"),
        }
    }
}

const fn a(names: &'static [&'static str], role: Role) -> Arg {
    Arg { names, role }
}

const VMA: Arg = a(&["vma"], Role::Vma);
const ADDR: Arg = a(&["addr", "address"], Role::Addr);
const PFN: Arg = a(&["pfn"], Role::Pfn);
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
const FAULT_TPS: &[u16] = &[hook::PAGE_FAULT_USER, hook::PAGE_FAULT_KERNEL];

pub static HOOKS: &[HookDef] = &[
    HookDef {
        id: hook::HANDLE_MM_FAULT,
        kind: Kind::Function {
            args: &[
                VMA,
                a(&["address"], Role::Addr),
                a(&["flags"], Role::FaultFlags),
            ],
            ret: Ret::VmFault,
        },
        kernels: Kernels::All,
        what: "every page fault: vma, FAULT_FLAG bits, VM_FAULT result, latency",
        fallback: FAULT_TPS,
        note: "mm/memory.c; 6.12+ user faults run first under the per-VMA lock and may RETRY",
    },
    HookDef {
        id: hook::VM_NORMAL_PAGE,
        kind: Kind::Function {
            args: &[VMA, ADDR, a(&["pte"], Role::Pte)],
            ret: Ret::Page,
        },
        kernels: Kernels::All,
        what: "the 'is there a struct page behind this PTE' decision (NULL for special/PFN PTEs)",
        fallback: &[],
        note: "mm/memory.c; pte_t by value: fentry slot 2 (older kernels refuse struct args in trampolines)",
    },
    HookDef {
        id: hook::VMF_INSERT_PFN_PROT,
        kind: Kind::Function {
            args: &[VMA, ADDR, PFN, a(&["pgprot"], Role::Prot)],
            ret: Ret::VmFault,
        },
        kernels: Kernels::All,
        what: "a driver inserting a PFN with an explicit protection (TTM, DRM)",
        fallback: &[],
        note: "mm/memory.c; pfn_t until 6.17, plain unsigned long after",
    },
    HookDef {
        id: hook::VMF_INSERT_PFN,
        kind: Kind::Function {
            args: &[VMA, ADDR, PFN],
            ret: Ret::VmFault,
        },
        kernels: Kernels::All,
        what: "a driver inserting a PFN with the vma's protection (vgem, vvar)",
        fallback: &[],
        note: "mm/memory.c (the old vm_insert_pfn)",
    },
    HookDef {
        id: hook::VMF_INSERT_MIXED,
        kind: Kind::Function {
            args: &[VMA, ADDR, PFN],
            ret: Ret::VmFault,
        },
        kernels: Kernels::All,
        what: "PFN insert into a VM_MIXEDMAP vma",
        fallback: &[],
        note: "mm/memory.c; failure BUGs in 6.1, returns SIGBUS in 6.12+",
    },
    HookDef {
        id: hook::VMF_INSERT_MIXED_MKWRITE,
        kind: Kind::Function {
            args: &[VMA, ADDR, PFN],
            ret: Ret::VmFault,
        },
        kernels: Kernels::All,
        what: "the same, mapped writable at once: fs-dax write faults",
        fallback: &[],
        note: "mm/memory.c; fs/dax.c dax_fault_iter and dax_insert_pfn_mkwrite",
    },
    HookDef {
        id: hook::VMF_INSERT_PFN_PMD,
        kind: Kind::Function {
            args: HUGE_INSERT,
            ret: Ret::VmFault,
        },
        kernels: Kernels::Since(6, 3),
        what: "2 MiB PFN insert",
        fallback: &[],
        note: "mm/huge_memory.c; in 6.1 a static inline over vmf_insert_pfn_pmd_prot",
    },
    HookDef {
        id: hook::VMF_INSERT_PFN_PMD_PROT,
        kind: Kind::Function {
            args: HUGE_INSERT_PROT,
            ret: Ret::VmFault,
        },
        kernels: Kernels::Until(6, 2),
        what: "2 MiB PFN insert with explicit protection",
        fallback: &[],
        note: "mm/huge_memory.c; folded into vmf_insert_pfn_pmd in 6.3",
    },
    HookDef {
        id: hook::VMF_INSERT_PFN_PUD,
        kind: Kind::Function {
            args: HUGE_INSERT,
            ret: Ret::VmFault,
        },
        kernels: Kernels::Since(6, 3),
        what: "1 GiB PFN insert",
        fallback: &[],
        note: "mm/huge_memory.c",
    },
    HookDef {
        id: hook::VMF_INSERT_PFN_PUD_PROT,
        kind: Kind::Function {
            args: HUGE_INSERT_PROT,
            ret: Ret::VmFault,
        },
        kernels: Kernels::Until(6, 2),
        what: "1 GiB PFN insert with explicit protection",
        fallback: &[],
        note: "mm/huge_memory.c",
    },
    HookDef {
        id: hook::REMAP_PFN_RANGE,
        kind: Kind::Function {
            args: &[VMA, ADDR, PFN, SIZE, a(&["prot"], Role::Prot)],
            ret: Ret::Errno,
        },
        kernels: Kernels::All,
        what: "a driver mapping a whole PFN range at mmap time (/dev/mem, fbdev, PCI BARs)",
        fallback: &[],
        note: "mm/memory.c; sets VM_IO|VM_PFNMAP|VM_DONTEXPAND|VM_DONTDUMP",
    },
    HookDef {
        id: hook::TRACK_PFN_INSERT,
        kind: Kind::Function {
            args: &[VMA, PROT_PTR, PFN],
            ret: Ret::Void,
        },
        kernels: Kernels::Until(6, 15),
        what: "PAT forcing the cache mode of a single-PFN insert",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c; became pfnmap_setup_cachemode in 6.16",
    },
    HookDef {
        id: hook::TRACK_PFN_REMAP,
        kind: Kind::Function {
            args: &[VMA, PROT_PTR, PFN, ADDR, SIZE],
            ret: Ret::Errno,
        },
        kernels: Kernels::Until(6, 15),
        what: "PAT reservation of a remap (whole vma) or cache-mode lookup (partial)",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c; became pfnmap_track in 6.16",
    },
    HookDef {
        id: hook::TRACK_PFN_COPY,
        kind: Kind::Function {
            args: &[a(&["src_vma", "vma"], Role::Vma)],
            ret: Ret::Errno,
        },
        kernels: Kernels::Until(6, 15),
        what: "PAT reservation for a child on fork",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c; removed in 6.16 (tracking context refcounted instead)",
    },
    HookDef {
        id: hook::UNTRACK_PFN,
        kind: Kind::Function {
            args: &[VMA, PFN, SIZE],
            ret: Ret::Void,
        },
        kernels: Kernels::Until(6, 15),
        what: "PAT release on unmap",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c; became pfnmap_untrack in 6.16",
    },
    HookDef {
        id: hook::PFNMAP_SETUP_CACHEMODE,
        kind: Kind::Function {
            args: &[PFN, SIZE, PROT_PTR],
            ret: Ret::Errno,
        },
        kernels: Kernels::Since(6, 16),
        what: "PAT cache-mode lookup for inserts and partial remaps",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c; the _pfn form is a static inline and cannot be probed",
    },
    HookDef {
        id: hook::PFNMAP_TRACK,
        kind: Kind::Function {
            args: &[PFN, SIZE, PROT_PTR],
            ret: Ret::Errno,
        },
        kernels: Kernels::Since(6, 16),
        what: "PAT reservation of a whole-vma remap",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c",
    },
    HookDef {
        id: hook::PFNMAP_UNTRACK,
        kind: Kind::Function {
            args: &[PFN, SIZE],
            ret: Ret::Void,
        },
        kernels: Kernels::Since(6, 16),
        what: "PAT release when the last vma holding the tracking context goes",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c",
    },
    HookDef {
        id: hook::MEMTYPE_RESERVE,
        kind: Kind::Function {
            args: &[
                a(&["start"], Role::PhysStart),
                a(&["end"], Role::PhysEnd),
                a(&["req_type"], Role::CacheReq),
                a(&["new_type"], Role::CacheOutPtr),
            ],
            ret: Ret::Errno,
        },
        kernels: Kernels::All,
        what: "the memtype interval tree: reservation requested vs granted",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c",
    },
    HookDef {
        id: hook::MEMTYPE_FREE,
        kind: Kind::Function {
            args: &[a(&["start"], Role::PhysStart), a(&["end"], Role::PhysEnd)],
            ret: Ret::Errno,
        },
        kernels: Kernels::All,
        what: "the memtype interval tree: reservation released",
        fallback: &[],
        note: "arch/x86/mm/pat/memtype.c",
    },
    HookDef {
        id: hook::COPY_PAGE_RANGE,
        kind: Kind::Function {
            args: &[a(&["src_vma", "vma"], Role::Vma)],
            ret: Ret::Errno,
        },
        kernels: Kernels::All,
        what: "fork copying a vma's page tables: the context of track_pfn_copy and special-PTE copies",
        fallback: &[],
        note: "mm/memory.c",
    },
    HookDef {
        id: hook::UNMAP_PAGE_RANGE,
        kind: Kind::Function {
            args: &[VMA, ADDR, a(&["end"], Role::AddrEnd)],
            ret: Ret::Void,
        },
        kernels: Kernels::All,
        what: "zapping a vma range: the context of vm_normal_page calls on unmap and of untrack",
        fallback: &[],
        note: "mm/memory.c",
    },
    HookDef {
        id: hook::PAGE_FAULT_USER,
        kind: Kind::Tracepoint {
            group: "exceptions",
            event: "page_fault_user",
            rungs: TP_RUNGS,
        },
        kernels: Kernels::All,
        what: "every user-mode page fault (entry only: address, error code; vma via bpf_find_vma in tp_btf mode)",
        fallback: &[],
        note: "arch/x86/mm/fault.c",
    },
    HookDef {
        id: hook::PAGE_FAULT_KERNEL,
        kind: Kind::Tracepoint {
            group: "exceptions",
            event: "page_fault_kernel",
            rungs: TP_RUNGS,
        },
        kernels: Kernels::All,
        what: "page faults taken in kernel mode on user addresses (copy_to/from_user)",
        fallback: &[],
        note: "arch/x86/mm/fault.c",
    },
    HookDef {
        id: hook::FILEMAP_DELETE,
        kind: Kind::Tracepoint {
            group: "filemap",
            event: "mm_filemap_delete_from_page_cache",
            rungs: &[Mode::Tracepoint],
        },
        kernels: Kernels::All,
        what: "a page leaving the page cache (truncate, invalidate): the fault-vs-truncate rule",
        fallback: &[],
        note: "mm/filemap.c",
    },
    HookDef {
        id: hook::SCHED_PROCESS_FORK,
        kind: Kind::Tracepoint {
            group: "sched",
            event: "sched_process_fork",
            rungs: &[Mode::Tracepoint],
        },
        kernels: Kernels::All,
        what: "fork: follows children of traced processes, and is the context of PAT copies",
        fallback: &[],
        note: "kernel/fork.c",
    },
];

pub fn def(id: u16) -> &'static HookDef {
    HOOKS
        .iter()
        .find(|h| h.id == id)
        .expect("every hook id has a table entry")
}

pub fn by_name(name: &str) -> Option<&'static HookDef> {
    let id = hook::by_name(name).or_else(|| {
        // Accept tracepoints without their group: `page_fault_user`.
        hook::NAMES
            .iter()
            .position(|n| n.rsplit(':').next() == Some(name))
            .map(|i| i as u16)
    })?;
    Some(def(id))
}

impl HookDef {
    pub fn name(&self) -> &'static str {
        hook::NAMES[self.id as usize]
    }

    pub fn is_function(&self) -> bool {
        matches!(self.kind, Kind::Function { .. })
    }

    /// Rungs of the attach ladder for this hook, best first.
    pub fn rungs(&self) -> &'static [Mode] {
        match self.kind {
            Kind::Function { .. } => &[Mode::Fentry, Mode::Kprobe],
            Kind::Tracepoint { rungs, .. } => rungs,
        }
    }
}

/// Hook names as `--hooks` takes them, for error messages.
pub fn names() -> Vec<&'static str> {
    HOOKS.iter().map(|h| h.name()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_abi_hook_has_exactly_one_entry() {
        for id in 0..hook::COUNT as u16 {
            assert_eq!(
                HOOKS.iter().filter(|h| h.id == id).count(),
                1,
                "hook {}",
                hook::NAMES[id as usize]
            );
        }
        assert_eq!(HOOKS.len(), hook::COUNT);
    }

    #[test]
    fn tracepoints_follow_functions() {
        for h in HOOKS {
            assert_eq!(
                h.is_function(),
                h.id < hook::FIRST_TRACEPOINT,
                "{}",
                h.name()
            );
        }
    }

    #[test]
    fn pat_hooks_are_renamed_exactly_once() {
        // 6.16 replaced the track_pfn_* family: a kernel has one family or the other.
        for (major, minor, want_old) in [
            (6, 1, true),
            (6, 12, true),
            (6, 15, true),
            (6, 16, false),
            (7, 2, false),
        ] {
            for h in HOOKS {
                let n = h.name();
                if n.starts_with("track_pfn") || n == "untrack_pfn" {
                    assert_eq!(
                        h.kernels.includes(major, minor),
                        want_old,
                        "{n} on {major}.{minor}"
                    );
                }
                if n.starts_with("pfnmap_") {
                    assert_eq!(
                        h.kernels.includes(major, minor),
                        !want_old,
                        "{n} on {major}.{minor}"
                    );
                }
            }
        }
    }

    #[test]
    fn lookups_by_name() {
        assert_eq!(
            by_name("handle_mm_fault").unwrap().id,
            hook::HANDLE_MM_FAULT
        );
        assert_eq!(
            by_name("page_fault_user").unwrap().id,
            hook::PAGE_FAULT_USER
        );
        assert_eq!(
            by_name("exceptions:page_fault_user").unwrap().id,
            hook::PAGE_FAULT_USER
        );
        assert!(by_name("handle_mm_faults").is_none());
    }

    #[test]
    fn function_args_have_unique_roles() {
        for h in HOOKS {
            if let Kind::Function { args, .. } = h.kind {
                for (i, x) in args.iter().enumerate() {
                    for y in &args[i + 1..] {
                        assert_ne!(x.role, y.role, "{}", h.name());
                    }
                }
            }
        }
    }
}
