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

/// The 6.12 workload in `batches` batches.
fn workload_trace(dir: &TempDir, name: &str, batches: usize) -> PathBuf {
    let b = workload(Series::V6_12);
    let p = dir.0.join(name);
    let recs = b.records();
    write(&p, &b.meta(), &recs, recs.len() / batches + 1);
    p
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
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o).1.contains("banana"));
}

#[test]
fn bad_input_exits_three_with_one_line() {
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
                Some(3),
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
/// the decoder's) is damage like any other: one warning line on stderr, no panic message and
/// exit 2, for both subcommands.
#[test]
fn a_batch_arrow_panics_on_is_one_warning_line() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pfnscope-trace/tests/data/fuzz-dict-offsets-panic.arrows");
    for cmd in ["check", "overhead"] {
        let o = replay(&[cmd, p.to_str().unwrap()]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {out}{err}");
        assert!(!err.contains("panicked"), "{cmd}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{cmd}: {err}");
        assert!(err.contains("batch 1"), "{cmd}: {err}");
    }
}

/// Issue 21: a trace cut at 50% passed a CI gate ("0 divergences", exit 0). Now both
/// commands replay what it has, say how much that is, and exit 2; the JSON says so too.
#[test]
fn truncated_trace_replays_what_it_has_and_exits_two() {
    let d = TempDir::new("trunc");
    let p = clean_trace(&d, Series::V6_12);
    let bytes = std::fs::read(&p).unwrap();
    let cut = d.0.join("cut.arrows");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let o = replay(&["check", "--json", cut.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["damage"]["kind"], "truncated", "{out}");
    assert!(
        v["truncated"].as_str().unwrap().contains("kept the"),
        "{out}"
    );
    assert!(v["events"].as_u64().unwrap() > 0);
    assert!(
        err.contains("truncated") && err.contains("kept the"),
        "{err}"
    );
    let o = replay(&["overhead", "--json", cut.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["damage"]["kind"], "truncated", "{out}");
}

/// Issue 21: a recording killed with SIGKILL has every batch but no end-of-stream marker; it
/// read as whole (`"truncated": null`, exit 0). Now it is cut short, in the JSON and the
/// exit status, and everything in it is still replayed.
#[test]
fn a_trace_without_its_end_marker_is_cut_short() {
    let d = TempDir::new("killed");
    let p = clean_trace(&d, Series::V6_12);
    let whole = replay(&["check", "--json", p.to_str().unwrap()]);
    assert_eq!(whole.status.code(), Some(0));
    let whole: serde_json::Value = serde_json::from_slice(&whole.stdout).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 8]).unwrap();
    for cmd in ["check", "overhead"] {
        let o = replay(&[cmd, "--json", p.to_str().unwrap()]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["damage"]["kind"], "cut_short", "{cmd}: {out}");
        assert_eq!(
            v["events"], whole["events"],
            "{cmd}: every event is replayed"
        );
        assert!(err.contains("cut short"), "{cmd}: {err}");
    }
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
    assert_eq!(o.status.code(), Some(3));
    let (out, err) = text(&o);
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unknown rule `pat.nope`"), "{err}");
}

#[path = "../../pfnscope-trace/tests/matrix/mod.rs"]
mod matrix;

/// Issue 21's damage matrix: `replay check` and `replay overhead` on every kind of damage give
/// the exit status and the one line the scheme says, and agree on what they kept (see
/// `matrix`).
#[test]
fn damage_matrix_every_command_exit_status_and_message() {
    let d = TempDir::new("matrix");
    let clean = workload_trace(&d, "clean.arrows", 5);
    for case in matrix::cases(&d.0.join("cases"), &clean) {
        let p = case.path.to_str().unwrap();
        let mut kept = vec![];
        for cmd in ["check", "overhead"] {
            let o = replay(&[cmd, "--json", p]);
            let (out, err) = text(&o);
            case.expect
                .check(case.name, &format!("replay {cmd}"), o.status.code(), &err);
            if let matrix::Expect::Damaged(kind) = case.expect {
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                assert_eq!(v["damage"]["kind"], kind_json(kind), "{cmd} {}", case.name);
                assert_eq!(
                    v["damage"]["batches_kept"], case.batches_kept,
                    "{}",
                    case.name
                );
                kept.push(v["damage"].clone());
            }
        }
        // Both commands say the same about the same file (issue 21, point 6).
        assert!(
            kept.windows(2).all(|w| w[0] == w[1]),
            "{}: {kept:?}",
            case.name
        );
    }
}

fn kind_json(k: pfnscope_trace::DamageKind) -> String {
    serde_json::to_value(k)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

/// Rewrites a trace as pfnscope wrote them before checksums.
fn without_checksums(p: &Path) {
    use arrow_ipc::{
        CompressionType,
        reader::StreamReader,
        writer::{IpcWriteOptions, StreamWriter},
    };
    let r = StreamReader::try_new(std::fs::File::open(p).unwrap(), None).unwrap();
    let mut md = r.schema().metadata().clone();
    md.remove(pfnscope_trace::CHECKSUMS_KEY);
    let schema = Arc::new(r.schema().as_ref().clone().with_metadata(md));
    let batches: Vec<_> = r.map(|b| b.unwrap()).collect();
    let opts = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::ZSTD))
        .unwrap();
    let f = std::fs::File::create(p).unwrap();
    let mut w = StreamWriter::try_new_with_options(f, &schema, opts).unwrap();
    for b in batches {
        w.write(
            &pfnscope_trace::RecordBatch::try_new(schema.clone(), b.columns().to_vec()).unwrap(),
        )
        .unwrap();
    }
    w.finish().unwrap();
}

/// Issue 21, point 6: on a damaged trace `replay overhead` gave other numbers than `check`
/// without a word, because it leaves columns it does not read compressed and never saw the
/// damage in them. A trace without checksums is now read whole by both, so both stop at the
/// same batch and say so (with checksums, the matrix above shows the same).
#[test]
fn check_and_overhead_agree_on_damage_in_a_column_only_one_of_them_reads() {
    let d = TempDir::new("agree");
    let p = workload_trace(&d, "t.arrows", 3);
    without_checksums(&p);
    assert!(replay::run::OVERHEAD_UNREAD.contains(&"vma_flags"));
    assert!(!replay::run::CHECK_UNREAD.contains(&"vma_flags"));
    // The Zstandard frame of `vma_flags` in the second batch loses its magic number.
    let mut bytes = std::fs::read(&p).unwrap();
    let (mut at, mut field, mut batches) = (0, None, 0);
    let target = loop {
        let meta_len = i32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = at + 8 + meta_len;
        let m = arrow_ipc::root_as_message(&bytes[at + 8..body]).unwrap();
        if let Some(s) = m.header_as_schema() {
            let fields = s.fields().unwrap();
            field = fields.iter().position(|f| f.name() == Some("vma_flags"));
        } else if let Some(rb) = m.header_as_record_batch() {
            batches += 1;
            if batches == 2 {
                // Every column of a trace has two buffers: validity, then values.
                let values = rb.buffers().unwrap().get(2 * field.unwrap() + 1);
                break body + values.offset() as usize;
            }
        }
        at = body + m.bodyLength() as usize;
    };
    let stored = i64::from_le_bytes(bytes[target..target + 8].try_into().unwrap());
    assert_ne!(stored, -1, "the column is stored uncompressed");
    bytes[target + 8..target + 12].fill(0);
    std::fs::write(&p, &bytes).unwrap();
    let mut said = vec![];
    for cmd in ["check", "overhead"] {
        let o = replay(&[cmd, "--json", p.to_str().unwrap()]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains("is corrupt: batch 2"), "{cmd}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        said.push(v["damage"].clone());
    }
    assert_eq!(said[0], said[1]);
}
