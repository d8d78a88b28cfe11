//! Telling a report's kind from its `schema`, and refusing one newer than this build.

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::{CHECK_SCHEMA, CheckReport, OVERHEAD_SCHEMA, OverheadReport};

/// A report of either kind.
#[derive(Clone, Debug)]
pub enum AnyReport {
    Check(Box<CheckReport>),
    Overhead(Box<OverheadReport>),
}

/// What tells the kinds apart: `schema`, or for a report without one, its fields.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    schema: String,
    divergences: Option<IgnoredAny>,
    findings: Option<IgnoredAny>,
    top: Option<IgnoredAny>,
}

/// `text` read as a check or an overhead report, or why not (not JSON, another kind of
/// document, a newer schema of a known kind, or a field of the wrong type).
pub fn read(text: &str) -> Result<AnyReport, String> {
    let p: Probe = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let schema = p.schema.as_str();
    let family = schema.rsplit_once('/').map_or(schema, |(f, _)| f);
    let family_of = |s: &str| s.rsplit_once('/').map_or("", |(f, _)| f).to_owned();
    let is_check = family == family_of(CHECK_SCHEMA)
        || (schema.is_empty() && (p.divergences.is_some() || p.findings.is_some()));
    let is_overhead =
        family == family_of(OVERHEAD_SCHEMA) || (schema.is_empty() && p.top.is_some());
    let known = [CHECK_SCHEMA, OVERHEAD_SCHEMA];
    if !schema.is_empty() && (is_check || is_overhead) && !known.contains(&schema) {
        return Err(format!(
            "report schema `{schema}` is newer than this analyzer (reads {})",
            known.join(", ")
        ));
    }
    if is_check {
        serde_json::from_str(text)
            .map(|c| AnyReport::Check(Box::new(c)))
            .map_err(|e| format!("check report: {e}"))
    } else if is_overhead {
        serde_json::from_str(text)
            .map(|o| AnyReport::Overhead(Box::new(o)))
            .map_err(|e| format!("overhead report: {e}"))
    } else {
        Err(format!(
            "no `schema` of `replay check --json` or `replay overhead --json` (found `{schema}`)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_check_and_overhead_ignoring_unknown_fields() {
        let c = r#"{"schema":"pfnscope.replay.check/1","new_field":1,"divergences":[{"rule":"pat.lookup","expected":"WC","observed":"UC-","seqs":[4,2],"ids":[9,8]}],
               "findings":[{"rule":"pat.downgrade","driver":"bochs","count":768,"message":"WC became UC-"}]}"#;
        let Ok(AnyReport::Check(check)) = read(c) else {
            panic!("{:?}", read(c))
        };
        assert_eq!(check.divergences[0].rule, "pat.lookup");
        assert_eq!(check.divergences[0].ids, [9, 8]);
        assert_eq!(check.findings[0].count, 768);
        let o = r#"{"schema":"pfnscope.replay.overhead/1","top":[{"kind":"pfn","page":4096,"faults":3,"total_ns":9000,"insert_ns":3000,"pat_ns":1000,"insert_share":0.3,"corrected_total_ns":7000}]}"#;
        let Ok(AnyReport::Overhead(o)) = read(o) else {
            panic!()
        };
        assert_eq!(
            (o.top[0].total_ns, o.top[0].corrected_total_ns),
            (9000, 7000)
        );
    }

    #[test]
    fn refuses_newer_and_foreign_reports() {
        let e = read(r#"{"schema":"pfnscope.replay.check/2"}"#).unwrap_err();
        assert!(e.contains("newer"), "{e}");
        assert!(read(r#"{"hello":1}"#).is_err());
        assert!(read("[1").is_err());
    }
}
