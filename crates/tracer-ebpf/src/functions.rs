//! Function hooks: four programs per hook (fentry, fexit, kprobe, kretprobe), all thin wrappers
//! around `context::enter` / `context::leave`. User space loads only the rung that attaches.

use aya_ebpf::{
    EbpfContext,
    helpers::generated::bpf_get_func_arg,
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use pfnscope_abi::{Mode, hook};

use crate::context::{enter, leave};

#[inline(always)]
fn fentry_arg(ctx: &FEntryContext, i: u32) -> u64 {
    let mut v: u64 = 0;
    // The helper bounds-checks `i` against the traced function's real argument count.
    unsafe { bpf_get_func_arg(ctx.as_ptr(), i, &mut v) };
    v
}

macro_rules! function_hook {
    ($id:expr, $fentry:ident, $fexit:ident, $kprobe:ident, $kretprobe:ident) => {
        #[fentry]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            enter(&ctx, $id, Mode::Fentry as u8, |i| fentry_arg(&ctx, i));
            0
        }

        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            let ret: u64 = ctx.ret().unwrap_or(0);
            leave(&ctx, $id, ret);
            0
        }

        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            enter(&ctx, $id, Mode::Kprobe as u8, |i| {
                ctx.arg::<u64>(i as usize).unwrap_or(0)
            });
            0
        }

        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            leave(&ctx, $id, ctx.ret::<u64>());
            0
        }
    };
}

// Program names are `<symbol>_<kind>` truncated by the kernel to 15 characters; user space finds
// them by these Rust names.
function_hook!(
    hook::HANDLE_MM_FAULT,
    handle_mm_fault_fentry,
    handle_mm_fault_fexit,
    handle_mm_fault_kprobe,
    handle_mm_fault_kretprobe
);
function_hook!(
    hook::VM_NORMAL_PAGE,
    vm_normal_page_fentry,
    vm_normal_page_fexit,
    vm_normal_page_kprobe,
    vm_normal_page_kretprobe
);
function_hook!(
    hook::VMF_INSERT_PFN_PROT,
    vmf_insert_pfn_prot_fentry,
    vmf_insert_pfn_prot_fexit,
    vmf_insert_pfn_prot_kprobe,
    vmf_insert_pfn_prot_kretprobe
);
function_hook!(
    hook::VMF_INSERT_PFN,
    vmf_insert_pfn_fentry,
    vmf_insert_pfn_fexit,
    vmf_insert_pfn_kprobe,
    vmf_insert_pfn_kretprobe
);
function_hook!(
    hook::VMF_INSERT_MIXED,
    vmf_insert_mixed_fentry,
    vmf_insert_mixed_fexit,
    vmf_insert_mixed_kprobe,
    vmf_insert_mixed_kretprobe
);
function_hook!(
    hook::VMF_INSERT_MIXED_MKWRITE,
    vmf_insert_mixed_mkwrite_fentry,
    vmf_insert_mixed_mkwrite_fexit,
    vmf_insert_mixed_mkwrite_kprobe,
    vmf_insert_mixed_mkwrite_kretprobe
);
function_hook!(
    hook::VMF_INSERT_PFN_PMD,
    vmf_insert_pfn_pmd_fentry,
    vmf_insert_pfn_pmd_fexit,
    vmf_insert_pfn_pmd_kprobe,
    vmf_insert_pfn_pmd_kretprobe
);
function_hook!(
    hook::VMF_INSERT_PFN_PMD_PROT,
    vmf_insert_pfn_pmd_prot_fentry,
    vmf_insert_pfn_pmd_prot_fexit,
    vmf_insert_pfn_pmd_prot_kprobe,
    vmf_insert_pfn_pmd_prot_kretprobe
);
function_hook!(
    hook::VMF_INSERT_PFN_PUD,
    vmf_insert_pfn_pud_fentry,
    vmf_insert_pfn_pud_fexit,
    vmf_insert_pfn_pud_kprobe,
    vmf_insert_pfn_pud_kretprobe
);
function_hook!(
    hook::VMF_INSERT_PFN_PUD_PROT,
    vmf_insert_pfn_pud_prot_fentry,
    vmf_insert_pfn_pud_prot_fexit,
    vmf_insert_pfn_pud_prot_kprobe,
    vmf_insert_pfn_pud_prot_kretprobe
);
function_hook!(
    hook::REMAP_PFN_RANGE,
    remap_pfn_range_fentry,
    remap_pfn_range_fexit,
    remap_pfn_range_kprobe,
    remap_pfn_range_kretprobe
);
function_hook!(
    hook::TRACK_PFN_INSERT,
    track_pfn_insert_fentry,
    track_pfn_insert_fexit,
    track_pfn_insert_kprobe,
    track_pfn_insert_kretprobe
);
function_hook!(
    hook::TRACK_PFN_REMAP,
    track_pfn_remap_fentry,
    track_pfn_remap_fexit,
    track_pfn_remap_kprobe,
    track_pfn_remap_kretprobe
);
function_hook!(
    hook::TRACK_PFN_COPY,
    track_pfn_copy_fentry,
    track_pfn_copy_fexit,
    track_pfn_copy_kprobe,
    track_pfn_copy_kretprobe
);
function_hook!(
    hook::UNTRACK_PFN,
    untrack_pfn_fentry,
    untrack_pfn_fexit,
    untrack_pfn_kprobe,
    untrack_pfn_kretprobe
);
function_hook!(
    hook::PFNMAP_SETUP_CACHEMODE,
    pfnmap_setup_cachemode_fentry,
    pfnmap_setup_cachemode_fexit,
    pfnmap_setup_cachemode_kprobe,
    pfnmap_setup_cachemode_kretprobe
);
function_hook!(
    hook::PFNMAP_TRACK,
    pfnmap_track_fentry,
    pfnmap_track_fexit,
    pfnmap_track_kprobe,
    pfnmap_track_kretprobe
);
function_hook!(
    hook::PFNMAP_UNTRACK,
    pfnmap_untrack_fentry,
    pfnmap_untrack_fexit,
    pfnmap_untrack_kprobe,
    pfnmap_untrack_kretprobe
);
function_hook!(
    hook::MEMTYPE_RESERVE,
    memtype_reserve_fentry,
    memtype_reserve_fexit,
    memtype_reserve_kprobe,
    memtype_reserve_kretprobe
);
function_hook!(
    hook::MEMTYPE_FREE,
    memtype_free_fentry,
    memtype_free_fexit,
    memtype_free_kprobe,
    memtype_free_kretprobe
);
function_hook!(
    hook::COPY_PAGE_RANGE,
    copy_page_range_fentry,
    copy_page_range_fexit,
    copy_page_range_kprobe,
    copy_page_range_kretprobe
);
function_hook!(
    hook::UNMAP_PAGE_RANGE,
    unmap_page_range_fentry,
    unmap_page_range_fexit,
    unmap_page_range_kprobe,
    unmap_page_range_kretprobe
);
