//! Results: the sink the engine writes to ([`Results`]), and the report a CLI prints. The
//! report's JSON shape is declared once, in `replay_report`, which the analyzer reads it with.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::{Deref, DerefMut};

use replay_report::{CHECK_SCHEMA, CheckReport, CheckTotals};
pub use replay_report::{Losses, RuleTally};
use serde::Serialize;

use crate::rules::{Rule, RuleInfo};

/// Kernel != model.
pub type Divergence = replay_report::Divergence<Rule>;

/// One finding kind on one driver, with how often it happened.
pub type FindingGroup = replay_report::FindingGroup<Rule>;

/// A rule of the catalogue and its tally.
pub type RuleRow = replay_report::RuleRow<RuleInfo>;

/// Kernel == model, but worth a driver author's eye.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub rule: Rule,
    pub message: String,
    pub driver: Option<String>,
    pub seqs: Vec<u64>,
    pub ids: Vec<u64>,
    pub source: &'static str,
}

/// How one application of a rule ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Held,
    Failed,
    /// The rule applied but the trace lacks what decides it.
    NotCheckable,
}

/// Where the engine sends its results.
pub trait Sink {
    fn divergence(&mut self, d: Divergence);
    fn finding(&mut self, f: Finding);
    fn tally(&mut self, rule: Rule, outcome: Outcome);
    /// Counts a repeat of a finding already reported for this rule and driver and returns
    /// true, so the engine can skip building its message; false means "send it in full".
    fn repeat_finding(&mut self, _rule: Rule, _driver: Option<&str>) -> bool {
        false
    }
}

/// The sink a check run keeps its results in: everything, except that divergences past
/// `max_divergences` are only counted.
#[derive(Debug)]
pub struct Results {
    pub max_divergences: usize,
    pub divergences: Vec<Divergence>,
    pub divergences_total: u64,
    /// Grouped by rule and driver; the first occurrence's message is kept.
    pub findings: BTreeMap<(Rule, Option<String>), FindingGroup>,
    /// By `Rule as usize`: every check of every event lands here.
    pub tallies: [RuleTally; Rule::COUNT],
}

/// Divergences a report lists; past that they are only counted.
pub const MAX_LISTED: usize = 10_000;

/// Divergences of one rule the text report shows.
const SHOWN_PER_RULE: usize = 20;

impl Results {
    pub fn new() -> Results {
        Results {
            max_divergences: MAX_LISTED,
            divergences: Vec::new(),
            divergences_total: 0,
            findings: BTreeMap::new(),
            tallies: [RuleTally::default(); Rule::COUNT],
        }
    }
}

impl Default for Results {
    fn default() -> Results {
        Results::new()
    }
}

impl Sink for Results {
    fn divergence(&mut self, d: Divergence) {
        self.divergences_total += 1;
        if self.divergences.len() < self.max_divergences {
            self.divergences.push(d);
        }
    }

    fn repeat_finding(&mut self, rule: Rule, driver: Option<&str>) -> bool {
        // A driver that downgrades 768 pages shows once, with a count; few groups exist, so a
        // scan beats building an owned key for every repeat.
        match self
            .findings
            .iter_mut()
            .find(|((r, d), _)| *r == rule && d.as_deref() == driver)
        {
            Some((_, g)) => {
                g.count += 1;
                true
            }
            None => false,
        }
    }

    fn finding(&mut self, f: Finding) {
        let key = (f.rule, f.driver.clone());
        self.findings
            .entry(key)
            .and_modify(|g| g.count += 1)
            .or_insert(FindingGroup {
                rule: f.rule,
                driver: f.driver,
                count: 1,
                message: f.message,
                seqs: f.seqs,
                ids: f.ids,
                source: f.source.into(),
            });
    }

    fn tally(&mut self, rule: Rule, outcome: Outcome) {
        let t = &mut self.tallies[rule as usize];
        match outcome {
            Outcome::Held => t.held += 1,
            Outcome::Failed => t.failed += 1,
            Outcome::NotCheckable => t.not_checkable += 1,
        }
    }
}

/// The `replay check` report: the shared JSON shape ([`CheckReport`]) holding the rule
/// catalogue's own types. Its JSON form is documented in the crate docs.
#[derive(Clone, Debug, Serialize)]
#[serde(transparent)]
pub struct Report(pub CheckReport<Rule, RuleInfo>);

impl Deref for Report {
    type Target = CheckReport<Rule, RuleInfo>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Report {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Report {
    pub fn from_results(c: Results, head: ReportHead) -> Report {
        let rule_table: Vec<RuleRow> = Rule::ALL
            .iter()
            .map(|r| RuleRow {
                rule: r.info(),
                tally: c.tallies[*r as usize],
            })
            .collect();
        let checks = rule_table
            .iter()
            .map(|r| r.tally.held + r.tally.failed)
            .sum();
        let not_checkable: u64 = rule_table.iter().map(|r| r.tally.not_checkable).sum();
        let findings: Vec<FindingGroup> = c.findings.into_values().collect();
        Report(CheckReport {
            schema: CHECK_SCHEMA.into(),
            trace: head.trace,
            kernel_release: head.kernel_release,
            rules: head.rules,
            rules_note: head.rules_note,
            events: head.events,
            truncated: head.damage.as_ref().map(|d| d.to_string()),
            damage: head.damage.as_ref().map(Into::into),
            losses: head.losses,
            summary: CheckTotals {
                divergences: c.divergences_total,
                findings: findings.iter().map(|f| f.count).sum(),
                finding_groups: findings.len() as u64,
                checks,
                not_checkable,
                not_checkable_share: share(not_checkable, checks),
            },
            rule_table,
            divergences_omitted: c.divergences_total - c.divergences.len() as u64,
            divergences: c.divergences,
            findings,
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serialises")
    }

    pub fn to_human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "trace: {}  ({} events, kernel {}, rules {})",
            self.trace, self.events, self.kernel_release, self.rules
        );
        if let Some(n) = &self.rules_note {
            let _ = writeln!(s, "note: {n}");
        }
        if let Some(d) = &self.damage {
            let _ = writeln!(s, "damaged: {d}");
        }
        let l = &self.losses;
        if l.dropped + l.unpaired + l.read_failed > 0 {
            let _ = writeln!(
                s,
                "tracer losses: {} dropped, {} unpaired, {} vma reads failed (rules that need the lost events count as not checkable)",
                l.dropped, l.unpaired, l.read_failed
            );
        }
        let _ = writeln!(
            s,
            "{} divergences, {} findings in {} groups; {} checks made, {} not checkable ({:.2}%)",
            self.summary.divergences,
            self.summary.findings,
            self.summary.finding_groups,
            self.summary.checks,
            self.summary.not_checkable,
            100.0 * self.summary.not_checkable_share
        );
        if !self.divergences.is_empty() {
            let _ = writeln!(s, "\nDIVERGENCES (kernel != model)");
            // Grouped by rule in order of first appearance, the first few of each: one broken
            // assumption can fail thousands of times, and the text is for reading.
            let mut rules: Vec<Rule> = vec![];
            for d in &self.divergences {
                if !rules.contains(&d.rule) {
                    rules.push(d.rule);
                }
            }
            for rule in rules {
                let failed = self
                    .rule_table
                    .iter()
                    .find(|r| r.rule.id == rule.id())
                    .map_or(0, |r| r.tally.failed);
                let _ = writeln!(s, "  [{}] failed {failed}x: {}", rule.id(), rule.what());
                let _ = writeln!(s, "      source: {}", rule.source());
                let mine = self.divergences.iter().filter(|d| d.rule == rule);
                for d in mine.take(SHOWN_PER_RULE) {
                    let _ = writeln!(
                        s,
                        "    seq {:?}: expected {}; observed {}",
                        d.seqs, d.expected, d.observed
                    );
                }
                let more = failed.saturating_sub(SHOWN_PER_RULE as u64);
                if more > 0 {
                    let _ = writeln!(
                        s,
                        "    ... and {more} more (--json lists up to {MAX_LISTED} divergences in all)"
                    );
                }
            }
        }
        if !self.findings.is_empty() {
            let _ = writeln!(s, "\nFINDINGS (kernel == model, worth a look)");
            for f in &self.findings {
                let drv = f.driver.as_deref().unwrap_or("-");
                let _ = writeln!(
                    s,
                    "  [{}] x{} driver {}: {} (first at seq {:?})",
                    f.rule.id(),
                    f.count,
                    drv,
                    f.message,
                    f.seqs
                );
            }
        }
        let _ = writeln!(
            s,
            "\nRULES (held / failed / not checkable and its share; `replay rules ID` says what one checks)"
        );
        for r in self
            .rule_table
            .iter()
            .filter(|r| r.tally != RuleTally::default())
        {
            let t = r.tally;
            let _ = writeln!(
                s,
                "  {:<26} {:>8} {:>6} {:>8} {:>6.1}%",
                r.rule.id,
                t.held,
                t.failed,
                t.not_checkable,
                100.0 * share(t.not_checkable, t.held + t.failed)
            );
        }
        s
    }
}

/// `not_checkable` as a share of all applications of the rules (0 when there were none).
fn share(not_checkable: u64, checks: u64) -> f64 {
    let all = not_checkable + checks;
    if all == 0 {
        0.0
    } else {
        not_checkable as f64 / all as f64
    }
}

/// What the report says about the run itself.
#[derive(Clone, Debug, Default)]
pub struct ReportHead {
    pub trace: String,
    pub kernel_release: String,
    pub rules: String,
    pub rules_note: Option<String>,
    pub events: u64,
    pub damage: Option<pfnscope_trace::Damage>,
    pub losses: Losses,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diverge(c: &mut Results, rule: Rule, seq: u64) {
        c.tally(rule, Outcome::Failed);
        c.divergence(Divergence {
            rule,
            expected: "e".into(),
            observed: format!("o{seq}"),
            seqs: vec![seq],
            ids: vec![seq],
            source: rule.source().into(),
        });
    }

    /// The text groups divergences by rule, in order of first appearance, shows the first
    /// few of each and counts the rest, listed or not.
    #[test]
    fn text_report_groups_divergences_by_rule() {
        let mut c = Results::new();
        c.max_divergences = 30;
        diverge(&mut c, Rule::PatLookup, 0);
        for seq in 1..=40 {
            diverge(&mut c, Rule::TraceParent, seq);
        }
        let text = Report::from_results(
            c,
            ReportHead {
                trace: "t".into(),
                kernel_release: "6.12".into(),
                rules: "6.12".into(),
                rules_note: None,
                events: 41,
                damage: None,
                losses: Losses::default(),
            },
        )
        .to_human();
        let pat = text.find("[pat.lookup] failed 1x").expect(&text);
        let parent = text.find("[trace.parent] failed 40x").expect(&text);
        assert!(pat < parent, "{text}");
        assert_eq!(
            text.matches("observed o").count(),
            1 + SHOWN_PER_RULE,
            "{text}"
        );
        assert!(text.contains("observed o20\n") && !text.contains("observed o21\n"));
        assert!(text.contains("... and 20 more"), "{text}");
    }
}
