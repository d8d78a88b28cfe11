//! The replay engine: feeds a trace's calls through tree reassembly ([`crate::tree`]) into the
//! reference model ([`crate::model`]).

use pfnscope_abi::Hook;
use pfnscope_trace::{LossCounters, Record, Rows, TraceMeta};

use crate::feed::{Consumer, Feed};
use crate::kernel::KernelRules;
use crate::model::Model;
use crate::report::{Losses, Sink};
use crate::tree::Tree;

/// The model, fed by [`Feed`].
struct Run<S: Sink> {
    model: Model<S>,
}

impl<S: Sink> Consumer for Run<S> {
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
    /// The tracer's final loss counters, summed over CPUs.
    losses: Losses,
}

impl<S: Sink> Engine<S> {
    pub fn new(meta: &TraceMeta, rules: KernelRules, sink: S) -> Engine<S> {
        Engine {
            feed: Feed::default(),
            run: Run {
                model: Model::new(meta, rules, sink),
            },
            losses: Losses::default(),
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

    /// The tracer's loss counters for the trace (its reader hands them out): calls whose
    /// parent never came are only a divergence where nothing was lost.
    pub fn set_losses(&mut self, counters: &LossCounters) {
        let t = counters.total();
        self.losses = Losses {
            dropped: t.dropped,
            unpaired: t.unpaired,
            read_failed: t.read_failed,
        };
    }

    pub fn losses(&self) -> Losses {
        self.losses.clone()
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
