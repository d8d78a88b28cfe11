//! Real traces from the qemu test box (`cargo xtask testbox` writes
//! target/testbox/<kernel>/<workload>.arrows): each must load, summarise under every grouping
//! and render a report (also looked for under $CARGO_TARGET_DIR/testbox and
//! $PFNSCOPE_TESTBOX_DIR). Without any, the test says SKIPPED and why.

mod common;

use std::path::PathBuf;

use analyzer::{GroupBy, LoadOptions, Replay, ReportOptions, Summary, Trace, write_report};
use common::*;

fn traces() -> Vec<PathBuf> {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("../..");
    let mut dirs = vec![root.join("target/testbox")];
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(t).join("testbox"));
    }
    // Traces recorded with another target directory than this build's.
    if let Some(t) = std::env::var_os("PFNSCOPE_TESTBOX_DIR") {
        dirs.push(PathBuf::from(t));
    }
    let mut out = Vec::new();
    for d in dirs {
        for kernel in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(kernel.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if f.path().extension().is_some_and(|e| e == "arrows") {
                    out.push(f.path());
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn testbox_traces_summarise_and_report() {
    let found = traces();
    if found.is_empty() {
        skip(
            "testbox_traces_summarise_and_report: no target/testbox/<kernel>/*.arrows (run `cargo xtask testbox` to record them)",
        );
        return;
    }
    let scratch = scratch("testbox");
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("testbox: {} traces\n", found.len()).as_bytes(),
    );
    for (i, p) in found.iter().enumerate() {
        let t = match Trace::load(p, &LoadOptions::default()) {
            Ok(t) => t,
            // A workload that faults nothing traceable is still a valid recording.
            Err(analyzer::AnalyzerError::NoEvents { .. }) => continue,
            Err(e) => panic!("{}: {e}", p.display()),
        };
        for by in GroupBy::ALL {
            let s = Summary::compute(&t, by).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(s.events > 0);
            let text = analyzer::text::render(&s);
            assert!(!text.contains("NaN"), "{}:\n{text}", p.display());
            if s.latency_available {
                let all = &s.latency[0];
                assert!(all.p50_ns.unwrap() <= all.max_ns.unwrap() as f64);
            }
        }
        let dir = scratch.join(format!("{i}"));
        let w = write_report(&t, &Replay::default(), &dir, &ReportOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(!w.images.is_empty());
    }
}
