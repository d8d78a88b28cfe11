//! Which hooks each workload must reach, per kernel family: the one table the test box checks
//! traces against.
//!
//! Kept free of any system calls so the host-side checker (xtask) can use it on any machine.

/// How the PAT hooks are named in the traced kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `track_pfn_insert` / `track_pfn_remap` / `track_pfn_copy` / `untrack_pfn` (up to 6.15).
    TrackPfn,
    /// `pfnmap_setup_cachemode` / `pfnmap_track` / `pfnmap_untrack` (6.16 on).
    Pfnmap,
}

/// Where a workload runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Debian kernel under qemu: every hook kind attaches.
    Guest(Family),
    /// This machine's own kernel, where only tracepoints attach.
    Host,
}

/// A condition on the rows of one hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// At least one row.
    Any,
    /// At least one `vm_normal_page` row that returned no page (a raw PFN).
    NoPage,
    /// At least one `vm_normal_page` row that returned a page (e.g. a COWed copy).
    Page,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The hook's name, or `a|b`: rows of either count (a function renamed between releases).
    pub hook: &'static str,
    pub check: Check,
}

const fn any(hook: &'static str) -> Expect {
    Expect {
        hook,
        check: Check::Any,
    }
}

pub const PAGE_FAULT_USER: &str = "exceptions:page_fault_user";
pub const FILEMAP_DELETE: &str = "filemap:mm_filemap_delete_from_page_cache";

#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub name: &'static str,
    pub about: &'static str,
    /// Runs on the host's own kernel too (`cargo xtask testbox --host`).
    pub host: bool,
    /// Kernel modules the guest loads just before this workload (dependencies are resolved by the
    /// test box). Loading a DRM driver evicts vesafb, so these come after `fbdev` in [`WORKLOADS`].
    pub modules: &'static [&'static str],
}

/// In the order the guest runs them: plain faults first, then the raw PFN users while no DRM
/// driver owns the VGA BAR, then the DRM drivers.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "anon",
        about: "anonymous faults, zero page, fork COW",
        host: true,
        modules: &[],
    },
    Workload {
        name: "file",
        about: "file-backed shared/private faults and truncate of a mapped file",
        host: true,
        modules: &[],
    },
    Workload {
        name: "vvar",
        about: "clock_gettime in fresh processes (vvar_fault -> vmf_insert_pfn)",
        host: true,
        modules: &[],
    },
    Workload {
        name: "devmem-shared",
        about: "/dev/mem MAP_SHARED over the VGA window, fork, munmap",
        host: false,
        modules: &[],
    },
    Workload {
        name: "devmem-cow",
        about: "/dev/mem MAP_PRIVATE with writes (COW of a PFN mapping) and fork",
        host: false,
        modules: &[],
    },
    Workload {
        name: "pci-bar",
        about: "mmap of the qemu edu device's BAR0 through sysfs resource0",
        host: false,
        modules: &[],
    },
    Workload {
        name: "fbdev",
        about: "mmap of vesafb's /dev/fb0",
        host: false,
        modules: &[],
    },
    Workload {
        name: "drm-bochs",
        about: "bochs dumb buffer faults, then ADDFB+SETCRTC (move to VRAM) and fault again",
        host: false,
        modules: &["bochs"],
    },
    Workload {
        name: "drm-vgem",
        about: "vgem dumb buffer: vmf_insert_pfn of RAM pages in a VM_PFNMAP vma",
        host: false,
        modules: &["vgem"],
    },
    Workload {
        name: "dax",
        about: "device DAX on legacy pmem: 2 MiB PMD faults, 4 KiB vmf_insert_mixed faults, fork",
        host: false,
        modules: &["nd_e820", "nd_pmem", "dax_pmem", "device_dax"],
    },
    Workload {
        name: "fsdax",
        about: "ext2 -o dax on legacy pmem: file faults map pmem pfns, holes the zero pfn, truncate",
        host: false,
        // ext4 up to 6.x asks the crypto API for crc32c at mount (a softdep, not in depends=).
        modules: &["nd_e820", "nd_pmem", "crc32c_generic", "ext4"],
    },
    // The bug zoo (crate::bugzoo): the test box builds kmod/bugzoo against the guest's headers
    // and loads it before the first of these.
    Workload {
        name: "bugzoo-correct",
        about: "bugzoo: device memory reserved WC at probe, inserted WC per page (nothing to report)",
        host: false,
        modules: &[],
    },
    Workload {
        name: "bugzoo-ram-wc",
        about: "bugzoo: RAM pages inserted WC into a VM_PFNMAP vma (PAT makes them WB)",
        host: false,
        modules: &[],
    },
    Workload {
        name: "bugzoo-per-page-pat",
        about: "bugzoo: 64 MiB of unreserved device memory inserted page by page",
        host: false,
        modules: &[],
    },
    Workload {
        name: "bugzoo-double-insert",
        about: "bugzoo: a second pfn inserted over a present PTE",
        host: false,
        modules: &[],
    },
    Workload {
        name: "bugzoo-stale-page",
        about: "bugzoo: ->fault maps shmem pages it truncated out of the page cache",
        host: false,
        modules: &[],
    },
    Workload {
        name: "bugzoo-partial-untrack",
        about: "bugzoo: remap_pfn_range of the whole vma, then munmap of its head",
        host: false,
        modules: &[],
    },
    Workload {
        name: "bugzoo-pat-leak",
        about: "bugzoo: a WC reservation made at mmap and never freed",
        host: false,
        modules: &[],
    },
    Workload {
        name: "bugzoo-nopage-loop",
        about: "bugzoo: ->fault returns NOPAGE without inserting; the refaulting child is killed",
        host: false,
        modules: &[],
    },
    Workload {
        name: "bugzoo-cow-pgoff",
        about: "bugzoo: private remap whose vm_pgoff the driver changed; COW writes, fork, unmap",
        host: false,
        modules: &[],
    },
];

pub fn workload(name: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.name == name)
}

/// The hooks `workload` must reach on `target`; `None` for an unknown workload or one that does
/// not run there.
pub fn expected(workload: &str, target: Target) -> Option<Vec<Expect>> {
    let fam = match target {
        Target::Host => {
            // Only tracepoints attach on the host: fentry is refused and there are no kprobes.
            return match workload {
                "anon" | "vvar" => Some(vec![any(PAGE_FAULT_USER)]),
                "file" => Some(vec![any(PAGE_FAULT_USER), any(FILEMAP_DELETE)]),
                _ => None,
            };
        }
        Target::Guest(fam) => fam,
    };
    if crate::bugzoo::mode(workload).is_some() {
        return crate::bugzoo::hooks(workload, fam);
    }
    let pat = |track: &'static str, pfnmap: &'static str| match fam {
        Family::TrackPfn => any(track),
        Family::Pfnmap => any(pfnmap),
    };
    let insert_cachemode = pat("track_pfn_insert", "pfnmap_setup_cachemode");
    let remap_track = pat("track_pfn_remap", "pfnmap_track");
    let untrack = pat("untrack_pfn", "pfnmap_untrack");
    let no_page = Expect {
        hook: "vm_normal_page",
        check: Check::NoPage,
    };
    let page = Expect {
        hook: "vm_normal_page",
        check: Check::Page,
    };
    let old = fam == Family::TrackPfn;
    let mut v = match workload {
        "anon" => vec![
            any("handle_mm_fault"),
            any(PAGE_FAULT_USER),
            any("copy_page_range"),
            page,
        ],
        "file" => vec![
            any("handle_mm_fault"),
            any(PAGE_FAULT_USER),
            any(FILEMAP_DELETE),
            page,
        ],
        // 7.x maps the vDSO data store as a VM_MIXEDMAP special mapping backed by real pages:
        // its faults install pages, no PFN insert.
        "vvar" if old => vec![
            any("handle_mm_fault"),
            any("vmf_insert_pfn"),
            insert_cachemode,
        ],
        "vvar" => vec![any("handle_mm_fault"), any(PAGE_FAULT_USER)],
        "devmem-shared" | "pci-bar" => vec![
            remap_track,
            untrack,
            any("memtype_reserve"),
            any("copy_page_range"),
            no_page,
        ],
        "devmem-cow" => vec![any("handle_mm_fault"), remap_track, no_page, page],
        "fbdev" => vec![remap_track, untrack, any("memtype_reserve")],
        "drm-bochs" if old => vec![
            any("handle_mm_fault"),
            any("vmf_insert_pfn_prot"),
            insert_cachemode,
        ],
        // 7.x's bochs keeps its buffers in shmem (drm_gem_shmem): no TTM, no move to VRAM.
        "drm-bochs" => vec![
            any("handle_mm_fault"),
            any("vmf_insert_pfn"),
            insert_cachemode,
        ],
        "drm-vgem" => vec![
            any("handle_mm_fault"),
            any("vmf_insert_pfn"),
            insert_cachemode,
        ],
        "dax" if old => vec![
            any("handle_mm_fault"),
            // 6.1's vmf_insert_pfn_pmd is an inline wrapper of the _prot variant (gone in 6.3).
            any("vmf_insert_pfn_pmd_prot|vmf_insert_pfn_pmd"),
            any("vmf_insert_mixed"),
            insert_cachemode,
        ],
        "dax" => vec![any("handle_mm_fault")],
        "fsdax" if old => vec![
            any("handle_mm_fault"),
            any("vmf_insert_mixed"),
            any("vmf_insert_mixed_mkwrite"),
            insert_cachemode,
            no_page,
        ],
        "fsdax" => vec![any("handle_mm_fault")],
        _ => return None,
    };
    let devmem = matches!(workload, "devmem-shared" | "devmem-cow");
    // 7.x's /dev/mem sets its remap up through mmap_prepare, which does not call
    // remap_pfn_range; the sysfs BAR and fbdev still do.
    if matches!(workload, "pci-bar" | "fbdev") || (old && devmem) {
        v.push(any("remap_pfn_range"));
    }
    if old && matches!(workload, "devmem-shared" | "pci-bar") {
        // Seen from untrack_pfn on 6.1/6.12; in 7.x pfnmap_untrack's memtype_free is inlined.
        v.push(any("memtype_free"));
    }
    // Fork copies PAT state only in the track_pfn kernels; 6.16+ refcounts the vma's context.
    if old && (devmem || workload == "pci-bar") {
        v.push(any("track_pfn_copy"));
    }
    Some(v)
}

/// The family of a kernel release string such as `6.12.117+deb12-amd64` or `7.2.13+deb14-amd64`.
pub fn family_for_release(release: &str) -> Option<Family> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = it.next()?.parse().ok()?;
    let minor: u32 = it.next()?.parse().ok()?;
    // The PAT hooks were renamed in 6.16.
    Some(if (major, minor) >= (6, 16) {
        Family::Pfnmap
    } else {
        Family::TrackPfn
    })
}

/// Whether rows of `hook` recorded in `mode` show the right attachment. Functions must be traced
/// with fentry/fexit; a kprobe is acceptable only where the hook plan shows fentry was tried and
/// refused (`fentry_refused`), e.g. a struct argument older trampolines cannot take. Tracepoints
/// carry the same event whichever way they attach.
pub fn mode_ok(hook: &str, mode: &str, fentry_refused: bool) -> bool {
    if hook.contains(':') {
        matches!(mode, "tp_btf" | "raw_tp" | "tracepoint")
    } else {
        mode == "fentry" || (mode == "kprobe" && fentry_refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_has_guest_expectations_for_both_families() {
        for w in WORKLOADS {
            for fam in [Family::TrackPfn, Family::Pfnmap] {
                let e = expected(w.name, Target::Guest(fam)).unwrap();
                assert!(!e.is_empty(), "{}", w.name);
            }
            assert_eq!(
                expected(w.name, Target::Host).is_some(),
                w.host,
                "{}",
                w.name
            );
        }
        assert!(expected("nope", Target::Host).is_none());
    }

    #[test]
    fn pat_hook_names_follow_the_family() {
        let names = |w, f| {
            expected(w, Target::Guest(f))
                .unwrap()
                .iter()
                .map(|e| e.hook)
                .collect::<Vec<_>>()
        };
        let old = names("devmem-shared", Family::TrackPfn);
        assert!(
            old.contains(&"track_pfn_remap")
                && old.contains(&"track_pfn_copy")
                && old.contains(&"untrack_pfn")
        );
        let new = names("devmem-shared", Family::Pfnmap);
        assert!(new.contains(&"pfnmap_track") && new.contains(&"pfnmap_untrack"));
        assert!(!new.iter().any(|h| h.contains("track_pfn")));
        assert!(names("drm-bochs", Family::Pfnmap).contains(&"pfnmap_setup_cachemode"));
        assert!(names("devmem-cow", Family::TrackPfn).contains(&"remap_pfn_range"));
        assert!(!names("devmem-cow", Family::Pfnmap).contains(&"remap_pfn_range"));
        assert!(names("pci-bar", Family::Pfnmap).contains(&"remap_pfn_range"));
        assert!(!names("anon", Family::TrackPfn).contains(&"remap_pfn_range"));
        assert!(names("drm-bochs", Family::TrackPfn).contains(&"track_pfn_insert"));
    }

    #[test]
    fn no_hook_is_listed_twice() {
        for w in WORKLOADS {
            for fam in [Family::TrackPfn, Family::Pfnmap] {
                let e = expected(w.name, Target::Guest(fam)).unwrap();
                for (i, x) in e.iter().enumerate() {
                    assert!(!e[..i].contains(x), "{} lists {:?} twice", w.name, x);
                }
            }
        }
    }

    #[test]
    fn host_expects_only_tracepoints() {
        for w in WORKLOADS.iter().filter(|w| w.host) {
            for e in expected(w.name, Target::Host).unwrap() {
                assert!(
                    e.hook.contains(':'),
                    "{} on the host expects {}",
                    w.name,
                    e.hook
                );
            }
        }
    }

    #[test]
    fn families_by_release() {
        assert_eq!(family_for_release("6.1.0-54-amd64"), Some(Family::TrackPfn));
        assert_eq!(
            family_for_release("6.12.117+deb12-amd64"),
            Some(Family::TrackPfn)
        );
        assert_eq!(family_for_release("6.16.0"), Some(Family::Pfnmap));
        assert_eq!(
            family_for_release("7.2.13+deb14-amd64"),
            Some(Family::Pfnmap)
        );
        assert_eq!(family_for_release("garbage"), None);
    }

    #[test]
    fn drm_modules_come_after_fbdev() {
        let pos = |n| WORKLOADS.iter().position(|w| w.name == n).unwrap();
        for (i, w) in WORKLOADS.iter().enumerate() {
            if !w.modules.is_empty() {
                assert!(
                    i > pos("fbdev"),
                    "{} loads a DRM driver before fbdev runs",
                    w.name
                );
            }
        }
    }

    #[test]
    fn modes() {
        assert!(mode_ok("vm_normal_page", "fentry", false));
        assert!(!mode_ok("vm_normal_page", "kprobe", false));
        assert!(mode_ok("vm_normal_page", "kprobe", true));
        assert!(!mode_ok("vm_normal_page", "tp_btf", true));
        assert!(mode_ok(PAGE_FAULT_USER, "tp_btf", false));
        assert!(mode_ok(FILEMAP_DELETE, "tracepoint", false));
        assert!(!mode_ok(FILEMAP_DELETE, "kprobe", true));
    }
}
