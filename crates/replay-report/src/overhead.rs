//! `replay overhead --json`: where fault time goes, per page and per driver, and what the
//! tracer costs.

use std::borrow::Cow;

use pfnscope_trace::DamageReport;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeCost {
    /// Part of a call's own latency that is probe (upper bound).
    pub in_window_ns: u64,
    /// Whole cost one nested probed call adds to its parent's latency.
    pub per_nested_call_ns: u64,
    /// How the numbers were obtained.
    pub basis: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PageRow {
    /// `pfn` for PFN mappings, `vpage` (mm id, virtual page) otherwise.
    pub kind: Cow<'static, str>,
    pub page: u64,
    pub mm: Option<u32>,
    pub driver: Option<String>,
    pub faults: u64,
    pub total_ns: u64,
    pub mean_ns: u64,
    pub insert_ns: u64,
    pub pat_ns: u64,
    pub insert_share: f64,
    pub pat_share: f64,
    /// Total with the tracer's estimated cost subtracted.
    pub corrected_total_ns: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DriverRow {
    pub driver: Option<String>,
    pub faults: u64,
    pub pages: u64,
    pub total_ns: u64,
    pub mean_ns: u64,
    pub insert_ns: u64,
    pub pat_ns: u64,
    pub corrected_total_ns: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OverheadReport {
    /// [`crate::OVERHEAD_SCHEMA`].
    pub schema: Cow<'static, str>,
    pub trace: String,
    pub events: u64,
    pub faults: u64,
    pub faults_without_latency: u64,
    pub probe_cost: ProbeCost,
    pub top: Vec<PageRow>,
    /// Pages faulted on, all of them (`top` lists the costliest).
    pub pages: u64,
    pub drivers: Vec<DriverRow>,
    /// Set when the trace file is not whole: the class, what was read and what was lost.
    pub damage: Option<DamageReport>,
}

impl OverheadReport {
    pub fn to_human(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "trace: {} ({} events, {} faults, {} pages)",
            self.trace, self.events, self.faults, self.pages
        );
        if let Some(d) = &self.damage {
            let _ = writeln!(s, "damaged: {d}");
        }
        if self.faults_without_latency > 0 {
            let _ = writeln!(
                s,
                "{} faults have no latency (tracepoint-only hooks) and are left out",
                self.faults_without_latency
            );
        }
        let p = &self.probe_cost;
        let _ = writeln!(
            s,
            "tracer cost: ~{} ns inside each call, ~{} ns per nested probed call\n  ({})",
            p.in_window_ns, p.per_nested_call_ns, p.basis
        );
        let _ = writeln!(s, "\nTOP PAGES");
        let _ = writeln!(
            s,
            "  {:<5} {:>14} {:>6} {:>12} {:>9} {:>7} {:>7} {:>12}  driver",
            "kind", "page", "faults", "total ns", "mean ns", "insert", "PAT", "corrected"
        );
        for r in &self.top {
            let _ = writeln!(
                s,
                "  {:<5} {:>#14x} {:>6} {:>12} {:>9} {:>6.1}% {:>6.1}% {:>12}  {}",
                r.kind,
                r.page,
                r.faults,
                r.total_ns,
                r.mean_ns,
                r.insert_share * 100.0,
                r.pat_share * 100.0,
                r.corrected_total_ns,
                r.driver.as_deref().unwrap_or("-")
            );
        }
        let _ = writeln!(s, "\nPER DRIVER");
        for d in &self.drivers {
            let _ = writeln!(
                s,
                "  {:<32} {:>7} faults {:>6} pages {:>12} ns (mean {:>8}) insert {:>10} PAT {:>10} corrected {:>12}",
                d.driver.as_deref().unwrap_or("(anonymous)"),
                d.faults,
                d.pages,
                d.total_ns,
                d.mean_ns,
                d.insert_ns,
                d.pat_ns,
                d.corrected_total_ns
            );
        }
        s
    }
}
