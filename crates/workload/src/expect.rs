//! Which hooks each workload must reach, per kernel family: the one table the test box checks
//! traces against.
//!
//! Kept free of any system calls so the host-side checker (xtask) can use it on any machine.

use pfnscope_abi::{Hook, Mode};

use crate::expectation::any;
pub use crate::expectation::{Check, Expect, Target};

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
    Workload {
        name: "bugzoo-insert-page-wc",
        about: "bugzoo: RAM pages vm_insert_page'd into a WC vma (a WC alias of WB linear-map pages)",
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
    use Hook::*;
    let series = match target {
        Target::Host => {
            // Only tracepoints attach on the host: fentry is refused and there are no kprobes.
            return match workload {
                "anon" | "vvar" => Some(vec![any(&PageFaultUser)]),
                "file" => Some(vec![
                    any(&PageFaultUser),
                    any(&FilemapDelete),
                    any(&FilemapAdd),
                ]),
                _ => None,
            };
        }
        Target::Guest(series) => series,
    };
    if crate::bugzoo::mode(workload).is_some() {
        return crate::bugzoo::hooks(workload, series);
    }
    // The PAT hooks were renamed in 6.16 (the kernel table says where).
    let old = series.features().track_pfn_hooks;
    let pat = |track: &'static Hook, pfnmap: &'static Hook| any(if old { track } else { pfnmap });
    let insert_cachemode = pat(&TrackPfnInsert, &PfnmapSetupCachemode);
    let remap_track = pat(&TrackPfnRemap, &PfnmapTrack);
    let untrack = pat(&UntrackPfn, &PfnmapUntrack);
    let no_page = Expect {
        hooks: &[VmNormalPage],
        check: Check::NoPage,
    };
    let page = Expect {
        hooks: &[VmNormalPage],
        check: Check::Page,
    };
    let mut v = match workload {
        "anon" => vec![
            any(&HandleMmFault),
            any(&PageFaultUser),
            any(&CopyPageRange),
            page,
        ],
        // The guest's files are on tmpfs, whose pages enter the cache through
        // shmem_add_to_page_cache: no add tracepoint (it is __filemap_add_folio's). Their
        // faults map the cache's pages through do_set_pte, set_pte_range from 6.6 on.
        "file" => vec![
            any(&HandleMmFault),
            any(&PageFaultUser),
            any(&FilemapDelete),
            page,
            Expect {
                hooks: &[SetPteRange, DoSetPte],
                check: Check::Any,
            },
        ],
        // 7.x maps the vDSO data store as a VM_MIXEDMAP special mapping backed by real pages:
        // its faults install pages, no PFN insert.
        "vvar" if old => vec![any(&HandleMmFault), any(&VmfInsertPfn), insert_cachemode],
        "vvar" => vec![any(&HandleMmFault), any(&PageFaultUser)],
        "devmem-shared" | "pci-bar" => vec![
            remap_track,
            untrack,
            any(&MemtypeReserve),
            any(&CopyPageRange),
            no_page,
        ],
        "devmem-cow" => vec![any(&HandleMmFault), remap_track, no_page, page],
        // fb_io_mmap -> vm_iomap_memory -> io_remap_pfn_range (drivers/video/fbdev/core).
        "fbdev" => vec![
            remap_track,
            untrack,
            any(&MemtypeReserve),
            any(&VmIomapMemory),
        ],
        "drm-bochs" if old => vec![
            any(&HandleMmFault),
            any(&VmfInsertPfnProt),
            insert_cachemode,
        ],
        // 7.x's bochs keeps its buffers in shmem (drm_gem_shmem): no TTM, no move to VRAM.
        "drm-bochs" => vec![any(&HandleMmFault), any(&VmfInsertPfn), insert_cachemode],
        "drm-vgem" => vec![any(&HandleMmFault), any(&VmfInsertPfn), insert_cachemode],
        "dax" if old => vec![
            any(&HandleMmFault),
            // 6.1's vmf_insert_pfn_pmd is an inline wrapper of the _prot variant (gone in 6.3).
            Expect {
                hooks: &[VmfInsertPfnPmdProt, VmfInsertPfnPmd],
                check: Check::Any,
            },
            any(&VmfInsertMixed),
            insert_cachemode,
        ],
        "dax" => vec![any(&HandleMmFault)],
        "fsdax" if old => vec![
            any(&HandleMmFault),
            any(&VmfInsertMixed),
            any(&VmfInsertMixedMkwrite),
            insert_cachemode,
            no_page,
        ],
        "fsdax" => vec![any(&HandleMmFault)],
        _ => return None,
    };
    let devmem = matches!(workload, "devmem-shared" | "devmem-cow");
    // 7.x's /dev/mem sets its remap up through mmap_prepare, which does not call
    // remap_pfn_range; the sysfs BAR and fbdev still do.
    if matches!(workload, "pci-bar" | "fbdev") || (old && devmem) {
        v.push(any(&RemapPfnRange));
    }
    if old && matches!(workload, "devmem-shared" | "pci-bar") {
        // Seen from untrack_pfn on 6.1/6.12; in 7.x pfnmap_untrack's memtype_free is inlined.
        v.push(any(&MemtypeFree));
    }
    // Fork copies PAT state only in the track_pfn kernels; 6.16+ refcounts the vma's context.
    if old && (devmem || workload == "pci-bar") {
        v.push(any(&TrackPfnCopy));
    }
    Some(v)
}

/// Whether rows of `hook` recorded in `mode` show the right attachment. Functions must be traced
/// with fentry/fexit; a kprobe is acceptable only where the hook plan shows fentry was tried and
/// refused (`fentry_refused`), e.g. a struct argument older trampolines cannot take. Tracepoints
/// carry the same event whichever way they attach.
pub fn mode_ok(hook: Hook, mode: Mode, fentry_refused: bool) -> bool {
    if hook.is_function() {
        mode == Mode::Fentry || (mode == Mode::Kprobe && fentry_refused)
    } else {
        mode.is_tracepoint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bugzoo::{MODES, PREFIX, hooks, mode};
    use pfnscope_abi::kernel::Series;

    #[test]
    fn every_workload_has_guest_expectations_on_every_series() {
        for w in WORKLOADS {
            for s in Series::ALL {
                let e = expected(w.name, Target::Guest(s)).unwrap();
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
    fn pat_hooks_follow_the_kernel_table() {
        let hooks = |w, s| {
            expected(w, Target::Guest(s))
                .unwrap()
                .iter()
                .flat_map(|e| e.hooks.iter().copied())
                .collect::<Vec<_>>()
        };
        for s in Series::ALL {
            let old = s.features().track_pfn_hooks;
            let dm = hooks("devmem-shared", s);
            // Every PAT hook expected is of the family this series has.
            for h in &dm {
                assert!(!h.is_track_pfn_family() || old, "{h} on {s}");
                assert!(!h.is_pfnmap_family() || !old, "{h} on {s}");
            }
            let (remap, untrack) = if old {
                (Hook::TrackPfnRemap, Hook::UntrackPfn)
            } else {
                (Hook::PfnmapTrack, Hook::PfnmapUntrack)
            };
            assert!(dm.contains(&remap) && dm.contains(&untrack), "{s}");
            assert_eq!(dm.contains(&Hook::TrackPfnCopy), old, "{s}");
        }
        let (v6_12, v6_16) = (Series::V6_12, Series::V6_16);
        assert!(hooks("drm-bochs", v6_16).contains(&Hook::PfnmapSetupCachemode));
        assert!(hooks("drm-bochs", v6_12).contains(&Hook::TrackPfnInsert));
        assert!(hooks("devmem-cow", v6_12).contains(&Hook::RemapPfnRange));
        assert!(!hooks("devmem-cow", v6_16).contains(&Hook::RemapPfnRange));
        assert!(hooks("pci-bar", v6_16).contains(&Hook::RemapPfnRange));
        assert!(!hooks("anon", v6_12).contains(&Hook::RemapPfnRange));
    }

    #[test]
    fn no_hook_is_listed_twice() {
        for w in WORKLOADS {
            for s in Series::ALL {
                let e = expected(w.name, Target::Guest(s)).unwrap();
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
                for h in e.hooks {
                    assert!(!h.is_function(), "{} on the host expects {h}", w.name);
                }
            }
        }
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
        use Hook::*;
        assert!(mode_ok(VmNormalPage, Mode::Fentry, false));
        assert!(!mode_ok(VmNormalPage, Mode::Kprobe, false));
        assert!(mode_ok(VmNormalPage, Mode::Kprobe, true));
        assert!(!mode_ok(VmNormalPage, Mode::TpBtf, true));
        assert!(mode_ok(PageFaultUser, Mode::TpBtf, false));
        assert!(mode_ok(FilemapDelete, Mode::Tracepoint, false));
        assert!(!mode_ok(FilemapDelete, Mode::Kprobe, true));
    }

    // The bug zoo's table against the workload table.
    #[test]
    fn every_mode_is_a_workload_and_every_zoo_workload_a_mode() {
        for m in MODES {
            let w =
                workload(m.workload).unwrap_or_else(|| panic!("{} not in WORKLOADS", m.workload));
            assert!(!w.host, "{} needs the driver: guest only", m.workload);
        }
        for w in WORKLOADS.iter().filter(|w| w.name.starts_with(PREFIX)) {
            assert!(mode(w.name).is_some(), "{} has no mode", w.name);
        }
        assert_eq!(mode("bugzoo-ram-wc").unwrap().driver_mode(), "ram-wc");
    }

    #[test]
    fn every_mode_has_one_outcome_and_hooks_per_series() {
        for m in MODES {
            for s in Series::ALL {
                let n = m.outcomes.iter().filter(|o| o.series.contains(&s)).count();
                assert_eq!(n, 1, "{} has {n} outcomes for {s}", m.workload);
                let o = m.outcome(s).unwrap();
                assert!(o.skip.is_none_or(|why| !why.is_empty()), "{}", m.workload);
                let e = expected(m.workload, Target::Guest(s)).unwrap();
                assert!(!e.is_empty(), "{} reaches no hook on {s}", m.workload);
                assert_eq!(Some(e), hooks(m.workload, s));
            }
            assert!(!m.oops, "{}: no mode may oops", m.workload);
            assert!(expected(m.workload, Target::Host).is_none());
        }
    }
}
