//! Every kernel-version difference the model knows, in one table.
//!
//! The replay keys on three rule sets (6.1, 6.12, 6.16+), the series whose sources were read (see
//! `shared/docs/fault-path.md`). A release in between gets the nearest older set and says so: the
//! stable series backport behaviour, so a guess is flagged rather than hidden.

use std::fmt;

/// The rule set a replay runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Series {
    #[serde(rename = "6.1")]
    V6_1,
    #[serde(rename = "6.12")]
    V6_12,
    #[serde(rename = "6.16+")]
    V6_16,
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
            Series::V6_16 => "6.16+",
        })
    }
}

/// What differs between the series. One row per series in [`TABLE`]; nothing else in the crate
/// compares version numbers.
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
    /// PAT hooks are `track_pfn_*` / `untrack_pfn` (true) or `pfnmap_*` (false, 6.16+).
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

/// The table. Sources: the 6.1.16x, 6.12.0 and 6.18.2x trees as summarised in
/// `shared/docs/fault-path.md`.
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

/// The rules chosen for a replay and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRules {
    pub features: Features,
    /// The release string the choice was made from (trace metadata or `--kernel-rules`).
    pub release: String,
    /// Set when the release is not one of the three modelled series exactly, or was missing.
    pub note: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "cannot read a kernel version from `{0}` (expected e.g. 6.1, 6.12.117+deb13-amd64, 7.2.13-amd64)"
)]
pub struct BadRelease(pub String);

/// `(major, minor)` from a `uname -r` string.
pub fn parse_release(release: &str) -> Result<(u32, u32), BadRelease> {
    let bad = || BadRelease(release.to_string());
    let mut it = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let minor = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    Ok((major, minor))
}

impl KernelRules {
    pub fn for_series(series: Series) -> KernelRules {
        let features = *TABLE
            .iter()
            .find(|f| f.series == series)
            .expect("every series has a row");
        KernelRules {
            features,
            release: series.to_string(),
            note: None,
        }
    }

    /// Picks the rule set for a release string.
    pub fn from_release(release: &str) -> Result<KernelRules, BadRelease> {
        let (major, minor) = parse_release(release)?;
        let v = (major, minor);
        let (series, exact) = if v < (6, 12) {
            (Series::V6_1, v == (6, 1))
        } else if v < (6, 16) {
            (Series::V6_12, v == (6, 12))
        } else {
            // 6.16 renamed the PAT hooks; 6.18 and the 7.x kernels were read and behave alike.
            (Series::V6_16, true)
        };
        let mut rules = KernelRules::for_series(series);
        rules.release = release.to_string();
        if !exact {
            rules.note = Some(format!(
                "kernel {major}.{minor} is not a modelled series: using the {series} rules, the nearest older one"
            ));
        }
        Ok(rules)
    }

    /// From trace metadata; a trace without a release gets 6.12 rules and a note, since the hooks
    /// alone cannot tell 6.1 from 6.12.
    pub fn from_meta_release(release: &str) -> KernelRules {
        match KernelRules::from_release(release) {
            Ok(r) => r,
            Err(_) => {
                let mut r = KernelRules::for_series(Series::V6_12);
                r.note = Some(format!(
                    "trace metadata has no usable kernel_release (`{release}`): assuming 6.12 rules; force others with --kernel-rules"
                ));
                r
            }
        }
    }

    pub fn series(&self) -> Series {
        self.features.series
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
            let r = KernelRules::from_release(rel).unwrap();
            assert_eq!(r.series(), *series, "{rel}");
            assert_eq!(r.note.is_none(), *exact, "{rel}");
        }
        assert!(KernelRules::from_release("linux").is_err());
        assert_eq!(KernelRules::from_meta_release("").series(), Series::V6_12);
    }

    #[test]
    fn table_differences_match_the_fault_path_doc() {
        let f = |s| KernelRules::for_series(s).features;
        // 6.1 has no per-VMA lock and still has VM_FAULT_WRITE.
        assert!(!f(Series::V6_1).vma_lock_faults && f(Series::V6_1).vm_fault_mask & 0x8 != 0);
        assert!(f(Series::V6_12).vma_lock_faults && f(Series::V6_12).vm_fault_mask & 0x8 == 0);
        // The PAT hooks were renamed and fork tracking dropped in 6.16.
        assert!(f(Series::V6_12).track_pfn_hooks && !f(Series::V6_16).track_pfn_hooks);
        assert!(f(Series::V6_12).fork_track && !f(Series::V6_16).fork_track);
        assert!(!f(Series::V6_1).mixed_refusal_sigbus && f(Series::V6_12).mixed_refusal_sigbus);
    }
}
