//! Kernel bit values the analyzer decodes: `VM_FAULT_*` returns, `FAULT_FLAG_*` arguments, x86
//! page-fault error codes and the `vm_flags` bits that decide a vma's kind.

use std::collections::BTreeMap;

/// `enum vm_fault_reason` (include/linux/mm_types.h). `WRITE` only exists up to 6.1: it was
/// removed by 4a7b5d5a2a4d ("mm: remove VM_FAULT_WRITE"), and 0x8 has no meaning after it.
pub const VM_FAULT_BITS: &[(&str, i64)] = &[
    ("OOM", 0x1),
    ("SIGBUS", 0x2),
    ("MAJOR", 0x4),
    ("WRITE", 0x8),
    ("HWPOISON", 0x10),
    ("HWPOISON_LARGE", 0x20),
    ("SIGSEGV", 0x40),
    ("NOPAGE", 0x100),
    ("LOCKED", 0x200),
    ("RETRY", 0x400),
    ("FALLBACK", 0x800),
    ("DONE_COW", 0x1000),
    ("NEEDDSYNC", 0x2000),
    ("COMPLETED", 0x4000),
];

pub const VM_FAULT_RETRY: i64 = 0x400;
pub const VM_FAULT_COMPLETED: i64 = 0x4000;

/// `enum fault_flag` (include/linux/mm_types.h).
pub const FAULT_FLAG_WRITE: u32 = 1 << 0;
/// Set by the arch fault handler on the attempt after a `VM_FAULT_RETRY` under mmap_lock.
pub const FAULT_FLAG_TRIED: u32 = 1 << 5;
pub const FAULT_FLAG_USER: u32 = 1 << 6;
pub const FAULT_FLAG_INSTRUCTION: u32 = 1 << 8;
pub const FAULT_FLAG_UNSHARE: u32 = 1 << 10;
/// The per-VMA-lock attempt (6.4+, 50e40d5a7b1e "mm: introduce per-VMA lock"): when it returns
/// RETRY the handler runs `handle_mm_fault` again under mmap_lock, without FAULT_FLAG_TRIED.
pub const FAULT_FLAG_VMA_LOCK: u32 = 1 << 12;

/// x86 page-fault error code bits (arch/x86/include/asm/trap_pf.h).
pub const X86_PF_WRITE: u32 = 1 << 1;
pub const X86_PF_USER: u32 = 1 << 2;
pub const X86_PF_INSTR: u32 = 1 << 4;

/// Hooks whose `ret` holds `VM_FAULT_*` bits (the others return 0 / -errno or nothing).
pub const VM_FAULT_HOOKS: &[&str] = &[
    "handle_mm_fault",
    "vmf_insert_pfn",
    "vmf_insert_pfn_prot",
    "vmf_insert_mixed",
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

/// The vm_flags bits that classify a vma, from the trace's `vm_flag_bits` where it has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmFlagBits {
    pub pfnmap: u64,
    pub mixedmap: u64,
    pub io: u64,
}

impl Default for VmFlagBits {
    /// x86-64 values, stable since 2.6 (include/linux/mm.h).
    fn default() -> Self {
        VmFlagBits {
            pfnmap: 0x400,
            mixedmap: 0x1000_0000,
            io: 0x4000,
        }
    }
}

impl VmFlagBits {
    /// Reads `VM_PFNMAP`, `VM_MIXEDMAP` and `VM_IO` from the metadata map; the tracer may name
    /// them with or without the `VM_` prefix.
    pub fn from_meta(bits: &BTreeMap<String, u64>) -> VmFlagBits {
        let d = VmFlagBits::default();
        let get = |name: &str, default: u64| {
            bits.get(name)
                .or_else(|| bits.get(name.trim_start_matches("VM_")))
                .copied()
                .filter(|v| *v != 0)
                .unwrap_or(default)
        };
        VmFlagBits {
            pfnmap: get("VM_PFNMAP", d.pfnmap),
            mixedmap: get("VM_MIXEDMAP", d.mixedmap),
            io: get("VM_IO", d.io),
        }
    }
}

/// Names of the `VM_FAULT_*` bits set in `ret` (`[]` for a plain 0).
pub fn vm_fault_names(ret: i64) -> Vec<&'static str> {
    VM_FAULT_BITS
        .iter()
        .filter(|(_, b)| ret & b != 0)
        .map(|(n, _)| *n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_flag_bits_prefer_metadata() {
        let mut m = BTreeMap::new();
        m.insert("VM_PFNMAP".to_string(), 0x800);
        m.insert("IO".to_string(), 0x8000);
        let b = VmFlagBits::from_meta(&m);
        assert_eq!(b.pfnmap, 0x800);
        assert_eq!(b.io, 0x8000);
        assert_eq!(b.mixedmap, 0x1000_0000);
    }

    #[test]
    fn decodes_retry_and_nopage() {
        assert_eq!(vm_fault_names(0x500), vec!["NOPAGE", "RETRY"]);
        assert!(vm_fault_names(0).is_empty());
    }
}
