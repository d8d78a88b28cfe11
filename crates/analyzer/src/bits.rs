//! Kernel bit values the analyzer decodes: `VM_FAULT_*` returns, `FAULT_FLAG_*` arguments, x86
//! page-fault error codes and the `vm_flags` bits that decide a vma's kind.

use pfnscope_trace::kernel::{fault_flag, vm_fault, x86_pf};

/// The bit values live in [`pfnscope_trace::kernel`]; these are the types polars columns use.
pub const VM_FAULT_RETRY: i64 = vm_fault::RETRY as i64;
pub const VM_FAULT_COMPLETED: i64 = vm_fault::COMPLETED as i64;

pub const FAULT_FLAG_WRITE: u32 = fault_flag::WRITE;
pub const FAULT_FLAG_TRIED: u32 = fault_flag::TRIED;
pub const FAULT_FLAG_USER: u32 = fault_flag::USER;
pub const FAULT_FLAG_INSTRUCTION: u32 = fault_flag::INSTRUCTION;
pub const FAULT_FLAG_UNSHARE: u32 = fault_flag::UNSHARE;
pub const FAULT_FLAG_VMA_LOCK: u32 = fault_flag::VMA_LOCK;

pub const X86_PF_WRITE: u32 = x86_pf::WRITE;
pub const X86_PF_USER: u32 = x86_pf::USER;
pub const X86_PF_INSTR: u32 = x86_pf::INSTR;

/// The vm_flags bits that classify a vma, from the trace's `vm_flag_bits` where it has them.
pub use pfnscope_trace::kernel::VmBits as VmFlagBits;

/// Hooks whose `ret` holds `VM_FAULT_*` bits (the others return 0 / -errno or nothing).
pub const VM_FAULT_HOOKS: &[&str] = &[
    "handle_mm_fault",
    "vmf_insert_pfn",
    "vmf_insert_pfn_prot",
    "vmf_insert_mixed",
    "vmf_insert_mixed_mkwrite",
    "vmf_insert_pfn_pmd",
    "vmf_insert_pfn_pmd_prot",
    "vmf_insert_pfn_pud",
    "vmf_insert_pfn_pud_prot",
];

/// Rows that are one page fault each: the probed `handle_mm_fault`, or the fault tracepoints
/// where it could not be probed (they carry no return, so no latency).
pub const FAULT_HOOKS: &[&str] = &[
    "handle_mm_fault",
    "exceptions:page_fault_user",
    "exceptions:page_fault_kernel",
];

/// Names of the `VM_FAULT_*` bits set in `ret` (`[]` for a plain 0).
pub fn vm_fault_names(ret: i64) -> Vec<&'static str> {
    vm_fault::NAMES
        .iter()
        .filter(|(_, b)| ret & *b as i64 != 0)
        .map(|(n, _)| *n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_retry_and_nopage() {
        assert_eq!(vm_fault_names(0x500), vec!["NOPAGE", "RETRY"]);
        assert!(vm_fault_names(0).is_empty());
    }
}
