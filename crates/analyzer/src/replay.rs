//! The replay's JSON reports (`replay check --json`, `replay overhead --json`), read defensively:
//! the replay crate only serialises its types, and its shape may grow, so every field here is
//! optional or defaulted and unknown fields are ignored. The `schema` field picks the kind; a
//! report without one is recognised by its fields.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{AnalyzerError, Result};

pub const CHECK_SCHEMA: &str = "pfnscope.replay.check/1";
pub const OVERHEAD_SCHEMA: &str = "pfnscope.replay.overhead/1";

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct CheckReport {
    pub schema: String,
    pub trace: String,
    pub kernel_release: String,
    pub rules: String,
    pub rules_note: Option<String>,
    pub events: u64,
    pub truncated: Option<String>,
    pub divergences: Vec<Divergence>,
    pub divergences_omitted: u64,
    pub findings: Vec<FindingGroup>,
    pub rule_table: Vec<RuleRow>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Divergence {
    pub rule: String,
    pub expected: String,
    pub observed: String,
    pub seqs: Vec<u64>,
    pub source: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct FindingGroup {
    pub rule: String,
    pub driver: Option<String>,
    pub count: u64,
    pub message: String,
    pub seqs: Vec<u64>,
    pub source: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RuleRow {
    pub id: String,
    pub kind: String,
    pub what: String,
    pub held: u64,
    pub failed: u64,
    pub not_checkable: u64,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct OverheadReport {
    pub schema: String,
    pub trace: String,
    pub events: u64,
    pub faults: u64,
    pub faults_without_latency: u64,
    pub probe_cost: ProbeCost,
    pub top: Vec<PageRow>,
    pub pages: u64,
    pub drivers: Vec<DriverRow>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ProbeCost {
    pub in_window_ns: u64,
    pub per_nested_call_ns: u64,
    pub basis: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct PageRow {
    /// `pfn` or `vpage`.
    pub kind: String,
    pub page: u64,
    pub mm: Option<u32>,
    pub driver: Option<String>,
    pub faults: u64,
    pub total_ns: u64,
    pub mean_ns: u64,
    pub insert_ns: u64,
    pub pat_ns: u64,
    pub corrected_total_ns: u64,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct DriverRow {
    pub driver: Option<String>,
    pub faults: u64,
    pub pages: u64,
    pub total_ns: u64,
    pub mean_ns: u64,
    pub insert_ns: u64,
    pub pat_ns: u64,
}

/// What the report page shows from the replay.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    pub check: Option<(PathBuf, CheckReport)>,
    pub overhead: Option<(PathBuf, OverheadReport)>,
}

impl Replay {
    /// Reads each file and files it as a check or an overhead report (a later file of the same
    /// kind replaces an earlier one).
    pub fn load(paths: &[PathBuf]) -> Result<Replay> {
        let mut r = Replay::default();
        for p in paths {
            match read_one(p)? {
                Kind::Check(c) => r.check = Some((p.clone(), *c)),
                Kind::Overhead(o) => r.overhead = Some((p.clone(), *o)),
            }
        }
        Ok(r)
    }

    pub fn is_empty(&self) -> bool {
        self.check.is_none() && self.overhead.is_none()
    }
}

enum Kind {
    Check(Box<CheckReport>),
    Overhead(Box<OverheadReport>),
}

fn read_one(path: &Path) -> Result<Kind> {
    let text = std::fs::read_to_string(path).map_err(|err| AnalyzerError::ReplayRead {
        path: path.to_owned(),
        err,
    })?;
    let bad = |why: String| AnalyzerError::ReplayFormat {
        path: path.to_owned(),
        why,
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON ({e})")))?;
    let schema = v.get("schema").and_then(|s| s.as_str()).unwrap_or("");
    let family = schema.rsplit_once('/').map(|(f, _)| f).unwrap_or(schema);
    let is_check = family == "pfnscope.replay.check"
        || (schema.is_empty() && (v.get("divergences").is_some() || v.get("findings").is_some()));
    let is_overhead =
        family == "pfnscope.replay.overhead" || (schema.is_empty() && v.get("top").is_some());
    let known = [CHECK_SCHEMA, OVERHEAD_SCHEMA];
    if !schema.is_empty() && (is_check || is_overhead) && !known.contains(&schema) {
        return Err(bad(format!(
            "report schema `{schema}` is newer than this analyzer (reads {})",
            known.join(", ")
        )));
    }
    if is_check {
        let c = serde_json::from_value(v).map_err(|e| bad(format!("check report: {e}")))?;
        Ok(Kind::Check(Box::new(c)))
    } else if is_overhead {
        let o = serde_json::from_value(v).map_err(|e| bad(format!("overhead report: {e}")))?;
        Ok(Kind::Overhead(Box::new(o)))
    } else {
        Err(bad(format!(
            "no `schema` of `replay check --json` or `replay overhead --json` (found `{schema}`)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, body: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("analyzer-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn reads_check_and_overhead_ignoring_unknown_fields() {
        let c = tmp(
            "c.json",
            r#"{"schema":"pfnscope.replay.check/1","new_field":1,"divergences":[{"rule":"pat.lookup","expected":"WC","observed":"UC-","seqs":[4,2]}],
               "findings":[{"rule":"pat.downgrade","driver":"bochs","count":768,"message":"WC became UC-"}]}"#,
        );
        let o = tmp(
            "o.json",
            r#"{"schema":"pfnscope.replay.overhead/1","top":[{"kind":"pfn","page":4096,"faults":3,"total_ns":9000,"insert_ns":3000,"pat_ns":1000,"insert_share":0.3}]}"#,
        );
        let r = Replay::load(&[c, o]).unwrap();
        let (_, check) = r.check.unwrap();
        assert_eq!(check.divergences[0].rule, "pat.lookup");
        assert_eq!(check.findings[0].count, 768);
        assert_eq!(r.overhead.unwrap().1.top[0].total_ns, 9000);
    }

    #[test]
    fn refuses_newer_and_foreign_reports() {
        let n = tmp("n.json", r#"{"schema":"pfnscope.replay.check/2"}"#);
        let e = Replay::load(&[n]).unwrap_err().to_string();
        assert!(e.contains("newer"), "{e}");
        let f = tmp("f.json", r#"{"hello":1}"#);
        assert!(Replay::load(&[f]).is_err());
        let m = Replay::load(&[PathBuf::from("/nonexistent/r.json")]).unwrap_err();
        assert!(matches!(m, AnalyzerError::ReplayRead { .. }));
    }
}
