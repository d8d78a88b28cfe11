//! The replay engine: feeds a trace's calls through tree reassembly ([`crate::tree`]) into the
//! reference model ([`crate::model`]), and keeps the tracer's loss counters.

use std::collections::HashMap;

use pfnscope_abi::Hook;
use pfnscope_trace::{Rec, Record, Rows, TraceMeta};

use crate::feed::{Consumer, Feed};
use crate::kernel::KernelRules;
use crate::model::Model;
use crate::report::{Losses, Sink};
use crate::tree::Tree;

/// The model and the loss counters, fed by [`Feed`].
struct Run<S: Sink> {
    model: Model<S>,
    losses: HashMap<u32, (u64, u64, u64)>,
}

impl<S: Sink> Consumer for Run<S> {
    fn counters(&mut self, r: Rec<'_>) {
        // Cumulative per CPU: the last row wins.
        self.losses.insert(
            r.cpu(),
            (
                r.dropped().unwrap_or(0),
                r.unpaired().unwrap_or(0),
                r.read_failed().unwrap_or(0),
            ),
        );
    }

    #[inline]
    fn call(&mut self, hook: Option<Hook>) {
        if let Some(h) = hook {
            self.model.saw(h);
        }
    }

    #[inline]
    fn tree(&mut self, t: &Tree) {
        self.model.process(t);
    }
}

/// Feeds records in, sends results to the sink.
pub struct Engine<S: Sink> {
    feed: Feed,
    run: Run<S>,
}

impl<S: Sink> Engine<S> {
    pub fn new(meta: &TraceMeta, rules: KernelRules, sink: S) -> Engine<S> {
        Engine {
            feed: Feed::default(),
            run: Run {
                model: Model::new(meta, rules, sink),
                losses: HashMap::new(),
            },
        }
    }

    pub fn push(&mut self, rec: Record) {
        self.feed.push(rec, &mut self.run);
    }

    /// Every row of a batch read from a file.
    pub fn push_rows(&mut self, rows: Rows) {
        self.feed.push_rows(rows, &mut self.run);
    }

    pub fn push_all(&mut self, recs: impl IntoIterator<Item = Record>) {
        for r in recs {
            self.push(r);
        }
    }

    pub fn events(&self) -> u64 {
        self.feed.events()
    }

    pub fn losses(&self) -> Losses {
        let mut l = Losses::default();
        for (d, u, f) in self.run.losses.values() {
            l.dropped += d;
            l.unpaired += u;
            l.read_failed += f;
        }
        l
    }

    /// Drains what is left, runs the end-of-trace rules and hands the sink back.
    pub fn finish(mut self) -> (S, Losses, u64) {
        let losses = self.losses();
        let lossless = losses.dropped + losses.unpaired == 0;
        let events = self.feed.events();
        let model = &mut self.run.model;
        self.feed.finish(|t, orphan| {
            if let Some(why) = orphan {
                model.orphan(t, why, lossless);
            }
            model.process(t);
        });
        (self.run.model.finish(), losses, events)
    }
}
