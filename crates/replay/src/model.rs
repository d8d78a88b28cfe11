//! The reference model of the x86-64 fault path for PFN and special mappings.
//!
//! Each handler takes one call of a reassembled tree, predicts from the model state what the
//! kernel must have done, compares, and updates the state from what the kernel did (so one
//! divergence does not cascade). Where the trace lacks what a rule needs (state older than the
//! trace, RAM-ness of a pfn, a hook that was not attached) the rule counts as not checkable and
//! never fires.

use std::collections::{BTreeMap, hash_map::Entry as MapEntry};

use pfnscope_trace::{Rec, Record, Sym, TraceMeta};

use crate::engine::{IdMap, MAX_DEPTH, Orphan, Tree};
use crate::kernel::KernelRules;
use crate::memtype::{Entry, FreeMatch, MemtypeMap, Owner, ReservePrediction};
use crate::report::{Divergence, Finding, Outcome, Sink};
use crate::rules::Rule;
use pfnscope_abi::bits::{
    PAGE_SHIFT, PAGE_SIZE, VmBits, errno, fault_flag as ff, is_isa_range, pfn_t, pte,
    vm_fault as vf,
};
use pfnscope_abi::kernel::Features;
use pfnscope_abi::{CACHE_MODES, Cache, Hook, PatTable};

/// What the model knows about one PTE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pte {
    /// Only kept for special PTEs: normal pages can migrate without a traced event.
    pub pfn: Option<u64>,
    pub special: Option<bool>,
    pub cache: Option<Cache>,
    /// Installed by a traced event at a page known to be empty (a faulting page, a remap):
    /// a mismatch is a divergence. Otherwise a mismatch only teaches the model.
    pub known: bool,
    /// A private copy made by a COW fault.
    pub anon: bool,
    /// Seq of the event the model learned this PTE from (an insert, a remap, a copy, a look).
    pub since: u64,
}

#[derive(Clone, Debug, Default)]
struct VmaState {
    /// Flags a later snapshot of this vma must show, and the seq that made them due.
    must_flags: u64,
    must_pgoff: Option<u64>,
    due_seq: u64,
    /// A whole-vma remap of it was seen (and whether it reserved PAT memory).
    tracked_in_trace: bool,
    reserved_in_trace: bool,
    untracked: bool,
}

impl VmaState {
    /// Whether a later snapshot of the vma has something to show.
    fn due(&self) -> bool {
        self.must_flags != 0 || self.must_pgoff.is_some()
    }
}

#[derive(Clone, Copy, Debug)]
struct LastFault {
    page: u64,
    vma_lock: bool,
    retry: bool,
    called_driver: bool,
    seq: u64,
    id: u64,
}

#[derive(Clone, Debug)]
struct ForkCopy {
    ptes: Vec<(u64, Pte)>,
}

/// Key of an address space: the trace's mm id, or the process when the mm was not read.
fn space(r: Rec<'_>) -> u64 {
    match r.mm_id() {
        Some(m) => m as u64,
        None => (1 << 32) | r.pid() as u64,
    }
}

fn cache_of(name: &Option<Sym>, prot: Option<u64>, pat: &PatTable) -> Option<Cache> {
    name.as_deref()
        .and_then(Cache::parse)
        .or_else(|| prot.map(|p| pat.of_prot(p)))
}

/// dax's vm_ops (device-dax `dax_vm_ops`, fs-dax's per filesystem), whose pfns carry pfn_t
/// flags the trace does not keep.
fn is_dax(driver: &str) -> bool {
    driver.contains("dax")
}

fn pages(size: Option<u64>) -> u64 {
    size.unwrap_or(PAGE_SIZE).div_ceil(PAGE_SIZE).max(1)
}

fn show_ret(r: Option<i64>) -> String {
    match r {
        Some(v) if v >= 0 => format!("{v:#x}"),
        Some(v) => format!("{v}"),
        None => "no return".into(),
    }
}

/// Larger ranges are not walked page by page (a PUD is 262144 pages).
const MAX_WALK: u64 = 1 << 18;

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

pub struct Model<S: Sink> {
    sink: S,
    f: Features,
    bits: VmBits,
    pat: PatTable,
    /// Hooks the plan attached, by `Hook as usize`.
    plan: Option<[bool; Hook::COUNT]>,
    seen: [bool; Hook::COUNT],
    pat_on: bool,
    vmas: IdMap<u32, VmaState>,
    /// Vmas with something [`Model::vma_due`] must check.
    due_vmas: usize,
    ptes: IdMap<(u64, u64), Pte>,
    /// Special PTEs mapping each pfn, per cache mode (`Cache as usize`): counts in place, since
    /// a vector per pfn was an allocation and a free per page mapped and zapped.
    aliases: IdMap<u64, [u32; CACHE_MODES]>,
    memtypes: MemtypeMap,
    lookups: IdMap<u64, Cache>,
    /// Pfn ranges known not to be RAM (start -> end, exclusive).
    nonram: BTreeMap<u64, u64>,
    /// "System RAM" pfn ranges from the trace metadata (empty for older traces).
    ram: Vec<[u64; 2]>,
    /// The shared zero page: from the metadata, else from the first special PTE of an
    /// anonymous vma (vm_normal_page's only silent special PTE there).
    zero_pfn: Option<u64>,
    /// A pfnmap_untrack with a visible memtype_free was seen: the call is not inlined here.
    untrack_frees_seen: bool,
    max_page_pfn: Option<u64>,
    deleted: IdMap<u64, (u64, u64)>,
    /// (vma id, vma start, page) of faults that failed, with their seq and result: no PTE may
    /// appear there before the next fault at that page.
    failed_faults: IdMap<(u32, u64, u64), (u64, u32)>,
    /// Per driver, whether its vm_ops lack ->map_pages. A handful of drivers: a scan by name
    /// beats hashing the name on every fault.
    lacks_map_pages: Vec<(Sym, bool)>,
    last_fault: IdMap<u32, LastFault>,
    last_untrack: IdMap<u32, u32>,
    fork_pending: IdMap<u32, Vec<ForkCopy>>,
    child_pending: IdMap<u32, Vec<ForkCopy>>,
    /// A pid last looked up in `child_pending` and not there: trees come in runs from one
    /// process, and a forked child that never runs kept every tree asking for nothing.
    not_child: Option<u32>,
}

impl<S: Sink> Model<S> {
    pub fn new(meta: &TraceMeta, rules: KernelRules, sink: S) -> Model<S> {
        let f = rules.features;
        let plan = if meta.hook_plan.is_empty() {
            None
        } else {
            let mut p = [false; Hook::COUNT];
            for e in meta.hook_plan.iter().filter(|e| e.mode.is_some()) {
                for name in std::iter::once(&e.hook).chain(&e.symbol) {
                    if let Some(h) = Hook::parse(name) {
                        p[h as usize] = true;
                    }
                }
            }
            Some(p)
        };
        Model {
            sink,
            f,
            bits: meta.vm_bits(f.vm_pat_flag),
            pat: meta.pat(),
            plan,
            seen: [false; Hook::COUNT],
            pat_on: false,
            vmas: IdMap::default(),
            due_vmas: 0,
            ptes: IdMap::default(),
            aliases: IdMap::default(),
            memtypes: MemtypeMap::default(),
            lookups: IdMap::default(),
            nonram: BTreeMap::new(),
            ram: meta.system_ram.clone(),
            zero_pfn: meta.zero_pfn,
            untrack_frees_seen: false,
            max_page_pfn: None,
            deleted: IdMap::default(),
            failed_faults: IdMap::default(),
            lacks_map_pages: Vec::new(),
            last_fault: IdMap::default(),
            last_untrack: IdMap::default(),
            fork_pending: IdMap::default(),
            child_pending: IdMap::default(),
            not_child: None,
        }
    }

    pub fn saw(&mut self, h: Hook) {
        self.seen[h as usize] = true;
    }

    /// Whether the trace can show calls of `h`: the hook plan says so, or (plan-less traces)
    /// such a call has been read.
    fn attached(&self, h: Hook) -> bool {
        match &self.plan {
            Some(p) => p[h as usize],
            None => self.seen[h as usize],
        }
    }

    // ---- result plumbing -------------------------------------------------------------------

    fn diverge(&mut self, rule: Rule, recs: &[Rec<'_>], expected: String, observed: String) {
        self.sink.tally(rule, Outcome::Failed);
        self.sink.divergence(Divergence {
            rule,
            expected,
            observed,
            seqs: recs.iter().map(|r| r.seq()).collect(),
            ids: recs.iter().map(|r| r.id()).collect(),
            source: rule.source(),
        });
    }

    fn check(
        &mut self,
        rule: Rule,
        ok: bool,
        recs: &[Rec<'_>],
        what: impl FnOnce() -> (String, String),
    ) {
        if ok {
            self.sink.tally(rule, Outcome::Held);
        } else {
            let (e, o) = what();
            self.diverge(rule, recs, e, o);
        }
    }

    #[inline]
    fn nc(&mut self, rule: Rule) {
        self.sink.tally(rule, Outcome::NotCheckable);
    }

    /// Reports a finding; `message` is only built for the first of its rule and driver.
    fn find(
        &mut self,
        rule: Rule,
        recs: &[Rec<'_>],
        driver: Option<Sym>,
        message: impl FnOnce() -> String,
    ) {
        self.sink.tally(rule, Outcome::Held);
        if self
            .sink
            .repeat_finding(rule, driver.as_ref().map(Sym::as_str))
        {
            return;
        }
        let message = message();
        self.sink.finding(Finding {
            rule,
            message,
            driver: driver.map(|d| d.to_string()),
            seqs: recs.iter().map(|r| r.seq()).collect(),
            ids: recs.iter().map(|r| r.id()).collect(),
            source: rule.source(),
        });
    }

    // ---- driving ---------------------------------------------------------------------------

    pub fn process(&mut self, t: &Tree) {
        let root = t.nodes[0].rec();
        if !self.child_pending.is_empty()
            && root.mm_id().is_some()
            && self.not_child != Some(root.pid())
            && let Some(copies) = self.take_child_pending(root.pid())
        {
            let sp = space(root);
            for c in copies {
                for (page, p) in c.ptes {
                    self.install(sp, page, p, root);
                }
            }
        }
        self.visit(t, 0, None);
    }

    /// A page-fault tracepoint carries the vma the eBPF side found for its address; a fault
    /// outside every vma (a SIGSEGV to be) has none.
    fn tp_fault(&mut self, t: &Tree, i: usize) {
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

    /// A call whose parent never reached the trace.
    pub fn orphan(&mut self, t: &Tree, why: Orphan, lossless: bool) {
        let r = t.nodes[0].rec();
        let (expected, observed) = match why {
            // No loss makes a parent chain this long, or one that loops: the links are broken.
            Orphan::TooDeep => (
                format!("probed calls nested a few deep (at most {MAX_DEPTH} are kept)"),
                format!("call {} is {MAX_DEPTH} parent links deep", r.id()),
            ),
            Orphan::Loop => (
                "a chain of parent links that ends at a root call".into(),
                format!("call {}'s chain loops (parent {})", r.id(), r.parent()),
            ),
            Orphan::NoParent if lossless => (
                format!(
                    "parent call {} in the trace (the tracer counted no loss)",
                    r.parent()
                ),
                "no such call".into(),
            ),
            Orphan::NoParent => return self.nc(Rule::TraceParent),
        };
        self.diverge(Rule::TraceParent, &[r], expected, observed);
    }

    pub fn finish(mut self) -> S {
        let leaks: Vec<Entry> = self
            .memtypes
            .entries()
            .iter()
            .filter(|e| match e.owner {
                Owner::Vma(v) => self.vmas.get(&v).is_some_and(|s| s.untracked),
                Owner::Fork { failed, .. } => failed,
                Owner::Other => false,
            })
            .cloned()
            .collect();
        for e in leaks {
            let r = Record {
                seq: e.seq,
                ..Default::default()
            };
            self.find(
                Rule::FindLeak,
                &[Rec::Record(&r)],
                None,
                || format!(
                    "PAT reservation never freed: pfn {:#x}..{:#x} {} made at seq {}, its owner is gone ({:?})",
                    e.start,
                    e.end,
                    e.cache.name(),
                    e.seq,
                    e.owner
                ),
            );
        }
        self.sink
    }

    fn visit(&mut self, t: &Tree, i: usize, fault_page: Option<u64>) {
        let Some(hook) = t.nodes[i].hook else {
            return self.visit_kids(t, i, fault_page, |_| true);
        };
        match hook {
            Hook::HandleMmFault => self.fault(t, i),
            Hook::VmNormalPage => self.vnp(t, i),
            h if h.is_insert() => self.insert(t, i, fault_page),
            Hook::RemapPfnRange => self.remap(t, i),
            Hook::TrackPfnInsert | Hook::PfnmapSetupCachemode => {
                self.lookup(t, i);
            }
            Hook::TrackPfnRemap | Hook::PfnmapTrack => {
                let vma = t.nodes[i].rec().vma_id();
                self.track_remap(t, i, vma);
            }
            Hook::TrackPfnCopy => {
                self.track_copy(t, i);
            }
            Hook::UntrackPfn | Hook::PfnmapUntrack => self.untrack(t, i),
            Hook::MemtypeReserve => {
                self.reserve(t, i, Owner::Other);
            }
            Hook::MemtypeFree => self.free(t, i, None),
            Hook::CopyPageRange => self.fork_copy(t, i),
            Hook::UnmapPageRange => self.unmap(t, i),
            Hook::PageFaultUser | Hook::PageFaultKernel => self.tp_fault(t, i),
            Hook::FilemapDelete => {
                let r = t.nodes[i].rec();
                if let (Some(pfn), Some(ix)) = (r.pfn(), r.index()) {
                    self.deleted.insert(pfn, (ix, r.seq()));
                }
            }
            Hook::SchedProcessFork => {
                let r = t.nodes[i].rec();
                if let (Some(child), Some(copies)) =
                    (r.child_pid(), self.fork_pending.remove(&r.pid()))
                {
                    self.child_pending.entry(child).or_default().extend(copies);
                    if self.not_child == Some(child) {
                        self.not_child = None;
                    }
                }
            }
            _ => self.visit_kids(t, i, fault_page, |_| true),
        }
    }

    fn visit_kids(
        &mut self,
        t: &Tree,
        i: usize,
        fault_page: Option<u64>,
        keep: impl Fn(Hook) -> bool,
    ) {
        for &k in t.kids(i) {
            // A call of a hook this build does not know is visited for its children.
            if t.nodes[k].hook.is_none_or(&keep) {
                self.visit(t, k, fault_page);
            }
        }
    }

    // ---- PTE state -------------------------------------------------------------------------

    fn alias_add(&mut self, pfn: u64, c: Cache, r: Rec<'_>) {
        let v = self.aliases.entry(pfn).or_default();
        let other = Cache::ALL
            .into_iter()
            .find(|&oc| oc != c && v[oc as usize] > 0);
        v[c as usize] += 1;
        if let Some(oc) = other {
            self.find(
                Rule::FindAlias,
                &[r],
                r.driver(),
                || format!("one pfn mapped with two cache modes: pfn {pfn:#x} mapped {} here and {} elsewhere", c.name(), oc.name()),
            );
        }
    }

    fn alias_remove(&mut self, pfn: u64, c: Cache) {
        if let MapEntry::Occupied(mut e) = self.aliases.entry(pfn) {
            let v = e.get_mut();
            v[c as usize] = v[c as usize].saturating_sub(1);
            if v.iter().all(|&n| n == 0) {
                e.remove();
            }
        }
    }

    /// Whether `drv` is known to lack ->map_pages (None: not known yet).
    fn lacks_map_pages(&self, drv: Sym) -> Option<bool> {
        let l = &self.lacks_map_pages;
        l.iter()
            .find(|(d, _)| d.same(&drv))
            .or_else(|| l.iter().find(|(d, _)| *d == drv))
            .map(|&(_, v)| v)
    }

    fn install(&mut self, sp: u64, page: u64, p: Pte, r: Rec<'_>) {
        if let Some(old) = self.ptes.insert((sp, page), p)
            && let (Some(pfn), Some(c), Some(true)) = (old.pfn, old.cache, old.special)
        {
            self.alias_remove(pfn, c);
        }
        if let (Some(pfn), Some(c), Some(true)) = (p.pfn, p.cache, p.special) {
            self.alias_add(pfn, c, r);
        }
    }

    fn zap(&mut self, sp: u64, first: u64, n: u64) {
        let drop = |this: &mut Self, k: (u64, u64)| {
            if let Some(old) = this.ptes.remove(&k)
                && let (Some(pfn), Some(c), Some(true)) = (old.pfn, old.cache, old.special)
            {
                this.alias_remove(pfn, c);
            }
        };
        if n <= MAX_WALK {
            for p in first..first.saturating_add(n) {
                drop(self, (sp, p));
            }
        } else {
            let keys: Vec<_> = self
                .ptes
                .keys()
                .filter(|(s, p)| *s == sp && *p >= first && *p < first.saturating_add(n))
                .copied()
                .collect();
            for k in keys {
                drop(self, k);
            }
        }
    }

    fn add_nonram(&mut self, start: u64, end: u64) {
        // Coalesce with a range ending where this one starts (faults walk pages upwards).
        if let Some((&s, e)) = self.nonram.range_mut(..=start).next_back()
            && *e >= start
        {
            *e = (*e).max(end);
            let _ = s;
            return;
        }
        self.nonram.insert(start, end);
    }

    /// Whether `n` pages from `start` touch a "System RAM" range of the metadata.
    fn is_ram(&self, start: u64, n: u64) -> bool {
        let end = start.saturating_add(n);
        self.ram.iter().any(|r| r[0] < end && start < r[1])
    }

    fn known_nonram(&self, start: u64, n: u64) -> bool {
        if is_isa_range(start, n) {
            return true;
        }
        if let Some((_, &e)) = self.nonram.range(..=start).next_back()
            && e >= start.saturating_add(n)
        {
            return true;
        }
        // Outside every "System RAM" range of the metadata: pat_pagerange_is_ram's own test.
        if !self.ram.is_empty() && !self.is_ram(start, n) {
            return true;
        }
        // A reservation that made it into the memtype tree is non-RAM by construction.
        self.memtypes
            .covering(start, start.saturating_add(n))
            .any(|e| e.owner != Owner::Other)
    }

    fn forget_lookups(&mut self, start: u64, n: u64) {
        if n <= 4096 {
            for p in start..start.saturating_add(n) {
                self.lookups.remove(&p);
            }
        } else {
            self.lookups
                .retain(|p, _| *p < start || *p >= start.saturating_add(n));
        }
    }

    // ---- handle_mm_fault -------------------------------------------------------------------

    fn fault(&mut self, t: &Tree, i: usize) {
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
                match self.lacks_map_pages(drv) {
                    Some(true) => self.diverge(
                        Rule::FaultVmaLock,
                        &[r],
                        format!("RETRY before calling {drv} (it has no ->map_pages: its faults were redone under mmap_lock)"),
                        format!("the driver inserted {} PFNs under the VMA lock", kids.inserts),
                    ),
                    Some(false) => self.sink.tally(Rule::FaultVmaLock, Outcome::Held),
                    None => {
                        self.lacks_map_pages.push((drv, false));
                        self.nc(Rule::FaultVmaLock);
                    }
                }
            }
            if !vma_lock
                && flags.is_some_and(|fl| fl & ff::USER != 0)
                && let Some(last) = self.last_fault.get(&tid).copied()
                && last.vma_lock
                && last.page == pg
            {
                if last.retry {
                    self.sink.tally(Rule::FaultVmaLock, Outcome::Held);
                    if called_pte_driver
                        && !last.called_driver
                        && self.lacks_map_pages(drv).is_none()
                    {
                        self.lacks_map_pages.push((drv, true));
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
                self.failed_faults.insert(key, (r.seq(), v));
            } else if let Some(f) = kids.failed_insert() {
                self.failed_faults.insert(key, f);
            } else {
                self.take_failed_fault(key);
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
                let p = Pte {
                    pfn: None,
                    special: Some(false),
                    cache: Some(Cache::WB),
                    known: true,
                    anon: true,
                    since: r.seq(),
                };
                self.install(space(r), pg, p, r);
            }
            self.last_fault.insert(
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

    // ---- PFN inserts -----------------------------------------------------------------------

    fn insert(&mut self, t: &Tree, i: usize, fault_page: Option<u64>) {
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
                        format!("returned {} on vm_flags {vm:#x} (inner {:#x?})", show_ret(r.ret()), inner.vma_flags()),
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
                        r.pfn().is_none_or(|p| match self.zero_pfn {
                            Some(z) => p == z,
                            None => self.ram.is_empty() || self.is_ram(p, 1),
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
                        format!("a lookup for pfn {:#x?}", lr.pfn()),
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
            for j in 0..level_pages {
                let pg = base + j;
                // An already present PTE stays as it was (insert_pfn without mkwrite).
                if self.ptes.get(&(sp, pg)).is_some_and(|p| p.known) && fault_page != Some(pg) {
                    continue;
                }
                let p = Pte {
                    pfn: if mixed {
                        None
                    } else {
                        Some(pfn.saturating_add(j))
                    },
                    special: if mixed { None } else { Some(true) },
                    cache,
                    known: fault_page.is_some_and(|f| {
                        f >> (level_pages.trailing_zeros()) == pg >> level_pages.trailing_zeros()
                    }),
                    anon: false,
                    since: seq,
                };
                self.install(sp, pg, p, r);
            }
        }
        self.visit_kids(t, i, fault_page, |h| !h.is_insert_lookup());
    }

    /// `track_pfn_insert` / `pfnmap_setup_cachemode`: returns the cache mode PAT answered.
    fn lookup(&mut self, t: &Tree, i: usize) -> Option<Cache> {
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
            self.pat_on = true;
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
            .memtypes
            .lookup_entry(pfn)
            .map(|e| (e.cache, e.owner, e.seq));
        let reserved = entry.map(|(c, _, _)| c);
        let is_ram = self.is_ram(pfn, 1);
        let expected = if is_isa_range(pfn, 1) {
            self.pat_on.then_some(Cache::WB)
        } else if reserved.is_some() {
            reserved
        } else if is_ram && self.pat_on {
            // RAM keeps its memtype in page flags; never set means WB (memtype.c lookup_memtype).
            Some(Cache::WB)
        } else if !is_ram && !self.ram.is_empty() && self.pat_on {
            // Outside System RAM with no reservation: memtype_lookup finds nothing, UC-.
            Some(Cache::UcMinus)
        } else {
            self.lookups.get(&pfn).copied()
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
            self.lookups.insert(pfn, out);
            if out == Cache::UcMinus {
                self.add_nonram(pfn, pfn.saturating_add(1));
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

    // ---- remap_pfn_range and its PAT tracking ----------------------------------------------

    fn remap(&mut self, t: &Tree, i: usize) {
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
            let sp = space(r);
            let c = cache.or_else(|| {
                (!self.pat_on)
                    .then(|| r.prot().map(|p| self.pat.of_prot(p)))
                    .flatten()
            });
            let n = pages(Some(size));
            if n <= MAX_WALK {
                for j in 0..n {
                    let p = Pte {
                        pfn: Some(pfn.saturating_add(j)),
                        special: Some(true),
                        cache: c,
                        known: true,
                        anon: false,
                        since: r.seq(),
                    };
                    self.install(sp, (addr >> PAGE_SHIFT) + j, p, r);
                }
            }
            if let Some(id) = r.vma_id() {
                let pat = whole && tr == Some(0) && self.f.vm_pat_flag && self.f.track_pfn_hooks;
                let st = self.vmas.entry(id).or_default();
                let was_due = st.due();
                st.must_flags = b.remap_flags();
                if pat {
                    st.must_flags |= b.pat;
                }
                st.must_pgoff = cow.then_some(pfn);
                st.due_seq = r.seq();
                let due = st.due();
                match (was_due, due) {
                    (false, true) => self.due_vmas += 1,
                    (true, false) => self.due_vmas -= 1,
                    _ => {}
                }
            }
        }
        self.visit_kids(t, i, None, |h| !h.is_remap_track());
    }

    /// `track_pfn_remap` / `pfnmap_track` / a partial remap's `pfnmap_setup_cachemode`.
    /// Returns the call's return value and the cache mode it left in `*prot`.
    fn track_remap(
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
                    self.pat_on = true;
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
                        let st = self.vmas.entry(v).or_default();
                        st.tracked_in_trace = true;
                        st.reserved_in_trace = true;
                    }
                } else {
                    // No reservation: the RAM path (reserve_pfn_range keeps no refcount for RAM).
                    if self.attached(Hook::MemtypeReserve)
                        && self.pat_on
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
                        self.vmas.entry(v).or_default().tracked_in_trace = true;
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
                            self.pat_on.then_some(Cache::WB)
                        } else {
                            self.memtypes
                                .lookup(p)
                                .or_else(|| self.lookups.get(&p).copied())
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
        (r.ret(), got)
    }

    /// `memtype_reserve`; returns `*new_type` as the trace shows it.
    fn reserve(&mut self, t: &Tree, i: usize, owner: Owner) -> Option<Cache> {
        let r = t.nodes[i].rec();
        self.pat_on = true;
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
            let overlapped = self.memtypes.overlapping(start, end).next().is_some();
            match self
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
                self.memtypes.insert(Entry {
                    start,
                    end,
                    cache,
                    owner,
                    seq: r.seq(),
                });
            }
        }
        self.forget_lookups(start, n);
        self.visit_kids(t, i, None, |_| true);
        newt
    }

    fn free(&mut self, t: &Tree, i: usize, owner: Option<Owner>) {
        let r = t.nodes[i].rec();
        self.pat_on = true;
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
                    self.memtypes.apply_free(m, start);
                }
            }
        }
        self.forget_lookups(start, n);
    }

    /// `untrack_pfn(NULL, pfn, size)`, memunmap_pages undoing memremap_pages: free_pfn_range
    /// frees exactly that range, unless it is RAM (which keeps its type in page flags).
    fn untrack_range(&mut self, t: &Tree, i: usize, pfn: u64, size: u64, free: Option<usize>) {
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
                            format!("pfn {:#x?}, size {:?}", fr.pfn(), fr.size()),
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

    fn untrack(&mut self, t: &Tree, i: usize) {
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
                        let first = self.ptes.get(&(space(r), vs >> PAGE_SHIFT)).copied();
                        (
                            first
                                .filter(|p| p.known && p.special == Some(true))
                                .and_then(|p| p.pfn),
                            ve.saturating_sub(vs),
                        )
                    }
                    (p, s) => (Some(p), s),
                };
                let owned = self.memtypes.owned_by_vma(vid).is_some();
                let st = self.vmas.get(&vid).cloned().unwrap_or_default();
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
                                    format!("memtype_free of pfn {exp_pfn:#x?}, {exp_size} bytes"),
                                    format!("pfn {:#x?}, size {:?}", fr.pfn(), fr.size()),
                                )
                            },
                        );
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
            let st = self.vmas.entry(vid).or_default();
            st.untracked = true;
            self.last_untrack.insert(r.tid(), vid);
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
                                format!("pfn {:#x?}, size {:?}", fr.pfn(), fr.size()),
                            )
                        },
                    );
                }
                None => {
                    let exact = self.memtypes.find_free(pfn, pfn.saturating_add(np));
                    if !matches!(exact, FreeMatch::Exact(_)) {
                        self.nc(Rule::PatUntrack);
                    } else if self.untrack_frees_seen {
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
                        self.memtypes.apply_free(exact, pfn);
                        self.nc(Rule::PatUntrack);
                    }
                }
            }
            if free.is_some() {
                self.untrack_frees_seen = true;
            }
            for (_, e) in self.memtypes.exact(pfn, pfn.saturating_add(np)) {
                if let Owner::Vma(v) = e.owner {
                    self.vmas.entry(v).or_default().untracked = true;
                }
            }
        }
        self.visit_kids(t, i, None, |_| true);
    }

    // ---- fork ------------------------------------------------------------------------------

    /// `track_pfn_copy`; returns its return value.
    fn track_copy(&mut self, t: &Tree, i: usize) -> Option<i64> {
        let r = t.nodes[i].rec();
        let reserve = t.kid(i, |h| h == Hook::MemtypeReserve);
        let free = t.kid(i, |h| h == Hook::MemtypeFree);
        let (Some(vm), Some(vs), Some(ve)) = (r.vma_flags(), r.vma_start(), r.vma_end()) else {
            self.nc(Rule::ForkCopy);
            self.visit_kids(t, i, None, |_| true);
            return r.ret();
        };
        let has_pat = self.bits.pat != 0 && vm & self.bits.pat != 0;
        let owner = Owner::Fork {
            parent_pid: r.pid(),
            failed: false,
        };
        if !has_pat {
            self.check(
                Rule::ForkCopy,
                reserve.is_none() && r.ret() == Some(0),
                &[r],
                || {
                    (
                        "0 and no reservation (no VM_PAT)".into(),
                        format!("{} (reserve: {})", show_ret(r.ret()), reserve.is_some()),
                    )
                },
            );
        } else {
            let first = self
                .ptes
                .get(&(space(r), vs >> PAGE_SHIFT))
                .copied()
                .filter(|p| p.known);
            match first {
                Some(p) if p.anon => {
                    if r.ret().is_some_and(|v| v != 0) {
                        self.find(
                            Rule::FindForkCow,
                            &[r],
                            r.driver(),
                            || format!("fork failed ({}) because the first page was COWed: vma {vs:#x}..{ve:#x}", show_ret(r.ret())),
                        );
                    } else {
                        self.nc(Rule::ForkCopy);
                    }
                }
                Some(Pte {
                    pfn: Some(pfn),
                    cache: Some(c),
                    special: Some(true),
                    ..
                }) => match reserve {
                    None => self.diverge(
                        Rule::ForkCopy,
                        &[r],
                        format!(
                            "a strict memtype_reserve of pfn {pfn:#x}, {} bytes, {}",
                            ve.saturating_sub(vs),
                            c.name()
                        ),
                        "none".into(),
                    ),
                    Some(k) => {
                        let rr = t.nodes[k].rec();
                        let req = rr.cache_req().as_deref().and_then(Cache::parse);
                        self.check(
                            Rule::ForkCopy,
                            rr.pfn() == Some(pfn)
                                && rr.size() == Some(ve.saturating_sub(vs))
                                && req == Some(c),
                            &[r, rr],
                            || {
                                (
                                    format!(
                                        "memtype_reserve of pfn {pfn:#x}, {} bytes, {}",
                                        ve.saturating_sub(vs),
                                        c.name()
                                    ),
                                    format!(
                                        "pfn {:#x?}, size {:?}, {:?}",
                                        rr.pfn(),
                                        rr.size(),
                                        req
                                    ),
                                )
                            },
                        );
                        let newt = self.reserve(t, k, owner);
                        let expected = match rr.ret() {
                            Some(e) if e != 0 => Some(e),
                            Some(0) if newt.is_some_and(|n| n != c) => Some(errno::EINVAL),
                            Some(0) => Some(0),
                            _ => None,
                        };
                        match expected {
                            Some(e) => {
                                let free_ok = if e == errno::EINVAL && rr.ret() == Some(0) {
                                    free.is_some()
                                } else {
                                    free.is_none()
                                };
                                self.check(
                                    Rule::ForkCopy,
                                    r.ret() == Some(e) && free_ok,
                                    &[r, rr],
                                    || {
                                        (
                                            format!("{e} (strict reservation)"),
                                            format!(
                                                "{} (free: {})",
                                                show_ret(r.ret()),
                                                free.is_some()
                                            ),
                                        )
                                    },
                                );
                            }
                            None => self.nc(Rule::ForkCopy),
                        }
                    }
                },
                _ => {
                    if let Some(k) = reserve {
                        let rr = t.nodes[k].rec();
                        let rret = rr.ret();
                        self.reserve(t, k, owner);
                        if let Some(e) = rret.filter(|e| *e != 0) {
                            self.check(Rule::ForkCopy, r.ret() == Some(e), &[r, rr], || {
                                (format!("{e}"), show_ret(r.ret()))
                            });
                        } else {
                            self.nc(Rule::ForkCopy);
                        }
                    } else {
                        self.nc(Rule::ForkCopy);
                    }
                }
            }
        }
        self.visit_kids(t, i, None, |h| h != Hook::MemtypeReserve);
        r.ret()
    }

    fn fork_copy(&mut self, t: &Tree, i: usize) {
        let r = t.nodes[i].rec();
        let b = self.bits;
        self.vma_due(r);
        let pfnmap = r.vma_flags().is_some_and(|vm| vm & b.pfnmap != 0);
        let track = t.kid(i, |h| h == Hook::TrackPfnCopy);
        if self.f.fork_track && pfnmap && self.attached(Hook::TrackPfnCopy) {
            self.check(Rule::ForkCopy, track.is_some(), &[r], || {
                ("track_pfn_copy for a VM_PFNMAP vma".into(), "none".into())
            });
        }
        let tr = match track {
            Some(k) => self.track_copy(t, k),
            None => None,
        };
        if let Some(v) = r.ret() {
            match tr {
                Some(e) if e != 0 => self.check(Rule::ForkCopy, v == e, &[r], || {
                    (format!("track_pfn_copy's error {e}"), format!("{v}"))
                }),
                Some(_) | None if track.is_some() || !pfnmap || !self.f.fork_track => {
                    self.check(Rule::ForkCopy, v == 0 || v == errno::ENOMEM, &[r], || {
                        ("0 or -ENOMEM".into(), format!("{v}"))
                    })
                }
                _ => {}
            }
        }
        self.visit_kids(t, i, None, |h| h != Hook::TrackPfnCopy);
        let sp = space(r);
        if r.ret() == Some(0) {
            if let (Some(vs), Some(ve)) = (r.vma_start(), r.vma_end()) {
                let (first, n) = (vs >> PAGE_SHIFT, ve.saturating_sub(vs) >> PAGE_SHIFT);
                let mut copy = ForkCopy { ptes: Vec::new() };
                if n <= MAX_WALK {
                    for pg in first..first.saturating_add(n) {
                        if let Some(p) = self.ptes.get(&(sp, pg)) {
                            copy.ptes.push((pg, *p));
                        }
                    }
                }
                if !copy.ptes.is_empty() {
                    self.fork_pending.entry(r.pid()).or_default().push(copy);
                }
            }
        } else if tr == Some(0) {
            for o in self.memtypes.owners_mut() {
                if *o
                    == (Owner::Fork {
                        parent_pid: r.pid(),
                        failed: false,
                    })
                {
                    *o = Owner::Fork {
                        parent_pid: r.pid(),
                        failed: true,
                    };
                }
            }
        }
    }

    // ---- zap -------------------------------------------------------------------------------

    fn unmap(&mut self, t: &Tree, i: usize) {
        let r = t.nodes[i].rec();
        let b = self.bits;
        if self.f.untrack_before_zap
            && let (Some(vm), Some(vid)) = (r.vma_flags(), r.vma_id())
            && vm & b.pfnmap != 0
        {
            if b.pat != 0 {
                self.check(Rule::UnmapUntrack, vm & b.pat == 0, &[r], || {
                    (
                        "VM_PAT already cleared by untrack_pfn".into(),
                        format!("vm_flags {vm:#x} with VM_PAT"),
                    )
                });
            }
            if self.attached(Hook::UntrackPfn) {
                let last = self.last_untrack.remove(&r.tid());
                self.check(Rule::UnmapUntrack, last == Some(vid), &[r], || {
                    (
                        format!("untrack_pfn on vma {vid} just before"),
                        format!("last untrack on this task: {last:?}"),
                    )
                });
            } else {
                self.nc(Rule::UnmapUntrack);
            }
        }
        self.vma_due(r);
        self.visit_kids(t, i, None, |_| true);
        if let (Some(a), Some(s)) = (r.address(), r.size()) {
            self.zap(space(r), a >> PAGE_SHIFT, pages(Some(s)));
        }
    }

    /// The PTEs a fork copied into child `pid`, if it has not run since.
    fn take_child_pending(&mut self, pid: u32) -> Option<Vec<ForkCopy>> {
        let copies = self.child_pending.remove(&pid);
        if copies.is_none() {
            self.not_child = Some(pid);
        }
        copies
    }

    /// The failed fault recorded at (vma id, vma start, page), forgotten. Every fault and
    /// every vm_normal_page asks, and the map is nearly always empty: checked first, since
    /// hashing the key was most of the lookup.
    #[inline]
    fn take_failed_fault(&mut self, key: (u32, u64, u64)) -> Option<(u64, u32)> {
        if self.failed_faults.is_empty() {
            None
        } else {
            self.failed_faults.remove(&key)
        }
    }

    /// Flags a vma must show after a remap, checked once at its next snapshot.
    #[inline]
    fn vma_due(&mut self, r: Rec<'_>) {
        // Nearly every call comes here, and nearly always no vma has anything due.
        if self.due_vmas == 0 {
            return;
        }
        let Some(vid) = r.vma_id() else { return };
        let Some(st) = self.vmas.get_mut(&vid) else {
            return;
        };
        if !st.due() {
            return;
        }
        let (must, pg, due) = (st.must_flags, st.must_pgoff, st.due_seq);
        st.must_flags = 0;
        st.must_pgoff = None;
        self.due_vmas -= 1;
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

    // ---- vm_normal_page --------------------------------------------------------------------

    fn vnp(&mut self, t: &Tree, i: usize) {
        let r = t.nodes[i].rec();
        self.vma_due(r);
        let (Some(v), Some(page)) = (r.pte(), r.page()) else {
            self.nc(Rule::VnpSpecial);
            return;
        };
        // Each field once: a read is a few bounds-checked loads, and the rules below ask often.
        let (vm_flags, address, vma_start) = (r.vma_flags(), r.address(), r.vma_start());
        // vm_normal_page is only asked about present PTEs (zap, fork copy, wp fault).
        if let (Some(vma), Some(start), Some(a)) = (r.vma_id(), vma_start, address) {
            match self.take_failed_fault((vma, start, a >> PAGE_SHIFT)) {
                Some((seq, ret)) => self.diverge(
                    Rule::FaultOutcome,
                    &[r],
                    format!(
                        "no PTE at {a:#x}: the fault there at seq [{seq}] failed with {ret:#x}"
                    ),
                    format!("PTE {v:#x} present"),
                ),
                None => self.sink.tally(Rule::FaultOutcome, Outcome::Held),
            }
        }
        let b = self.bits;
        let pfn = (v & pte::PFN_MASK) >> PAGE_SHIFT;
        let special = v & pte::SPECIAL != 0;
        let devmap = v & self.f.devmap_pte_bit != 0;
        let cache = self.pat.of_prot(v);
        let plain_vma = vm_flags.is_some_and(|vm| b.pfn_or_mixed(vm) == 0);
        if special && !devmap && plain_vma && r.driver().is_none() && r.file_id().is_none() {
            self.zero_pfn.get_or_insert(pfn);
        }
        let zero = self.zero_pfn == Some(pfn);
        if special {
            self.check(Rule::VnpSpecial, !page, &[r], || {
                (
                    "no page (special PTE)".into(),
                    format!("a page for PTE {v:#x}"),
                )
            });
            if !page && r.driver().is_some() && plain_vma && !devmap && !zero {
                self.find(Rule::FindBadSpecial, &[r], r.driver(), || {
                    format!(
                        "special PTE in a vma without VM_PFNMAP/VM_MIXEDMAP: PTE {v:#x} at {:#x?}",
                        r.address()
                    )
                });
            }
        } else if page {
            self.sink.tally(Rule::VnpNormal, Outcome::Held);
            self.max_page_pfn = Some(self.max_page_pfn.map_or(pfn, |m| m.max(pfn)));
        } else if self.max_page_pfn.is_some_and(|m| m >= pfn) {
            self.diverge(
                Rule::VnpNormal,
                &[r],
                format!(
                    "the page of pfn {pfn:#x} (within the memmap: pages up to {:#x} seen)",
                    self.max_page_pfn.unwrap_or(0)
                ),
                "no page".into(),
            );
        } else {
            self.nc(Rule::VnpNormal);
            self.find(Rule::FindBadNonSpecial, &[r], r.driver(), || {
                format!(
                    "no page for a non-special PTE: PTE {v:#x} at {:#x?}",
                    r.address()
                )
            });
        }

        // A raw PFN of a COW vma is never writable, whoever asks. VM_WRITE is compared only
        // where the mm's lock keeps mprotect out, a fault or a fork: mprotect clears VM_WRITE
        // before it write-protects the PTEs, and a driver's unmap_mapping_range zaps holding
        // only the file's i_mmap lock; since 6.17 mprotect's PTE batching itself asks about
        // the old, still writable PTE (mm/mprotect.c:change_pte_range, cac1db8c3aad).
        let locked = i > 0
            && matches!(
                t.nodes[0].hook,
                Some(Hook::HandleMmFault | Hook::CopyPageRange)
            );
        let cow_raw = special && vm_flags.is_some_and(|vm| b.is_cow(vm));
        match vm_flags {
            Some(vm) if locked || cow_raw => {
                let ok = v & pte::RW == 0 || (vm & b.write != 0 && !cow_raw);
                self.check(Rule::PteWritable, ok, &[r], || {
                    (
                        if cow_raw {
                            "a read-only PTE: a raw PFN in a COW vma".into()
                        } else {
                            format!("a read-only PTE: vma flags {vm:#x} lack VM_WRITE")
                        },
                        format!("writable PTE {v:#x}"),
                    )
                });
            }
            None if locked => self.nc(Rule::PteWritable),
            _ => {}
        }

        if let (Some(vm), Some(a), Some(s)) = (vm_flags, address, vma_start)
            && vm & b.pfnmap != 0
            && b.is_cow(vm)
            && a >= s
            && let Some(pg) = r.vma_pgoff()
        {
            let linear = pg.checked_add((a - s) >> PAGE_SHIFT) == Some(pfn);
            self.check(Rule::VnpLinear, special == linear, &[r], || {
                (
                    format!(
                        "special bit {} (the linear rule says {})",
                        linear,
                        if linear { "raw PFN" } else { "COWed page" }
                    ),
                    format!("special bit {special} in PTE {v:#x}"),
                )
            });
        }

        if let Some(a) = address {
            let key = (space(r), a >> PAGE_SHIFT);
            let known = self.ptes.get(&key).copied();
            let observed = Pte {
                pfn: special.then_some(pfn),
                special: Some(special),
                cache: Some(cache),
                known: true,
                anon: !special
                    && page
                    && vm_flags.is_some_and(|vm| b.is_cow(vm))
                    && known.is_some_and(|p| p.anon),
                since: r.seq(),
            };
            // Special PTEs have no rmap: truncating or purging the page cannot unmap them, so
            // a driver that frees pages it still maps leaves user space a freed page.
            if special
                && let Some(&(ix, dseq)) = self.deleted.get(&pfn)
                && known.is_some_and(|m| m.pfn == Some(pfn) && m.since < dseq)
            {
                let d = Record {
                    seq: dseq,
                    ..Default::default()
                };
                self.find(Rule::FindPfnAfterTruncate, &[r, Rec::Record(&d)], r.driver(), || {
                    format!(
                        "pfn {pfn:#x} left the page cache (index {ix}) at seq {dseq} while this special PTE at {a:#x} still mapped it"
                    )
                });
            }
            // A special PTE in a vma that is neither VM_PFNMAP nor VM_MIXEDMAP is the shared
            // zero page, and core MM replaces it with a real page in ways the trace need not
            // show: a write fault's copy, MADV_POPULATE, fault-around, or an exec whose new
            // mm and vma reuse the old ones' memory (and so their ids) after an untraced
            // teardown (7.2 cannot probe unmap_page_range). Only PFN and mixed maps hold
            // their special PTEs until a traced zap or COW.
            // Where teardowns are not traced at all (7.2), a later mapping's read fault of a
            // hole or of anonymous memory also maps the zero page over a page the model still
            // remembers.
            match known {
                Some(m) => {
                    let mism = m.pfn.is_some_and(|p| special && p != pfn)
                        || m.special.is_some_and(|s| s != special)
                        || m.cache.is_some_and(|c| c != cache);
                    let zero_page_replaced = plain_vma
                        && ((m.special == Some(true) && !special)
                            || (zero
                                && m.special == Some(false)
                                && !self.attached(Hook::UnmapPageRange)));
                    if m.known && !zero_page_replaced {
                        self.check(Rule::PteState, !mism, &[r], || {
                            (
                                format!(
                                    "pfn {:#x?} special {:?} cache {:?}{}",
                                    m.pfn,
                                    m.special,
                                    m.cache.map(Cache::name),
                                    if m.anon { " (COW copy)" } else { "" }
                                ),
                                format!(
                                    "pfn {pfn:#x} special {special} cache {} (PTE {v:#x})",
                                    cache.name()
                                ),
                            )
                        });
                    } else if mism {
                        self.nc(Rule::PteState);
                    }
                    if mism || !m.known {
                        self.install(
                            key.0,
                            key.1,
                            Pte {
                                anon: m.anon && !special,
                                ..observed
                            },
                            r,
                        );
                    }
                }
                None => self.install(key.0, key.1, observed, r),
            }
        }

        if !special
            && page
            && let Some(&(ix, dseq)) = self.deleted.get(&pfn)
            && r.file_id().is_some()
            && let (Some(a), Some(s), Some(pg)) = (address, vma_start, r.vma_pgoff())
            && a >= s
            && pg.checked_add((a - s) >> PAGE_SHIFT) == Some(ix)
        {
            let d = Record {
                seq: dseq,
                ..Default::default()
            };
            self.diverge(
                Rule::TruncateMapped,
                &[r, Rec::Record(&d)],
                format!(
                    "no PTE for pfn {pfn:#x} (file index {ix} left the page cache at seq {dseq})"
                ),
                format!("PTE {v:#x} maps it at {a:#x}"),
            );
        }
    }
}
