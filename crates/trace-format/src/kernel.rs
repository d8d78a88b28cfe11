//! Kernel bit values every reader of a trace decodes: `FAULT_FLAG_*` arguments, `VM_FAULT_*`
//! results, x86 page-fault error codes and the `vm_flags` bits. One copy, here, for the replay
//! and the analyzer alike; the `vm_flags` values come from each trace's metadata (the tracer
//! reads them from the kernel's BTF) and these are only the fallback.

use std::collections::BTreeMap;

/// `enum fault_flag` (include/linux/mm_types.h).
pub mod fault_flag {
    pub const WRITE: u32 = 1 << 0;
    pub const ALLOW_RETRY: u32 = 1 << 2;
    /// Set by the arch fault handler on the attempt after a `VM_FAULT_RETRY` under mmap_lock.
    pub const TRIED: u32 = 1 << 5;
    pub const USER: u32 = 1 << 6;
    pub const INSTRUCTION: u32 = 1 << 8;
    pub const UNSHARE: u32 = 1 << 10;
    /// The per-VMA-lock attempt (6.4+, 50e40d5a7b1e "mm: introduce per-VMA lock"): when it
    /// returns RETRY the handler runs `handle_mm_fault` again under mmap_lock, without TRIED.
    pub const VMA_LOCK: u32 = 1 << 12;
}

/// `enum vm_fault_reason` (include/linux/mm_types.h).
pub mod vm_fault {
    pub const OOM: u32 = 0x1;
    pub const SIGBUS: u32 = 0x2;
    pub const MAJOR: u32 = 0x4;
    /// Only up to 6.1: removed by 4a7b5d5a2a4d ("mm: remove VM_FAULT_WRITE").
    pub const WRITE: u32 = 0x8;
    pub const HWPOISON: u32 = 0x10;
    pub const HWPOISON_LARGE: u32 = 0x20;
    pub const SIGSEGV: u32 = 0x40;
    pub const NOPAGE: u32 = 0x100;
    pub const LOCKED: u32 = 0x200;
    pub const RETRY: u32 = 0x400;
    pub const FALLBACK: u32 = 0x800;
    pub const DONE_COW: u32 = 0x1000;
    pub const NEEDDSYNC: u32 = 0x2000;
    pub const COMPLETED: u32 = 0x4000;
    pub const ERROR: u32 = OOM | SIGBUS | SIGSEGV | HWPOISON | HWPOISON_LARGE | FALLBACK;

    /// Every bit with its name, in bit order.
    pub const NAMES: &[(&str, u32)] = &[
        ("OOM", OOM),
        ("SIGBUS", SIGBUS),
        ("MAJOR", MAJOR),
        ("WRITE", WRITE),
        ("HWPOISON", HWPOISON),
        ("HWPOISON_LARGE", HWPOISON_LARGE),
        ("SIGSEGV", SIGSEGV),
        ("NOPAGE", NOPAGE),
        ("LOCKED", LOCKED),
        ("RETRY", RETRY),
        ("FALLBACK", FALLBACK),
        ("DONE_COW", DONE_COW),
        ("NEEDDSYNC", NEEDDSYNC),
        ("COMPLETED", COMPLETED),
    ];
}

/// x86 page-fault error code bits (arch/x86/include/asm/trap_pf.h).
pub mod x86_pf {
    pub const PROT: u32 = 1 << 0;
    pub const WRITE: u32 = 1 << 1;
    pub const USER: u32 = 1 << 2;
    pub const INSTR: u32 = 1 << 4;
}

/// vm_flags bits in use by the model, from trace metadata where it has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmBits {
    pub write: u64,
    pub shared: u64,
    pub maywrite: u64,
    pub pfnmap: u64,
    pub io: u64,
    pub dontexpand: u64,
    pub mixedmap: u64,
    pub dontdump: u64,
    /// 0 where the kernel has no VM_PAT (6.16+).
    pub pat: u64,
}

impl VmBits {
    /// The x86-64 values of 6.1 and 6.12.
    pub const X86_DEFAULT: VmBits = VmBits {
        write: 0x2,
        shared: 0x8,
        maywrite: 0x20,
        pfnmap: 0x400,
        io: 0x4000,
        dontexpand: 0x40000,
        mixedmap: 0x1000_0000,
        dontdump: 0x400_0000,
        pat: 0x0100_0000,
    };

    /// Reads `vm_flag_bits` (names with or without the `VM_` prefix, any case); a name that is
    /// absent keeps the x86 default, except VM_PAT on kernels without it.
    pub fn from_meta(bits: &BTreeMap<String, u64>, has_vm_pat: bool) -> VmBits {
        let mut v = VmBits::X86_DEFAULT;
        if !has_vm_pat {
            v.pat = 0;
        }
        for (name, val) in bits {
            let n = name.trim().to_ascii_uppercase();
            let n = n.strip_prefix("VM_").unwrap_or(&n);
            let slot = match n {
                "WRITE" => &mut v.write,
                "SHARED" => &mut v.shared,
                "MAYWRITE" => &mut v.maywrite,
                "PFNMAP" => &mut v.pfnmap,
                "IO" => &mut v.io,
                "DONTEXPAND" => &mut v.dontexpand,
                "MIXEDMAP" => &mut v.mixedmap,
                "DONTDUMP" => &mut v.dontdump,
                "PAT" => &mut v.pat,
                _ => continue,
            };
            *slot = *val;
        }
        v
    }

    /// `is_cow_mapping`: private and may become writable.
    pub fn is_cow(&self, flags: u64) -> bool {
        flags & (self.shared | self.maywrite) == self.maywrite
    }

    pub fn pfn_or_mixed(&self, flags: u64) -> u64 {
        flags & (self.pfnmap | self.mixedmap)
    }

    pub fn remap_flags(&self) -> u64 {
        self.io | self.pfnmap | self.dontexpand | self.dontdump
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_bits_from_meta_override_defaults() {
        let mut m = BTreeMap::new();
        m.insert("VM_PFNMAP".to_string(), 0x800);
        m.insert("mixedmap".to_string(), 0x2000_0000);
        let v = VmBits::from_meta(&m, false);
        assert_eq!(
            (v.pfnmap, v.mixedmap, v.pat, v.io),
            (0x800, 0x2000_0000, 0, 0x4000)
        );
        assert!(v.is_cow(0x20) && !v.is_cow(0x28) && !v.is_cow(0));
    }
}
