//! `analyzer export --format perfetto`, checked by an independent decoder: Perfetto's own
//! generated protobuf classes (the `perfetto` PyPI package, which `cargo xtask setup` installs)
//! read the file in `data/perfetto_decode.py` and rebuild the timeline a viewer would show.
//! Without python3 or the package the test says SKIPPED and why.

mod common;

use std::process::Command;

use common::*;
use pfnscope_trace::read_trace;
use serde_json::Value;

const DECODER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/perfetto_decode.py");

/// The decoder's view of `trace`, or None (SKIPPED said) when it cannot run here.
fn decode(trace: &std::path::Path) -> Option<Value> {
    let o = match Command::new("python3").arg(DECODER).arg(trace).output() {
        Ok(o) => o,
        Err(e) => {
            skip(&format!("perfetto export: no python3 ({e})"));
            return None;
        }
    };
    if o.status.code() == Some(77) {
        skip(&format!(
            "perfetto export: {} (pip install perfetto protobuf; `cargo xtask setup` does)",
            stderr(&o).trim()
        ));
        return None;
    }
    assert!(o.status.success(), "decoder failed: {}", stderr(&o));
    Some(serde_json::from_slice(&o.stdout).unwrap())
}

#[test]
fn the_timeline_nests_calls_per_thread_and_places_rule_events_at_their_calls() {
    let dir = scratch("perfetto");
    let trace = dir.join("t.arrows");
    fault_trace(&trace, &Shape::default());
    // A divergence at a TTM insert and a finding at its PAT call, as `replay check` names them.
    let t = read_trace(&trace).unwrap();
    let insert = t
        .events()
        .find(|r| r.hook.as_str() == "vmf_insert_pfn_prot" && r.pid == 301)
        .unwrap();
    let pat = t
        .events()
        .find(|r| r.hook.as_str() == "track_pfn_insert" && r.parent == insert.id)
        .unwrap();
    let report = dir.join("check.json");
    std::fs::write(
        &report,
        serde_json::json!({
            "schema": "pfnscope.replay.check/1",
            "divergences": [{"rule": "pat.lookup", "expected": "WC", "observed": "UC-",
                             "seqs": [insert.seq], "ids": [insert.id], "source": "memtype.c"}],
            "findings": [{"rule": "find.wc_downgrade", "driver": TTM, "count": 800,
                          "message": "WC requested, UC- mapped", "seqs": [pat.seq],
                          "ids": [pat.id], "source": "memtype.c"}],
        })
        .to_string(),
    )
    .unwrap();
    let out = dir.join("t.pftrace");
    let _ = std::fs::remove_file(&out);
    let o = analyzer(&[
        "export",
        trace.to_str().unwrap(),
        "--format",
        "perfetto",
        "--replay",
        report.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("on 3 thread tracks, 2 divergences and findings"),
        "{}",
        stdout(&o)
    );
    let Some(v) = decode(&out) else { return };

    assert_eq!(v["errors"], serde_json::json!([]), "{v:#}");
    // One process and one thread track per workload process, named by its comm.
    let tracks = v["tracks"].as_array().unwrap();
    for (pid, comm) in [
        (301, "bochs-touch"),
        (302, "vgem-touch"),
        (303, "anon-touch"),
    ] {
        let n = |want_tid: bool| {
            tracks
                .iter()
                .filter(|t| t["pid"] == pid && t["name"] == comm && t["tid"].is_null() != want_tid)
                .count()
        };
        assert_eq!((n(false), n(true)), (1, 1), "pid {pid}: {tracks:?}");
    }
    // 2000 faults and 800 VMA-lock retries, none inside another (the synthetic times overlap
    // now and then: the parent links decide the nesting); every PFN insert (TTM and shmem: 1200) inside its
    // fault, with its PAT call inside it.
    let paths = v["paths"].as_object().unwrap();
    let count = |f: &dyn Fn(&str) -> bool| -> u64 {
        paths
            .iter()
            .filter(|(p, _)| f(p))
            .map(|(_, n)| n.as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        count(&|p| p.ends_with("handle_mm_fault")),
        2800,
        "{paths:?}"
    );
    assert_eq!(
        count(&|p| p.ends_with("handle_mm_fault > vmf_insert_pfn_prot > track_pfn_insert")),
        1200,
        "{paths:?}"
    );
    assert_eq!(v["slices"], 2800 + 1200 * 2);
    // The rule events, on the thread of their deciding call, inside it.
    let instants = v["instants"].as_array().unwrap();
    let rule = |name: &str| {
        instants
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {instants:?}"))
    };
    let d = rule("pat.lookup");
    assert_eq!(d["categories"], serde_json::json!(["divergence"]));
    assert_eq!(d["tid"], 301);
    assert!(
        d["inside"]
            .as_str()
            .unwrap()
            .ends_with("handle_mm_fault > vmf_insert_pfn_prot"),
        "{d}"
    );
    assert_eq!(d["args"]["observed"], "UC-");
    let f = rule("find.wc_downgrade");
    assert_eq!(f["categories"], serde_json::json!(["finding"]));
    assert!(
        f["inside"]
            .as_str()
            .unwrap()
            .ends_with("vmf_insert_pfn_prot > track_pfn_insert"),
        "{f}"
    );
    assert_eq!(f["args"]["occurrences"], 800);
}

#[test]
fn replay_reports_go_with_the_timeline_only() {
    let dir = scratch("perfetto-bad");
    let trace = dir.join("t.arrows");
    fault_trace(
        &trace,
        &Shape {
            faults: 20,
            ..Shape::default()
        },
    );
    let overhead = dir.join("overhead.json");
    std::fs::write(&overhead, r#"{"schema":"pfnscope.replay.overhead/1"}"#).unwrap();
    let out = dir.join("t.pftrace");
    let _ = std::fs::remove_file(&out);
    let (t, r, o) = (
        trace.to_str().unwrap(),
        overhead.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let e = analyzer(&["export", t, "--format", "perfetto", "--replay", r, "-o", o]);
    assert_eq!(e.status.code(), Some(3), "{}", stderr(&e));
    assert!(stderr(&e).contains("overhead report"), "{}", stderr(&e));
    let e = analyzer(&["export", t, "--format", "csv", "--replay", r, "-o", o]);
    assert!(!e.status.success());
    assert!(
        stderr(&e).contains("--replay goes with --format perfetto"),
        "{}",
        stderr(&e)
    );
    assert!(!out.exists(), "nothing written on a refused export");
}
