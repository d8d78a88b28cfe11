//! Function hooks: four programs per hook (fentry, fexit, kprobe, kretprobe), all thin wrappers
//! around `context::enter` / `context::leave`. User space loads only the rung that attaches.

use aya_ebpf::{
    EbpfContext,
    helpers::generated::bpf_get_func_arg,
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use pfnscope_abi::{Hook, Mode};

use crate::context::{enter, leave};

#[inline(always)]
fn fentry_arg(ctx: &FEntryContext, i: u32) -> u64 {
    let mut v: u64 = 0;
    // The helper bounds-checks `i` against the traced function's real argument count.
    unsafe { bpf_get_func_arg(ctx.as_ptr(), i, &mut v) };
    v
}

/// The four programs of hook `$hook` (a [`Hook`] variant).
macro_rules! function_hook {
    ($hook:ident, $fentry:ident, $fexit:ident, $kprobe:ident, $kretprobe:ident) => {
        #[fentry]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            enter(&ctx, Hook::$hook as u16, Mode::Fentry as u8, |i| {
                fentry_arg(&ctx, i)
            });
            0
        }

        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            let ret: u64 = ctx.ret().unwrap_or(0);
            leave(&ctx, Hook::$hook as u16, ret);
            0
        }

        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            enter(&ctx, Hook::$hook as u16, Mode::Kprobe as u8, |i| {
                ctx.arg::<u64>(i as usize).unwrap_or(0)
            });
            0
        }

        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            leave(&ctx, Hook::$hook as u16, ctx.ret::<u64>());
            0
        }
    };
}

// Program names are `<symbol>_<kind>` truncated by the kernel to 15 characters; user space finds
// them by these Rust names.
function_hook!(
    HandleMmFault,
    handle_mm_fault_fentry,
    handle_mm_fault_fexit,
    handle_mm_fault_kprobe,
    handle_mm_fault_kretprobe
);
function_hook!(
    VmNormalPage,
    vm_normal_page_fentry,
    vm_normal_page_fexit,
    vm_normal_page_kprobe,
    vm_normal_page_kretprobe
);
function_hook!(
    VmfInsertPfnProt,
    vmf_insert_pfn_prot_fentry,
    vmf_insert_pfn_prot_fexit,
    vmf_insert_pfn_prot_kprobe,
    vmf_insert_pfn_prot_kretprobe
);
function_hook!(
    VmfInsertPfn,
    vmf_insert_pfn_fentry,
    vmf_insert_pfn_fexit,
    vmf_insert_pfn_kprobe,
    vmf_insert_pfn_kretprobe
);
function_hook!(
    VmfInsertMixed,
    vmf_insert_mixed_fentry,
    vmf_insert_mixed_fexit,
    vmf_insert_mixed_kprobe,
    vmf_insert_mixed_kretprobe
);
function_hook!(
    VmfInsertMixedMkwrite,
    vmf_insert_mixed_mkwrite_fentry,
    vmf_insert_mixed_mkwrite_fexit,
    vmf_insert_mixed_mkwrite_kprobe,
    vmf_insert_mixed_mkwrite_kretprobe
);
function_hook!(
    VmfInsertPfnPmd,
    vmf_insert_pfn_pmd_fentry,
    vmf_insert_pfn_pmd_fexit,
    vmf_insert_pfn_pmd_kprobe,
    vmf_insert_pfn_pmd_kretprobe
);
function_hook!(
    VmfInsertPfnPmdProt,
    vmf_insert_pfn_pmd_prot_fentry,
    vmf_insert_pfn_pmd_prot_fexit,
    vmf_insert_pfn_pmd_prot_kprobe,
    vmf_insert_pfn_pmd_prot_kretprobe
);
function_hook!(
    VmfInsertPfnPud,
    vmf_insert_pfn_pud_fentry,
    vmf_insert_pfn_pud_fexit,
    vmf_insert_pfn_pud_kprobe,
    vmf_insert_pfn_pud_kretprobe
);
function_hook!(
    VmfInsertPfnPudProt,
    vmf_insert_pfn_pud_prot_fentry,
    vmf_insert_pfn_pud_prot_fexit,
    vmf_insert_pfn_pud_prot_kprobe,
    vmf_insert_pfn_pud_prot_kretprobe
);
function_hook!(
    RemapPfnRange,
    remap_pfn_range_fentry,
    remap_pfn_range_fexit,
    remap_pfn_range_kprobe,
    remap_pfn_range_kretprobe
);
function_hook!(
    TrackPfnInsert,
    track_pfn_insert_fentry,
    track_pfn_insert_fexit,
    track_pfn_insert_kprobe,
    track_pfn_insert_kretprobe
);
function_hook!(
    TrackPfnRemap,
    track_pfn_remap_fentry,
    track_pfn_remap_fexit,
    track_pfn_remap_kprobe,
    track_pfn_remap_kretprobe
);
function_hook!(
    TrackPfnCopy,
    track_pfn_copy_fentry,
    track_pfn_copy_fexit,
    track_pfn_copy_kprobe,
    track_pfn_copy_kretprobe
);
function_hook!(
    UntrackPfn,
    untrack_pfn_fentry,
    untrack_pfn_fexit,
    untrack_pfn_kprobe,
    untrack_pfn_kretprobe
);
function_hook!(
    PfnmapSetupCachemode,
    pfnmap_setup_cachemode_fentry,
    pfnmap_setup_cachemode_fexit,
    pfnmap_setup_cachemode_kprobe,
    pfnmap_setup_cachemode_kretprobe
);
function_hook!(
    PfnmapTrack,
    pfnmap_track_fentry,
    pfnmap_track_fexit,
    pfnmap_track_kprobe,
    pfnmap_track_kretprobe
);
function_hook!(
    PfnmapUntrack,
    pfnmap_untrack_fentry,
    pfnmap_untrack_fexit,
    pfnmap_untrack_kprobe,
    pfnmap_untrack_kretprobe
);
function_hook!(
    MemtypeReserve,
    memtype_reserve_fentry,
    memtype_reserve_fexit,
    memtype_reserve_kprobe,
    memtype_reserve_kretprobe
);
function_hook!(
    MemtypeFree,
    memtype_free_fentry,
    memtype_free_fexit,
    memtype_free_kprobe,
    memtype_free_kretprobe
);
function_hook!(
    CopyPageRange,
    copy_page_range_fentry,
    copy_page_range_fexit,
    copy_page_range_kprobe,
    copy_page_range_kretprobe
);
function_hook!(
    UnmapPageRange,
    unmap_page_range_fentry,
    unmap_page_range_fexit,
    unmap_page_range_kprobe,
    unmap_page_range_kretprobe
);
function_hook!(
    VmInsertPage,
    vm_insert_page_fentry,
    vm_insert_page_fexit,
    vm_insert_page_kprobe,
    vm_insert_page_kretprobe
);
function_hook!(
    SetPteRange,
    set_pte_range_fentry,
    set_pte_range_fexit,
    set_pte_range_kprobe,
    set_pte_range_kretprobe
);
function_hook!(
    DoSetPte,
    do_set_pte_fentry,
    do_set_pte_fexit,
    do_set_pte_kprobe,
    do_set_pte_kretprobe
);
function_hook!(
    RemapPfnRangeNotrack,
    remap_pfn_range_notrack_fentry,
    remap_pfn_range_notrack_fexit,
    remap_pfn_range_notrack_kprobe,
    remap_pfn_range_notrack_kretprobe
);
function_hook!(
    VmIomapMemory,
    vm_iomap_memory_fentry,
    vm_iomap_memory_fexit,
    vm_iomap_memory_kprobe,
    vm_iomap_memory_kretprobe
);
function_hook!(
    ArchIoReserveMemtypeWc,
    arch_io_reserve_memtype_wc_fentry,
    arch_io_reserve_memtype_wc_fexit,
    arch_io_reserve_memtype_wc_kprobe,
    arch_io_reserve_memtype_wc_kretprobe
);
function_hook!(
    ArchIoFreeMemtypeWc,
    arch_io_free_memtype_wc_fentry,
    arch_io_free_memtype_wc_fexit,
    arch_io_free_memtype_wc_kprobe,
    arch_io_free_memtype_wc_kretprobe
);
