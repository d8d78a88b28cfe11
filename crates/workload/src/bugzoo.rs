//! The bug zoo: the `bugzoo` test driver (`kmod/bugzoo/bugzoo.c`) gets the fault path wrong in
//! one way per mode, and `bugzoo-<mode>` workloads drive each mode in the test box. This is what
//! pfnscope must make of each: the replay rules that must report it, the `x86/PAT:` lines the
//! kernel logs meanwhile, the hooks its trace must reach, and where a mode cannot run.
//!
//! Pure data, like [`crate::expect`]: the test box (xtask) checks hooks and kernel lines against
//! it, and the replay's own test checks the rule ids.

use pfnscope_abi::Hook;
use pfnscope_abi::kernel::Series;

use crate::expectation::{Check, Expect, any};

/// Every rule set.
const ALL: &[Series] = &Series::ALL;
/// The series whose PAT hooks are `track_pfn_*` (6.1 and 6.12): they untrack on every unmap.
const TRACK_PFN: &[Series] = &[Series::V6_1, Series::V6_12];
/// 6.16 on: `pfnmap_*`, a refcounted tracking context per vma.
const PFNMAP: &[Series] = &[Series::V6_16];

/// What one mode must show on some kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The rule sets (kernel series) it is about.
    pub series: &'static [Series],
    /// Replay rule ids (divergences or findings) that must be reported for the workload's
    /// trace; empty: the replay must report nothing at all.
    pub rules: &'static [&'static str],
    /// Patterns of the `x86/PAT:` lines the workload makes the kernel log (`*` stands for any
    /// run of characters): each must match a line, and every such line must match one.
    pub pat_lines: &'static [&'static str],
    /// `Some(why)`: the mode cannot run on these kernels; the test box reports it SKIPPED.
    pub skip: Option<&'static str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    /// The workload (`bugzoo-<mode>`); the driver's mode name is what follows the prefix.
    pub workload: &'static str,
    pub outcomes: &'static [Outcome],
    /// Whether the kernel is expected to oops, BUG or WARN in this mode (none is: the test box
    /// fails any run whose console or dmesg shows one).
    pub oops: bool,
}

pub const PREFIX: &str = "bugzoo-";

/// 6.1 and 6.12 free what the vma covers (`untrack_pfn` -> `free_pfn_range`), which for the
/// head of a split vma matches no reservation (arch/x86/mm/pat/memtype.c:memtype_free).
pub const FREEING_INVALID: &str = "x86/PAT: *:* freeing invalid memtype [mem *-*]";

/// Every mode, in the order the guest runs them.
pub const MODES: &[Mode] = &[
    Mode {
        workload: "bugzoo-correct",
        outcomes: &[Outcome {
            series: ALL,
            rules: &[],
            pat_lines: &[],
            skip: None,
        }],
        oops: false,
    },
    Mode {
        workload: "bugzoo-ram-wc",
        outcomes: &[Outcome {
            series: ALL,
            rules: &["find.wc_to_wb"],
            pat_lines: &[],
            skip: None,
        }],
        oops: false,
    },
    Mode {
        workload: "bugzoo-per-page-pat",
        outcomes: &[Outcome {
            series: ALL,
            rules: &["find.per_page_pat"],
            pat_lines: &[],
            skip: None,
        }],
        oops: false,
    },
    Mode {
        workload: "bugzoo-double-insert",
        outcomes: &[Outcome {
            series: ALL,
            rules: &["find.insert_over_present"],
            pat_lines: &[],
            skip: None,
        }],
        oops: false,
    },
    Mode {
        workload: "bugzoo-stale-page",
        outcomes: &[Outcome {
            series: ALL,
            rules: &["truncate.mapped"],
            pat_lines: &[],
            skip: None,
        }],
        oops: false,
    },
    Mode {
        workload: "bugzoo-partial-untrack",
        outcomes: &[
            // The tail's untrack then shrinks the reservation to the head (memtype_erase's end
            // match), which nothing frees: a leak as well.
            Outcome {
                series: TRACK_PFN,
                rules: &["find.partial_untrack", "find.pat_leak"],
                pat_lines: &[FREEING_INVALID],
                skip: None,
            },
            // 6.16 on: the vma holds a refcounted {pfn, size} tracking context, shared by the
            // halves of a split and released with the last of them, which frees the whole
            // range (mm/memory.c:remap_pfn_range_track, mm/vma_init.c).
            Outcome {
                series: PFNMAP,
                rules: &[],
                pat_lines: &[],
                skip: None,
            },
        ],
        oops: false,
    },
    Mode {
        workload: "bugzoo-pat-leak",
        outcomes: &[Outcome {
            series: ALL,
            rules: &["find.pat_leak"],
            pat_lines: &[],
            skip: None,
        }],
        oops: false,
    },
    Mode {
        workload: "bugzoo-nopage-loop",
        outcomes: &[Outcome {
            series: ALL,
            rules: &["find.nopage_loop"],
            pat_lines: &[],
            skip: None,
        }],
        oops: false,
    },
    Mode {
        workload: "bugzoo-cow-pgoff",
        outcomes: &[Outcome {
            series: ALL,
            // The remap left vm_pgoff at the first pfn; the driver's change shows at the vma's
            // next snapshot (remap.vma), and in every raw PFN the linear rule now misreads.
            rules: &["vnp.linear", "remap.vma"],
            pat_lines: &[],
            skip: None,
        }],
        oops: false,
    },
    Mode {
        workload: "bugzoo-insert-page-wc",
        outcomes: &[Outcome {
            series: ALL,
            // PAT never hears of these pages: only the model's RAM memtypes (the start state's
            // kpageflags) tell the WC user mapping from the WB linear map.
            rules: &["find.linear_alias"],
            pat_lines: &[],
            skip: None,
        }],
        oops: false,
    },
];

pub fn mode(workload: &str) -> Option<&'static Mode> {
    MODES.iter().find(|m| m.workload == workload)
}

impl Mode {
    /// The name the driver takes (`write(fd, name)`).
    pub fn driver_mode(&self) -> &'static str {
        &self.workload[PREFIX.len()..]
    }

    /// What this mode must show on a kernel of rule set `series`.
    pub fn outcome(&self, series: Series) -> Option<&'static Outcome> {
        self.outcomes.iter().find(|o| o.series.contains(&series))
    }
}

/// Whether `line` contains a match of `pattern`, where `*` matches any run of characters.
pub fn line_matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(start) = line.find(first) else {
        return false;
    };
    let mut rest = &line[start + first.len()..];
    for p in parts {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

/// The kernel's PAT lines in `dmesg` (one workload's share of the log).
pub fn pat_lines(dmesg: &str) -> impl Iterator<Item = &str> {
    dmesg.lines().filter(|l| l.contains("x86/PAT:"))
}

/// Problems with one workload's `x86/PAT:` lines against the patterns it declares (none for a
/// workload outside the zoo): a line no pattern explains, or a pattern no line shows.
pub fn pat_line_problems(patterns: &[&str], dmesg: &str) -> Vec<String> {
    let mut problems: Vec<String> = pat_lines(dmesg)
        .filter(|l| !patterns.iter().any(|p| line_matches(p, l)))
        .map(|l| format!("unexpected kernel PAT line: {}", l.trim()))
        .collect();
    for p in patterns {
        if !pat_lines(dmesg).any(|l| line_matches(p, l)) {
            problems.push(format!("no kernel PAT line matches {p:?}"));
        }
    }
    problems
}

/// The hooks a zoo workload's trace must reach on a kernel of rule set `series`.
pub fn hooks(workload: &str, series: Series) -> Option<Vec<Expect>> {
    use Hook::*;
    // The PAT hooks were renamed in 6.16 (the kernel table says where).
    let old = series.features().track_pfn_hooks;
    let pat = |track: &'static Hook, pfnmap: &'static Hook| any(if old { track } else { pfnmap });
    let fault = any(&HandleMmFault);
    let insert = any(&VmfInsertPfnProt);
    let cachemode = pat(&TrackPfnInsert, &PfnmapSetupCachemode);
    let remap = [any(&RemapPfnRange), pat(&TrackPfnRemap, &PfnmapTrack)];
    let vnp = |check| Expect {
        hooks: &[VmNormalPage],
        check,
    };
    let mut v = match mode(workload)?.driver_mode() {
        "correct" | "ram-wc" | "per-page-pat" | "double-insert" => vec![fault, insert, cachemode],
        "pat-leak" => vec![
            fault,
            insert,
            cachemode,
            any(&ArchIoReserveMemtypeWc),
            any(&MemtypeReserve),
        ],
        "stale-page" => vec![fault, any(&FilemapDelete), vnp(Check::Page)],
        "partial-untrack" => {
            let mut v = remap.to_vec();
            v.extend([pat(&UntrackPfn, &PfnmapUntrack), any(&MemtypeReserve)]);
            v
        }
        "nopage-loop" => vec![fault, any(&PageFaultUser)],
        "insert-page-wc" => vec![any(&VmInsertPage)],
        "cow-pgoff" => {
            let mut v = remap.to_vec();
            v.extend([
                fault,
                any(&CopyPageRange),
                vnp(Check::NoPage),
                vnp(Check::Page),
            ]);
            v
        }
        _ => return None,
    };
    if old && workload == "bugzoo-partial-untrack" {
        v.push(any(&MemtypeFree));
    }
    if old && workload == "bugzoo-cow-pgoff" {
        v.push(any(&TrackPfnCopy));
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_and_patterns_are_well_formed() {
        for m in MODES {
            for o in m.outcomes {
                for r in o.rules {
                    let (class, name) = r.split_once('.').unwrap();
                    assert!(!class.is_empty() && !name.is_empty(), "{r}");
                    assert!(
                        r.bytes()
                            .all(|b| b.is_ascii_lowercase() || b"._".contains(&b))
                    );
                }
                for p in o.pat_lines {
                    assert!(p.starts_with("x86/PAT: "), "{p}");
                }
            }
        }
        // Only correct has nothing to report everywhere.
        let silent: Vec<_> = MODES
            .iter()
            .filter(|m| m.outcomes.iter().all(|o| o.rules.is_empty()))
            .map(|m| m.workload)
            .collect();
        assert_eq!(silent, ["bugzoo-correct"]);
    }

    #[test]
    fn patterns_match_real_lines() {
        let line =
            "[   41.5] x86/PAT: workload:212 freeing invalid memtype [mem 0xfa400000-0xfa403fff]";
        assert!(line_matches(FREEING_INVALID, line));
        assert!(!line_matches(
            FREEING_INVALID,
            "[ 1.0] x86/PAT: Configuration [0-7]: WB  WC"
        ));
        assert!(line_matches("a*c", "xxabbbcxx"));
        assert!(!line_matches("a*c", "xxcbbbaxx"));
        assert!(line_matches("", "anything"));
    }

    #[test]
    fn pat_lines_are_checked_both_ways() {
        let dmesg = "[ 1.0] bugzoo 0000:00:04.0: BAR2\n[ 2.0] x86/PAT: w:1 freeing invalid memtype [mem 0x1-0x2]\n";
        assert!(pat_line_problems(&[FREEING_INVALID], dmesg).is_empty());
        let p = pat_line_problems(&[], dmesg);
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("unexpected kernel PAT line"));
        let p = pat_line_problems(&[FREEING_INVALID], "[ 2.0] nothing\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("no kernel PAT line matches"));
    }
}
