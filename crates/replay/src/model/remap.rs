//! `remap_pfn_range` and its PAT tracking (`track_pfn_remap` / `pfnmap_track`), and the vma
//! flags a remap must leave.

use pfnscope_abi::bits::{PAGE_SHIFT, PAGE_SIZE, errno, is_isa_range};
use pfnscope_abi::{Cache, Hook};
use pfnscope_trace::Rec;

use super::state::{Pte, RamKind};
use super::{MAX_WALK, Model, cache_of, pages, show_ret, space};
use crate::memtype::Owner;
use crate::report::Sink;
use crate::rules::Rule;
use crate::tree::Tree;

impl<S: Sink> Model<S> {
    pub(super) fn remap(&mut self, t: &Tree, i: usize) {
        let r = t.nodes[i].rec();
        let b = self.bits;
        let (Some(addr), Some(pfn), Some(size), Some(vs), Some(ve)) =
            (r.address(), r.pfn(), r.size(), r.vma_start(), r.vma_end())
        else {
            self.nc(Rule::RemapRet);
            self.visit_kids(t, i, None, |_| true);
            return;
        };
        let whole = addr == vs && addr.checked_add(size) == Some(ve);
        let cow = r.vma_flags().is_some_and(|v| b.is_cow(v));
        let track = t.kid(i, Hook::is_remap_track);
        let track_hook = if self.f.track_pfn_hooks {
            Hook::TrackPfnRemap
        } else if whole {
            Hook::PfnmapTrack
        } else {
            Hook::PfnmapSetupCachemode
        };
        let (tr, cache) = match track {
            Some(k) => self.track_remap(t, k, r.vma_id()),
            None => (None, None),
        };
        if track.is_none() && self.attached(track_hook) && r.ret() == Some(0) {
            self.diverge(
                Rule::RemapRet,
                &[r],
                "a PAT track call before the PTEs are set".into(),
                "none".into(),
            );
        }
        let expected: Vec<i64> = match tr {
            Some(e) if e != 0 => vec![if self.f.track_pfn_hooks || !whole {
                errno::EINVAL
            } else {
                e
            }],
            _ if cow && !whole => vec![errno::EINVAL],
            _ => vec![0, errno::ENOMEM],
        };
        if track.is_some() && tr.is_none() {
            self.nc(Rule::RemapRet);
        } else if let Some(v) = r.ret() {
            self.check(Rule::RemapRet, expected.contains(&v), &[r], || {
                let why = if cow && !whole {
                    " (partial remap of a COW vma)"
                } else {
                    ""
                };
                (format!("one of {expected:?}{why}"), format!("{v}"))
            });
        }
        if r.ret() == Some(0) {
            let c = cache.or_else(|| {
                (!self.pats.on)
                    .then(|| r.prot().map(|p| self.pat.of_prot(p)))
                    .flatten()
            });
            self.install_remap(r, addr, pfn, pages(Some(size)), c, false);
            if let Some(id) = r.vma_id() {
                let pat = whole && tr == Some(0) && self.f.vm_pat_flag && self.f.track_pfn_hooks;
                let st = self.vmas.map.entry(id).or_default();
                let was_due = st.due();
                st.must_flags = b.remap_flags();
                if pat {
                    st.must_flags |= b.pat;
                }
                st.must_pgoff = cow.then_some(pfn);
                st.due_seq = r.seq();
                let due = st.due();
                match (was_due, due) {
                    (false, true) => self.vmas.due += 1,
                    (true, false) => self.vmas.due -= 1,
                    _ => {}
                }
            }
        }
        // Its remap_pfn_range_notrack is this remap's second half, not a driver's own.
        self.visit_kids(t, i, None, |h| {
            !h.is_remap_track() && h != Hook::RemapPfnRangeNotrack
        });
    }

    /// The special PTEs a remap sets: linear in the pfn, over the whole range; `judged`: their
    /// linear-map aliases were checked (see [`Pte::judged`]).
    fn install_remap(
        &mut self,
        r: Rec<'_>,
        addr: u64,
        pfn: u64,
        n: u64,
        c: Option<Cache>,
        judged: bool,
    ) {
        if n > MAX_WALK {
            return;
        }
        let sp = space(r);
        for j in 0..n {
            let p = Pte {
                pfn: Some(pfn.saturating_add(j)),
                special: Some(true),
                cache: c,
                known: true,
                anon: false,
                since: r.seq(),
                judged,
            };
            self.install(sp, (addr >> PAGE_SHIFT) + j, p, r);
        }
    }

    /// `remap_pfn_range_notrack` called by a driver itself (under `remap_pfn_range` it is the
    /// remap's own second half): PTEs with the driver's cache mode, which nothing checks. A RAM
    /// page mapped in another mode than its memtype, or a pfn another mapping holds in another
    /// mode, is an alias (the 2009 PAT thread).
    pub(super) fn remap_notrack(&mut self, t: &Tree, i: usize) {
        let r = t.nodes[i].rec();
        self.vma_due(r);
        if let (Some(0), Some(addr), Some(pfn), Some(size), Some(prot)) =
            (r.ret(), r.address(), r.pfn(), r.size(), r.prot())
        {
            let c = self.pat.of_prot(prot);
            let n = pages(Some(size));
            self.install_remap(r, addr, pfn, n, Some(c), true);
            for j in 0..n.min(MAX_WALK) {
                self.linear_alias(r, pfn.saturating_add(j), c, ("prot", prot));
            }
        }
        self.visit_kids(t, i, None, |_| true);
    }

    /// `track_pfn_remap` / `pfnmap_track` / a partial remap's `pfnmap_setup_cachemode`.
    /// Returns the call's return value and the cache mode it left in `*prot`.
    pub(super) fn track_remap(
        &mut self,
        t: &Tree,
        i: usize,
        vma_id: Option<u32>,
    ) -> (Option<i64>, Option<Cache>) {
        let n = &t.nodes[i];
        let r = n.rec();
        let pat = self.pat;
        let want = cache_of(&r.cache_req(), r.prot(), &pat);
        let got = cache_of(&r.cache_out(), r.prot_out(), &pat);
        let (Some(pfn), Some(size)) = (r.pfn(), r.size()) else {
            self.nc(Rule::PatRemap);
            return (r.ret(), got);
        };
        let np = pages(Some(size));
        let whole = match n.hook {
            Some(Hook::TrackPfnRemap) => match (r.address(), r.vma_start(), r.vma_end()) {
                (Some(a), Some(s), Some(e)) => Some(a == s && e.checked_sub(s) == Some(size)),
                // No vma at all (memremap_pages, address 0): `!vma` reserves the whole range.
                (Some(0), None, None) if vma_id.is_none() => Some(true),
                _ => None,
            },
            Some(Hook::PfnmapTrack) => Some(true),
            _ => Some(false),
        };
        let reserve = t.kid(i, |h| h == Hook::MemtypeReserve);
        let free = t.kid(i, |h| h == Hook::MemtypeFree);
        match whole {
            None => self.nc(Rule::PatRemap),
            Some(true) => {
                if let Some(k) = reserve {
                    self.pats.on = true;
                    let rr = t.nodes[k].rec();
                    let req = cache_of(&rr.cache_req(), rr.prot(), &pat);
                    self.check(
                        Rule::PatRemap,
                        rr.pfn() == Some(pfn)
                            && rr.size() == Some(np.saturating_mul(PAGE_SIZE))
                            && (want.is_none() || req == want),
                        &[r, rr],
                        || {
                            (
                                format!(
                                    "memtype_reserve of pfn {pfn:#x}, {} bytes, {:?}",
                                    np.saturating_mul(PAGE_SIZE),
                                    want
                                ),
                                format!("pfn {:?}, size {:?}, {:?}", rr.pfn(), rr.size(), req),
                            )
                        },
                    );
                    let owner = match vma_id {
                        Some(v) => Owner::Vma(v),
                        None => Owner::Other,
                    };
                    let newt = self.reserve(t, k, owner);
                    let rret = rr.ret();
                    match (rret, newt, want) {
                        (Some(e), _, _) if e != 0 => self.check(
                            Rule::PatRemap,
                            r.ret() == Some(e) && free.is_none(),
                            &[r, rr],
                            || {
                                (
                                    format!("the reservation's error {e}, nothing freed"),
                                    format!("{} (free: {})", show_ret(r.ret()), free.is_some()),
                                )
                            },
                        ),
                        (Some(0), Some(nt), Some(w)) => {
                            // is_new_memtype_allowed: the untracked ISA hole may change freely.
                            if nt != w && !is_isa_range(pfn, np) && !w.may_become(nt) {
                                self.check(
                                    Rule::PatRemap,
                                    r.ret() == Some(errno::EINVAL) && free.is_some(),
                                    &[r, rr],
                                    || {
                                        (
                                            format!(
                                                "-EINVAL and memtype_free ({} may not become {})",
                                                w.name(),
                                                nt.name()
                                            ),
                                            format!(
                                                "{} (free: {})",
                                                show_ret(r.ret()),
                                                free.is_some()
                                            ),
                                        )
                                    },
                                );
                            } else if r.ret() == Some(0) {
                                self.check(Rule::PatRemap, got == Some(nt) && free.is_none(), &[r, rr], || {
                                    (format!("prot cache mode {} (the reservation's), nothing freed", nt.name()), format!("{:?} (free: {})", got, free.is_some()))
                                });
                            } else if r.ret() == Some(errno::EINVAL) && free.is_some() {
                                // memtype_kernel_map_sync failed: the trace cannot show why.
                                self.nc(Rule::PatRemap);
                            } else {
                                self.diverge(
                                    Rule::PatRemap,
                                    &[r, rr],
                                    "0".into(),
                                    show_ret(r.ret()),
                                );
                            }
                        }
                        _ => self.nc(Rule::PatRemap),
                    }
                    if r.ret() == Some(0)
                        && let Some(v) = vma_id
                    {
                        let st = self.vmas.map.entry(v).or_default();
                        st.tracked_in_trace = true;
                        st.reserved_in_trace = true;
                    }
                } else {
                    // No reservation: the RAM path (reserve_pfn_range keeps no refcount for RAM).
                    if self.attached(Hook::MemtypeReserve)
                        && self.pats.on
                        && self.known_nonram(pfn, np)
                    {
                        self.diverge(
                            Rule::PatRemap,
                            &[r],
                            format!("memtype_reserve of non-RAM pfn {pfn:#x}..{:#x}", pfn + np),
                            "no reservation".into(),
                        );
                    } else {
                        self.check(
                            Rule::PatRemap,
                            r.ret() == Some(0) && free.is_none(),
                            &[r],
                            || {
                                (
                                    "0 (RAM: no reservation, nothing to free)".into(),
                                    show_ret(r.ret()),
                                )
                            },
                        );
                    }
                    if r.ret() == Some(0)
                        && let Some(v) = vma_id
                    {
                        self.vmas.map.entry(v).or_default().tracked_in_trace = true;
                    }
                }
            }
            Some(false) => {
                self.check(Rule::PatRemap, reserve.is_none(), &[r], || {
                    (
                        "no reservation for a partial remap (a cache-mode lookup only)".into(),
                        "memtype_reserve".into(),
                    )
                });
                let mut modes: Vec<Option<Cache>> = Vec::new();
                if np <= 4096 {
                    for p in pfn..pfn.saturating_add(np) {
                        let m = if is_isa_range(p, 1) {
                            self.pats.on.then_some(Cache::WB)
                        } else {
                            self.pats
                                .memtypes
                                .lookup(p)
                                .or_else(|| self.pats.lookups.get(&p).copied())
                        };
                        modes.push(m);
                    }
                }
                let known: Vec<Cache> = modes.iter().flatten().copied().collect();
                if !modes.is_empty() && known.len() == modes.len() {
                    let uniform = known.iter().all(|c| *c == known[0]);
                    if uniform {
                        self.check(
                            Rule::PatRemap,
                            r.ret() == Some(0) && got == Some(known[0]),
                            &[r],
                            || {
                                (
                                    format!("0 with cache mode {}", known[0].name()),
                                    format!("{} with {:?}", show_ret(r.ret()), got),
                                )
                            },
                        );
                    } else {
                        self.check(Rule::PatRemap, r.ret() == Some(errno::EINVAL), &[r], || {
                            (
                                "-EINVAL (the pages' memtypes differ)".into(),
                                show_ret(r.ret()),
                            )
                        });
                    }
                } else {
                    self.nc(Rule::PatRemap);
                }
            }
        }
        self.visit_kids(t, i, None, |h| h != Hook::MemtypeReserve);
        if r.ret() == Some(0)
            && let (Some(w), Some(g)) = (want, got)
        {
            let why = match self.mem.ram_kind(pfn, np) {
                _ if is_isa_range(pfn, np) => "the legacy ISA range is never tracked: always WB",
                RamKind::Ram => "the RAM pages' memtype (RAM is never reserved)",
                _ if whole == Some(true) => {
                    "the reservation's type: an older overlapping one, or the MTRRs, decided"
                }
                _ => "the memtype of the pages, as a partial remap takes it",
            };
            let drv = r.driver().or(t.nodes[0].rec().driver());
            self.cache_change(r, drv, pfn, w, g, why);
        }
        (r.ret(), got)
    }

    /// Flags a vma must show after a remap, checked once at its next snapshot.
    #[inline]
    pub(super) fn vma_due(&mut self, r: Rec<'_>) {
        // Nearly every call comes here, and nearly always no vma has anything due.
        if self.vmas.due == 0 {
            return;
        }
        let Some(vid) = r.vma_id() else { return };
        let Some(st) = self.vmas.map.get_mut(&vid) else {
            return;
        };
        if !st.due() {
            return;
        }
        let (must, pg, due) = (st.must_flags, st.must_pgoff, st.due_seq);
        st.must_flags = 0;
        st.must_pgoff = None;
        self.vmas.due -= 1;
        if r.seq() <= due {
            return;
        }
        if let Some(vm) = r.vma_flags() {
            self.check(Rule::RemapVma, vm & must == must, &[r], || {
                (
                    format!("vm_flags with {must:#x} set by remap_pfn_range (seq {due})"),
                    format!("{vm:#x}"),
                )
            });
        }
        if let (Some(p), Some(obs)) = (pg, r.vma_pgoff()) {
            self.check(Rule::RemapVma, obs == p, &[r], || {
                (format!("vm_pgoff {p:#x} (COW remap)"), format!("{obs:#x}"))
            });
        }
    }
}
