//! PFN inserts (`vmf_insert_pfn*`, `vmf_insert_mixed*`, PMD/PUD): the vma flags they BUG on,
//! their results, the PAT lookup they must make, the PTEs they install.

use pfnscope_abi::Hook;
use pfnscope_abi::bits::{PAGE_SHIFT, pfn_t, pte, vm_fault as vf};

use super::state::Pte;
use super::{Model, hex, is_dax, show_ret, space};
use crate::report::{Outcome, Sink};
use crate::rules::Rule;
use crate::tree::Tree;

impl<S: Sink> Model<S> {
    pub(super) fn insert(&mut self, t: &Tree, i: usize, fault_page: Option<u64>) {
        let n = &t.nodes[i];
        let r = n.rec();
        // vmf_insert_pfn is vmf_insert_pfn_prot with the vma's prot: the inner call is checked.
        if let Some(k) = t.kid(i, |h| h.is_insert()) {
            let inner = t.nodes[k].rec();
            // The wrapper passes its vma on: the inner call's BUG_ONs see the same flags.
            if let Some(vm) = r.vma_flags() {
                let b = self.bits;
                let pm = b.pfn_or_mixed(vm);
                let bug = !n.hook.is_some_and(Hook::is_mixed_insert)
                    && (pm == 0
                        || pm == b.pfnmap | b.mixedmap
                        || (vm & b.pfnmap != 0 && b.is_cow(vm)));
                self.check(Rule::InsertVmaFlags, !bug && inner.vma_flags().is_none_or(|f| f == vm), &[r, inner], || {
                    (
                        "BUG_ON: exactly one of VM_PFNMAP/VM_MIXEDMAP, no COW VM_PFNMAP, same vma as the inner call".into(),
                        format!("returned {} on vm_flags {vm:#x} (inner {})", show_ret(r.ret()), hex(inner.vma_flags())),
                    )
                });
            }
            if let (Some(a), Some(b)) = (r.ret(), inner.ret()) {
                self.check(Rule::InsertRet, a == b, &[r, inner], || {
                    (
                        format!("the inner call's result {}", show_ret(Some(b))),
                        show_ret(Some(a)),
                    )
                });
            }
            self.visit_kids(t, i, fault_page, |_| true);
            return;
        }
        let b = self.bits;
        let mixed = n.hook.is_some_and(Hook::is_mixed_insert);
        let level_pages: u64 = n.hook.and_then(Hook::insert_pages).unwrap_or(1);
        let ret = r.ret().map(|v| v as u32);
        let mut refused = false;

        match r.vma_flags() {
            None => {
                self.nc(Rule::InsertVmaFlags);
            }
            Some(vm) => {
                let pm = b.pfn_or_mixed(vm);
                let both = b.pfnmap | b.mixedmap;
                let pfnmap_cow = vm & b.pfnmap != 0 && b.is_cow(vm);
                // vm_mixed_ok and the PMD/PUD BUG_ONs let devmap (and, for mixed, special)
                // pfn_t's into a vma with neither flag; traces before `pfn_flags` cannot say.
                let devmap = r.pfn_flags().map(pfn_t::is_devmap);
                if mixed {
                    let flags_allow = r
                        .pfn_flags()
                        .map(|f| pfn_t::is_devmap(f) || f & pfn_t::SPECIAL != 0);
                    // The zero pfn is let in too (fs-dax maps holes with it, flags 0): without
                    // its pfn in the metadata, only a pfn outside System RAM is surely not it.
                    let maybe_zero = || {
                        r.pfn().is_none_or(|p| match self.mem.zero_pfn {
                            Some(z) => p == z,
                            None => self.mem.ram.is_empty() || self.mem.is_ram(p, 1),
                        })
                    };
                    if vm & b.mixedmap != 0 || flags_allow == Some(true) {
                        self.sink.tally(Rule::InsertMixed, Outcome::Held);
                    } else if flags_allow == Some(false) && maybe_zero() {
                        self.nc(Rule::InsertMixed);
                        refused = ret != Some(vf::NOPAGE);
                    } else {
                        refused = true;
                        let dax =
                            flags_allow.is_none() && r.driver().as_deref().is_some_and(is_dax);
                        if dax {
                            // dax passes devmap pfn_t flags the trace masks off: vm_mixed_ok may
                            // allow it, and a mapped page says it did.
                            if ret == Some(vf::NOPAGE) {
                                refused = false;
                                self.sink.tally(Rule::InsertMixed, Outcome::Held);
                            } else {
                                self.nc(Rule::InsertMixed);
                            }
                        } else if self.f.mixed_refusal_sigbus {
                            self.check(Rule::InsertMixed, ret == Some(vf::SIGBUS), &[r], || {
                                (
                                    "SIGBUS (vma is not VM_MIXEDMAP)".into(),
                                    format!("ret {} on vm_flags {vm:#x}", show_ret(r.ret())),
                                )
                            });
                        } else {
                            self.diverge(
                                Rule::InsertMixed,
                                &[r],
                                "BUG in vm_mixed_ok (vma is not VM_MIXEDMAP): the call never returns".into(),
                                format!("returned {} on vm_flags {vm:#x}", show_ret(r.ret())),
                            );
                        }
                    }
                } else {
                    // At PMD/PUD level neither flag is allowed for devmap pfns: without
                    // `pfn_flags` only the always-BUG cases are checked there.
                    let bug = if level_pages == 1 {
                        pm == 0 || pm == both || pfnmap_cow
                    } else {
                        (pm == 0 && devmap == Some(false)) || pm == both || pfnmap_cow
                    };
                    refused = bug;
                    self.check(Rule::InsertVmaFlags, !bug, &[r], || {
                        (
                            "BUG_ON: exactly one of VM_PFNMAP/VM_MIXEDMAP, and no COW VM_PFNMAP; the call never returns".into(),
                            format!("returned {} on vm_flags {vm:#x}", show_ret(r.ret())),
                        )
                    });
                }
            }
        }

        let (address, pfn) = (r.address(), r.pfn());
        let inside = match (address, r.vma_start(), r.vma_end()) {
            (Some(a), Some(s), Some(e)) => Some(a >= s && a < e),
            _ => None,
        };
        if !refused && let Some(v) = ret {
            match inside {
                Some(false) => self.check(Rule::InsertRet, v == vf::SIGBUS, &[r], || {
                    ("SIGBUS (address outside the vma)".into(), format!("{v:#x}"))
                }),
                Some(true) => {
                    let present = r.prot().is_none_or(|p| p & pte::PRESENT != 0);
                    let allowed: &[u32] = if !present || mixed {
                        &[vf::NOPAGE, vf::OOM, vf::SIGBUS]
                    } else {
                        &[vf::NOPAGE, vf::OOM]
                    };
                    self.check(Rule::InsertRet, allowed.contains(&v), &[r], || {
                        (format!("one of {allowed:#x?}"), format!("{v:#x}"))
                    });
                }
                None => self.nc(Rule::InsertRet),
            }
        }

        let lookup = t.kid(i, |h| h.is_insert_lookup());
        let lookup_hook = if self.f.track_pfn_hooks {
            Hook::TrackPfnInsert
        } else {
            Hook::PfnmapSetupCachemode
        };
        if !refused {
            if self.attached(lookup_hook) {
                match (inside, ret) {
                    (Some(true), Some(v)) if v & vf::NOPAGE != 0 => {
                        self.check(Rule::InsertPatLookup, lookup.is_some(), &[r], || {
                            (
                                "a PAT cache-mode lookup before the PFN is mapped".into(),
                                "none".into(),
                            )
                        })
                    }
                    (Some(false), _) => {
                        self.check(Rule::InsertPatLookup, lookup.is_none(), &[r], || {
                            (
                                "no PAT lookup (the address check comes first)".into(),
                                "a lookup".into(),
                            )
                        })
                    }
                    _ => {}
                }
            } else {
                self.nc(Rule::InsertPatLookup);
            }
        }
        if let (Some(k), Some(pfn)) = (lookup, pfn) {
            let lr = t.nodes[k].rec();
            // track_pfn_insert(vma, &pgprot, pfn) / pfnmap_setup_cachemode_pfn(pfn, ...).
            self.check(
                Rule::InsertPatLookup,
                lr.pfn().is_none_or(|p| p == pfn),
                &[r, lr],
                || {
                    (
                        format!("the lookup for pfn {pfn:#x}"),
                        format!("a lookup for pfn {}", hex(lr.pfn())),
                    )
                },
            );
        }
        let cache = match lookup {
            Some(k) => self.lookup(t, k),
            None => None,
        };

        if let (Some(true), Some(v), Some(a), Some(pfn)) = (inside, ret, address, pfn)
            && v & vf::NOPAGE != 0
            && !refused
            && level_pages <= 512
        {
            let base = (a >> PAGE_SHIFT) & !(level_pages - 1);
            let (sp, seq) = (space(r), r.seq());
            let mut kept = None;
            // insert_pfn maps a special PTE, a mixed insert's too on x86 (__vm_insert_mixed
            // inserts pages only on architectures without the special bit), and a devmap one
            // is special as well (x86 pte_mkdevmap sets _PAGE_SPECIAL with _PAGE_DEVMAP).
            let special = Some(true);
            for j in 0..level_pages {
                let pg = base + j;
                let old = self.ptes.map.get(&(sp, pg)).copied().filter(|p| p.known);
                // Mapped by an earlier insert of this same tree: surely still there, whatever
                // the model may have missed between trees.
                let this_tree = old.is_some() && self.ptes.inserted_in_tree(sp, pg);
                // An already present PTE stays as it was (insert_pfn without mkwrite).
                if let Some(o) = old
                    && (fault_page != Some(pg) || this_tree)
                {
                    if this_tree && o.pfn.is_some_and(|p| p != pfn.saturating_add(j)) {
                        kept.get_or_insert((pg, o));
                    }
                    continue;
                }
                let p = Pte {
                    pfn: special.map(|_| pfn.saturating_add(j)),
                    special,
                    cache,
                    known: fault_page.is_some_and(|f| {
                        f >> (level_pages.trailing_zeros()) == pg >> level_pages.trailing_zeros()
                    }),
                    anon: false,
                    since: seq,
                    judged: false,
                };
                self.install(sp, pg, p, r);
            }
            self.ptes.tree_inserts.push((sp, base, level_pages));
            if let Some((pg, o)) = kept {
                self.find(Rule::FindInsertOverPresent, &[r], r.driver(), || {
                    format!(
                        "pfn {pfn:#x} inserted at {:#x}, where this fault had already mapped pfn {} (seq {}): the kernel kept the old PTE and returned NOPAGE",
                        pg << PAGE_SHIFT,
                        hex(o.pfn),
                        o.since
                    )
                });
            }
        }
        self.visit_kids(t, i, fault_page, |h| !h.is_insert_lookup());
    }
}
