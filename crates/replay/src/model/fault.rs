//! `handle_mm_fault` and the page-fault tracepoints: flags and results, the 6.12+ VMA-lock
//! retry, sanitised writes, what a failed fault leaves behind, COW copies.

use pfnscope_abi::Hook;
use pfnscope_abi::bits::{PAGE_SHIFT, fault_flag as ff, vm_fault as vf};
use pfnscope_trace::{Rec, Record};

use super::state::{LastFault, Pte};
use super::{Model, is_dax, show_ret, space};
use crate::report::{Outcome, Sink};
use crate::rules::Rule;
use crate::tree::Tree;

/// Faults in a row on one page, each NOPAGE with nothing mapped, that make a refault loop: a
/// racing thread may make one or two, nothing correct makes this many.
const NOPAGE_LOOP: u32 = 8;

/// What a fault's children did, gathered in one pass: the rules ask several questions of the
/// same few calls.
#[derive(Default)]
struct FaultKids {
    /// PFN inserts of any level.
    inserts: usize,
    /// Whether one was at PTE level: huge_fault is called under the VMA lock whatever
    /// ->map_pages says (create_huge_pmd has no vmf_can_call_fault), so only PTE-level driver
    /// calls tell whether it is missing.
    pte_inserts: bool,
    /// An insert at the faulting page that did not fail.
    unfailed_at_page: bool,
    /// An insert of any level whose pages hold the faulting page.
    covers_page: bool,
    /// The last insert at the faulting page: its seq, and its result if that is an error.
    last_at_page: Option<(u64, Option<u32>)>,
    /// An insert at the faulting page returned NOPAGE (mapped it).
    ok_insert: bool,
    /// A vm_normal_page at the faulting page (do_wp_page).
    vnp_here: bool,
}

impl FaultKids {
    fn of(t: &Tree, i: usize, page: Option<u64>) -> FaultKids {
        let mut k = FaultKids::default();
        for &c in t.kids(i) {
            let n = &t.nodes[c];
            let Some(h) = n.hook else { continue };
            let (insert, vnp) = (h.is_insert(), h == Hook::VmNormalPage);
            if !insert && !vnp {
                continue;
            }
            let r = n.rec();
            let here = page.is_some() && r.address().map(|a| a >> PAGE_SHIFT) == page;
            if vnp {
                k.vnp_here |= here;
                continue;
            }
            k.inserts += 1;
            k.pte_inserts |= h.insert_pages() == Some(1);
            let n = h.insert_pages().unwrap_or(1);
            k.covers_page |= match (page, r.address()) {
                (Some(p), Some(a)) => {
                    let first = (a >> PAGE_SHIFT) & !(n - 1);
                    p >= first && p - first < n
                }
                _ => true,
            };
            if here {
                let ret = r.ret();
                let failed = ret.map(|x| x as u32).filter(|x| x & vf::ERROR != 0);
                k.unfailed_at_page |= failed.is_none();
                k.last_at_page = Some((r.seq(), failed));
                k.ok_insert |= ret == Some(vf::NOPAGE as i64);
            }
        }
        k
    }

    /// The failed insert of the faulting page, when every insert there failed: (seq, result).
    fn failed_insert(&self) -> Option<(u64, u32)> {
        if self.unfailed_at_page {
            return None;
        }
        let (seq, failed) = self.last_at_page?;
        Some((seq, failed?))
    }
}

impl<S: Sink> Model<S> {
    pub(super) fn fault(&mut self, t: &Tree, i: usize) {
        let r = t.nodes[i].rec();
        self.vma_due(r);
        // Each field once: a read is a few bounds-checked loads, and the rules below ask often.
        let page = r.address().map(|a| a >> PAGE_SHIFT);
        let flags = r.fault_flags();
        let ret = r.ret().map(|v| v as u32);
        let (vm_flags, driver) = (r.vma_flags(), r.driver());
        // Everything the driver did beneath this fault, in one pass over the children.
        let kids = FaultKids::of(t, i, page);
        let (called_driver, called_pte_driver) = (kids.inserts > 0, kids.pte_inserts);

        if let Some(fl) = flags {
            let (mask, series) = (self.f.fault_flags_mask, self.f.series);
            self.check(Rule::FaultFlags, fl & !mask == 0, &[r], || {
                (
                    format!("FAULT_FLAG_* within {mask:#x} on {series}"),
                    format!("{fl:#x}"),
                )
            });
        }
        if let Some(v) = ret {
            let mask = self.f.vm_fault_mask;
            self.check(Rule::FaultRet, v & !mask == 0, &[r], || {
                (
                    format!("VM_FAULT_* bits within {mask:#x}"),
                    format!("{v:#x}"),
                )
            });
            if v & vf::RETRY != 0 {
                match flags {
                    Some(fl) => self.check(
                        Rule::FaultRet,
                        fl & (ff::ALLOW_RETRY | ff::VMA_LOCK) != 0,
                        &[r],
                        || {
                            (
                                "RETRY only with ALLOW_RETRY or VMA_LOCK".into(),
                                format!("RETRY with flags {fl:#x}"),
                            )
                        },
                    ),
                    None => self.nc(Rule::FaultRet),
                }
            }
        }

        if let Some(v) = ret {
            // Anonymous memory (no vm_ops, no file) is served by do_anonymous_page and
            // do_wp_page, which never return NOPAGE: only a driver's ->fault does.
            if let Some(vm) = vm_flags
                && driver.is_none()
                && self.bits.pfn_or_mixed(vm) == 0
                && r.file_id().is_none()
            {
                self.check(Rule::FaultOutcome, v & vf::NOPAGE == 0, &[r], || {
                    (
                        "no VM_FAULT_NOPAGE from an anonymous vma".into(),
                        format!("{v:#x}"),
                    )
                });
            }
        }

        if self.f.sanitize_write
            && let (Some(fl), Some(vm)) = (flags, vm_flags)
        {
            let b = self.bits;
            let bad = fl & ff::WRITE != 0
                && (fl & ff::UNSHARE != 0
                    || vm & b.maywrite == 0
                    || (vm & b.write == 0 && !b.is_cow(vm)));
            if bad {
                self.check(
                    Rule::FaultSanitize,
                    ret == Some(vf::SIGSEGV) && !called_driver,
                    &[r],
                    || {
                        (
                            "SIGSEGV from sanitize_fault_flags, no driver call".into(),
                            format!(
                                "ret {}, {} PFN inserts (flags {fl:#x}, vm_flags {vm:#x})",
                                show_ret(r.ret()),
                                kids.inserts
                            ),
                        )
                    },
                );
            }
        }

        let vma_lock = flags.is_some_and(|fl| fl & ff::VMA_LOCK != 0);
        // device-dax maps pfns into a vma with neither flag, through the same ->fault path.
        let pfn_vma = vm_flags.is_some_and(|vm| self.bits.pfn_or_mixed(vm) != 0)
            || driver.as_deref().is_some_and(is_dax);
        if self.f.vma_lock_faults
            && pfn_vma
            && let (Some(drv), Some(pg)) = (driver, page)
        {
            let tid = r.tid();
            if vma_lock && called_pte_driver {
                match self.faults.lacks_map_pages(drv) {
                    Some(true) => self.diverge(
                        Rule::FaultVmaLock,
                        &[r],
                        format!("RETRY before calling {drv} (it has no ->map_pages: its faults were redone under mmap_lock)"),
                        format!("the driver inserted {} PFNs under the VMA lock", kids.inserts),
                    ),
                    Some(false) => self.sink.tally(Rule::FaultVmaLock, Outcome::Held),
                    None => {
                        self.faults.drivers.push((drv, false));
                        self.nc(Rule::FaultVmaLock);
                    }
                }
            }
            if !vma_lock
                && flags.is_some_and(|fl| fl & ff::USER != 0)
                && let Some(last) = self.faults.last.get(&tid).copied()
                && last.vma_lock
                && last.page == pg
            {
                if last.retry {
                    self.sink.tally(Rule::FaultVmaLock, Outcome::Held);
                    if called_pte_driver
                        && !last.called_driver
                        && self.faults.lacks_map_pages(drv).is_none()
                    {
                        self.faults.drivers.push((drv, true));
                    }
                } else {
                    let lr = Record {
                        seq: last.seq,
                        id: last.id,
                        ..Default::default()
                    };
                    self.diverge(
                        Rule::FaultVmaLock,
                        &[r, Rec::Record(&lr)],
                        "the mmap_lock fault of a page only after its VMA-lock attempt returned RETRY".into(),
                        "a mmap_lock fault right after a VMA-lock attempt on the same page that did not return RETRY".into(),
                    );
                }
            }
        }

        for &k in t.kids(i) {
            self.visit(t, k, page);
        }
        // After the kids: a vm_normal_page inside this fault (do_wp_page) sees the PTE as the
        // previous fault at this page left it.
        if let (Some(v), Some(vma), Some(start), Some(pg)) = (ret, r.vma_id(), r.vma_start(), page)
        {
            let key = (vma, start, pg);
            // A failed insert of the faulting page maps nothing either, whatever the fault
            // returns (TTM turns a failed first insert into NOPAGE; the next touch refaults).
            if v & vf::ERROR != 0 {
                self.faults.failed.insert(key, (r.seq(), v));
            } else if let Some(f) = kids.failed_insert() {
                self.faults.failed.insert(key, f);
            } else {
                self.faults.take_failed(key);
            }
        }

        if let (Some(pg), Some(v)) = (page, ret) {
            if kids.ok_insert {
                self.check(
                    Rule::FaultInsertResult,
                    v & (vf::ERROR | vf::RETRY) == 0,
                    &[r],
                    || ("success (the PFN was mapped)".into(), format!("ret {v:#x}")),
                );
            }
            // COW of a PFN (or any) mapping: the write replaced the PTE with a private page.
            let write = flags.is_some_and(|fl| fl & ff::WRITE != 0);
            let cow = vm_flags.is_some_and(|vm| self.bits.is_cow(vm));
            if write && cow && kids.vnp_here && v & (vf::ERROR | vf::RETRY) == 0 {
                // wp_page_copy maps the copy with vma->vm_page_prot: a /dev/mem mapping opened
                // O_SYNC is UC- there, and so is its private copy (mm/memory.c:wp_page_copy).
                let p = Pte {
                    pfn: None,
                    special: Some(false),
                    cache: r.vma_prot().map(|p| self.pat.of_prot(p)),
                    known: true,
                    anon: true,
                    since: r.seq(),
                    judged: false,
                };
                self.install(space(r), pg, p, r);
            }
            if v & (vf::ERROR | vf::RETRY) == 0
                && v & vf::NOPAGE != 0
                && kids.inserts > 0
                && !kids.covers_page
            {
                self.find(Rule::FindFaultMissesPage, &[r], driver, || {
                    format!(
                        "the fault at {:#x} returned NOPAGE after {} PFN inserts, none at the faulting page",
                        pg << PAGE_SHIFT,
                        kids.inserts
                    )
                });
            }
            // A driver's ->fault that returns NOPAGE and maps nothing leaves the page unmapped,
            // and the task faults on it again. A RETRY is half of one fault (6.12+: the
            // VMA-lock attempt), neither a repeat nor the end of a streak.
            if v & vf::RETRY == 0 {
                let empty = v & vf::ERROR == 0
                    && v & vf::NOPAGE != 0
                    && kids.inserts == 0
                    && !kids.vnp_here
                    && driver.is_some();
                self.nopage_streak(r, pg, empty);
            }
            self.faults.last.insert(
                r.tid(),
                LastFault {
                    page: pg,
                    vma_lock,
                    retry: v & vf::RETRY != 0,
                    called_driver: called_pte_driver,
                    seq: r.seq(),
                    id: r.id(),
                },
            );
        }
    }

    /// Counts a task's faults on one page that returned NOPAGE with nothing mapped; at
    /// [`NOPAGE_LOOP`] in a row, a finding.
    fn nopage_streak(&mut self, r: Rec<'_>, page: u64, empty: bool) {
        let tid = r.tid();
        if !empty {
            if !self.faults.nopage.is_empty() {
                self.faults.nopage.remove(&tid);
            }
            return;
        }
        let s = self.faults.nopage.entry(tid).or_insert((page, 0, r.seq()));
        if s.0 != page {
            *s = (page, 0, r.seq());
        }
        s.1 += 1;
        let (n, first) = (s.1, s.2);
        if n == NOPAGE_LOOP {
            self.find(Rule::FindNopageLoop, &[r], r.driver(), || {
                format!(
                    "{n} faults in a row at {:#x} (from seq {first}) returned VM_FAULT_NOPAGE without mapping anything",
                    page << PAGE_SHIFT
                )
            });
        }
    }

    /// A page-fault tracepoint carries the vma the eBPF side found for its address; a fault
    /// outside every vma (a SIGSEGV to be) has none.
    pub(super) fn tp_fault(&mut self, t: &Tree, i: usize) {
        let r = t.nodes[i].rec();
        match (r.address(), r.vma_start(), r.vma_end()) {
            (Some(a), Some(s), Some(e)) => {
                self.check(Rule::TraceFaultVma, s <= a && a < e, &[r], || {
                    (
                        format!("a vma containing {a:#x}"),
                        format!("vma {s:#x}..{e:#x}"),
                    )
                })
            }
            _ => self.nc(Rule::TraceFaultVma),
        }
    }
}
