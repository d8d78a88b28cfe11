//! The `replay` binary end to end, on traces written to a temp directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use pfnscope_abi::kernel::Series;
use pfnscope_trace::{Record, TraceMeta, TraceWriter};
use replay::synth::workload;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("replay-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes records in batches of `per_batch` rows.
fn write(path: &Path, meta: &TraceMeta, recs: &[Record], per_batch: usize) {
    let mut w = TraceWriter::create(path, meta).unwrap();
    for (i, r) in recs.iter().enumerate() {
        w.push(r);
        if (i + 1).is_multiple_of(per_batch) {
            w.flush_batch().unwrap();
        }
    }
    w.finish().unwrap();
}

fn replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn clean_trace(dir: &TempDir, series: Series) -> PathBuf {
    let b = workload(series);
    let p = dir.0.join(format!("clean-{series}.arrows"));
    write(&p, &b.meta(), &b.records(), 50);
    p
}

#[test]
fn clean_trace_exits_zero_with_summary() {
    let d = TempDir::new("clean");
    let p = clean_trace(&d, Series::V6_12);
    let o = replay(&["check", p.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("0 divergences"), "{out}");
    assert!(out.contains("find.wc_downgrade"), "{out}");
}

#[test]
fn divergent_trace_exits_one_and_json_is_stable() {
    let d = TempDir::new("div");
    let b = workload(Series::V6_1);
    let mut recs = b.records();
    let i = recs
        .iter()
        .position(|r| r.hook == "vmf_insert_pfn_prot")
        .unwrap();
    recs[i].vma_flags = Some(recs[i].vma_flags.unwrap() & !0x400);
    let p = d.0.join("bad.arrows");
    write(&p, &b.meta(), &recs, 1000);
    let o = replay(&["check", "--json", p.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["schema"], "pfnscope.replay.check/1");
    assert_eq!(v["rules"], "6.1");
    assert!(v["summary"]["divergences"].as_u64().unwrap() >= 1);
    let d0 = &v["divergences"][0];
    assert_eq!(d0["rule"], "insert.vma_flags");
    for key in ["expected", "observed", "seqs", "ids", "source"] {
        assert!(!d0[key].is_null(), "divergence lacks {key}");
    }
    let rows = v["rule_table"].as_array().unwrap();
    assert!(rows.len() >= 15);
    for key in [
        "id",
        "kind",
        "what",
        "source",
        "held",
        "failed",
        "not_checkable",
    ] {
        assert!(!rows[0][key].is_null(), "rule row lacks {key}");
    }
}

#[test]
fn kernel_rules_override() {
    let d = TempDir::new("rules");
    let p = clean_trace(&d, Series::V6_1);
    let o = replay(&[
        "check",
        "--json",
        "--kernel-rules",
        "6.18",
        p.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rules"], "6.16+");
    let o = replay(&["check", "--kernel-rules", "banana", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("banana"));
}

#[test]
fn bad_input_exits_two_with_one_line() {
    let d = TempDir::new("bad");
    let missing = d.0.join("nope.arrows");
    let notrace = d.0.join("notes.txt");
    std::fs::write(&notrace, "hello, not arrow\n").unwrap();
    // A stream from a newer pfnscope.
    let newer = d.0.join("newer.arrows");
    {
        let schema = Arc::new(arrow_schema::Schema::new_with_metadata(
            vec![arrow_schema::Field::new(
                "seq",
                arrow_schema::DataType::UInt64,
                false,
            )],
            std::collections::HashMap::from([(
                "pfnscope.schema_version".to_string(),
                "99".to_string(),
            )]),
        ));
        let f = std::fs::File::create(&newer).unwrap();
        let mut w = arrow_ipc::writer::StreamWriter::try_new(f, &schema).unwrap();
        let b = arrow_array::RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(arrow_array::UInt64Array::from(vec![0u64]))],
        )
        .unwrap();
        w.write(&b).unwrap();
        w.finish().unwrap();
    }
    // (path, words the message must contain)
    let rows = [
        (missing, "cannot open"),
        (notrace, "not a pfnscope trace"),
        (newer, "schema version 99"),
    ];
    for (p, words) in rows {
        for cmd in ["check", "overhead"] {
            let o = replay(&[cmd, p.to_str().unwrap()]);
            let (out, err) = text(&o);
            assert_eq!(
                o.status.code(),
                Some(2),
                "{cmd} {}: {out}{err}",
                p.display()
            );
            assert!(err.contains(words), "{cmd} {}: {err}", p.display());
            assert_eq!(
                err.trim().lines().count(),
                1,
                "{cmd} {}: not one line: {err}",
                p.display()
            );
            // The OS's reason is said once, not again by the error chain.
            assert!(
                err.matches("os error").count() <= 1,
                "{cmd} {}: {err}",
                p.display()
            );
        }
    }
}

/// A batch arrow itself panicked on while validating (found by cargo fuzz; validation is now
/// the decoder's) is damage like any other: one warning line on stderr and no panic message,
/// for both subcommands.
#[test]
fn a_batch_arrow_panics_on_is_one_warning_line() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../trace-format/tests/data/fuzz-dict-offsets-panic.arrows");
    for cmd in ["check", "overhead"] {
        let o = replay(&[cmd, p.to_str().unwrap()]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{cmd}: {out}{err}");
        assert!(!err.contains("panicked"), "{cmd}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{cmd}: {err}");
        assert!(err.contains("cannot read batch 1"), "{cmd}: {err}");
    }
}

#[test]
fn truncated_trace_replays_what_it_has_and_says_so() {
    let d = TempDir::new("trunc");
    let p = clean_trace(&d, Series::V6_12);
    let bytes = std::fs::read(&p).unwrap();
    let cut = d.0.join("cut.arrows");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let o = replay(&["check", "--json", cut.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_ne!(o.status.code(), Some(2), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["truncated"].is_string(), "{out}");
    assert!(v["events"].as_u64().unwrap() > 0);
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn overhead_reports_pages_drivers_and_probe_cost() {
    let d = TempDir::new("ovh");
    let p = clean_trace(&d, Series::V6_1);
    let o = replay(&["overhead", "--top", "3", p.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        out.contains("TOP PAGES") && out.contains("PER DRIVER") && out.contains("tracer cost"),
        "{out}"
    );
    let o = replay(&["overhead", "--json", p.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["probe_cost"]["in_window_ns"].as_u64().unwrap() > 0);
    assert!(
        v["top"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "pfn")
    );
}

/// A crafted trace whose parent links form one chain of 100k calls (children first, as the
/// tracer writes them) overflowed the stack of both commands; now the chain is cut into
/// trees and reported as a broken parent link.
#[test]
fn endless_parent_chain_is_a_divergence_not_a_crash() {
    let d = TempDir::new("chain");
    let n = 100_000u64;
    let recs: Vec<Record> = (0..n)
        .map(|i| Record {
            seq: i,
            id: i + 1,
            parent: if i + 1 < n { i + 2 } else { 0 },
            ts_ns: 10 * (n - i),
            latency_ns: Some(1 + i),
            hook: "handle_mm_fault".into(),
            ..Default::default()
        })
        .collect();
    let p = d.0.join("chain.arrows");
    write(&p, &TraceMeta::default(), &recs, 65536);
    let o = replay(&["check", "--json", p.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["events"].as_u64(), Some(n));
    let divs = v["divergences"].as_array().unwrap();
    assert!(
        !divs.is_empty() && divs.iter().all(|d| d["rule"] == "trace.parent"),
        "{out}"
    );
    let o = replay(&["overhead", p.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains(&format!("{n} events")), "{out}");

    // `replay check T | head`: the reader leaves after a few bytes of a report far larger
    // than the pipe; the command still ends with its own status, not a panic.
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(["check", "--json", p.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The catalogue is readable without a trace: every rule by id, one by name, and the JSON form.
#[test]
fn rules_lists_and_explains_rules() {
    let o = replay(&["rules"]);
    assert!(o.status.success());
    let (out, _) = text(&o);
    for r in replay::rules::Rule::ALL {
        assert!(
            out.contains(&format!("{}  (", r.id())),
            "{} missing:\n{out}",
            r.id()
        );
    }
    let o = replay(&["rules", "pat.lookup", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rules = v.as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["id"], "pat.lookup");
    assert_eq!(rules[0]["kind"], "divergence");
    assert!(rules[0]["source"].as_str().unwrap().contains("memtype.c"));

    let o = replay(&["rules", "pat.lookup", "pat.nope"]);
    assert_eq!(o.status.code(), Some(2));
    let (out, err) = text(&o);
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unknown rule `pat.nope`"), "{err}");
}
