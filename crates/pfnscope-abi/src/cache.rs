//! Cache modes (`enum page_cache_mode`) and the PAT table that maps PTE bits to them.

use crate::bits::pte;

/// `enum page_cache_mode` (arch/x86/include/asm/pgtable_types.h), in the kernel's own order: the
/// discriminant is the value `memtype_reserve`'s `req_type` / `*new_type` carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Cache {
    WB = 0,
    WC = 1,
    #[cfg_attr(feature = "serde", serde(rename = "UC-"))]
    UcMinus = 2,
    UC = 3,
    WT = 4,
    WP = 5,
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

    /// A `page_cache_mode` value as the kernel passes it (`_PAGE_CACHE_MODE_*`).
    pub fn from_pcm(v: u32) -> Option<Cache> {
        Cache::ALL.get(v as usize).copied()
    }

    /// The name traces, reports and the kernel's own PAT messages use.
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

    /// A name as [`Cache::name`] writes it, or as the kernel spells it in
    /// `x86/pat_memtype_list` (`uncached-minus`, `write-combining`, ...).
    pub fn parse(s: &str) -> Option<Cache> {
        Some(match s {
            "WB" | "write-back" => Cache::WB,
            "WC" | "write-combining" => Cache::WC,
            "UC-" | "UC_MINUS" | "uncached-minus" => Cache::UcMinus,
            "UC" | "uncached" => Cache::UC,
            "WT" | "write-through" => Cache::WT,
            "WP" | "write-protected" => Cache::WP,
            _ => return None,
        })
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatTable(pub [Cache; 8]);

impl PatTable {
    /// Linux's own PAT MSR programming since 4.2 (arch/x86/mm/pat/memtype.c:pat_bp_init).
    pub const LINUX: PatTable = PatTable([
        Cache::WB,
        Cache::WC,
        Cache::UcMinus,
        Cache::UC,
        Cache::WB,
        Cache::WP,
        Cache::UcMinus,
        Cache::WT,
    ]);

    /// A table from its eight names (trace metadata); anything else gives [`PatTable::LINUX`],
    /// and a name that does not parse keeps Linux's entry.
    pub fn from_names<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> PatTable {
        let mut t = PatTable::LINUX;
        if names.len() == 8 {
            for (i, n) in names.enumerate() {
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

impl Default for PatTable {
    fn default() -> Self {
        PatTable::LINUX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alias counts index by `Cache as usize`, and `memtype_reserve`'s enum values decode by
    /// position: `ALL` must list every mode at its kernel value.
    #[test]
    fn all_cache_modes_in_kernel_order() {
        for (i, c) in Cache::ALL.into_iter().enumerate() {
            assert_eq!(c as usize, i);
            assert_eq!(Cache::from_pcm(i as u32), Some(c));
            // Exhaustive: a new mode fails to compile here until it is counted.
            match c {
                Cache::WB | Cache::WC | Cache::UcMinus | Cache::UC | Cache::WT | Cache::WP => {}
            }
            assert_eq!(Cache::parse(c.name()), Some(c));
        }
        assert_eq!(Cache::from_pcm(6), None);
        // The kernel's own spelling in debugfs x86/pat_memtype_list.
        assert_eq!(Cache::parse("uncached-minus"), Some(Cache::UcMinus));
        assert_eq!(Cache::parse("write-combining"), Some(Cache::WC));
    }

    #[test]
    fn pat_decoding_table() {
        let t = PatTable::LINUX;
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
        let names = ["WB", "WC", "UC-", "UC", "WB", "WP", "UC-", "WT"];
        assert_eq!(PatTable::from_names(names.into_iter()), t);
        assert_eq!(PatTable::from_names(["WC"].into_iter()), t);
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
