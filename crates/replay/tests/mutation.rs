//! Mutation testing: at least 95% of the mutants of a correct trace must be flagged, and no
//! mutant may panic the replay. Runs on the hand-built workloads of every rule set, and on every
//! real trace the test box left under `target/testbox/<kernel>/<workload>.arrows`, which must
//! first replay clean and show exactly the findings its driver is known for.

use std::path::PathBuf;

use pfnscope_abi::bits::pfn_t;
use pfnscope_abi::kernel::Series;
use replay::honest;
use replay::kernel::KernelRules;
use replay::mutate::{MutationScore, score};
use replay::run::rules_for;
use replay::synth::workload;

const THRESHOLD: f64 = 0.95;

fn assert_score(name: &str, s: &MutationScore) {
    println!(
        "{name}: {}/{} flagged ({:.1}%) per kind {:?}",
        s.flagged,
        s.total,
        s.ratio() * 100.0,
        s.per_kind
    );
    for m in &s.missed {
        println!("  missed: {m}");
    }
    assert!(s.total > 0, "{name}: no mutants");
    assert!(
        s.ratio() >= THRESHOLD,
        "{name}: only {:.1}% of {} mutants flagged",
        s.ratio() * 100.0,
        s.total
    );
}

#[test]
fn hand_built_traces() {
    for series in [Series::V6_1, Series::V6_12, Series::V6_16] {
        let b = workload(series);
        let s = score(&b.records(), &b.meta(), &KernelRules::for_series(series));
        assert_score(&format!("hand-built {series}"), &s);
        // Every kind of mutation is exercised.
        for kind in [
            "ReturnCode",
            "CacheMode",
            "DropPat",
            "ReorderPat",
            "PteAfterTruncate",
            "InsertIntoPlainVma",
            "StaleFaultVma",
            "WritableCowPfn",
        ] {
            assert!(s.per_kind.contains_key(kind), "{series}: no {kind} mutant");
        }
    }
}

/// Where `cargo xtask testbox` leaves its traces: under cargo's target directory, which CI
/// moves out of the clone with CARGO_TARGET_DIR; `PFNSCOPE_TESTBOX` points elsewhere (a
/// directory of `<kernel>/<workload>.arrows`, e.g. kept from several runs).
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

/// The findings a correct kernel shows for a test-box workload, as (rule, driver): what a
/// driver author is meant to see on these drivers.
fn known_findings(workload: &str, series: Series) -> Vec<(&'static str, &'static str)> {
    match workload {
        // TTM moves bochs' buffers to VRAM and asks for WC, but nothing reserved the BAR WC:
        // PAT's lookup of an unreserved non-RAM pfn gives UC-.
        "drm-bochs" if series != Series::V6_16 => {
            vec![("find.wc_downgrade", "ttm_bo_vm_ops [ttm]")]
        }
        // 7.x's bochs keeps its buffers in shmem pages: no VRAM, nothing downgraded.
        "drm-bochs" => vec![],
        // The workload opens /dev/mem O_SYNC for the VGA window too: UC- requested, but the
        // legacy ISA range is never tracked and maps WB (is_new_memtype_allowed lets it).
        // 7.x remaps /dev/mem in mmap_prepare, with no vma to name the driver by.
        "devmem-shared" if series != Series::V6_16 => vec![("find.wc_to_wb", "mmap_mem_ops")],
        "devmem-shared" => vec![("find.wc_to_wb", "-")],
        // vgem maps shmem RAM pages write-combined through vmf_insert_pfn.
        "drm-vgem" => vec![(
            "find.ram_memtype",
            "drm_gem_shmem_vm_ops [drm_shmem_helper]",
        )],
        _ => vec![],
    }
}

fn real_traces() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(kernels) = std::fs::read_dir(testbox()) else {
        return out;
    };
    for k in kernels.flatten() {
        if let Ok(files) = std::fs::read_dir(k.path()) {
            for f in files.flatten() {
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
fn real_traces_from_the_test_box() {
    let traces = real_traces();
    if traces.is_empty() {
        // Straight to fd 2: the harness captures println!, and a skip must be seen.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED real traces: none under {} (run `cargo xtask testbox` first)",
            testbox().display()
        );
        return;
    }
    for path in traces {
        println!("using real trace {}", path.display());
        let t =
            pfnscope_trace::read_trace(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let rules = rules_for(&t.meta, None).expect("rules from metadata");
        // A correct kernel replays clean: the mutation score is only meaningful then.
        // With the loss counters the trace came with, as `replay check` reads it.
        let base = replay::check_trace(&t, rules.clone(), &path.display().to_string());
        assert_eq!(
            base.summary.divergences,
            0,
            "{}:\n{}",
            path.display(),
            base.to_human()
        );
        // With the kernel's state at start recorded, what the model cannot decide is a blind
        // spot of at most 1% of the checks.
        if t.meta.start_state.is_some() {
            assert!(
                base.summary.not_checkable_share <= 0.01,
                "{}: {:.2}% not checkable\n{}",
                path.display(),
                100.0 * base.summary.not_checkable_share,
                base.to_human()
            );
        }
        // The file path (rows read in place, unread columns left compressed) replays as the
        // records do; in a debug build it also proves no rule reads a column it leaves unread.
        let from_file = replay::check_file(&path, &replay::CheckOptions::default(), |_, _| {})
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            serde_json::to_value(&from_file).unwrap(),
            serde_json::to_value(&base).unwrap(),
            "{}: check_file and check_trace differ",
            path.display()
        );
        let o = replay::overhead_file(&path, 10, |_, _| {})
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(o.damage, None, "{}", path.display());
        assert_eq!(o.events, base.events, "{}", path.display());
        let workload = path.file_stem().unwrap().to_string_lossy();
        // One group per (rule, driver).
        let seen: Vec<(&str, &str)> = base
            .findings
            .iter()
            .map(|f| (f.rule.id(), f.driver.as_deref().unwrap_or("-")))
            .collect();
        assert_eq!(
            seen,
            known_findings(&workload, rules.series()),
            "{}: findings\n{}",
            path.display(),
            base.to_human()
        );
        if workload == "dax" && rules.series() != Series::V6_16 {
            // device-dax inserts devmap pfn_t's: the flags must survive BTF typing and decoding,
            // or the model falls back to guessing from the driver's name.
            let inserts: Vec<_> = t
                .records
                .iter()
                .filter(|r| {
                    r.hook == "vmf_insert_mixed" || r.hook.starts_with("vmf_insert_pfn_pmd")
                })
                .collect();
            assert!(!inserts.is_empty(), "{}: no dax inserts", path.display());
            for r in inserts {
                assert!(
                    r.pfn_flags.is_some_and(pfn_t::is_devmap),
                    "{}: seq {} {} has pfn_flags {:#x?}",
                    path.display(),
                    r.seq,
                    r.hook,
                    r.pfn_flags
                );
            }
        }
        assert_score(
            &path.display().to_string(),
            &score(&t.records, &t.meta, &rules),
        );
        let h = honest::score(&t.records, &t.meta, &rules);
        println!(
            "{} honest: {}/{} flagged ({:.1}%) per kind {:?}; the unmutated trace: {} divergences",
            path.display(),
            h.flagged,
            h.total,
            h.ratio() * 100.0,
            h.per_kind,
            base.summary.divergences
        );
        for m in &h.missed {
            println!("  missed: {m}");
        }
    }
}
