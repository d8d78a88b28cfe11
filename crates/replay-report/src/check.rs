//! `replay check --json`.

use std::borrow::Cow;

use pfnscope_trace::DamageReport;
use serde::{Deserialize, Serialize};

/// The `replay check` report. `R` is a rule as the report names it (the replay's `Rule`, or its
/// id read back as a string), `I` a row of the rule catalogue (`id`, `kind`, `what`, `source`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
// Read with every field defaulted: the rule types need a default too.
#[serde(
    default,
    bound(deserialize = "R: Deserialize<'de> + Default, I: Deserialize<'de> + Default")
)]
pub struct CheckReport<R = String, I = RuleInfo> {
    /// [`crate::CHECK_SCHEMA`].
    pub schema: Cow<'static, str>,
    pub trace: String,
    pub kernel_release: String,
    /// The rule set replayed: `6.1`, `6.12` or `6.16+`.
    pub rules: String,
    /// Why the rule set is a guess, if it is.
    pub rules_note: Option<String>,
    /// Calls replayed.
    pub events: u64,
    /// Set when the trace file is not whole (cut short, truncated, corrupt): the class, what
    /// was replayed and what was lost.
    pub damage: Option<DamageReport>,
    /// The damage's message: what `pfnscope.replay.check/1` tools read.
    pub truncated: Option<String>,
    /// The tracer's final loss counters, summed over CPUs.
    pub losses: Losses,
    pub summary: CheckTotals,
    /// One row per rule, in catalogue order.
    pub rule_table: Vec<RuleRow<I>>,
    pub divergences: Vec<Divergence<R>>,
    /// Divergences counted but not listed (past the list's cap).
    pub divergences_omitted: u64,
    pub findings: Vec<FindingGroup<R>>,
}

/// Kernel != model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, bound(deserialize = "R: Deserialize<'de> + Default"))]
pub struct Divergence<R = String> {
    pub rule: R,
    /// What the model expected and what the trace shows, in words.
    pub expected: String,
    pub observed: String,
    /// `seq` (row numbers) of the events involved, the deciding event first.
    pub seqs: Vec<u64>,
    /// Their call ids.
    pub ids: Vec<u64>,
    /// The kernel source behind the rule.
    pub source: Cow<'static, str>,
}

/// One finding kind on one driver, with how often it happened.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, bound(deserialize = "R: Deserialize<'de> + Default"))]
pub struct FindingGroup<R = String> {
    pub rule: R,
    pub driver: Option<String>,
    pub count: u64,
    /// The first occurrence's message and events.
    pub message: String,
    pub seqs: Vec<u64>,
    pub ids: Vec<u64>,
    pub source: Cow<'static, str>,
}

/// How often a rule held, failed, or could not be decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuleTally {
    pub held: u64,
    pub failed: u64,
    pub not_checkable: u64,
}

/// A rule of the catalogue as a reader gets it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuleInfo {
    pub id: String,
    /// `divergence` or `finding`.
    pub kind: String,
    pub what: String,
    pub source: String,
}

/// A rule and its tally.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RuleRow<I = RuleInfo> {
    #[serde(flatten)]
    pub rule: I,
    #[serde(flatten)]
    pub tally: RuleTally,
}

/// The tracer's loss counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Losses {
    pub dropped: u64,
    pub unpaired: u64,
    pub read_failed: u64,
}

/// The check's totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckTotals {
    pub divergences: u64,
    pub findings: u64,
    pub finding_groups: u64,
    pub checks: u64,
    pub not_checkable: u64,
    /// `not_checkable` over every application of a rule: the trace's blind spot.
    pub not_checkable_share: f64,
}
