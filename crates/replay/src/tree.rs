//! Call trees reassembled from a trace's `parent` links.
//!
//! The tracer emits a call when it returns, so children reach the file before their parent; a
//! tracer that sorts by entry time would put them after. Both work: a tree is released once a
//! record that entered after the root returned has been read (or at the end), and a child may
//! attach to its parent whichever arrives first.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, hash_map::Entry};
use std::ops::Range;
use std::rc::Rc;

use pfnscope_abi::Hook;
use pfnscope_trace::{Rec, Record, Rows};

use crate::IdMap;

/// Where a call's fields are.
#[derive(Debug)]
enum Src {
    /// A row of a batch read from a file, read in place: building a ~0.5 KB record of every
    /// row and moving it into its tree was over 40% of `replay check`'s time.
    Row(Rc<Rows>, u32),
    /// A record built in memory (tests, mutants), or a row moved out of a batch that had to
    /// be let go (see [`Feed::retire`]).
    Record(Box<Record>),
}

impl Src {
    #[inline]
    fn rec(&self) -> Rec<'_> {
        match self {
            Src::Row(rows, i) => Rec::Row(rows, *i as usize),
            Src::Record(r) => Rec::Record(r),
        }
    }
}

/// One call of a reassembled tree.
#[derive(Debug)]
pub struct Node {
    src: Src,
    /// None: a hook this build does not know.
    pub hook: Option<Hook>,
    /// Where this node's children are in [`Tree::kid_list`]; see [`Tree::kids`].
    kids: Range<usize>,
}

impl Node {
    /// The call's fields.
    #[inline]
    pub fn rec(&self) -> Rec<'_> {
        self.src.rec()
    }
}

/// A root call with everything that ran inside it; `nodes[0]` is the root.
#[derive(Debug, Default)]
pub struct Tree {
    pub nodes: Vec<Node>,
    /// Every node's children, one run per node: one list per tree instead of a vector per
    /// parent node.
    kid_list: Vec<usize>,
}

impl Tree {
    pub(crate) fn clear(&mut self) {
        self.nodes.clear();
        self.kid_list.clear();
    }

    /// Indices into [`Tree::nodes`] of node `i`'s children, in entry order.
    #[inline]
    pub fn kids(&self, i: usize) -> &[usize] {
        &self.kid_list[self.nodes[i].kids.clone()]
    }

    /// The first child of node `i` whose hook satisfies `pred`.
    pub fn kid(&self, i: usize, pred: impl Fn(Hook) -> bool) -> Option<usize> {
        self.kids(i)
            .iter()
            .copied()
            .find(|&k| self.nodes[k].hook.is_some_and(&pred))
    }
}

/// No slot: the end of a child list.
const NONE: u32 = u32::MAX;

/// Deepest nesting a tree keeps. Probed kernel calls nest a few levels (a fault, the driver's
/// insert, PAT's lookup); a longer chain of parent links can only come from a corrupt or
/// crafted trace, and walking it recursively overflowed the stack. Deeper calls are cut off
/// into trees of their own, reported as [`Orphan::TooDeep`].
pub const MAX_DEPTH: usize = 64;

/// Why a tree came out of [`Assembler::orphans`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Orphan {
    /// Its root's parent never appeared.
    NoParent,
    /// Its root was nested [`MAX_DEPTH`] calls deep and cut off its parent's tree.
    TooDeep,
    /// No root reaches it: its chain of parent links loops. Taken alone, one call per tree.
    Loop,
}

/// A call read and not yet taken into a tree. Its fields are read where they are: moving a
/// whole slot out to read its id stalled on store forwarding (a tenth of the replay's cycles).
struct Slot {
    /// None: a free slot.
    src: Option<Src>,
    hook: Option<Hook>,
    /// What reassembly reads of the call, kept here rather than read from its row again.
    id: u64,
    ts: u64,
    seq: u64,
    /// Children are a list linked through their `next`, latest first: no vector per parent.
    first_kid: u32,
    next: u32,
}

impl Slot {
    const FREE: Slot = Slot {
        src: None,
        hook: None,
        id: 0,
        ts: 0,
        seq: 0,
        first_kid: NONE,
        next: NONE,
    };
}

#[derive(Clone, Copy)]
struct Link {
    /// The call's slot once it is read, if children were waiting for it then; NONE before.
    slot: u32,
    /// Head of the list of children read before it, or (when the call was read first and has
    /// no entry) after it.
    waiting: u32,
}

/// Streaming tree reassembly.
#[derive(Default)]
pub struct Assembler {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// By call id, only for calls that have children: the children read before their parent,
    /// then the parent's slot. Most calls are leaves, and inserting and removing each one's
    /// id for nothing was a tenth of reassembly. A child read after its parent (a trace in
    /// entry order) waits here too, and joins the parent when the parent is taken.
    links: IdMap<u64, Link>,
    roots: BinaryHeap<Reverse<(u64, u64, u32)>>,
    /// Latest entry time read so far.
    watermark: u64,
    /// Children being taken into a tree, deepest call's last.
    scratch: Vec<u32>,
    /// Calls cut off a tree at [`MAX_DEPTH`], taken as trees of their own at the end.
    cut: Vec<u32>,
}

impl Assembler {
    /// A free slot. The caller fills it field by field: a whole `Slot` handed over was read
    /// back in 16-byte pieces from the 8-byte stores that built it, which the CPU cannot
    /// forward, and stalled on every call.
    #[inline]
    fn alloc(&mut self) -> u32 {
        match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::FREE);
                (self.slots.len() - 1) as u32
            }
        }
    }

    pub fn push(&mut self, rec: Record, hook: Option<Hook>) {
        self.push_src(Src::Record(Box::new(rec)), hook);
    }

    /// Row `i` of `rows`, read where it is.
    #[inline]
    pub fn push_row(&mut self, rows: &Rc<Rows>, i: usize, hook: Option<Hook>) {
        self.push_src(Src::Row(rows.clone(), i as u32), hook);
    }

    #[inline(always)]
    fn push_src(&mut self, src: Src, hook: Option<Hook>) {
        let r = src.rec();
        let (id, parent, ts, seq) = (r.id(), r.parent(), r.ts_ns(), r.seq());
        let exit = ts.saturating_add(r.latency_ns().unwrap_or(0));
        let slot = self.alloc();
        let x = &mut self.slots[slot as usize];
        x.src = Some(src);
        (x.hook, x.id, x.ts, x.seq) = (hook, id, ts, seq);
        (x.first_kid, x.next) = (NONE, NONE);
        if id != 0
            && let Some(l) = self.links.get_mut(&id)
        {
            l.slot = slot;
            let kids = std::mem::replace(&mut l.waiting, NONE);
            self.slot(slot).first_kid = kids;
        }
        if parent != 0 && parent != id {
            let l = self.links.entry(parent).or_insert(Link {
                slot: NONE,
                waiting: NONE,
            });
            let head = match l.slot {
                NONE => &mut l.waiting,
                p => &mut self.slots[p as usize].first_kid,
            };
            let next = std::mem::replace(head, slot);
            self.slot(slot).next = next;
        } else {
            self.roots.push(Reverse((exit, seq, slot)));
        }
        self.watermark = self.watermark.max(ts);
    }

    /// The next tree whose root returned before anything read so far entered; [`Feed`] uses
    /// `pop_ready_into` instead, to reuse the tree and its records' boxes.
    #[cfg(test)]
    pub fn pop_ready(&mut self) -> Option<Tree> {
        let mut t = Tree::default();
        self.pop_ready_into(&mut t).then_some(t)
    }

    /// The next tree whose root returned before anything read so far entered, into a tree the
    /// caller reuses: its node list is not allocated again.
    #[inline]
    pub fn pop_ready_into(&mut self, tree: &mut Tree) -> bool {
        let Some(&Reverse((exit, _, slot))) = self.roots.peek() else {
            return false;
        };
        if exit >= self.watermark {
            return false;
        }
        self.roots.pop();
        tree.clear();
        self.take_into(slot, tree, 1);
        true
    }

    /// Every remaining root tree, in return order.
    pub fn pop_any(&mut self) -> Option<Tree> {
        let Reverse((_, _, slot)) = self.roots.pop()?;
        Some(self.take(slot))
    }

    /// Children whose parent never appeared, then calls cut off too deep a tree, then calls
    /// no root reaches, each as a tree of its own, in entry order. Call it once, at the end,
    /// after [`Assembler::pop_any`] has taken every root.
    pub fn orphans(&mut self) -> Vec<(Tree, Orphan)> {
        // Children read after a parent that is still here are its own, not orphans.
        let read_first: Vec<(u64, u32)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.src.is_some())
            .map(|(i, s)| (s.id, i as u32))
            .collect();
        for (id, slot) in read_first {
            let late = self.unlink(id, slot);
            let kids = self.slot(slot).first_kid;
            let joined = self.join(late, kids);
            self.slot(slot).first_kid = joined;
        }
        let heads: Vec<u32> = self
            .links
            .drain()
            .map(|(_, l)| l.waiting)
            .filter(|&h| h != NONE)
            .collect();
        let mut slots = vec![];
        for head in heads {
            self.list(head, &mut slots);
        }
        self.sort_by_entry(&mut slots);
        let mut out: Vec<_> = slots
            .into_iter()
            .map(|s| (self.take(s), Orphan::NoParent))
            .collect();
        // Taking a cut-off call may cut again, deeper down.
        while !self.cut.is_empty() {
            let mut cut = std::mem::take(&mut self.cut);
            self.sort_by_entry(&mut cut);
            out.extend(cut.into_iter().map(|s| (self.take(s), Orphan::TooDeep)));
        }
        // What is left is neither a root nor below one: parent links that loop.
        let mut left: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&s| self.slots[s as usize].src.is_some())
            .collect();
        self.sort_by_entry(&mut left);
        for &s in &left {
            let slot = self.slot(s);
            (slot.first_kid, slot.next) = (NONE, NONE);
        }
        out.extend(left.into_iter().map(|s| (self.take(s), Orphan::Loop)));
        out
    }

    fn take(&mut self, root: u32) -> Tree {
        let mut tree = Tree::default();
        self.take_into(root, &mut tree, 1);
        tree
    }

    #[inline]
    fn slot(&mut self, s: u32) -> &mut Slot {
        let x = &mut self.slots[s as usize];
        assert!(x.src.is_some(), "linked slots are live");
        x
    }

    /// Drops the link of call `id`, read into `slot`, and returns the children read after it
    /// (NONE if none). An entry of another call with the same id (a damaged trace) stays.
    #[inline]
    fn unlink(&mut self, id: u64, slot: u32) -> u32 {
        if id == 0 {
            return NONE;
        }
        let Entry::Occupied(l) = self.links.entry(id) else {
            return NONE;
        };
        match l.get().slot {
            // Nothing waits on a call that has been read: its children went to its slot.
            x if x == slot => {
                l.remove();
                NONE
            }
            // Children read after it.
            NONE => l.remove().waiting,
            _ => NONE,
        }
    }

    /// List `a` followed by list `b`.
    #[inline]
    fn join(&mut self, a: u32, b: u32) -> u32 {
        if a == NONE {
            return b;
        }
        let mut tail = a;
        loop {
            let next = self.slot(tail).next;
            if next == NONE {
                break;
            }
            tail = next;
        }
        self.slot(tail).next = b;
        a
    }

    /// Appends the slots of the list starting at `head` to `out`.
    fn list(&self, mut head: u32, out: &mut Vec<u32>) {
        while head != NONE {
            out.push(head);
            head = self.slots[head as usize].next;
        }
    }

    fn sort_by_entry(&self, slots: &mut [u32]) {
        slots.sort_by_key(|&k| {
            let s = &self.slots[k as usize];
            (s.ts, s.seq)
        });
    }

    /// Every call still waiting that is a row of `rows` becomes a record of its own, so that
    /// the batch can be let go.
    pub(crate) fn evacuate(&mut self, rows: &Rc<Rows>) {
        for s in &mut self.slots {
            if let Some(Src::Row(r, i)) = &s.src
                && Rc::ptr_eq(r, rows)
            {
                s.src = Some(Src::Record(Box::new(r.record(*i as usize))));
            }
        }
    }

    /// Moves `slot` and, down to [`MAX_DEPTH`], everything inside it into `tree`; `depth` is
    /// the slot's own (the root's is 1).
    fn take_into(&mut self, slot: u32, tree: &mut Tree, depth: usize) -> usize {
        let s = &mut self.slots[slot as usize];
        let src = s.src.take().expect("a slot is taken once");
        let (id, hook, mut first_kid) = (s.id, s.hook, s.first_kid);
        self.free.push(slot);
        let late = self.unlink(id, slot);
        first_kid = self.join(late, first_kid);
        let idx = tree.nodes.len();
        // Most calls are leaves: no child list to sort, no run of `kid_list`.
        if first_kid == NONE {
            tree.nodes.push(Node {
                src,
                hook,
                kids: 0..0,
            });
            return idx;
        }
        if depth >= MAX_DEPTH {
            let kids = std::mem::replace(&mut first_kid, NONE);
            let mut cut = std::mem::take(&mut self.cut);
            self.list(kids, &mut cut);
            self.cut = cut;
        }
        // The children go to the end of `scratch` (deeper calls use what is past them), and
        // this node's run of `kid_list` is reserved before any child adds its own.
        let base = self.scratch.len();
        let mut kids = std::mem::take(&mut self.scratch);
        self.list(first_kid, &mut kids);
        self.sort_by_entry(&mut kids[base..]);
        self.scratch = kids;
        let n = self.scratch.len() - base;
        let at = tree.kid_list.len();
        tree.kid_list.resize(at + n, 0);
        tree.nodes.push(Node {
            src,
            hook,
            kids: at..at + n,
        });
        for j in 0..n {
            let k = self.scratch[base + j];
            tree.kid_list[at + j] = self.take_into(k, tree, depth + 1);
        }
        self.scratch.truncate(base);
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, id: u64, parent: u64, ts: u64, lat: u64, hook: &str) -> Record {
        Record {
            seq,
            id,
            parent,
            ts_ns: ts,
            latency_ns: Some(lat),
            hook: hook.into(),
            ..Default::default()
        }
    }

    fn shape(t: &Tree) -> Vec<(u64, Vec<u64>)> {
        t.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.rec().id(),
                    t.kids(i).iter().map(|&k| t.nodes[k].rec().id()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn reassembly_table() {
        // A fault (id 1) with an insert (2) that has a lookup (3), then an unrelated root (4).
        let fault = rec(0, 1, 0, 100, 50, "handle_mm_fault");
        let ins = rec(0, 2, 1, 110, 30, "vmf_insert_pfn_prot");
        let look = rec(0, 3, 2, 115, 5, "track_pfn_insert");
        let later = rec(0, 4, 0, 200, 5, "memtype_free");
        let want = vec![(1, vec![2]), (2, vec![3]), (3, vec![])];
        // (name, arrival order)
        let rows: Vec<(&str, Vec<Record>)> = vec![
            ("exit order (the tracer's)", vec![look, ins, fault, later]),
            ("entry order", vec![fault, ins, look, later]),
            ("mixed", vec![ins, fault, look, later]),
        ];
        for (name, order) in rows {
            let mut a = Assembler::default();
            let mut trees = Vec::new();
            for r in order {
                let h = Hook::parse(&r.hook);
                a.push(r, h);
                while let Some(t) = a.pop_ready() {
                    trees.push(t);
                }
            }
            while let Some(t) = a.pop_any() {
                trees.push(t);
            }
            assert_eq!(trees.len(), 2, "{name}");
            assert_eq!(shape(&trees[0]), want, "{name}");
            assert!(a.orphans().is_empty(), "{name}");
        }
    }

    #[test]
    fn missing_parent_leaves_an_orphan() {
        let mut a = Assembler::default();
        a.push(
            rec(0, 5, 99, 10, 1, "memtype_free"),
            Some(Hook::MemtypeFree),
        );
        assert!(a.pop_any().is_none());
        let o = a.orphans();
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].0.nodes[0].rec().id(), 5);
        assert_eq!(o[0].1, Orphan::NoParent);
    }

    /// In entry order a call is read before its children; when the call is itself an
    /// orphan, those children still come out in its tree, not as orphans of their own.
    #[test]
    fn an_orphan_read_before_its_children_keeps_them() {
        let mut a = Assembler::default();
        a.push(
            rec(0, 5, 99, 10, 50, "handle_mm_fault"),
            Some(Hook::HandleMmFault),
        );
        a.push(
            rec(1, 6, 5, 20, 5, "vmf_insert_pfn"),
            Some(Hook::VmfInsertPfn),
        );
        a.push(
            rec(2, 7, 5, 30, 5, "vmf_insert_pfn"),
            Some(Hook::VmfInsertPfn),
        );
        assert!(a.pop_any().is_none());
        let o = a.orphans();
        assert_eq!(
            o.len(),
            1,
            "{:?}",
            o.iter().map(|(t, _)| shape(t)).collect::<Vec<_>>()
        );
        assert_eq!(shape(&o[0].0), [(5, vec![6, 7]), (6, vec![]), (7, vec![])]);
        assert_eq!(o[0].1, Orphan::NoParent);
    }

    fn depth(t: &Tree) -> usize {
        let mut deepest = 0;
        let mut stack = vec![(0, 1)];
        while let Some((i, d)) = stack.pop() {
            deepest = deepest.max(d);
            stack.extend(t.kids(i).iter().map(|&k| (k, d + 1)));
        }
        deepest
    }

    /// A chain of parent links far deeper than calls nest, children first as the tracer
    /// writes them: no stack overflow, and every call comes out once, the first MAX_DEPTH in
    /// the root's tree and the rest in cut-off trees of at most MAX_DEPTH.
    #[test]
    fn too_deep_a_chain_is_cut_into_trees() {
        let n = 200_000u64;
        let mut a = Assembler::default();
        for i in 0..n {
            let (id, parent) = (i + 1, if i + 1 < n { i + 2 } else { 0 });
            a.push(
                rec(i, id, parent, 10 * (n - i), 1 + i, "handle_mm_fault"),
                Some(Hook::HandleMmFault),
            );
        }
        a.push(
            rec(n, n + 1, 0, 100 * n, 1, "handle_mm_fault"),
            Some(Hook::HandleMmFault),
        );
        let root = a
            .pop_ready()
            .expect("the chain's root returned before the last entry");
        assert_eq!(root.nodes[0].rec().id(), n);
        assert_eq!(root.nodes.len(), MAX_DEPTH);
        assert_eq!(a.pop_any().map(|t| t.nodes[0].rec().id()), Some(n + 1));
        let o = a.orphans();
        assert!(
            o.iter()
                .all(|(t, why)| *why == Orphan::TooDeep && depth(t) <= MAX_DEPTH)
        );
        let calls: usize = o.iter().map(|(t, _)| t.nodes.len()).sum();
        assert_eq!(calls + root.nodes.len(), n as usize);
    }

    /// Two calls each other's parent (and a child of one of them) are no one's tree: they
    /// still come out, each alone, instead of vanishing.
    #[test]
    fn looping_parent_links_come_out_alone() {
        let mut a = Assembler::default();
        a.push(
            rec(0, 3, 1, 12, 1, "vmf_insert_pfn"),
            Some(Hook::VmfInsertPfn),
        );
        a.push(
            rec(1, 1, 2, 10, 5, "handle_mm_fault"),
            Some(Hook::HandleMmFault),
        );
        a.push(
            rec(2, 2, 1, 11, 5, "handle_mm_fault"),
            Some(Hook::HandleMmFault),
        );
        assert!(a.pop_any().is_none());
        let o = a.orphans();
        let ids: Vec<_> = o
            .iter()
            .map(|(t, why)| (t.nodes.len(), t.nodes[0].rec().id(), *why))
            .collect();
        assert_eq!(
            ids,
            [
                (1, 1, Orphan::Loop),
                (1, 2, Orphan::Loop),
                (1, 3, Orphan::Loop)
            ]
        );
    }
}
