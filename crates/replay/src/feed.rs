//! What every consumer of a trace shares: rows in, hooks told apart, calls counted, trees out.

use std::collections::VecDeque;
use std::rc::Rc;

use pfnscope_abi::Hook;
use pfnscope_trace::{Record, Rows};

use crate::hook::HookCache;
use crate::tree::{Assembler, Orphan, Tree};

/// What a consumer of a trace does with what [`Feed`] hands it.
pub trait Consumer {
    /// A call of `hook` was taken, before any tree it completes.
    fn call(&mut self, hook: Option<Hook>);
    /// A complete tree.
    fn tree(&mut self, t: &Tree);
}

/// Rows past which a batch with calls still waiting on their parent is let go: those calls
/// are moved out into records of their own (see [`Feed::retire`]). Without a bound, a trace
/// with a straggler in every batch (a call whose parent was lost) would keep every batch.
pub(crate) const HELD_ROWS: usize = 1 << 17;

/// What every consumer of a trace does with its records: tells hooks apart, counts calls,
/// reassembles trees and hands each finished one over, in one reused tree.
#[derive(Default)]
pub struct Feed {
    asm: Assembler,
    hooks: HookCache,
    tree: Tree,
    events: u64,
    /// Batches some of whose calls may still be waiting in the assembler, oldest first, and
    /// their rows in all.
    held: VecDeque<Rc<Rows>>,
    held_rows: usize,
    /// Every batch taken, to count those still alive.
    #[cfg(test)]
    seen: Vec<std::rc::Weak<Rows>>,
}

impl Feed {
    /// Takes a record built in memory.
    pub fn push(&mut self, rec: Record, c: &mut impl Consumer) {
        let hook = self.hooks.get(&rec.hook);
        self.events += 1;
        self.asm.push(rec, hook);
        c.call(hook);
        self.ready(c);
    }

    /// Takes every row of a batch read from a file, in place.
    pub fn push_rows(&mut self, rows: Rows, c: &mut impl Consumer) {
        let rows = Rc::new(rows);
        #[cfg(test)]
        self.seen.push(Rc::downgrade(&rows));
        for i in 0..rows.len() {
            let hook = self.hooks.get(&rows.hook(i));
            self.events += 1;
            self.asm.push_row(&rows, i, hook);
            c.call(hook);
            self.ready(c);
        }
        self.retire(rows);
    }

    fn ready(&mut self, c: &mut impl Consumer) {
        while self.asm.pop_ready_into(&mut self.tree) {
            c.tree(&self.tree);
        }
    }

    /// Lets go of the batches no waiting call is a row of, oldest first; past [`HELD_ROWS`],
    /// the oldest one's waiting calls are moved out of it first.
    fn retire(&mut self, rows: Rc<Rows>) {
        // Its calls have been processed; it only holds their batches.
        self.tree.clear();
        self.held_rows += rows.len();
        self.held.push_back(rows);
        while let Some(front) = self.held.front() {
            if Rc::strong_count(front) > 1 {
                if self.held_rows <= HELD_ROWS || self.held.len() == 1 {
                    break;
                }
                self.asm.evacuate(front);
                debug_assert_eq!(Rc::strong_count(front), 1);
            }
            if let Some(f) = self.held.pop_front() {
                self.held_rows -= f.len();
            }
        }
    }

    /// At the end: every remaining tree to `f`, then the orphans with why they are orphans.
    pub fn finish(mut self, mut f: impl FnMut(&Tree, Option<Orphan>)) {
        while let Some(t) = self.asm.pop_any() {
            f(&t, None);
        }
        for (t, why) in self.asm.orphans() {
            f(&t, Some(why));
        }
    }

    /// Calls taken so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Batches still in memory.
    #[cfg(test)]
    pub(crate) fn alive(&self) -> usize {
        self.seen.iter().filter(|w| w.strong_count() > 0).count()
    }
}
