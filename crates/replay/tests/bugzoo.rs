//! The bug zoo, replayed: every `bugzoo-<mode>` trace the test box recorded on Debian 6.1, 6.12
//! and 7.2 (under `<kernel>/bugzoo/`) must report exactly the rules its mode's row of
//! `workload::bugzoo` names (`bugzoo-correct`: nothing at all), and every `x86/PAT:` line the
//! kernel logged while it ran must be explained by one of the rules reported.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pfnscope_abi::kernel::Series;
use replay::Rule;
use workload::bugzoo::{self, MODES};

/// Where `cargo xtask testbox` leaves its results (see `mutation.rs`).
fn testbox() -> PathBuf {
    if let Some(d) = std::env::var_os("PFNSCOPE_TESTBOX") {
        return PathBuf::from(d);
    }
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t).join("testbox"),
        None => PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"))
            .join("../../target/testbox"),
    }
}

fn skip(why: String) {
    use std::io::Write;
    // Straight to fd 2: the harness captures println!, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// The rules that explain a line the kernel's PAT code logs, by what it says
/// (arch/x86/mm/pat/memtype.c's pr_info/pr_warn/pr_err lines).
const KERNEL_WORDS: &[(&str, &[&str])] = &[
    // memtype_free: no exact or end match (memtype_erase).
    (
        "freeing invalid memtype",
        &["find.partial_untrack", "pat.free", "pat.untrack"],
    ),
    // reserve_pfn_range, RAM: the page's memtype wins over the request.
    (
        "map pfn RAM range req",
        &["find.wc_to_wb", "find.cache_changed", "find.linear_alias"],
    ),
    // reserve_pfn_range, strict or not allowed: -EINVAL.
    (
        "map pfn expected mapping type",
        &["pat.remap", "fork.copy", "find.cache_changed"],
    ),
    // memtype_check_conflict.
    (
        "conflicting memory types",
        &["pat.reserve", "find.alias", "find.cache_changed"],
    ),
    ("reserve_ram_pages_type failed", &["pat.reserve"]),
    ("memtype_reserve failed", &["pat.reserve", "pat.remap"]),
];

fn explained_by(line: &str) -> Option<&'static [&'static str]> {
    KERNEL_WORDS
        .iter()
        .find(|(words, _)| line.contains(words))
        .map(|(_, rules)| *rules)
}

#[test]
fn the_table_names_real_rules() {
    for m in MODES {
        for o in m.outcomes {
            for r in o.rules {
                assert!(Rule::by_id(r).is_some(), "{}: no rule {r}", m.workload);
            }
        }
    }
    for (_, rules) in KERNEL_WORDS {
        for r in *rules {
            assert!(Rule::by_id(r).is_some(), "no rule {r}");
        }
    }
}

fn zoo_traces(kernel_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(kernel_dir.join("bugzoo"))
        .map(|d| {
            d.flatten()
                .map(|f| f.path())
                .filter(|p| p.extension().is_some_and(|e| e == "arrows"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn every_mode_is_reported_by_its_rules_on_every_kernel() {
    let root = testbox();
    let mut seen_series: BTreeSet<Series> = BTreeSet::new();
    for kernel in ["6.1", "6.12", "7.2"] {
        let dir = root.join(kernel);
        let traces = zoo_traces(&dir);
        if traces.is_empty() {
            skip(format!(
                "bug zoo on {kernel}: no traces under {} (run `cargo xtask testbox`)",
                dir.join("bugzoo").display()
            ));
            continue;
        }
        // A mode the box did not run (`testbox --workload` picks some) is said, not passed.
        for m in MODES {
            if !traces
                .iter()
                .any(|p| p.file_stem() == Some(m.workload.as_ref()))
            {
                skip(format!(
                    "{} on {kernel}: no trace (run `cargo xtask testbox`)",
                    m.workload
                ));
            }
        }
        for path in traces {
            let w = path.file_stem().unwrap().to_string_lossy().to_string();
            let mode = bugzoo::mode(&w).unwrap_or_else(|| panic!("{w}: not a zoo mode"));
            let rep = replay::check_file(&path, &replay::CheckOptions::default(), |_, _| {})
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let series =
                replay::run::rules_for(&pfnscope_trace::read_trace(&path).unwrap().meta, None)
                    .unwrap()
                    .series();
            seen_series.insert(series);
            let outcome = mode
                .outcome(series)
                .unwrap_or_else(|| panic!("{w}: no outcome for {series}"));
            if let Some(why) = outcome.skip {
                skip(format!("{w} on {kernel}: {why}"));
                continue;
            }
            let reported: BTreeSet<&str> = rep
                .divergences
                .iter()
                .map(|d| d.rule.id())
                .chain(rep.findings.iter().map(|f| f.rule.id()))
                .collect();
            let expected: BTreeSet<&str> = outcome.rules.iter().copied().collect();
            assert_eq!(
                reported,
                expected,
                "{} on {kernel}: reported vs the zoo's table\n{}",
                w,
                rep.to_human()
            );
            let dmesg = std::fs::read_to_string(path.with_extension("dmesg")).unwrap_or_default();
            for line in bugzoo::pat_lines(&dmesg) {
                let rules = explained_by(line)
                    .unwrap_or_else(|| panic!("{w} on {kernel}: no rule explains `{line}`"));
                assert!(
                    rules.iter().any(|r| reported.contains(r)),
                    "{w} on {kernel}: the kernel said `{}`, and the replay reported none of {rules:?}\n{}",
                    line.trim(),
                    rep.to_human()
                );
            }
        }
    }
    println!("bug zoo replayed on {seen_series:?}");
}
