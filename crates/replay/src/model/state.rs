//! What the model remembers between calls, grouped by what it is about: page tables, physical
//! memory, PAT, vmas, faults and forks. Each group keeps its own invariants; rules read it and
//! update it from what the kernel did.

use std::collections::{BTreeMap, hash_map::Entry as MapEntry};

use pfnscope_abi::bits::{ISA_END_PFN, is_isa_range};
use pfnscope_abi::{CACHE_MODES, Cache};
use pfnscope_trace::{Rec, Sym, TraceMeta};

use super::{MAX_WALK, Model};
use crate::IdMap;
use crate::memtype::{Entry, MemtypeMap, Owner};
use crate::report::Sink;
use crate::rules::Rule;

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
    /// Its RAM/linear-map alias was judged when it was installed (`vm_insert_page`, a fault's
    /// `set_pte_range`, an untracked remap): a `vm_normal_page` of it later does not count
    /// the same alias again.
    pub judged: bool,
}

impl Pte {
    /// The pfn and cache mode of a special PTE: what the alias counts track.
    fn alias(&self) -> Option<(u64, Cache)> {
        match (self.pfn, self.cache, self.special) {
            (Some(pfn), Some(c), Some(true)) => Some((pfn, c)),
            _ => None,
        }
    }
}

/// Page tables, by (address space, page), and the special PTEs mapping each pfn.
#[derive(Default)]
pub(super) struct Ptes {
    pub(super) map: IdMap<(u64, u64), Pte>,
    /// Special PTEs mapping each pfn, per cache mode (`Cache as usize`): counts in place, since
    /// a vector per pfn was an allocation and a free per page mapped and zapped.
    aliases: IdMap<u64, [u32; CACHE_MODES]>,
    /// The PFN inserts of the tree being processed: (address space, first page, pages).
    pub(super) tree_inserts: Vec<(u64, u64, u64)>,
}

impl Ptes {
    /// Whether an earlier insert of the current tree mapped `page` of `sp`.
    pub(super) fn inserted_in_tree(&self, sp: u64, page: u64) -> bool {
        self.tree_inserts
            .iter()
            .any(|&(s, first, n)| s == sp && page >= first && page - first < n)
    }

    /// Installs `p` at `page` of address space `sp`; returns the cache mode another special
    /// PTE of the same pfn has, if it differs (an alias).
    pub(super) fn install(&mut self, sp: u64, page: u64, p: Pte) -> Option<Cache> {
        if let Some((pfn, c)) = self.map.insert((sp, page), p).and_then(|old| old.alias()) {
            self.alias_remove(pfn, c);
        }
        let (pfn, c) = p.alias()?;
        let v = self.aliases.entry(pfn).or_default();
        let other = Cache::ALL
            .into_iter()
            .find(|&oc| oc != c && v[oc as usize] > 0);
        v[c as usize] += 1;
        other
    }

    /// Removes `n` pages from `first` in address space `sp`.
    pub(super) fn zap(&mut self, sp: u64, first: u64, n: u64) {
        let drop = |this: &mut Self, k: (u64, u64)| {
            if let Some((pfn, c)) = this.map.remove(&k).and_then(|old| old.alias()) {
                this.alias_remove(pfn, c);
            }
        };
        if n <= MAX_WALK {
            for p in first..first.saturating_add(n) {
                drop(self, (sp, p));
            }
        } else {
            let keys: Vec<_> = self
                .map
                .keys()
                .filter(|(s, p)| *s == sp && *p >= first && *p < first.saturating_add(n))
                .copied()
                .collect();
            for k in keys {
                drop(self, k);
            }
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
}

/// Physical memory: which pfns are RAM, which are not, and which pages left the page cache.
#[derive(Default)]
pub(super) struct PhysMem {
    /// "System RAM" pfn ranges from the trace metadata (empty for older traces).
    pub(super) ram: Vec<[u64; 2]>,
    /// Pfn ranges known not to be RAM (start -> end, exclusive).
    nonram: BTreeMap<u64, u64>,
    /// The shared zero page: from the metadata, else from the first special PTE of an
    /// anonymous vma (vm_normal_page's only silent special PTE there).
    pub(super) zero_pfn: Option<u64>,
    /// `zero_pfn` came from the metadata: a special PTE of an anonymous vma can be checked
    /// against it, not only learned from.
    pub(super) zero_pfn_known: bool,
    /// The highest pfn vm_normal_page returned a page for: the memmap reaches at least there.
    pub(super) max_page_pfn: Option<u64>,
    /// Pfns that left the page cache: (file index, seq).
    pub(super) deleted: IdMap<u64, (u64, u64)>,
    /// RAM pages' memtypes (PAT keeps them in page flags): those set or reset in the trace,
    /// with the seq of the call, and the non-WB ones of the start state (no seq).
    ram_types: IdMap<u64, (Cache, Option<u64>)>,
    /// The start state listed every non-WB RAM page: a page not in `ram_types` is WB.
    ram_types_known: bool,
    /// Device memory the kernel gave struct pages (pmem, device-dax: /proc/iomem's
    /// "Persistent Memory" resources), as pfn ranges; None without the start state's iomem.
    memmap: Option<Vec<[u64; 2]>>,
}

/// Whether a pfn range is System RAM, as `pat_pagerange_is_ram` decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RamKind {
    Ram,
    NotRam,
    /// Partly RAM: memtype_reserve/free refuse it with -EINVAL.
    Mixed,
    /// The trace does not say where RAM is.
    Unknown,
}

/// More non-WB RAM pages than this in the start state are not expanded page by page; RAM
/// memtypes older than the trace are then unknown.
const MAX_START_RAM_TYPES: u64 = 1 << 22;

impl PhysMem {
    pub(super) fn from_meta(meta: &TraceMeta) -> PhysMem {
        let mut m = PhysMem {
            ram: meta.system_ram.clone(),
            zero_pfn: meta.zero_pfn,
            zero_pfn_known: meta.zero_pfn.is_some(),
            ..PhysMem::default()
        };
        // Where the trace says where RAM is, the start state's iomem lists every device range
        // (an empty list: none with struct pages).
        if let Some(st) = &meta.start_state
            && !m.ram.is_empty()
        {
            m.memmap = Some(
                st.iomem
                    .iter()
                    .filter(|s| s.name.starts_with("Persistent Memory"))
                    .map(|s| [s.start >> 12, s.end.div_ceil(4096)])
                    .collect(),
            );
        }
        if let Some(spans) = meta
            .start_state
            .as_ref()
            .and_then(|s| s.ram_memtypes.as_ref())
        {
            let pages: u64 = spans
                .iter()
                .map(|s| s.end_pfn.saturating_sub(s.start_pfn))
                .sum();
            if pages <= MAX_START_RAM_TYPES && !m.ram.is_empty() {
                m.ram_types_known = true;
                for s in spans {
                    for p in s.start_pfn..s.end_pfn {
                        m.ram_types.insert(p, (s.cache, None));
                    }
                }
            }
        }
        m
    }

    /// Whether device memory at `pfn` has struct pages, as far as the trace says (true when it
    /// does not say).
    pub(super) fn has_memmap(&self, pfn: u64) -> bool {
        self.memmap
            .as_ref()
            .is_none_or(|m| m.iter().any(|r| r[0] <= pfn && pfn < r[1]))
    }

    /// `pat_pagerange_is_ram`: the legacy ISA range counts as non-RAM (memtype.c clips it).
    pub(super) fn ram_kind(&self, start: u64, n: u64) -> RamKind {
        if self.ram.is_empty() {
            return RamKind::Unknown;
        }
        let (start, end) = (start.max(ISA_END_PFN), start.saturating_add(n));
        if start >= end {
            return RamKind::NotRam;
        }
        let mut ram = 0u64;
        for r in &self.ram {
            let (a, b) = (r[0].max(start), r[1].min(end));
            ram += b.saturating_sub(a);
        }
        match ram {
            0 => RamKind::NotRam,
            x if x == end - start => RamKind::Ram,
            _ => RamKind::Mixed,
        }
    }

    /// A RAM page's memtype and the seq of the traced call that set it (None: the start
    /// state's, or WB because the start state listed no other); None when unknown.
    pub(super) fn ram_type(&self, pfn: u64) -> Option<(Cache, Option<u64>)> {
        match self.ram_types.get(&pfn) {
            Some(t) => Some(*t),
            None => self.ram_types_known.then_some((Cache::WB, None)),
        }
    }

    /// `set_page_memtype` over `n` pages from `start`, by the call at `seq`.
    pub(super) fn set_ram_types(&mut self, start: u64, n: u64, c: Cache, seq: u64) {
        for p in start..start.saturating_add(n.min(MAX_WALK)) {
            self.ram_types.insert(p, (c, Some(seq)));
        }
    }

    pub(super) fn add_nonram(&mut self, start: u64, end: u64) {
        // Coalesce with a range ending where this one starts (faults walk pages upwards).
        if let Some((_, e)) = self.nonram.range_mut(..=start).next_back()
            && *e >= start
        {
            *e = (*e).max(end);
            return;
        }
        self.nonram.insert(start, end);
    }

    /// Whether `n` pages from `start` touch a "System RAM" range of the metadata.
    pub(super) fn is_ram(&self, start: u64, n: u64) -> bool {
        let end = start.saturating_add(n);
        self.ram.iter().any(|r| r[0] < end && start < r[1])
    }

    /// Whether `n` pages from `start` are known not to be RAM from memory alone.
    fn nonram(&self, start: u64, n: u64) -> bool {
        if is_isa_range(start, n) {
            return true;
        }
        if let Some((_, &e)) = self.nonram.range(..=start).next_back()
            && e >= start.saturating_add(n)
        {
            return true;
        }
        // Outside every "System RAM" range of the metadata: pat_pagerange_is_ram's own test.
        !self.ram.is_empty() && !self.is_ram(start, n)
    }
}

/// PAT: the memtype reservations, the answers of lookups without one, and whether PAT is on.
#[derive(Default)]
pub(super) struct PatState {
    /// PAT was seen acting (a reservation, a changed cache mode): lookups are not a no-op.
    pub(super) on: bool,
    pub(super) memtypes: MemtypeMap,
    pub(super) lookups: IdMap<u64, Cache>,
    /// A pfnmap_untrack with a visible memtype_free was seen: the call is not inlined here.
    pub(super) untrack_frees_seen: bool,
    /// Per driver, the PFN inserts of device memory no reservation covers.
    pub(super) unreserved: Vec<UnreservedInserts>,
}

/// A driver's inserts of device memory that no reservation covers: each one's PAT lookup walks
/// the memtype tree for nothing, and maps UC-.
#[derive(Clone, Debug)]
pub(super) struct UnreservedInserts {
    pub(super) driver: Option<Sym>,
    pub(super) lookups: u64,
    pub(super) lookup_ns: u64,
    /// Latency of the faults they ran in, each fault once.
    pub(super) fault_ns: u64,
    pub(super) last_tree: u64,
    /// (seq, id) of the first lookup.
    pub(super) first: (u64, u64),
}

impl PatState {
    /// PAT as the start state shows it: its memtype tree, and PAT on if the tree was there
    /// (debugfs lists it only when PAT is enabled).
    pub(super) fn from_meta(meta: &TraceMeta) -> PatState {
        match meta.start_state.as_ref().and_then(|s| s.memtypes.as_ref()) {
            Some(spans) => PatState {
                on: true,
                memtypes: MemtypeMap::from_start(spans.iter().map(|s| Entry {
                    start: s.start_pfn,
                    end: s.end_pfn,
                    cache: s.cache,
                    owner: Owner::Before,
                    seq: 0,
                })),
                ..PatState::default()
            },
            None => PatState::default(),
        }
    }

    /// A reservation changed: what lookups answered for these pages no longer holds.
    pub(super) fn forget_lookups(&mut self, start: u64, n: u64) {
        if n <= 4096 {
            for p in start..start.saturating_add(n) {
                self.lookups.remove(&p);
            }
        } else {
            self.lookups
                .retain(|p, _| *p < start || *p >= start.saturating_add(n));
        }
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct VmaState {
    /// Flags a later snapshot of this vma must show, and the seq that made them due.
    pub(super) must_flags: u64,
    pub(super) must_pgoff: Option<u64>,
    pub(super) due_seq: u64,
    /// A whole-vma remap of it was seen (and whether it reserved PAT memory).
    pub(super) tracked_in_trace: bool,
    pub(super) reserved_in_trace: bool,
    pub(super) untracked: bool,
}

impl VmaState {
    /// Whether a later snapshot of the vma has something to show.
    pub(super) fn due(&self) -> bool {
        self.must_flags != 0 || self.must_pgoff.is_some()
    }
}

/// Vmas by trace id.
#[derive(Default)]
pub(super) struct Vmas {
    pub(super) map: IdMap<u32, VmaState>,
    /// Vmas with something [`Model::vma_due`] must check.
    pub(super) due: usize,
    /// Per task, the vma of its last untrack (unmap_single_vma untracks, then zaps).
    pub(super) last_untrack: IdMap<u32, u32>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct LastFault {
    pub(super) page: u64,
    pub(super) vma_lock: bool,
    pub(super) retry: bool,
    pub(super) called_driver: bool,
    pub(super) seq: u64,
    pub(super) id: u64,
}

/// Faults: the ones that failed, the last one per task, what drivers are known to lack.
#[derive(Default)]
pub(super) struct Faults {
    /// (vma id, vma start, page) of faults that failed, with their seq and result: no PTE may
    /// appear there before the next fault at that page.
    pub(super) failed: IdMap<(u32, u64, u64), (u64, u32)>,
    /// Per driver, whether its vm_ops lack ->map_pages. A handful of drivers: a scan by name
    /// beats hashing the name on every fault.
    pub(super) drivers: Vec<(Sym, bool)>,
    /// Per task.
    pub(super) last: IdMap<u32, LastFault>,
    /// Per task: the page of its last faults that returned NOPAGE with nothing mapped, how
    /// many in a row, and the seq of the first.
    pub(super) nopage: IdMap<u32, (u64, u32, u64)>,
}

impl Faults {
    /// Whether `drv` is known to lack ->map_pages (None: not known yet).
    pub(super) fn lacks_map_pages(&self, drv: Sym) -> Option<bool> {
        let l = &self.drivers;
        l.iter()
            .find(|(d, _)| d.same(&drv))
            .or_else(|| l.iter().find(|(d, _)| *d == drv))
            .map(|&(_, v)| v)
    }

    /// The failed fault recorded at (vma id, vma start, page), forgotten. Every fault and
    /// every vm_normal_page asks, and the map is nearly always empty: checked first, since
    /// hashing the key was most of the lookup.
    #[inline]
    pub(super) fn take_failed(&mut self, key: (u32, u64, u64)) -> Option<(u64, u32)> {
        if self.failed.is_empty() {
            None
        } else {
            self.failed.remove(&key)
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct ForkCopy {
    pub(super) ptes: Vec<(u64, Pte)>,
}

/// PTEs forks copied, waiting for the child to show up.
#[derive(Default)]
pub(super) struct Forks {
    /// By parent pid, until the fork tracepoint names the child.
    pub(super) pending: IdMap<u32, Vec<ForkCopy>>,
    /// By child pid, until the child's first call.
    pub(super) child_pending: IdMap<u32, Vec<ForkCopy>>,
    /// A pid last looked up in `child_pending` and not there: trees come in runs from one
    /// process, and a forked child that never runs kept every tree asking for nothing.
    pub(super) not_child: Option<u32>,
}

impl Forks {
    /// The PTEs a fork copied into child `pid`, if it has not run since.
    pub(super) fn take_child_pending(&mut self, pid: u32) -> Option<Vec<ForkCopy>> {
        let copies = self.child_pending.remove(&pid);
        if copies.is_none() {
            self.not_child = Some(pid);
        }
        copies
    }
}

impl<S: Sink> Model<S> {
    /// Installs a PTE; a special PTE whose pfn another one maps with a different cache mode
    /// is an alias finding.
    pub(super) fn install(&mut self, sp: u64, page: u64, p: Pte, r: Rec<'_>) {
        if let (Some(oc), Some((pfn, c))) = (self.ptes.install(sp, page, p), p.alias()) {
            self.find(
                Rule::FindAlias,
                &[r],
                r.driver(),
                || format!("one pfn mapped with two cache modes: pfn {pfn:#x} mapped {} here and {} elsewhere", c.name(), oc.name()),
            );
        }
    }

    /// Whether `n` pages from `start` are known not to be RAM.
    pub(super) fn known_nonram(&self, start: u64, n: u64) -> bool {
        // The memtype tree holds only non-RAM ranges (RAM keeps its type in page flags); a
        // driver's own reservation may be RAM's page flags where the trace does not say where
        // RAM is, so only those of mappings and of the start state count.
        self.mem.nonram(start, n)
            || self
                .pats
                .memtypes
                .covering(start, start.saturating_add(n))
                .any(|e| !matches!(e.owner, Owner::Other | Owner::Process { .. }))
    }
}
