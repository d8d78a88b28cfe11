//! `replay overhead`: where fault time goes, per page and per driver, and what the tracer costs.
//!
//! ## Estimating the tracer's own cost
//! A probed call's `latency_ns` runs from the ktime read in its entry program to the one in its
//! exit program, so it includes part of the probe (`c_in`: the rest of the entry program, the
//! trampoline, the start of the exit program) plus the body. A parent's latency also includes
//! every nested probed call's *whole* probe cost (`c_full`: both programs and the ring-buffer
//! write). Two minima bound these from the trace itself:
//! - `c_in` <= the smallest latency of any leaf call: a leaf with a near-empty body (an
//!   `untrack_pfn` on a vma without VM_PAT, a lookup with PAT off) makes it tight;
//! - `c_full - c_in` <= the smallest `parent - child` over parents with exactly one child
//!   (`vmf_insert_pfn` around `vmf_insert_pfn_prot` is such a wrapper).
//!
//! A call's corrected latency is `latency - c_in - descendants * c_full`. Both minima include
//! some real work, so the correction errs on the side of subtracting too little.

use std::collections::HashMap;

use pfnscope_trace::{Record, Rows};
use replay_report::{DriverRow, OVERHEAD_SCHEMA, OverheadReport, PageRow, ProbeCost};

use crate::IdMap;
use crate::feed::{Consumer, Feed};
use crate::tree::Tree;
use pfnscope_abi::{Hook, bits::PAGE_SHIFT};

#[derive(Default, Clone)]
struct Acc {
    kind: &'static str,
    mm: Option<u32>,
    driver: Option<String>,
    faults: u64,
    total: u64,
    insert: u64,
    pat: u64,
    nested: u64,
}

/// Streaming accumulator: push records, then [`Overhead::finish`].
#[derive(Default)]
pub struct Overhead {
    feed: Feed,
    tally: Tally,
}

/// What the finished trees add up to.
#[derive(Default)]
struct Tally {
    faults: u64,
    no_latency: u64,
    pages: IdMap<(u8, u32, u64), Acc>,
    min_leaf: Option<(u64, String)>,
    min_wrapper_gap: Option<(u64, String)>,
}

fn descendants(t: &Tree, i: usize) -> u64 {
    t.kids(i).iter().map(|&k| 1 + descendants(t, k)).sum()
}

impl Overhead {
    pub fn push(&mut self, r: Record) {
        self.feed.push(r, &mut self.tally);
    }

    /// Every row of a batch read from a file.
    pub fn push_rows(&mut self, rows: Rows) {
        self.feed.push_rows(rows, &mut self.tally);
    }

    pub fn finish(self, trace: &str, top: usize) -> OverheadReport {
        let events = self.feed.events();
        let mut tally = self.tally;
        self.feed.finish(|t, _| tally.tree(t));
        tally.report(trace, top, events)
    }
}

impl Consumer for Tally {
    fn call(&mut self, _: Option<Hook>) {}

    fn tree(&mut self, t: &Tree) {
        Tally::tree(self, t)
    }
}

impl Tally {
    fn tree(&mut self, t: &Tree) {
        for (i, n) in t.nodes.iter().enumerate() {
            let Some(lat) = n.rec().latency_ns() else {
                continue;
            };
            let kids = t.kids(i);
            if kids.is_empty() {
                if self.min_leaf.as_ref().is_none_or(|(m, _)| lat < *m) {
                    self.min_leaf = Some((lat, n.rec().hook().to_string()));
                }
            } else if kids.len() == 1
                && let Some(cl) = t.nodes[kids[0]].rec().latency_ns()
            {
                let gap = lat.saturating_sub(cl);
                if self.min_wrapper_gap.as_ref().is_none_or(|(m, _)| gap < *m) {
                    self.min_wrapper_gap = Some((
                        gap,
                        format!(
                            "{} around {}",
                            n.rec().hook(),
                            t.nodes[kids[0]].rec().hook()
                        ),
                    ));
                }
            }
            if n.hook == Some(Hook::HandleMmFault) {
                self.fault(t, i);
            }
        }
    }

    fn fault(&mut self, t: &Tree, i: usize) {
        let r = t.nodes[i].rec();
        self.faults += 1;
        let Some(lat) = r.latency_ns() else {
            self.no_latency += 1;
            return;
        };
        let (mut insert, mut pat, mut pfn) = (0u64, 0u64, None);
        let mut stack: Vec<(usize, bool)> = t.kids(i).iter().map(|&k| (k, false)).collect();
        while let Some((k, in_insert)) = stack.pop() {
            let n = &t.nodes[k];
            let l = n.rec().latency_ns().unwrap_or(0);
            let is_ins = n.hook.is_some_and(Hook::is_insert);
            if is_ins && !in_insert {
                insert = insert.saturating_add(l);
                if pfn.is_none()
                    && n.rec().address().map(|a| a >> PAGE_SHIFT)
                        == r.address().map(|a| a >> PAGE_SHIFT)
                {
                    pfn = n.rec().pfn();
                }
            }
            if n.hook.is_some_and(Hook::is_insert_lookup) {
                pat = pat.saturating_add(l);
            }
            stack.extend(t.kids(k).iter().map(|&c| (c, in_insert || is_ins)));
        }
        let key = match pfn {
            Some(p) => (0u8, 0u32, p),
            None => (
                1u8,
                r.mm_id().unwrap_or(r.pid()),
                r.address().unwrap_or(0) >> PAGE_SHIFT,
            ),
        };
        let a = self.pages.entry(key).or_insert_with(|| Acc {
            kind: if pfn.is_some() { "pfn" } else { "vpage" },
            mm: if pfn.is_some() { None } else { Some(key.1) },
            driver: r.driver().as_deref().map(String::from),
            ..Default::default()
        });
        a.faults += 1;
        a.total = a.total.saturating_add(lat);
        a.insert = a.insert.saturating_add(insert);
        a.pat = a.pat.saturating_add(pat);
        a.nested += descendants(t, i);
    }

    fn report(self, trace: &str, top: usize, events: u64) -> OverheadReport {
        let c_in = self.min_leaf.as_ref().map_or(0, |m| m.0);
        let gap = self.min_wrapper_gap.as_ref().map_or(0, |m| m.0);
        let c_full = c_in.saturating_add(gap);
        let basis = format!(
            "in-window cost <= min leaf latency {} ns ({}); nested call adds <= that + min wrapper gap {} ns ({})",
            c_in,
            self.min_leaf
                .as_ref()
                .map_or("no leaf calls", |m| m.1.as_str()),
            gap,
            self.min_wrapper_gap
                .as_ref()
                .map_or("no single-child calls", |m| m.1.as_str()),
        );
        let mut rows: Vec<PageRow> = self
            .pages
            .iter()
            .map(|(k, a)| {
                let cost = a
                    .faults
                    .saturating_mul(c_in)
                    .saturating_add(a.nested.saturating_mul(c_full));
                let corrected = a.total.saturating_sub(cost);
                PageRow {
                    kind: a.kind.into(),
                    page: k.2,
                    mm: a.mm,
                    driver: a.driver.clone(),
                    faults: a.faults,
                    total_ns: a.total,
                    mean_ns: a.total / a.faults.max(1),
                    insert_ns: a.insert,
                    pat_ns: a.pat,
                    insert_share: if a.total > 0 {
                        a.insert as f64 / a.total as f64
                    } else {
                        0.0
                    },
                    pat_share: if a.total > 0 {
                        a.pat as f64 / a.total as f64
                    } else {
                        0.0
                    },
                    corrected_total_ns: corrected,
                }
            })
            .collect();
        let mut drivers: HashMap<Option<String>, DriverRow> = HashMap::new();
        for p in &rows {
            let d = drivers
                .entry(p.driver.clone())
                .or_insert_with(|| DriverRow {
                    driver: p.driver.clone(),
                    ..Default::default()
                });
            d.faults += p.faults;
            d.pages += 1;
            d.total_ns = d.total_ns.saturating_add(p.total_ns);
            d.insert_ns = d.insert_ns.saturating_add(p.insert_ns);
            d.pat_ns = d.pat_ns.saturating_add(p.pat_ns);
            d.corrected_total_ns = d.corrected_total_ns.saturating_add(p.corrected_total_ns);
        }
        let mut drivers: Vec<DriverRow> = drivers.into_values().collect();
        for d in &mut drivers {
            d.mean_ns = d.total_ns / d.faults.max(1);
        }
        drivers.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.driver.cmp(&b.driver)));
        rows.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.page.cmp(&b.page)));
        let pages = rows.len();
        rows.truncate(top);
        OverheadReport {
            schema: OVERHEAD_SCHEMA.into(),
            trace: trace.into(),
            events,
            faults: self.faults,
            faults_without_latency: self.no_latency,
            probe_cost: ProbeCost {
                in_window_ns: c_in,
                per_nested_call_ns: c_full,
                basis,
            },
            top: rows,
            pages: pages as u64,
            drivers,
            damage: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::workload;
    use pfnscope_abi::kernel::Series;

    #[test]
    fn overhead_table() {
        // (series, fault rows with an insert are keyed by pfn)
        for series in [Series::V6_1, Series::V6_12, Series::V6_16] {
            let b = workload(series);
            let mut o = Overhead::default();
            for r in b.records() {
                o.push(r);
            }
            let rep = o.finish("t", 5);
            assert_eq!(rep.top.len(), 5, "{series}");
            let ttm = rep
                .drivers
                .iter()
                .find(|d| d.driver.as_deref() == Some("drm_gem_ttm_vm_ops [ttm]"))
                .expect("ttm row");
            // 8 faulting pages; on 6.12+ the VMA-lock attempts are separate, insert-less faults.
            assert_eq!(
                ttm.pages,
                if series == Series::V6_1 { 8 } else { 16 },
                "{series}"
            );
            assert!(
                ttm.insert_ns > 0 && ttm.pat_ns > 0 && ttm.pat_ns < ttm.insert_ns,
                "{series}"
            );
            assert!(ttm.corrected_total_ns < ttm.total_ns, "{series}");
            assert!(
                rep.probe_cost.in_window_ns > 0
                    && rep.probe_cost.per_nested_call_ns >= rep.probe_cost.in_window_ns
            );
            let pfn_rows = rep.top.iter().filter(|r| r.kind == "pfn").count();
            assert!(pfn_rows > 0, "{series}");
        }
    }
}
