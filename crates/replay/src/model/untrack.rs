//! PAT's release of a mapping (`untrack_pfn` / `pfnmap_untrack`).

use pfnscope_abi::Hook;
use pfnscope_abi::bits::{PAGE_SHIFT, PAGE_SIZE};
use pfnscope_trace::Rec;

use super::{Model, hex, num, pages, space};
use crate::memtype::{FreeMatch, Owner};
use crate::report::Sink;
use crate::rules::Rule;
use crate::tree::Tree;

impl<S: Sink> Model<S> {
    /// `untrack_pfn(NULL, pfn, size)`, memunmap_pages undoing memremap_pages: free_pfn_range
    /// frees exactly that range, unless it is RAM (which keeps its type in page flags).
    pub(super) fn untrack_range(
        &mut self,
        t: &Tree,
        i: usize,
        pfn: u64,
        size: u64,
        free: Option<usize>,
    ) {
        let r = t.nodes[i].rec();
        match free {
            Some(k) => {
                let fr = t.nodes[k].rec();
                self.check(
                    Rule::PatUntrack,
                    fr.pfn() == Some(pfn) && fr.size() == Some(size),
                    &[r, fr],
                    || {
                        (
                            format!("memtype_free of pfn {pfn:#x}, {size} bytes"),
                            format!("pfn {}, size {}", hex(fr.pfn()), num(fr.size())),
                        )
                    },
                );
            }
            None if self.attached(Hook::MemtypeFree)
                && self.known_nonram(pfn, pages(Some(size))) =>
            {
                self.diverge(
                    Rule::PatUntrack,
                    &[r],
                    format!("memtype_free of non-RAM pfn {pfn:#x}, {size} bytes"),
                    "nothing freed".into(),
                );
            }
            None => self.nc(Rule::PatUntrack),
        }
        self.visit_kids(t, i, None, |_| true);
    }

    /// An untrack whose free (`fr`) matches no reservation's start and end nor its end alone,
    /// inside one that covers it: the unmapped part of a split VM_PAT vma. memtype_erase
    /// refuses it, and the reservation stays for as long as the rest is mapped, and after.
    fn partial_untrack(&mut self, r: Rec<'_>, fr: Rec<'_>) {
        let (Some(start), Some(size)) = (fr.pfn(), fr.size()) else {
            return;
        };
        let end = start.saturating_add(pages(Some(size)));
        if self.pats.memtypes.find_free(start, end) != FreeMatch::None {
            return;
        }
        let Some(e) = self.pats.memtypes.covering(start, end).next().cloned() else {
            return;
        };
        self.find(Rule::FindPartialUntrack, &[r, fr], r.driver(), || {
            format!(
                "unmapping part of a VM_PAT mapping untracked pfn {start:#x}..{end:#x}, inside the reservation {:#x}..{:#x} {} (seq {}): PAT refuses to free it (freeing invalid memtype) and the whole reservation stays",
                e.start,
                e.end,
                e.cache.name(),
                e.seq
            )
        });
    }

    pub(super) fn untrack(&mut self, t: &Tree, i: usize) {
        let n = &t.nodes[i];
        let r = n.rec();
        let free = t.kid(i, |h| h == Hook::MemtypeFree);
        self.vma_due(r);
        if n.hook == Some(Hook::UntrackPfn) {
            if let (None, None, Some(pfn), Some(size)) =
                (r.vma_id(), r.vma_start(), r.pfn(), r.size())
                && size > 0
            {
                self.untrack_range(t, i, pfn, size, free);
                return;
            }
            let (Some(vm), Some(vid)) = (r.vma_flags(), r.vma_id()) else {
                self.nc(Rule::PatUntrack);
                self.visit_kids(t, i, None, |_| true);
                return;
            };
            let has_pat = self.bits.pat != 0 && vm & self.bits.pat != 0;
            if !has_pat {
                self.check(Rule::PatUntrack, free.is_none(), &[r], || {
                    ("nothing freed (no VM_PAT)".into(), "memtype_free".into())
                });
            } else {
                let (Some(vs), Some(ve)) = (r.vma_start(), r.vma_end()) else {
                    self.nc(Rule::PatUntrack);
                    return;
                };
                let (exp_pfn, exp_size) = match (r.pfn().unwrap_or(0), r.size().unwrap_or(0)) {
                    (0, 0) => {
                        let first = self.ptes.map.get(&(space(r), vs >> PAGE_SHIFT)).copied();
                        (
                            first
                                .filter(|p| p.known && p.special == Some(true))
                                .and_then(|p| p.pfn),
                            ve.saturating_sub(vs),
                        )
                    }
                    (p, s) => (Some(p), s),
                };
                let owned = self.pats.memtypes.owned_by_vma(vid).is_some();
                let st = self.vmas.map.get(&vid).cloned().unwrap_or_default();
                match free {
                    Some(k) => {
                        let fr = t.nodes[k].rec();
                        self.check(
                            Rule::PatUntrack,
                            fr.size() == Some(exp_size)
                                && exp_pfn.is_none_or(|p| fr.pfn() == Some(p)),
                            &[r, fr],
                            || {
                                (
                                    format!(
                                        "memtype_free of pfn {}, {exp_size} bytes",
                                        hex(exp_pfn)
                                    ),
                                    format!("pfn {}, size {}", hex(fr.pfn()), num(fr.size())),
                                )
                            },
                        );
                        self.partial_untrack(r, fr);
                        if st.tracked_in_trace && !st.reserved_in_trace {
                            self.diverge(
                                Rule::PatUntrack,
                                &[r, fr],
                                "no memtype_free (the remap took the RAM path and reserved nothing)".into(),
                                "free_pfn_range freed it as non-RAM".into(),
                            );
                        }
                    }
                    None => {
                        if owned
                            || exp_pfn.is_some_and(|p| self.known_nonram(p, pages(Some(exp_size))))
                        {
                            self.diverge(
                                Rule::PatUntrack,
                                &[r],
                                format!(
                                    "memtype_free of the vma's non-RAM range ({exp_size} bytes)"
                                ),
                                "nothing freed".into(),
                            );
                        } else {
                            self.nc(Rule::PatUntrack);
                        }
                    }
                }
            }
            if let Some(k) = free {
                self.free(t, k, Some(Owner::Vma(vid)));
            }
            let st = self.vmas.map.entry(vid).or_default();
            st.untracked = true;
            self.vmas.last_untrack.insert(r.tid(), vid);
            self.visit_kids(t, i, None, |h| h != Hook::MemtypeFree);
            return;
        } else {
            let (Some(pfn), Some(size)) = (r.pfn(), r.size()) else {
                self.nc(Rule::PatUntrack);
                self.visit_kids(t, i, None, |_| true);
                return;
            };
            let np = pages(Some(size));
            match free {
                Some(k) => {
                    let fr = t.nodes[k].rec();
                    self.check(
                        Rule::PatUntrack,
                        fr.pfn() == Some(pfn) && fr.size() == Some(np.saturating_mul(PAGE_SIZE)),
                        &[r, fr],
                        || {
                            (
                                format!("memtype_free of pfn {pfn:#x}, {size} bytes"),
                                format!("pfn {}, size {}", hex(fr.pfn()), num(fr.size())),
                            )
                        },
                    );
                }
                None => {
                    let exact = self.pats.memtypes.find_free(pfn, pfn.saturating_add(np));
                    if !matches!(exact, FreeMatch::Exact(_)) {
                        self.nc(Rule::PatUntrack);
                    } else if self.pats.untrack_frees_seen {
                        self.diverge(
                            Rule::PatUntrack,
                            &[r],
                            "memtype_free of the tracked range".into(),
                            "nothing freed".into(),
                        );
                    } else {
                        // Debian's 7.2 build inlines memtype_free into pfnmap_untrack (both in
                        // memtype.c): until one untrack in this trace shows its memtype_free, a
                        // missing one cannot be told from an inlined one. Free it as the kernel
                        // would, and say the check was not possible.
                        self.pats.memtypes.apply_free(exact, pfn);
                        self.nc(Rule::PatUntrack);
                    }
                }
            }
            if free.is_some() {
                self.pats.untrack_frees_seen = true;
            }
            for (_, e) in self.pats.memtypes.exact(pfn, pfn.saturating_add(np)) {
                if let Owner::Vma(v) = e.owner {
                    self.vmas.map.entry(v).or_default().untracked = true;
                }
            }
        }
        self.visit_kids(t, i, None, |_| true);
    }
}
