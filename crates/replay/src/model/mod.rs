//! The reference model of the x86-64 fault path for PFN and special mappings.
//!
//! Each handler takes one call of a reassembled tree, predicts from the model state what the
//! kernel must have done, compares, and updates the state from what the kernel did (so one
//! divergence does not cascade). Where the trace lacks what a rule needs (state older than the
//! trace, RAM-ness of a pfn, a hook that was not attached) the rule counts as not checkable and
//! never fires.

mod fault;
mod fork;
mod insert;
mod page_cache;
mod pages;
mod pat;
mod remap;
mod state;
mod unmap;
mod untrack;
mod vnp;

use pfnscope_abi::bits::PAGE_SIZE;
use pfnscope_abi::kernel::Features;
use pfnscope_abi::{Cache, Hook, PatTable, bits::VmBits};
use pfnscope_trace::{Rec, Record, Sym, TraceMeta};

pub use state::Pte;
use state::{Faults, Forks, PatState, PhysMem, Ptes, Vmas};

use crate::kernel::KernelRules;
use crate::memtype::{Entry, Owner};
use crate::report::{Divergence, Finding, Outcome, Sink};
use crate::rules::Rule;
use crate::tree::{MAX_DEPTH, Orphan, Tree};

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

/// A field for a message: hex, or "unknown" where the trace lacks it (never `Some(..)`).
fn hex(v: Option<u64>) -> String {
    v.map_or_else(|| "unknown".into(), |v| format!("{v:#x}"))
}

/// As [`hex`], in decimal.
fn num(v: Option<u64>) -> String {
    v.map_or_else(|| "unknown".into(), |v| v.to_string())
}

/// Larger ranges are not walked page by page (a PUD is 262144 pages).
const MAX_WALK: u64 = 1 << 18;

pub struct Model<S: Sink> {
    sink: S,
    /// The kernel the trace came from: its rule set, `vm_flags` bits and PAT table.
    f: Features,
    bits: VmBits,
    pat: PatTable,
    /// Hooks the plan attached, by `Hook as usize`.
    plan: Option<[bool; Hook::COUNT]>,
    seen: [bool; Hook::COUNT],
    ptes: Ptes,
    mem: PhysMem,
    pats: PatState,
    vmas: Vmas,
    faults: Faults,
    forks: Forks,
    /// Trees processed so far: the current one's number.
    tree_no: u64,
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
            ptes: Ptes::default(),
            mem: PhysMem::from_meta(meta),
            pats: PatState::from_meta(meta),
            vmas: Vmas::default(),
            faults: Faults::default(),
            forks: Forks::default(),
            tree_no: 0,
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

    fn diverge(&mut self, rule: Rule, recs: &[Rec<'_>], expected: String, observed: String) {
        self.sink.tally(rule, Outcome::Failed);
        self.sink.divergence(Divergence {
            rule,
            expected,
            observed,
            seqs: recs.iter().map(|r| r.seq()).collect(),
            ids: recs.iter().map(|r| r.id()).collect(),
            source: rule.source().into(),
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

    pub fn process(&mut self, t: &Tree) {
        self.ptes.tree_inserts.clear();
        self.tree_no += 1;
        let root = t.nodes[0].rec();
        if !self.forks.child_pending.is_empty()
            && root.mm_id().is_some()
            && self.forks.not_child != Some(root.pid())
            && let Some(copies) = self.forks.take_child_pending(root.pid())
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
        self.report_unreserved();
        let leaks: Vec<Entry> = self
            .pats
            .memtypes
            .entries()
            .iter()
            .filter(|e| match e.owner {
                Owner::Vma(v) => self.vmas.map.get(&v).is_some_and(|s| s.untracked),
                Owner::Fork { failed, .. } => failed,
                Owner::Process { exited, .. } => exited,
                Owner::Before | Owner::Other => false,
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
                let owner = self.reserve_owner(t, i);
                self.reserve(t, i, owner);
            }
            Hook::MemtypeFree => self.free(t, i, None),
            Hook::CopyPageRange => self.fork_copy(t, i),
            Hook::VmInsertPage => self.insert_page(t, i),
            Hook::SetPteRange | Hook::DoSetPte => self.set_pte(t, i),
            Hook::RemapPfnRangeNotrack => self.remap_notrack(t, i),
            Hook::ArchIoReserveMemtypeWc => self.io_reserve(t, i),
            Hook::UnmapPageRange => self.unmap(t, i),
            Hook::PageFaultUser | Hook::PageFaultKernel => self.tp_fault(t, i),
            Hook::FilemapDelete => self.page_cache_delete(t, i),
            Hook::FilemapAdd => self.page_cache_add(t, i),
            Hook::SchedProcessFork => self.process_fork(t, i),
            Hook::SchedProcessExit => self.process_exit(t, i),
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
}
