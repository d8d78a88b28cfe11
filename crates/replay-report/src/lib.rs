//! The JSON reports of `replay check --json` and `replay overhead --json`, declared once: the
//! replay writes them and the analyzer reads them with these types (serde both ways), so a
//! field added on one side is there on the other.
//!
//! The check report is generic over how a rule is held: the replay fills it with its rule
//! catalogue's types (`Rule`, whose JSON is its id, and `RuleInfo`), a reader gets strings
//! ([`CheckReport`]'s defaults), so this crate knows nothing of the rules and the analyzer
//! nothing of the replay's engine. Readers are lenient: a missing field reads as its default,
//! an unknown one is ignored, and [`read`] tells the two kinds apart by `schema`.
//!
//! ```
//! use replay_report::{AnyReport, CHECK_SCHEMA, CheckReport, read};
//! let r: CheckReport = CheckReport { schema: CHECK_SCHEMA.into(), events: 3, ..Default::default() };
//! let json = serde_json::to_string(&r).unwrap();
//! let Ok(AnyReport::Check(back)) = read(&json) else { panic!() };
//! assert_eq!(back.events, 3);
//! ```

mod check;
mod overhead;
mod read;

pub use check::{
    CheckReport, CheckTotals, Divergence, FindingGroup, Losses, RuleInfo, RuleRow, RuleTally,
};
pub use overhead::{DriverRow, OverheadReport, PageRow, ProbeCost};
pub use pfnscope_trace::DamageReport;
pub use read::{AnyReport, read};

/// `schema` of the `replay check --json` report; bump on an incompatible change.
pub const CHECK_SCHEMA: &str = "pfnscope.replay.check/1";
/// `schema` of the `replay overhead --json` report.
pub const OVERHEAD_SCHEMA: &str = "pfnscope.replay.overhead/1";
