//! PAT: the cache-mode lookup of an insert, and memtype reservations and frees.

use pfnscope_abi::bits::{errno, is_isa_range, pte};
use pfnscope_abi::{Cache, Hook};

use pfnscope_trace::{Rec, Record, Sym};

use super::state::{RamKind, UnreservedInserts};
use super::{MAX_WALK, Model, cache_of, pages, show_ret};
use crate::memtype::{Entry, FreeMatch, Owner, ReservePrediction};
use crate::report::{Outcome, Sink};
use crate::rules::Rule;
use crate::tree::Tree;

/// Pages of device memory a driver must map one by one without a reservation for the per-page
/// PAT cost to be reported: 16 MiB, a framebuffer or a GPU buffer, more than a few registers.
const PER_PAGE_PAT: u64 = 4096;

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
        let kind = self.mem.ram_kind(pfn, 1);
        // RAM keeps its memtype in page flags (memtype.c lookup_memtype, get_page_memtype).
        let ram_type = match kind {
            RamKind::Ram if self.pats.on => self.mem.ram_type(pfn),
            _ => None,
        };
        // Outside System RAM with no reservation, memtype_lookup finds nothing: UC-. Only
        // where every reservation is known: one older than the trace would answer otherwise.
        let unreserved = kind == RamKind::NotRam && self.pats.on && self.pats.memtypes.complete();
        let (expected, why) = if is_isa_range(pfn, 1) {
            (
                self.pats.on.then_some(Cache::WB),
                "the ISA hole is never tracked",
            )
        } else if reserved.is_some() {
            (reserved, "the reservation covering it")
        } else if let Some((c, _)) = ram_type {
            (Some(c), "the RAM page's memtype")
        } else if unreserved {
            (Some(Cache::UcMinus), "no reservation covers it")
        } else {
            (
                self.pats.lookups.get(&pfn).copied(),
                "the last lookup, no reservation change since",
            )
        };
        // Only where every reservation is known: an older one would cover it.
        if unreserved && reserved.is_none() && !is_isa_range(pfn, 1) {
            self.count_unreserved(t, i);
        }
        match expected {
            Some(e) => self.check(Rule::PatLookup, e == out, &[r], || {
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
        // A non-default type from a reservation made outside any mapping, where the trace does
        // not say whether the pfn is RAM: set_pages_array_wc / set_memory_wc on RAM (as
        // drm_gem_shmem does for WC buffers) is correct, but every other mapping of the page
        // must now agree with it, and nothing refcounts RAM types (the 2009 PAT thread).
        // Device memory a driver reserved WC and maps WC is simply right.
        if let Some((_, owner, seq)) = entry
            && kind == RamKind::Unknown
            && matches!(owner, Owner::Other | Owner::Process { .. })
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
            if out == Cache::UcMinus && kind != RamKind::Ram {
                self.mem.add_nonram(pfn, pfn.saturating_add(1));
            }
            let drv = r.driver().or(t.nodes[0].rec().driver());
            let other = !matches!(out, Cache::UcMinus | Cache::WB);
            match ram_type {
                // Set in the trace: the same finding as a reservation outside any mapping.
                Some((_, Some(seq))) if other => self.find(
                    Rule::FindRamMemtype,
                    &[r],
                    drv,
                    || format!("{} from a set_memory_*/set_pages_* on RAM (seq [{seq}]): pfn {pfn:#x} mapped {} through a PFN mapping", out.name(), out.name()),
                ),
                // Older than the trace and in the start state: explained, nothing to report.
                Some(_) => {}
                None if other && !unreserved => self.find(
                    Rule::FindRamMemtype,
                    &[r],
                    drv,
                    || format!("{} with no reservation in the trace: pfn {pfn:#x} (RAM with a set_memory_*/set_pages_* type, or an older reservation)", out.name()),
                ),
                None => {}
            }
        }
        if let Some(req) = c_in {
            let drv = r.driver().or(t.nodes[0].rec().driver());
            self.cache_change(r, drv, pfn, req, out, why);
        }
        Some(out)
    }

    /// One more insert lookup of device memory with no reservation, for the driver of the
    /// fault it ran in.
    fn count_unreserved(&mut self, t: &Tree, i: usize) {
        let (r, root) = (t.nodes[i].rec(), t.nodes[0].rec());
        let driver = r.driver().or(root.driver());
        let fault_ns = match t.nodes[0].hook {
            Some(Hook::HandleMmFault) => root.latency_ns().unwrap_or(0),
            _ => 0,
        };
        let tree = self.tree_no;
        let u = &mut self.pats.unreserved;
        let at = match u.iter().position(|x| x.driver == driver) {
            Some(at) => at,
            None => {
                u.push(UnreservedInserts {
                    driver,
                    lookups: 0,
                    lookup_ns: 0,
                    fault_ns: 0,
                    last_tree: 0,
                    first: (r.seq(), r.id()),
                });
                u.len() - 1
            }
        };
        let x = &mut u[at];
        x.lookups += 1;
        x.lookup_ns += r.latency_ns().unwrap_or(0);
        if x.last_tree != tree {
            x.last_tree = tree;
            x.fault_ns += fault_ns;
        }
    }

    /// At the end: the drivers that mapped a large range of device memory page by page with
    /// no reservation, and what their PAT lookups cost.
    pub(super) fn report_unreserved(&mut self) {
        for u in std::mem::take(&mut self.pats.unreserved) {
            if u.lookups < PER_PAGE_PAT {
                continue;
            }
            let first = Record {
                seq: u.first.0,
                id: u.first.1,
                ..Default::default()
            };
            let share = if u.fault_ns > 0 {
                format!(
                    ", {:.1}% of the {:.1} ms those faults took",
                    100.0 * u.lookup_ns as f64 / u.fault_ns as f64,
                    u.fault_ns as f64 / 1e6
                )
            } else {
                String::new()
            };
            self.find(Rule::FindPerPagePat, &[Rec::Record(&first)], u.driver, || {
                format!(
                    "{} MiB of device memory ({} pages) mapped page by page with no reservation: {} PAT lookups took {:.1} ms{share}, and mapped UC-",
                    u.lookups >> 8,
                    u.lookups,
                    u.lookups,
                    u.lookup_ns as f64 / 1e6
                )
            });
        }
    }

    /// A mapping asked for `req` and PAT gave `got` (`why`: what decided it, in words). Every
    /// such change is a finding: a WC/WT request made uncached, anything made WB, or another
    /// change an older reservation or the MTRRs decided.
    pub(super) fn cache_change(
        &mut self,
        r: Rec<'_>,
        drv: Option<Sym>,
        pfn: u64,
        req: Cache,
        got: Cache,
        why: &str,
    ) {
        if req == got {
            return;
        }
        // Typed until the message: the rule is decided on the modes, the words come last.
        let rule = match (req, got) {
            (_, Cache::WB) => Rule::FindWcToWb,
            (Cache::WC | Cache::WT, Cache::UcMinus | Cache::UC) => Rule::FindWcDowngrade,
            _ => Rule::FindCacheChanged,
        };
        let (req, got) = (req.name(), got.name());
        self.find(rule, &[r], drv, || match rule {
            Rule::FindWcToWb => {
                format!("{req} requested, WB mapped: pfn {pfn:#x} is WB ({why}), so the mapping is cached")
            }
            Rule::FindWcDowngrade => {
                format!("{req} requested, {got} mapped: pfn {pfn:#x} has no {req} reservation")
            }
            _ => format!("{req} requested, {got} mapped at pfn {pfn:#x}: {why}"),
        });
    }

    /// `arch_io_reserve_memtype_wc` (-> `memtype_reserve_io`): a WC reservation outside any
    /// mapping; a granted type WC may not become is freed again and the call fails -EBUSY
    /// (arch/x86/mm/pat/memtype.c:memtype_reserve_io, is_new_memtype_allowed).
    pub(super) fn io_reserve(&mut self, t: &Tree, i: usize) {
        let r = t.nodes[i].rec();
        let reserve = t.kid(i, |h| h == Hook::MemtypeReserve);
        let free = t.kid(i, |h| h == Hook::MemtypeFree);
        // What a driver reserves in its own context (open, mmap) is its process's.
        let owner = if i == 0 {
            Owner::Process {
                pid: r.pid(),
                exited: false,
            }
        } else {
            Owner::Other
        };
        let newt = reserve.and_then(|k| self.reserve(t, k, owner));
        if let Some(k) = free {
            self.free(t, k, Some(owner));
        }
        match (reserve, r.ret()) {
            (Some(k), Some(ret)) => {
                let rr = t.nodes[k].rec();
                let isa = r.pfn().is_some_and(|p| is_isa_range(p, pages(r.size())));
                let expected = match (rr.ret(), newt) {
                    (Some(e), _) if e != 0 => Some(e),
                    (Some(0), Some(n)) if !isa && !Cache::WC.may_become(n) => Some(errno::EBUSY),
                    // memtype_kernel_map_sync failed: the trace cannot show why.
                    (Some(0), _) if ret == errno::EBUSY && free.is_some() => None,
                    (Some(0), _) => Some(0),
                    _ => None,
                };
                match expected {
                    Some(e) => self.check(Rule::PatReserve, ret == e, &[r, rr], || {
                        (
                            format!(
                                "{e} (the reservation's result, -EBUSY for a type WC may not become)"
                            ),
                            format!("{ret} (reserve {:?}, granted {newt:?})", rr.ret()),
                        )
                    }),
                    None => self.nc(Rule::PatReserve),
                }
            }
            (None, Some(_)) if self.attached(Hook::MemtypeReserve) => self.diverge(
                Rule::PatReserve,
                &[r],
                "a memtype_reserve of the range".into(),
                "none".into(),
            ),
            _ => self.nc(Rule::PatReserve),
        }
        self.visit_kids(t, i, None, |h| {
            !matches!(h, Hook::MemtypeReserve | Hook::MemtypeFree)
        });
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
        let kind = self.mem.ram_kind(start, n);
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
        } else if kind == RamKind::Ram {
            self.reserve_ram(r, start, n, req, newt, ret);
        } else if kind == RamKind::Mixed {
            self.check(Rule::PatReserve, ret == errno::EINVAL, &[r], || {
                (
                    format!("-EINVAL (pfn {start:#x}..{end:#x} is partly RAM)"),
                    format!("{ret}"),
                )
            });
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
                    } else if !overlapped && !self.pats.memtypes.complete() {
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

    /// `reserve_ram_pages_type`: a RAM range takes a memtype only if every page is WB; WP is
    /// refused and UC becomes UC- (arch/x86/mm/pat/memtype.c).
    fn reserve_ram(
        &mut self,
        r: Rec<'_>,
        start: u64,
        n: u64,
        req: Cache,
        newt: Option<Cache>,
        ret: i64,
    ) {
        let req = if req == Cache::UC {
            Cache::UcMinus
        } else {
            req
        };
        let mut busy = None;
        let mut unknown = false;
        for p in start..start.saturating_add(n.min(MAX_WALK)) {
            match self.mem.ram_type(p) {
                Some((Cache::WB, _)) => {}
                Some((c, _)) => {
                    busy = Some(c);
                    break;
                }
                None => unknown = true,
            }
        }
        let expected = if req == Cache::WP {
            Some((errno::EINVAL, Cache::UcMinus))
        } else if let Some(c) = busy {
            Some((errno::EBUSY, c))
        } else if unknown {
            None
        } else {
            Some((0, req))
        };
        match expected {
            Some((e, c)) => self.check(
                Rule::PatReserve,
                ret == e && newt.is_none_or(|x| x == c),
                &[r],
                || {
                    (
                        format!("{e} with {} (RAM: the pages' memtypes decide)", c.name()),
                        format!("{ret} {newt:?}"),
                    )
                },
            ),
            None => self.nc(Rule::PatReserve),
        }
        if ret == 0 {
            self.mem
                .set_ram_types(start, n, newt.unwrap_or(req), r.seq());
        }
    }

    pub(super) fn free(&mut self, t: &Tree, i: usize, owner: Option<Owner>) {
        let r = t.nodes[i].rec();
        self.pats.on = true;
        let (Some(start), Some(ret)) = (r.pfn(), r.ret()) else {
            self.nc(Rule::PatFree);
            return;
        };
        let n = pages(r.size());
        let kind = self.mem.ram_kind(start, n);
        if is_isa_range(start, n) {
            self.check(Rule::PatFree, ret == 0, &[r], || {
                ("0 (the ISA hole is not tracked)".into(), format!("{ret}"))
            });
        } else if kind == RamKind::Ram {
            // free_ram_pages_type: every page back to WB, always 0.
            self.check(Rule::PatFree, ret == 0, &[r], || {
                (
                    "0 (RAM: the pages' memtype goes back to WB)".into(),
                    format!("{ret}"),
                )
            });
            self.mem.set_ram_types(start, n, Cache::WB, r.seq());
        } else if kind == RamKind::Mixed {
            self.check(Rule::PatFree, ret == errno::EINVAL, &[r], || {
                ("-EINVAL (the range is partly RAM)".into(), format!("{ret}"))
            });
        } else {
            let m = self
                .pats
                .memtypes
                .find_free_for(start, start.saturating_add(n), owner);
            if m == FreeMatch::None && self.pats.memtypes.complete() {
                // memtype_erase finds neither an exact nor an end match: "freeing invalid
                // memtype", and the tree keeps what it had.
                self.check(Rule::PatFree, ret == errno::EINVAL, &[r], || {
                    (
                        format!("-EINVAL (no reservation of pfn {start:#x}..{:#x} ends there: freeing invalid memtype)", start + n),
                        format!("{ret}"),
                    )
                });
            } else if m == FreeMatch::None {
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
