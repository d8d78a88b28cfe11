//! Kernel bit values every stage decodes: `FAULT_FLAG_*` arguments, `VM_FAULT_*` results, x86
//! page-fault error codes, x86 PTE bits, `pfn_t` flags, errnos and the `vm_flags` bits. One copy,
//! here, for the tracer, the replay and the analyzer alike. The `vm_flags` values come from each
//! trace's metadata (the tracer reads them from the kernel's BTF); [`VmBits::X86_DEFAULT`] is only
//! the fallback.

pub const PAGE_SHIFT: u64 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

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

    /// Names of the bits set in `ret`, in bit order.
    pub fn names(ret: u32) -> impl Iterator<Item = &'static str> {
        NAMES
            .iter()
            .filter(move |(_, b)| ret & *b != 0)
            .map(|(n, _)| *n)
    }
}

/// x86 page-fault error code bits (arch/x86/include/asm/trap_pf.h).
pub mod x86_pf {
    pub const PROT: u32 = 1 << 0;
    pub const WRITE: u32 = 1 << 1;
    pub const USER: u32 = 1 << 2;
    pub const INSTR: u32 = 1 << 4;
}

/// x86-64 PTE bits (arch/x86/include/asm/pgtable_types.h).
pub mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const RW: u64 = 1 << 1;
    pub const PWT: u64 = 1 << 3;
    pub const PCD: u64 = 1 << 4;
    pub const PAT: u64 = 1 << 7;
    /// `_PAGE_SPECIAL` (`_PAGE_BIT_SOFTW1`).
    pub const SPECIAL: u64 = 1 << 9;
    pub const CACHE_MASK: u64 = PWT | PCD | PAT;
    /// Physical frame bits 12..51 of a 4 KiB PTE.
    pub const PFN_MASK: u64 = 0x000f_ffff_ffff_f000;

    /// The pfn a PTE maps.
    pub fn pfn(v: u64) -> u64 {
        (v & PFN_MASK) >> super::PAGE_SHIFT
    }
}

/// PFN_* flags of a `pfn_t` (include/linux/pfn_t.h, up to 6.16), as the trace's `pfn_flags`.
pub mod pfn_t {
    pub const DEV: u64 = 1 << 61;
    pub const MAP: u64 = 1 << 60;
    pub const SPECIAL: u64 = 1 << 59;
    /// `pfn_t_devmap`: both.
    pub const DEVMAP: u64 = DEV | MAP;
    /// The pfn itself: the flags live in the bits above it (`PFN_FLAGS_MASK`).
    pub const PFN_MASK: u64 = (1 << 52) - 1;

    pub fn is_devmap(flags: u64) -> bool {
        flags & DEVMAP == DEVMAP
    }
}

/// The errnos the fault path's `int` functions return, negated as the kernel returns them.
pub mod errno {
    pub const ENOMEM: i64 = -12;
    pub const EBUSY: i64 = -16;
    pub const EINVAL: i64 = -22;
}

/// The legacy ISA hole, never tracked by PAT and always WB (arch/x86/mm/pat/memtype.c,
/// `x86_platform.is_untracked_pat_range` = `is_ISA_range`).
pub const ISA_START_PFN: u64 = 0xa0;
pub const ISA_END_PFN: u64 = 0x100;

pub fn is_isa_range(pfn: u64, pages: u64) -> bool {
    pfn >= ISA_START_PFN && pfn.saturating_add(pages) <= ISA_END_PFN
}

/// vm_flags bits in use, from trace metadata where it has them.
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

    /// Reads named bit values (names with or without the `VM_` prefix, any case); a name that
    /// is absent keeps the x86 default, except VM_PAT on kernels without it.
    pub fn from_names<'a>(
        bits: impl IntoIterator<Item = (&'a str, u64)>,
        has_vm_pat: bool,
    ) -> VmBits {
        let mut v = VmBits::X86_DEFAULT;
        if !has_vm_pat {
            v.pat = 0;
        }
        for (name, val) in bits {
            let n = name.trim();
            let n = match n.get(..3) {
                Some(p) if p.eq_ignore_ascii_case("VM_") => &n[3..],
                _ => n,
            };
            let slot = [
                ("WRITE", &mut v.write),
                ("SHARED", &mut v.shared),
                ("MAYWRITE", &mut v.maywrite),
                ("PFNMAP", &mut v.pfnmap),
                ("IO", &mut v.io),
                ("DONTEXPAND", &mut v.dontexpand),
                ("MIXEDMAP", &mut v.mixedmap),
                ("DONTDUMP", &mut v.dontdump),
                ("PAT", &mut v.pat),
            ]
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n));
            if let Some((_, slot)) = slot {
                *slot = val;
            }
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

    /// What `remap_pfn_range` sets (mm/memory.c:remap_pfn_range_notrack).
    pub fn remap_flags(&self) -> u64 {
        self.io | self.pfnmap | self.dontexpand | self.dontdump
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_bits_from_names_override_defaults() {
        let v = VmBits::from_names([("VM_PFNMAP", 0x800), ("mixedmap", 0x2000_0000)], false);
        assert_eq!(
            (v.pfnmap, v.mixedmap, v.pat, v.io),
            (0x800, 0x2000_0000, 0, 0x4000)
        );
        assert!(v.is_cow(0x20) && !v.is_cow(0x28) && !v.is_cow(0));
        assert_eq!(VmBits::from_names([("vm_pat", 0x1)], true).pat, 0x1);
        assert_eq!(
            VmBits::from_names([("VM_NOPE", 0x1)], true),
            VmBits::X86_DEFAULT
        );
    }

    #[test]
    fn decodes_retry_and_nopage() {
        let mut it = vm_fault::names(0x500);
        assert_eq!(
            (it.next(), it.next(), it.next()),
            (Some("NOPAGE"), Some("RETRY"), None)
        );
        assert_eq!(pte::pfn(0x8000_0000_000a_0237), 0xa0);
    }
}
