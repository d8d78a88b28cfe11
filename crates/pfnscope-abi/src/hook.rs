//! Hook ids: one per probed kernel symbol or tracepoint, shared by both sides.
//!
//! The id only names a probe point. Which kernels have it, how to attach it and what its argument
//! slots mean live in the user-space hook table (`tracer::hooks`), keyed by kernel.

pub const HANDLE_MM_FAULT: u16 = 0;
pub const VM_NORMAL_PAGE: u16 = 1;
pub const VMF_INSERT_PFN_PROT: u16 = 2;
pub const VMF_INSERT_PFN: u16 = 3;
pub const VMF_INSERT_MIXED: u16 = 4;
pub const VMF_INSERT_PFN_PMD: u16 = 5;
pub const VMF_INSERT_PFN_PMD_PROT: u16 = 6;
pub const VMF_INSERT_PFN_PUD: u16 = 7;
pub const VMF_INSERT_PFN_PUD_PROT: u16 = 8;
pub const REMAP_PFN_RANGE: u16 = 9;
pub const TRACK_PFN_INSERT: u16 = 10;
pub const TRACK_PFN_REMAP: u16 = 11;
pub const TRACK_PFN_COPY: u16 = 12;
pub const UNTRACK_PFN: u16 = 13;
pub const PFNMAP_SETUP_CACHEMODE: u16 = 14;
pub const PFNMAP_TRACK: u16 = 15;
pub const PFNMAP_UNTRACK: u16 = 16;
pub const MEMTYPE_RESERVE: u16 = 17;
pub const MEMTYPE_FREE: u16 = 18;
pub const COPY_PAGE_RANGE: u16 = 19;
pub const UNMAP_PAGE_RANGE: u16 = 20;
pub const VMF_INSERT_MIXED_MKWRITE: u16 = 21;
pub const PAGE_FAULT_USER: u16 = 22;
pub const PAGE_FAULT_KERNEL: u16 = 23;
pub const FILEMAP_DELETE: u16 = 24;
pub const SCHED_PROCESS_FORK: u16 = 25;

pub const COUNT: usize = 26;

/// The probe point's name as it appears in the kernel (symbol, or `group:event` for tracepoints)
/// and in traces.
pub const NAMES: [&str; COUNT] = [
    "handle_mm_fault",
    "vm_normal_page",
    "vmf_insert_pfn_prot",
    "vmf_insert_pfn",
    "vmf_insert_mixed",
    "vmf_insert_pfn_pmd",
    "vmf_insert_pfn_pmd_prot",
    "vmf_insert_pfn_pud",
    "vmf_insert_pfn_pud_prot",
    "remap_pfn_range",
    "track_pfn_insert",
    "track_pfn_remap",
    "track_pfn_copy",
    "untrack_pfn",
    "pfnmap_setup_cachemode",
    "pfnmap_track",
    "pfnmap_untrack",
    "memtype_reserve",
    "memtype_free",
    "copy_page_range",
    "unmap_page_range",
    "vmf_insert_mixed_mkwrite",
    "exceptions:page_fault_user",
    "exceptions:page_fault_kernel",
    "filemap:mm_filemap_delete_from_page_cache",
    "sched:sched_process_fork",
];

/// Function hooks come first; everything from here on is a tracepoint.
pub const FIRST_TRACEPOINT: u16 = PAGE_FAULT_USER;

pub fn name(id: u16) -> Option<&'static str> {
    NAMES.get(id as usize).copied()
}

pub fn by_name(name: &str) -> Option<u16> {
    NAMES.iter().position(|n| *n == name).map(|i| i as u16)
}
