//! The `analyzer` command on traces built here: summaries, exports, diffs and bad input.

mod common;

use std::sync::Arc;

use common::*;

fn summary_json(path: &str, by: &str) -> serde_json::Value {
    let o = analyzer(&["summary", path, "--json", "--by", by]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

/// `summary --json` of a trace that exits with `code`.
fn summary_json_status(path: &str, code: i32) -> serde_json::Value {
    let o = analyzer(&["summary", path, "--json"]);
    assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

fn row<'a>(v: &'a serde_json::Value, group: &str) -> &'a serde_json::Value {
    v["latency"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == group)
        .unwrap_or_else(|| panic!("no group {group} in {v:#}"))
}

#[test]
fn summary_by_driver_counts_percentiles_and_retries() {
    let dir = scratch("summary-driver");
    let p = dir.join("t.arrows");
    fault_trace(&p, &Shape::default());
    let v = summary_json(p.to_str().unwrap(), "driver");
    assert_eq!(v["latency_available"], true);
    // 2000 faults: 800 TTM (each with a RETRY first: 1600 calls), 400 shmem, 600 anon, 200 ext4.
    let ttm = row(&v, TTM);
    assert_eq!(ttm["count"], 1600);
    assert_eq!(row(&v, SHMEM)["count"], 400);
    assert_eq!(row(&v, "(no vm_ops)")["count"], 600);
    assert_eq!(row(&v, "(all)")["count"], 2800);
    let (p50, p99, max) = (
        ttm["p50_ns"].as_f64().unwrap(),
        ttm["p99_ns"].as_f64().unwrap(),
        ttm["max_ns"].as_f64().unwrap(),
    );
    assert!(p50 < p99 && p99 <= max, "{ttm}");
    let anon_p50 = row(&v, "(no vm_ops)")["p50_ns"].as_f64().unwrap();
    assert!(
        anon_p50 < 2_000.0 && anon_p50 > 1_000.0,
        "anon p50 {anon_p50}"
    );

    let retry = v["retries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["driver"] == TTM)
        .unwrap();
    assert_eq!(retry["faults"], 1600);
    assert_eq!(retry["retry"], 800);
    assert_eq!(retry["retry_vma_lock"], 800);
    assert_eq!(retry["tried"], 0);

    let mix = v["vm_fault_mix"].as_array().unwrap();
    let hmf = mix.iter().find(|m| m["hook"] == "handle_mm_fault").unwrap();
    assert_eq!(hmf["calls"], 2800);
    assert_eq!(hmf["zero"], 800);
    let bits: Vec<(String, u64)> = serde_json::from_value(hmf["bits"].clone()).unwrap();
    assert_eq!(bits, vec![("NOPAGE".into(), 1200), ("RETRY".into(), 800)]);

    let pat = v["pat"].as_array().unwrap();
    let changed = pat
        .iter()
        .find(|r| r["hook"] == "track_pfn_insert" && r["driver"] == TTM)
        .unwrap();
    assert_eq!(
        (changed["requested"].as_str(), changed["obtained"].as_str()),
        (Some("WC"), Some("UC-"))
    );
    assert_eq!(changed["count"], 800);
    assert_eq!(v["counters"].as_array().unwrap().len(), 2);
}

#[test]
fn summary_groupings_classify_vmas_and_fault_types() {
    let dir = scratch("summary-groups");
    let p = dir.join("t.arrows");
    fault_trace(&p, &Shape::default());
    let path = p.to_str().unwrap();
    let v = summary_json(path, "vma-kind");
    assert_eq!(
        row(&v, "pfnmap")["count"],
        2000,
        "TTM (IO|PFNMAP) and shmem (PFNMAP)"
    );
    assert_eq!(row(&v, "anonymous")["count"], 600);
    assert_eq!(row(&v, "file")["count"], 200);
    let v = summary_json(path, "fault-type");
    assert_eq!(row(&v, "user write")["count"], 2000);
    assert_eq!(row(&v, "user read")["count"], 800);
    let v = summary_json(path, "hook");
    assert_eq!(row(&v, "track_pfn_insert")["count"], 1200);
    assert!(
        v["latency"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["group"] != "pfnscope:counters")
    );
    let v = summary_json(path, "process");
    assert_eq!(row(&v, "bochs-touch[301]")["count"], 1600);
}

#[test]
fn summary_text_has_every_section() {
    let dir = scratch("summary-text");
    let p = dir.join("t.arrows");
    fault_trace(
        &p,
        &Shape {
            dropped: 17,
            ..Shape::default()
        },
    );
    let o = analyzer(&["summary", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "LATENCY by driver",
        "p99.9",
        "VM_FAULT RETURNS",
        "RETRIES",
        "WC -> UC-  (changed)",
        "17 dropped",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert!(!out.contains("NaN"), "{out}");
}

#[test]
fn tracepoint_trace_shows_counts_and_says_latency_is_unavailable() {
    let dir = scratch("tracepoint");
    let p = dir.join("tp.arrows");
    tracepoint_trace(&p, 700);
    let o = analyzer(&["summary", p.to_str().unwrap(), "--by", "vma-kind"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(
            "latency unavailable: recorded in tracepoint mode (exceptions:page_fault_user)"
        ),
        "{out}"
    );
    assert!(!out.contains("NaN") && !out.contains("p50"), "{out}");
    let v = summary_json(p.to_str().unwrap(), "vma-kind");
    assert_eq!(v["latency_available"], false);
    assert_eq!(row(&v, "pfnmap")["count"], 100);
    assert_eq!(row(&v, "anonymous")["count"], 600);
    assert!(row(&v, "pfnmap")["p50_ns"].is_null());
    let v = summary_json(p.to_str().unwrap(), "fault-type");
    assert_eq!(row(&v, "user write")["count"], 350);

    // The report still renders (no latency plots), and diff refuses in one line.
    let out_dir = dir.join("report");
    let o = analyzer(&[
        "report",
        p.to_str().unwrap(),
        "-o",
        out_dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(out_dir.join("index.html")).unwrap();
    assert!(html.contains("latency unavailable") && html.contains("rate_per_hook.png"));
    assert!(!html.contains("latency_heatmap.png"));
    let o = analyzer(&["diff", p.to_str().unwrap(), p.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("has no latencies"), "{}", stderr(&o));
}

fn one_line_error(args: &[&str]) -> String {
    let o = analyzer(args);
    assert_eq!(o.status.code(), Some(3), "expected failure: {}", stdout(&o));
    let e = stderr(&o);
    assert_eq!(e.trim_end().lines().count(), 1, "one line expected: {e}");
    e
}

#[test]
fn bad_input_gives_one_clear_line() {
    let dir = scratch("bad-input");
    let empty = dir.join("empty.arrows");
    std::fs::write(&empty, b"").unwrap();
    let e = one_line_error(&["summary", empty.to_str().unwrap()]);
    assert!(e.contains("is empty"), "{e}");

    let no_events = dir.join("no-events.arrows");
    pfnscope_trace::TraceWriter::create(&no_events, &fentry_meta("6.1.0"))
        .unwrap()
        .finish()
        .unwrap();
    let e = one_line_error(&["summary", no_events.to_str().unwrap()]);
    assert!(e.contains("holds no events"), "{e}");

    let e = one_line_error(&["summary", dir.join("missing.arrows").to_str().unwrap()]);
    assert!(e.contains("cannot open trace"), "{e}");
    // The OS's reason is said once, not again by the error chain.
    assert_eq!(e.matches("os error 2").count(), 1, "{e}");

    let foreign = dir.join("foreign.arrows");
    std::fs::write(&foreign, b"PAR1 not a trace").unwrap();
    let e = one_line_error(&["summary", foreign.to_str().unwrap()]);
    assert!(e.contains("not a pfnscope trace"), "{e}");

    let newer = dir.join("newer.arrows");
    newer_schema_trace(&newer);
    let e = one_line_error(&["summary", newer.to_str().unwrap()]);
    assert!(
        e.contains(&format!(
            "schema version {}",
            pfnscope_trace::CURRENT_SCHEMA_VERSION + 1
        )) && e.contains("upgrade"),
        "{e}"
    );

    let good = dir.join("good.arrows");
    fault_trace(
        &good,
        &Shape {
            faults: 100,
            ..Shape::default()
        },
    );
    let e = one_line_error(&[
        "report",
        good.to_str().unwrap(),
        "--replay",
        dir.join("no-such-replay.json").to_str().unwrap(),
        "-o",
        dir.join("r").to_str().unwrap(),
    ]);
    assert!(
        e.contains("cannot read replay report") && e.contains("no-such-replay.json"),
        "{e}"
    );
}

fn newer_schema_trace(path: &std::path::Path) {
    use arrow_schema::{DataType, Field, Schema};
    let schema = Schema::new_with_metadata(
        vec![Field::new("seq", DataType::UInt64, false)],
        std::collections::HashMap::from([
            (
                "pfnscope.schema_version".to_string(),
                (pfnscope_trace::CURRENT_SCHEMA_VERSION + 1).to_string(),
            ),
            ("pfnscope.meta".to_string(), "{}".to_string()),
        ]),
    );
    let f = std::fs::File::create(path).unwrap();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(f, &Arc::new(schema)).unwrap();
    w.finish().unwrap();
}

#[test]
fn truncated_trace_shows_what_was_kept() {
    let dir = scratch("truncated");
    let p = dir.join("t.arrows");
    let rows = fault_trace(
        &p,
        &Shape {
            faults: 2000,
            batches: 4,
            ..Shape::default()
        },
    );
    let len = std::fs::metadata(&p).unwrap().len();
    // Cut into the last batch, as a recording killed mid-write leaves it.
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len - 300).unwrap();
    drop(f);
    // Issue 21: the salvaged part is shown, and the exit status says it is only a part.
    let o = analyzer(&["summary", p.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("is truncated") && e.contains("kept the"), "{e}");
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let all = row(&v, "(all)")["count"].as_u64().unwrap();
    // Three of four batches survive.
    assert_eq!(all, 2100, "of {rows} rows");
    assert_eq!(v["damage"]["kind"], "truncated", "{v:#}");
    assert_eq!(v["damage"]["batch"], 4, "{v:#}");

    // A cut inside the first batch leaves nothing: one line, and still exit 2 (damaged).
    // The stream opens with 0xFFFFFFFF and the schema message's length.
    let head = std::fs::read(&p).unwrap();
    let schema_len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as u64;
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(8 + schema_len + 200).unwrap();
    drop(f);
    let o = analyzer(&["summary", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("holds no events that could be read"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
}

/// Issue 21: a SIGKILLed recording (every batch, no end-of-stream marker) was summarised as
/// whole, "0 dropped" included. Now it is cut short: in the warning, the text, the JSON and
/// the exit status, with the counters said to stop at the last batch.
#[test]
fn a_trace_without_its_end_marker_is_cut_short() {
    let dir = scratch("cut-short");
    let p = dir.join("t.arrows");
    fault_trace(&p, &Shape::default());
    let len = std::fs::metadata(&p).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len - 8).unwrap();
    drop(f);
    let o = analyzer(&["summary", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("was cut short"), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("damaged: ") && text.contains("cut short"),
        "{text}"
    );
    assert!(text.contains("counted up to batch 4 only"), "{text}");
    let v = summary_json_status(p.to_str().unwrap(), 2);
    assert_eq!(v["damage"]["kind"], "cut_short", "{v:#}");
    assert_eq!(
        row(&v, "(all)")["count"],
        2800,
        "every event is still shown"
    );
}

#[test]
fn export_formats_round_trip() {
    use polars::prelude::*;
    let dir = scratch("export");
    let p = dir.join("t.arrows");
    fault_trace(
        &p,
        &Shape {
            faults: 300,
            ..Shape::default()
        },
    );
    // The events: the loss counters' rows are not exported (the trace crate hands them out
    // apart), so the rows exported keep their positions in the file, with gaps.
    let events = pfnscope_trace::read_trace(&p).unwrap().records;
    let rows = events.len();
    for fmt in ["parquet", "csv", "json", "ndjson"] {
        let out = dir.join(format!("t.{fmt}"));
        let o = analyzer(&[
            "export",
            p.to_str().unwrap(),
            "--format",
            fmt,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{fmt}: {}", stderr(&o));
        assert!(
            stdout(&o).starts_with(&format!("{rows} rows")),
            "{}",
            stdout(&o)
        );
        let df = match fmt {
            "parquet" => ParquetReader::new(std::fs::File::open(&out).unwrap())
                .finish()
                .unwrap(),
            "csv" => {
                let text = std::fs::read_to_string(&out).unwrap();
                assert_eq!(text.lines().count(), rows + 1, "header and rows");
                let head = text.lines().next().unwrap();
                assert!(
                    head.starts_with("seq,id,parent,ts_ns,latency_ns")
                        && head.ends_with("vma_kind,fault_type"),
                    "{head}"
                );
                continue;
            }
            "json" => {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
                assert_eq!(v.as_array().unwrap().len(), rows);
                assert!(
                    v[0]["vma_kind"].is_string() && v[0]["ts_ns"].is_u64(),
                    "{:#}",
                    v[0]
                );
                continue;
            }
            _ => {
                // serde_json, not polars: the PTE-sized u64s (bit 63 set) make polars' JSON
                // inference pick Int128, which this build leaves out.
                let text = std::fs::read_to_string(&out).unwrap();
                let lines: Vec<serde_json::Value> = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                assert_eq!(lines.len(), rows);
                let pat = lines
                    .iter()
                    .find(|l| l["hook"] == "track_pfn_insert")
                    .unwrap();
                assert_eq!(pat["prot_out"], 0x8000_0000_0000_0037u64, "{pat:#}");
                assert_eq!(pat["vma_kind"], "pfnmap");
                continue;
            }
        };
        assert_eq!(df.height(), rows, "{fmt}");
        // Not stored since schema 3: the row's position in the file, across batches.
        let seq: Vec<u64> = df
            .column("seq")
            .unwrap()
            .u64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        let want: Vec<u64> = events.iter().map(|r| r.seq).collect();
        assert_eq!(seq, want, "{fmt}");
        assert!(
            want.last() >= Some(&(rows as u64)),
            "counter rows kept their places"
        );
        // Stored as differences since schema 4: exported as the ids themselves.
        let ids: Vec<u64> = df
            .column("id")
            .unwrap()
            .u64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        let want: Vec<u64> = events.iter().map(|r| r.id).collect();
        assert_eq!(ids, want, "{fmt}");
        for c in [
            "seq",
            "latency_ns",
            "hook",
            "driver",
            "cache_out",
            "vma_kind",
            "fault_type",
        ] {
            assert!(df.column(c).is_ok(), "{fmt} lacks {c}");
        }
    }
}

#[test]
fn diff_flags_a_real_change_and_not_noise() {
    let dir = scratch("diff");
    let a = dir.join("a.arrows");
    let a2 = dir.join("a2.arrows");
    let b = dir.join("b.arrows");
    fault_trace(
        &a,
        &Shape {
            faults: 3000,
            seed: 1,
            ..Shape::default()
        },
    );
    fault_trace(
        &a2,
        &Shape {
            faults: 3000,
            seed: 2,
            ..Shape::default()
        },
    );
    fault_trace(
        &b,
        &Shape {
            faults: 3000,
            seed: 3,
            ttm_extra_ns: 4_000,
            ..Shape::default()
        },
    );
    let run = |x: &std::path::Path, y: &std::path::Path| {
        let o = analyzer(&["diff", x.to_str().unwrap(), y.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()
    };
    let find = |v: &serde_json::Value, d: &str| {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["driver"] == d)
            .unwrap()
            .clone()
    };
    let same = run(&a, &a2);
    for d in [SHMEM, "(no vm_ops)"] {
        assert_eq!(
            find(&same, d)["p50"]["beyond_noise"],
            false,
            "{d}: {same:#}"
        );
    }
    let changed = run(&a, &b);
    let ttm = find(&changed, TTM);
    assert_eq!(ttm["p50"]["beyond_noise"], true, "{ttm:#}");
    assert!(ttm["p50"]["change_pct"].as_f64().unwrap() > 10.0);
    assert_eq!(find(&changed, SHMEM)["p50"]["beyond_noise"], false);
    // Deterministic: the same inputs give the same intervals.
    assert_eq!(run(&a, &b), changed);
    let o = analyzer(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(stdout(&o).contains("SLOWER"), "{}", stdout(&o));
}

/// A damaged LZ4 length prefix makes polars' IPC reader allocate whatever it claims and abort;
/// the trace crate's checks must stop the load before polars reads that batch, and the batches
/// before it must still be shown.
#[test]
fn absurd_compressed_length_is_damage_not_an_abort() {
    let dir = scratch("lz4len");
    let p = dir.join("t.arrows");
    fault_trace(
        &p,
        &Shape {
            faults: 400,
            batches: 2,
            ..Shape::default()
        },
    );
    let mut bytes = std::fs::read(&p).unwrap();
    let msg_len =
        |b: &[u8], at: usize| i32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
    // Walk the messages (schema, then each batch after the dictionaries of its names) to the
    // second record batch.
    let mut at = 8 + msg_len(&bytes, 0);
    let mut batches = 0;
    let (body2, meta_bytes) = loop {
        let body = at + 8 + msg_len(&bytes, at);
        let m = arrow_ipc::root_as_message(&bytes[at + 8..body]).unwrap();
        if m.header_as_record_batch().is_some() {
            batches += 1;
            if batches == 2 {
                break (body, bytes[at + 8..body].to_vec());
            }
        }
        at = body + m.bodyLength() as usize;
    };
    let meta = arrow_ipc::root_as_message(&meta_bytes)
        .unwrap()
        .header_as_record_batch()
        .unwrap();
    // Every buffer of batch 2, so whichever columns a reader projects are hit.
    let targets: Vec<usize> = meta
        .buffers()
        .unwrap()
        .iter()
        .filter(|b| b.length() >= 8)
        .map(|b| body2 + b.offset() as usize)
        .collect();
    for at in targets {
        bytes[at..at + 8].copy_from_slice(&(1i64 << 50).to_le_bytes());
    }
    std::fs::write(&p, &bytes).unwrap();
    let o = analyzer(&["summary", p.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // The checksum sees the damage before the length check does.
    assert!(stderr(&o).contains("checksum"), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        row(&v, "(all)")["count"],
        280,
        "the first batch (200 faults) is kept"
    );
}

/// Faults from tracepoints (no latency) next to timed inserts: latency tables show what is
/// timed, and the report leaves out the fault-latency plots instead of drawing empty ones.
#[test]
fn faults_without_latency_next_to_timed_inserts() {
    use pfnscope_trace::{Record, TraceWriter};
    let dir = scratch("mixed");
    let p = dir.join("m.arrows");
    let mut w = TraceWriter::create(&p, &fentry_meta("6.18.0")).unwrap();
    for i in 0..300u64 {
        let fault = Record {
            id: 2 * i + 1,
            ts_ns: 1_000_000 + i * 50_000,
            hook: "exceptions:page_fault_user".into(),
            mode: "tp_btf".into(),
            error_code: Some(0x6),
            vma_flags: Some(RW_SHARED | VM_PFNMAP),
            driver: Some(SHMEM.into()),
            comm: "vgem-touch".into(),
            ..Default::default()
        };
        w.push(&fault);
        w.push(&Record {
            id: 2 * i + 2,
            ts_ns: fault.ts_ns + 2_000,
            latency_ns: Some(1_000 + i * 10),
            hook: "vmf_insert_pfn".into(),
            mode: "fentry".into(),
            ret: Some(0x100),
            ..fault
        });
    }
    w.finish().unwrap();
    let v = summary_json(p.to_str().unwrap(), "hook");
    assert_eq!(v["latency_available"], true);
    assert!(row(&v, "exceptions:page_fault_user")["p50_ns"].is_null());
    assert_eq!(row(&v, "exceptions:page_fault_user")["count"], 300);
    assert_eq!(row(&v, "vmf_insert_pfn")["max_ns"], 3_990);
    let out = dir.join("report");
    let o = analyzer(&["report", p.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("No latency plots"), "{html}");
    assert!(!html.contains("latency_hist_driver.png") && html.contains("rate_per_hook.png"));
}

/// A trace with both the probed handle_mm_fault and the fault tracepoints sees each fault
/// twice: only the probed calls count.
#[test]
fn faults_are_not_counted_twice_when_tracepoints_are_also_recorded() {
    use pfnscope_trace::{Record, TraceWriter};
    let dir = scratch("double");
    let p = dir.join("d.arrows");
    let mut w = TraceWriter::create(&p, &fentry_meta("7.2.13+deb14-amd64")).unwrap();
    for i in 0..100u64 {
        let tp = Record {
            id: 2 * i + 1,
            ts_ns: 1_000_000 + i * 50_000,
            hook: "exceptions:page_fault_user".into(),
            mode: "tp_btf".into(),
            error_code: Some(0x6),
            comm: "anon-touch".into(),
            ..Default::default()
        };
        w.push(&tp);
        w.push(&Record {
            id: 2 * i + 2,
            ts_ns: tp.ts_ns + 300,
            latency_ns: Some(1_500),
            hook: "handle_mm_fault".into(),
            mode: "fentry".into(),
            error_code: None,
            fault_flags: Some(0x255),
            vma_flags: Some(0x73),
            ret: Some(0),
            ..tp
        });
    }
    w.finish().unwrap();
    let v = summary_json(p.to_str().unwrap(), "driver");
    assert_eq!(v["faults"], 100);
    assert_eq!(row(&v, "(all)")["count"], 100);
    assert_eq!(row(&v, "(all)")["timed"], 100);
    // Per hook, both are still listed.
    let v = summary_json(p.to_str().unwrap(), "hook");
    assert_eq!(row(&v, "exceptions:page_fault_user")["count"], 100);
}

/// Corrupt values no kernel writes (a timestamp and latencies near 2^64, addresses at the
/// top of the space) are reported on, not a panic: every command still succeeds.
#[test]
fn absurd_timestamps_and_latencies_do_not_break_the_report() {
    use pfnscope_trace::{Record, TraceWriter};
    let dir = scratch("absurd");
    let p = dir.join("a.arrows");
    let mut w = TraceWriter::create(&p, &fentry_meta("6.12.0")).unwrap();
    for i in 0..200u64 {
        let wild = i % 50 == 7;
        w.push(&Record {
            id: i + 1,
            // The span from 0 to the top overflowed the plots' time buckets.
            ts_ns: match i % 50 {
                7 => u64::MAX,
                8 => 0,
                _ => 1_000_000 + i * 1_000,
            },
            latency_ns: Some(if wild { u64::MAX } else { 2_000 + i }),
            hook: "handle_mm_fault".into(),
            mode: "fentry".into(),
            address: Some(if wild {
                u64::MAX
            } else {
                0x7f00_0000_0000 + (i << 12)
            }),
            fault_flags: Some(0x1255),
            ret: Some(if wild { i64::MIN } else { 0x100 }),
            vma_flags: Some(RW_SHARED | VM_PFNMAP),
            driver: Some(SHMEM.into()),
            comm: "wild".into(),
            ..Default::default()
        });
    }
    w.finish().unwrap();
    let path = p.to_str().unwrap();
    let out = dir.join("report");
    for args in [
        vec!["summary", path],
        vec!["report", path, "-o", out.to_str().unwrap()],
        vec!["diff", path, path],
    ] {
        let o = analyzer(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
}

/// Rewrites a trace the way schema 1 wrote it: names as plain utf8 columns, not dictionaries.
fn rewrite_names_as_plain_strings(from: &std::path::Path, to: &std::path::Path) {
    use arrow_array::{
        Array, ArrayRef, DictionaryArray, RecordBatch, StringArray, types::Int32Type,
    };
    use arrow_ipc::{
        CompressionType,
        reader::StreamReader,
        writer::{IpcWriteOptions, StreamWriter},
    };
    use arrow_schema::{DataType, Field, Schema};
    let r = StreamReader::try_new(std::fs::File::open(from).unwrap(), None).unwrap();
    let old = r.schema();
    let fields: Vec<Field> = old
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(..) => Field::new(f.name(), DataType::Utf8, f.is_nullable()),
            _ => f.as_ref().clone(),
        })
        .collect();
    let mut md = old.metadata().clone();
    md.insert("pfnscope.schema_version".to_string(), "1".to_string());
    // Schema 1 had no checksums either.
    md.remove(pfnscope_trace::CHECKSUMS_KEY);
    let schema = Arc::new(Schema::new_with_metadata(fields, md));
    let opts = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::ZSTD))
        .unwrap();
    let mut w =
        StreamWriter::try_new_with_options(std::fs::File::create(to).unwrap(), &schema, opts)
            .unwrap();
    for b in r {
        let cols: Vec<ArrayRef> = b
            .unwrap()
            .columns()
            .iter()
            .map(
                |c| match c.as_any().downcast_ref::<DictionaryArray<Int32Type>>() {
                    Some(d) => {
                        let v = d.values().as_any().downcast_ref::<StringArray>().unwrap();
                        let plain: StringArray = d
                            .keys()
                            .iter()
                            .map(|k| k.map(|k| v.value(k as usize)))
                            .collect();
                        Arc::new(plain) as ArrayRef
                    }
                    None => c.clone(),
                },
            )
            .collect();
        w.write(&RecordBatch::try_new(schema.clone(), cols).unwrap())
            .unwrap();
    }
    w.finish().unwrap();
}

/// Schema 1 traces (names as plain strings, before dictionaries) give the same summary.
#[test]
fn schema_1_traces_with_plain_string_names_still_read() {
    let dir = scratch("schema1");
    let (new, old) = (dir.join("new.arrows"), dir.join("old.arrows"));
    fault_trace(&new, &Shape::default());
    rewrite_names_as_plain_strings(&new, &old);
    let r =
        arrow_ipc::reader::StreamReader::try_new(std::fs::File::open(&old).unwrap(), None).unwrap();
    assert_eq!(
        r.schema().field_with_name("driver").unwrap().data_type(),
        &arrow_schema::DataType::Utf8
    );
    for by in ["driver", "hook", "process"] {
        let (a, b) = (
            summary_json(new.to_str().unwrap(), by),
            summary_json(old.to_str().unwrap(), by),
        );
        for key in [
            "events",
            "faults",
            "latency",
            "vm_fault_mix",
            "retries",
            "pat",
        ] {
            assert_eq!(a[key], b[key], "{key} by {by}");
        }
        assert!(a["latency"].as_array().unwrap().len() > 1, "by {by}: {a:#}");
    }
}

/// Issue 21, point 4: `analyzer export --out` equal to its input replaced the trace with
/// Parquet (exit 0). No command writes over one of its inputs, with or without --force; an
/// existing export is replaced only with --force; a report never overwrites an input either.
#[test]
fn no_command_writes_over_its_input() {
    let dir = scratch("own-input");
    let p = dir.join("t.arrows");
    fault_trace(&p, &Shape::default());
    let before = std::fs::read(&p).unwrap();
    let t = p.to_str().unwrap();
    let link = dir.join("link.arrows");
    std::os::unix::fs::symlink(&p, &link).unwrap();
    for out in [t, link.to_str().unwrap()] {
        for force in [false, true] {
            let mut args = vec!["export", t, "--format", "parquet", "-o", out];
            if force {
                args.push("--force");
            }
            let e = one_line_error(&args);
            assert!(
                e.contains("is an input of this command") || e.contains("symbolic link"),
                "{e}"
            );
        }
    }
    let e = one_line_error(&["report", t, "-o", t]);
    assert!(e.contains("is an input of this command"), "{e}");
    // A report refreshes its directory, but not over an input it reads from there.
    let report = dir.join("report");
    std::fs::create_dir_all(&report).unwrap();
    let inside = report.join("index.html");
    std::fs::copy(&p, &inside).unwrap();
    let e = one_line_error(&[
        "report",
        inside.to_str().unwrap(),
        "-o",
        report.to_str().unwrap(),
    ]);
    assert!(e.contains("is an input of this command"), "{e}");
    assert_eq!(std::fs::read(&p).unwrap(), before, "the trace was changed");
    assert_eq!(
        std::fs::read(&inside).unwrap(),
        before,
        "the trace was changed"
    );

    let out = dir.join("t.csv");
    std::fs::write(&out, "an earlier export").unwrap();
    let o = out.to_str().unwrap();
    let e = one_line_error(&["export", t, "--format", "csv", "-o", o]);
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "an earlier export");
    let r = analyzer(&["export", t, "--format", "csv", "-o", o, "--force"]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(std::fs::read_to_string(&out).unwrap().starts_with("seq,"));
}

#[path = "../../pfnscope-trace/tests/matrix/mod.rs"]
mod matrix;

/// Issue 21's damage matrix: every reading command of the analyzer, on every kind of damage,
/// gives the exit status and the one line the scheme says (see `matrix`).
#[test]
fn damage_matrix_every_command_exit_status_and_message() {
    let dir = scratch("matrix");
    let clean = dir.join("clean.arrows");
    fault_trace(
        &clean,
        &Shape {
            faults: 400,
            batches: 5,
            ..Shape::default()
        },
    );
    let c = clean.to_str().unwrap();
    for case in matrix::cases(&dir.join("cases"), &clean) {
        let p = case.path.to_str().unwrap();
        let out = dir.join(format!("out-{}", case.name));
        let o = out.to_str().unwrap();
        let csv = format!("{o}.csv");
        let timeline = format!("{o}.pftrace");
        let runs: [(&str, Vec<&str>); 5] = [
            ("analyzer summary", vec!["summary", p]),
            (
                "analyzer export",
                vec!["export", p, "--format", "csv", "-o", &csv],
            ),
            (
                "analyzer export --format perfetto",
                vec!["export", p, "--format", "perfetto", "-o", &timeline],
            ),
            ("analyzer report", vec!["report", p, "-o", o]),
            ("analyzer diff", vec!["diff", c, p]),
        ];
        for (cmd, args) in runs {
            let r = analyzer(&args);
            case.expect
                .check(case.name, cmd, r.status.code(), &stderr(&r));
        }
    }
}
