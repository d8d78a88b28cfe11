//! Bit values: fault flags, fault results, x86 PTE bits, cache modes and the vm_flags decoding.

pub use pfnscope_trace::kernel::{VmBits, fault_flag, vm_fault};

pub mod errno {
    pub const ENOMEM: i64 = -12;
    pub const EBUSY: i64 = -16;
    pub const EINVAL: i64 = -22;
}

pub mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const RW: u64 = 1 << 1;
    pub const PWT: u64 = 1 << 3;
    pub const PCD: u64 = 1 << 4;
    pub const PAT: u64 = 1 << 7;
    pub const SPECIAL: u64 = 1 << 9;
    pub const CACHE_MASK: u64 = PWT | PCD | PAT;
    /// Physical frame bits 12..51 of a 4 KiB PTE.
    pub const PFN_MASK: u64 = 0x000f_ffff_ffff_f000;
}

/// PFN_* flags of a `pfn_t` (include/linux/pfn_t.h, up to 6.16), as the trace's `pfn_flags`.
pub mod pfn_t {
    pub const DEV: u64 = 1 << 61;
    pub const MAP: u64 = 1 << 60;
    pub const SPECIAL: u64 = 1 << 59;
    /// `pfn_t_devmap`: both.
    pub const DEVMAP: u64 = DEV | MAP;

    pub fn is_devmap(flags: u64) -> bool {
        flags & DEVMAP == DEVMAP
    }
}

pub const PAGE_SHIFT: u64 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// The legacy ISA hole, never tracked by PAT and always WB (arch/x86/mm/pat/memtype.c,
/// `x86_platform.is_untracked_pat_range` = `is_ISA_range`).
pub const ISA_START_PFN: u64 = 0xa0;
pub const ISA_END_PFN: u64 = 0x100;

pub fn is_isa_range(pfn: u64, pages: u64) -> bool {
    pfn >= ISA_START_PFN && pfn.saturating_add(pages) <= ISA_END_PFN
}

/// `enum page_cache_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Cache {
    WB,
    WC,
    #[serde(rename = "UC-")]
    UcMinus,
    UC,
    WT,
    WP,
}

/// How many [`Cache`] modes there are.
pub const CACHE_MODES: usize = 6;

impl Cache {
    /// Every mode, in `Cache as usize` order.
    pub const ALL: [Cache; CACHE_MODES] = [
        Cache::WB,
        Cache::WC,
        Cache::UcMinus,
        Cache::UC,
        Cache::WT,
        Cache::WP,
    ];

    pub fn parse(s: &str) -> Option<Cache> {
        Some(match s {
            "WB" => Cache::WB,
            "WC" => Cache::WC,
            "UC-" | "UC_MINUS" => Cache::UcMinus,
            "UC" => Cache::UC,
            "WT" => Cache::WT,
            "WP" => Cache::WP,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Cache::WB => "WB",
            Cache::WC => "WC",
            Cache::UcMinus => "UC-",
            Cache::UC => "UC",
            Cache::WT => "WT",
            Cache::WP => "WP",
        }
    }

    /// `is_new_memtype_allowed` (arch/x86/include/asm/pgtable.h): a reservation may hand back a
    /// different type than requested unless that would make an uncached or WC/WT request WB, or
    /// a WT request WC.
    pub fn may_become(self, got: Cache) -> bool {
        !(matches!(self, Cache::UcMinus | Cache::WC | Cache::WT) && got == Cache::WB
            || self == Cache::WT && got == Cache::WC)
    }
}

/// Cache mode per PAT index (PWT | PCD << 1 | PAT << 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatTable(pub [Cache; 8]);

impl Default for PatTable {
    /// Linux's own PAT MSR programming (arch/x86/mm/pat/memtype.c:pat_bp_init).
    fn default() -> Self {
        use Cache::*;
        PatTable([WB, WC, UcMinus, UC, WB, WP, UcMinus, WT])
    }
}

impl PatTable {
    pub fn from_meta(names: &[String]) -> PatTable {
        let mut t = PatTable::default();
        if names.len() == 8 {
            for (i, n) in names.iter().enumerate() {
                if let Some(c) = Cache::parse(n) {
                    t.0[i] = c;
                }
            }
        }
        t
    }

    pub fn of_prot(&self, prot: u64) -> Cache {
        let idx = (prot & pte::PWT != 0) as usize
            | ((prot & pte::PCD != 0) as usize) << 1
            | ((prot & pte::PAT != 0) as usize) << 2;
        self.0[idx]
    }

    /// The PWT/PCD/PAT bits selecting `c`, as `cachemode2protval` (the first index holding it).
    pub fn prot_of(&self, c: Cache) -> Option<u64> {
        let i = self.0.iter().position(|x| *x == c)? as u64;
        Some(
            if i & 1 != 0 { pte::PWT } else { 0 }
                | if i & 2 != 0 { pte::PCD } else { 0 }
                | if i & 4 != 0 { pte::PAT } else { 0 },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The alias counts index by `Cache as usize`: `ALL` must list every mode at its index.
    #[test]
    fn all_cache_modes_in_discriminant_order() {
        for (i, c) in Cache::ALL.into_iter().enumerate() {
            assert_eq!(c as usize, i);
            // Exhaustive: a new mode fails to compile here until it is counted.
            match c {
                Cache::WB | Cache::WC | Cache::UcMinus | Cache::UC | Cache::WT | Cache::WP => {}
            }
            assert_eq!(Cache::parse(c.name()), Some(c));
        }
    }

    #[test]
    fn pat_decoding_table() {
        let t = PatTable::default();
        // (prot bits, cache mode): the bochs WC request 0x2f is index 1; PAT's UC- answer 0x37.
        let rows: &[(u64, Cache)] = &[
            (0x27, Cache::WB),
            (0x2f, Cache::WC),
            (0x37, Cache::UcMinus),
            (0x3f, Cache::UC),
            (0xa7, Cache::WB),
            (0xbf, Cache::WT),
        ];
        for (prot, c) in rows {
            assert_eq!(t.of_prot(*prot), *c, "{prot:#x}");
            assert_eq!(t.of_prot(t.prot_of(*c).unwrap()), *c);
        }
    }

    #[test]
    fn memtype_change_allowed_table() {
        // (requested, granted, allowed)
        let rows = [
            (Cache::UcMinus, Cache::WB, false),
            (Cache::WC, Cache::WB, false),
            (Cache::WT, Cache::WB, false),
            (Cache::WT, Cache::WC, false),
            (Cache::WC, Cache::UcMinus, true),
            (Cache::WB, Cache::UcMinus, true),
            (Cache::UcMinus, Cache::WC, true),
        ];
        for (req, got, ok) in rows {
            assert_eq!(req.may_become(got), ok, "{req:?}->{got:?}");
        }
    }
}
