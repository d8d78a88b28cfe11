//! Every kernel-version difference pfnscope knows, in one table, and the release parser that
//! picks a row.
//!
//! The model has three rule sets (6.1, 6.12, 6.16+): the series whose sources were read (see
//! `shared/docs/fault-path.md`). Which hooks a kernel has is decided by probing it, never by
//! version (the hook table's `kernels` column is documentation, tested against this table).

use core::fmt;

/// `(major, minor)` from a `uname -r` string such as `6.12.117+deb13-amd64` or `7.2.13-amd64`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// A rule set: the kernel series whose behaviour a row of [`TABLE`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Series {
    #[cfg_attr(feature = "serde", serde(rename = "6.1"))]
    V6_1,
    #[cfg_attr(feature = "serde", serde(rename = "6.12"))]
    V6_12,
    #[cfg_attr(feature = "serde", serde(rename = "6.16+"))]
    V6_16,
}

impl Series {
    pub const ALL: [Series; 3] = [Series::V6_1, Series::V6_12, Series::V6_16];

    /// The first release the series stands for.
    pub fn version(self) -> (u32, u32) {
        match self {
            Series::V6_1 => (6, 1),
            Series::V6_12 => (6, 12),
            Series::V6_16 => (6, 16),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
            Series::V6_16 => "6.16+",
        }
    }

    /// The series for a `(major, minor)`, and whether it is modelled exactly (a release in
    /// between gets the nearest older set: stable series backport behaviour, so a guess is
    /// flagged rather than hidden).
    pub fn for_version(major: u32, minor: u32) -> (Series, bool) {
        let v = (major, minor);
        if v < (6, 12) {
            (Series::V6_1, v == (6, 1))
        } else if v < (6, 16) {
            (Series::V6_12, v == (6, 12))
        } else {
            // 6.16 renamed the PAT hooks; 6.18 and the 7.x kernels were read and behave alike.
            (Series::V6_16, true)
        }
    }

    pub fn features(self) -> Features {
        TABLE[self as usize]
    }
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What differs between the series. One row per series in [`TABLE`]; nothing else compares
/// version numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    pub series: Series,
    /// x86 user faults first run under the per-VMA lock with FAULT_FLAG_VMA_LOCK and, for a vma
    /// without `->map_pages`, come back with VM_FAULT_RETRY before calling the driver
    /// (arch/x86/mm/fault.c:do_user_addr_fault, 0bff0aaea03e; mm/memory.c:vmf_can_call_fault).
    pub vma_lock_faults: bool,
    /// `sanitize_fault_flags` turns impossible write faults into SIGSEGV (mm/memory.c).
    pub sanitize_write: bool,
    /// Highest valid FAULT_FLAG_* bit mask (VMA_LOCK 0x1000 appeared with per-VMA locks).
    pub fault_flags_mask: u32,
    /// Valid VM_FAULT_* bits; VM_FAULT_WRITE (0x8) was removed after 6.1.
    pub vm_fault_mask: u32,
    /// `vmf_insert_mixed` on a vma that is not VM_MIXEDMAP: BUG (false) or SIGBUS (true)
    /// (mm/memory.c:__vm_insert_mixed, `vm_mixed_ok`).
    pub mixed_refusal_sigbus: bool,
    /// PAT hooks are `track_pfn_*` / `untrack_pfn` (true) or `pfnmap_*` (false, 6.16+: the
    /// rename in arch/x86/mm/pat/memtype.c).
    pub track_pfn_hooks: bool,
    /// `unmap_single_vma` calls `untrack_pfn` for every VM_PFNMAP vma before zapping it
    /// (mm/memory.c:unmap_single_vma, up to 6.15).
    pub untrack_before_zap: bool,
    /// `copy_page_range` calls `track_pfn_copy`, a strict reservation for the child
    /// (mm/memory.c:copy_page_range, arch/x86/mm/pat/memtype.c:track_pfn_copy, up to 6.15).
    pub fork_track: bool,
    /// The VM_PAT vma flag exists (x86 VM_ARCH_1, up to 6.15).
    pub vm_pat_flag: bool,
    /// The PTE bit that marks devmap PTEs (`_PAGE_DEVMAP` = `_PAGE_BIT_SOFTW4`), 0 where there
    /// is none. Bit 58 until x86 shadow stacks took it for `_PAGE_SAVED_DIRTY` in 6.6 and moved
    /// SOFTW4 to 57 (arch/x86/include/asm/pgtable_types.h); the real 6.12 dax traces show 57.
    /// devmap is gone by 6.17, where device-dax maps refcounted folios.
    pub devmap_pte_bit: u64,
}

const FAULT_FLAGS_6_1: u32 = 0x0fff;
const FAULT_FLAGS_VMA_LOCK: u32 = 0x1fff;
const VM_FAULT_ALL: u32 = 0x7fff;
const VM_FAULT_NO_WRITE: u32 = VM_FAULT_ALL & !0x8;

/// The table, indexed by `Series as usize`. Sources: the 6.1.16x, 6.12.0 and 6.18.2x trees as
/// summarised in `shared/docs/fault-path.md`.
pub const TABLE: [Features; 3] = [
    Features {
        series: Series::V6_1,
        vma_lock_faults: false,
        sanitize_write: false,
        fault_flags_mask: FAULT_FLAGS_6_1,
        vm_fault_mask: VM_FAULT_ALL,
        mixed_refusal_sigbus: false,
        track_pfn_hooks: true,
        untrack_before_zap: true,
        fork_track: true,
        vm_pat_flag: true,
        devmap_pte_bit: 1 << 58,
    },
    Features {
        series: Series::V6_12,
        vma_lock_faults: true,
        sanitize_write: true,
        fault_flags_mask: FAULT_FLAGS_VMA_LOCK,
        vm_fault_mask: VM_FAULT_NO_WRITE,
        mixed_refusal_sigbus: true,
        track_pfn_hooks: true,
        untrack_before_zap: true,
        fork_track: true,
        vm_pat_flag: true,
        devmap_pte_bit: 1 << 57,
    },
    Features {
        series: Series::V6_16,
        vma_lock_faults: true,
        sanitize_write: true,
        fault_flags_mask: FAULT_FLAGS_VMA_LOCK,
        vm_fault_mask: VM_FAULT_NO_WRITE,
        mixed_refusal_sigbus: true,
        track_pfn_hooks: false,
        untrack_before_zap: false,
        fork_track: false,
        vm_pat_flag: false,
        devmap_pte_bit: 0,
    },
];

impl Features {
    /// The row for a release string, and whether the release is modelled exactly; `None` when
    /// no version can be read from it.
    pub fn for_release(release: &str) -> Option<(Features, bool)> {
        let (major, minor) = parse_release(release)?;
        let (s, exact) = Series::for_version(major, minor);
        Some((s.features(), exact))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_to_series_table() {
        // (release, series, exact)
        let rows: &[(&str, Series, bool)] = &[
            ("6.1.0-28-amd64", Series::V6_1, true),
            ("6.1", Series::V6_1, true),
            ("5.15.0-91-generic", Series::V6_1, false),
            ("6.6.30", Series::V6_1, false),
            ("6.12.117+deb13-amd64", Series::V6_12, true),
            ("6.12", Series::V6_12, true),
            ("6.15.2", Series::V6_12, false),
            ("6.16.0", Series::V6_16, true),
            ("6.18.21", Series::V6_16, true),
            ("7.2.13-amd64", Series::V6_16, true),
        ];
        for (rel, series, exact) in rows {
            let (f, e) = Features::for_release(rel).unwrap();
            assert_eq!((f.series, e), (*series, *exact), "{rel}");
        }
        assert!(Features::for_release("linux").is_none());
        assert_eq!(parse_release(" 6.12.57+deb13-amd64\n"), Some((6, 12)));
        assert_eq!(parse_release("6"), None);
    }

    #[test]
    fn rows_are_indexed_by_series() {
        for s in Series::ALL {
            assert_eq!(s.features().series, s);
            assert_eq!(Series::for_version(s.version().0, s.version().1), (s, true));
        }
    }

    #[test]
    fn table_differences_match_the_fault_path_doc() {
        let f = Series::features;
        // 6.1 has no per-VMA lock and still has VM_FAULT_WRITE.
        assert!(!f(Series::V6_1).vma_lock_faults && f(Series::V6_1).vm_fault_mask & 0x8 != 0);
        assert!(f(Series::V6_12).vma_lock_faults && f(Series::V6_12).vm_fault_mask & 0x8 == 0);
        // The PAT hooks were renamed and fork tracking dropped in 6.16.
        assert!(f(Series::V6_12).track_pfn_hooks && !f(Series::V6_16).track_pfn_hooks);
        assert!(f(Series::V6_12).fork_track && !f(Series::V6_16).fork_track);
        assert!(!f(Series::V6_1).mixed_refusal_sigbus && f(Series::V6_12).mixed_refusal_sigbus);
    }
}
