//! PAT: the cache-mode lookup of an insert, and memtype reservations and frees.

use pfnscope_abi::bits::{errno, is_isa_range, pte};
use pfnscope_abi::{Cache, Hook};

use super::{Model, cache_of, pages, show_ret};
use crate::memtype::{Entry, FreeMatch, Owner, ReservePrediction};
use crate::report::{Outcome, Sink};
use crate::rules::Rule;
use crate::tree::Tree;

impl<S: Sink> Model<S> {
    /// `track_pfn_insert` / `pfnmap_setup_cachemode`: returns the cache mode PAT answered.
    pub(super) fn lookup(&mut self, t: &Tree, i: usize) -> Option<Cache> {
        let r = t.nodes[i].rec();
        let pat = self.pat;
        let (prot, prot_out, cache_out) = (r.prot(), r.prot_out(), r.cache_out());
        let c_in = cache_of(&r.cache_req(), prot, &pat);
        let c_out = cache_of(&cache_out, prot_out, &pat);
        if let (Some(p), Some(po)) = (prot, prot_out) {
            self.check(
                Rule::PatLookup,
                p & !pte::CACHE_MASK == po & !pte::CACHE_MASK,
                &[r],
                || {
                    (
                        format!("only the cache bits of {p:#x} change"),
                        format!("{po:#x}"),
                    )
                },
            );
        }
        if let (Some(po), Some(name)) = (prot_out, cache_out.as_deref().and_then(Cache::parse)) {
            self.check(Rule::PatLookup, pat.of_prot(po) == name, &[r], || {
                (
                    format!("prot {po:#x} selects {}", pat.of_prot(po).name()),
                    format!("cache_out {}", name.name()),
                )
            });
        }
        if c_in.is_some() && c_out.is_some() && c_in != c_out {
            self.pats.on = true;
        }
        let (Some(pfn), Some(out)) = (r.pfn(), c_out) else {
            self.nc(Rule::PatLookup);
            return c_out;
        };
        let n = if t.nodes[i].hook == Some(Hook::PfnmapSetupCachemode) {
            pages(r.size())
        } else {
            1
        };
        // One walk of the reservations for both uses below (nothing changes them between).
        let entry = self
            .pats
            .memtypes
            .lookup_entry(pfn)
            .map(|e| (e.cache, e.owner, e.seq));
        let reserved = entry.map(|(c, _, _)| c);
        let is_ram = self.mem.is_ram(pfn, 1);
        let expected = if is_isa_range(pfn, 1) {
            self.pats.on.then_some(Cache::WB)
        } else if reserved.is_some() {
            reserved
        } else if is_ram && self.pats.on {
            // RAM keeps its memtype in page flags; never set means WB (memtype.c lookup_memtype).
            Some(Cache::WB)
        } else if !is_ram && !self.mem.ram.is_empty() && self.pats.on {
            // Outside System RAM with no reservation: memtype_lookup finds nothing, UC-.
            Some(Cache::UcMinus)
        } else {
            self.pats.lookups.get(&pfn).copied()
        };
        match expected {
            Some(e) => self.check(Rule::PatLookup, e == out, &[r], || {
                let why = if reserved.is_some() {
                    "the reservation covering it"
                } else {
                    "the last lookup, no reservation change since"
                };
                (
                    format!("{} for pfn {pfn:#x} ({why})", e.name()),
                    out.name().into(),
                )
            }),
            None => self.nc(Rule::PatLookup),
        }
        if t.nodes[i].hook == Some(Hook::PfnmapSetupCachemode) && n == 1 && r.ret().is_some() {
            self.check(Rule::PatLookup, r.ret() == Some(0), &[r], || {
                ("0 for a single page".into(), show_ret(r.ret()))
            });
        }
        // A non-default type from a reservation made outside any mapping (set_pages_array_wc /
        // set_memory_wc on RAM, as drm_gem_shmem does for WC buffers, or ioremap_*): correct, but
        // every other mapping of the page must now agree with it, and nothing refcounts RAM
        // types (memtype.c `memtype_reserve_io`/`set_memory_*`: the 2009 PAT thread).
        if let Some((_, owner, seq)) = entry
            && owner == Owner::Other
            && !matches!(out, Cache::UcMinus | Cache::WB)
            && !is_isa_range(pfn, 1)
        {
            self.find(
                Rule::FindRamMemtype,
                &[r],
                r.driver().or(t.nodes[0].rec().driver()),
                || format!("{} from a reservation made outside any mapping (set_pages_*/set_memory_* or ioremap, seq [{seq}]): pfn {pfn:#x} mapped {} through a PFN mapping", out.name(), out.name()),
            );
        }
        if reserved.is_none() && !is_isa_range(pfn, 1) {
            self.pats.lookups.insert(pfn, out);
            if out == Cache::UcMinus {
                self.mem.add_nonram(pfn, pfn.saturating_add(1));
            }
            if !matches!(out, Cache::UcMinus | Cache::WB) {
                self.find(
                    Rule::FindRamMemtype,
                    &[r],
                    r.driver().or(t.nodes[0].rec().driver()),
                    || format!("{} with no reservation in the trace: pfn {pfn:#x} (RAM with a set_memory_*/set_pages_* type, or an older reservation)", out.name()),
                );
            }
        }
        if let Some(req) = c_in
            && matches!(req, Cache::WC | Cache::WT)
            && matches!(out, Cache::UcMinus | Cache::UC)
        {
            let drv = r.driver().or(t.nodes[0].rec().driver());
            self.find(Rule::FindWcDowngrade, &[r], drv, || {
                format!(
                    "{} requested, {} mapped: pfn {pfn:#x} has no {} reservation",
                    req.name(),
                    out.name(),
                    req.name()
                )
            });
        }
        Some(out)
    }

    /// `memtype_reserve`; returns `*new_type` as the trace shows it.
    pub(super) fn reserve(&mut self, t: &Tree, i: usize, owner: Owner) -> Option<Cache> {
        let r = t.nodes[i].rec();
        self.pats.on = true;
        let pat = self.pat;
        let req = cache_of(&r.cache_req(), None, &pat);
        let newt = cache_of(&r.cache_out(), None, &pat);
        let (Some(start), Some(req), Some(ret)) = (r.pfn(), req, r.ret()) else {
            self.nc(Rule::PatReserve);
            return newt;
        };
        let n = pages(r.size());
        let end = start.saturating_add(n);
        if is_isa_range(start, n) {
            self.check(
                Rule::PatReserve,
                ret == 0 && newt.is_none_or(|c| c == Cache::WB),
                &[r],
                || {
                    (
                        "0 and WB (the ISA hole is not tracked)".into(),
                        format!("{ret} {newt:?}"),
                    )
                },
            );
        } else {
            let overlapped = self.pats.memtypes.overlapping(start, end).next().is_some();
            match self
                .pats
                .memtypes
                .predict_reserve(start, end, req, newt.is_some())
            {
                ReservePrediction::Ok(types) => {
                    let ok = ret == 0 && newt.is_none_or(|c| types.contains(&c));
                    if ok {
                        self.sink.tally(Rule::PatReserve, Outcome::Held);
                    } else if !overlapped {
                        // An older reservation or a RAM page type can explain it.
                        self.nc(Rule::PatReserve);
                    } else {
                        self.diverge(
                            Rule::PatReserve,
                            &[r],
                            format!(
                                "0 with one of {:?} (the reservations in the trace impose it)",
                                types
                            ),
                            format!("{ret} {newt:?}"),
                        );
                    }
                }
                ReservePrediction::Busy => {
                    self.check(Rule::PatReserve, ret == errno::EBUSY, &[r], || {
                        (
                            "-EBUSY (conflicting reservations)".into(),
                            format!("{ret} {newt:?}"),
                        )
                    })
                }
                ReservePrediction::Unknown => self.nc(Rule::PatReserve),
            }
            if ret == 0 {
                let cache = newt.unwrap_or(if req == Cache::UC { Cache::UC } else { req });
                self.pats.memtypes.insert(Entry {
                    start,
                    end,
                    cache,
                    owner,
                    seq: r.seq(),
                });
            }
        }
        self.pats.forget_lookups(start, n);
        self.visit_kids(t, i, None, |_| true);
        newt
    }

    pub(super) fn free(&mut self, t: &Tree, i: usize, owner: Option<Owner>) {
        let r = t.nodes[i].rec();
        self.pats.on = true;
        let (Some(start), Some(ret)) = (r.pfn(), r.ret()) else {
            self.nc(Rule::PatFree);
            return;
        };
        let n = pages(r.size());
        if is_isa_range(start, n) {
            self.check(Rule::PatFree, ret == 0, &[r], || {
                ("0 (the ISA hole is not tracked)".into(), format!("{ret}"))
            });
        } else {
            let m = self
                .pats
                .memtypes
                .find_free_for(start, start.saturating_add(n), owner);
            if m == FreeMatch::None {
                self.nc(Rule::PatFree);
            } else {
                self.check(Rule::PatFree, ret == 0, &[r], || {
                    (
                        format!("0 (the trace reserved pfn {start:#x}..{:#x})", start + n),
                        format!("{ret}"),
                    )
                });
                if ret == 0 {
                    self.pats.memtypes.apply_free(m, start);
                }
            }
        }
        self.pats.forget_lookups(start, n);
    }
}
