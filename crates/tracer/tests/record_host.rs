//! `tracer record` for real on this machine's kernel, as root: whatever rung the kernel allows
//! (tracepoints on the development VM, fentry on a test box), the trace must hold every fault
//! of a known workload.
//!
//! The fault generator is this test binary itself, re-run with PFNSCOPE_FAULTGEN set: it maps
//! an anonymous region with 4 KiB pages, touches every page once and prints the region.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use pfnscope_trace::read_trace;

const PAGES: usize = 4096;

fn skip(why: &str) {
    // Straight to fd 2: the harness captures eprintln!, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED {}: {why}", module_path!());
}

fn tracer() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tracer"))
}

/// Records this test binary re-run as the child test `child`, with `env` naming the file the
/// child writes its regions to. Returns the tracer's stderr once the recording succeeded.
fn record_child(trace: &Path, args: &[&str], child: &str, env: &str, out: &Path) -> String {
    let o = Command::new(tracer())
        .args(["record", "--quiet"])
        .args(args)
        .arg("-o")
        .arg(trace)
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", child, "--nocapture", "--test-threads=1"])
        .env(env, out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "tracer record failed: {stderr}");
    stderr
}

/// The child side: runs only when re-executed by `fault_count_matches_pages_touched`.
#[test]
fn faultgen_child() {
    let Ok(out) = std::env::var("PFNSCOPE_FAULTGEN") else {
        return;
    };
    let len = PAGES * 4096;
    let m = workload::sys::Map::anon(len).unwrap();
    m.write_all(1);
    std::fs::write(out, format!("{:#x} {len}", m.ptr as usize)).unwrap();
}

#[test]
fn fault_count_matches_pages_touched() {
    if unsafe { libc::geteuid() } != 0 {
        return skip("needs root to load eBPF programs");
    }
    let dir = std::env::temp_dir().join(format!("pfnscope-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("t.arrows");
    let region = dir.join("region");
    let stderr = record_child(&trace, &[], "faultgen_child", "PFNSCOPE_FAULTGEN", &region);
    let text = std::fs::read_to_string(&region).expect("the generator ran");
    let (start, len) = text.split_once(' ').unwrap();
    let start = u64::from_str_radix(start.trim_start_matches("0x"), 16).unwrap();
    let end = start + len.parse::<u64>().unwrap();

    let t = read_trace(&trace).unwrap();
    assert_eq!(t.damage, None);
    assert!(!t.meta.hook_plan.is_empty());
    // One fault per page, seen by whichever fault hook attached (handle_mm_fault may run twice
    // per fault on 6.12+ when the VMA-lock attempt retries, so count distinct pages).
    let fault_hook = if t.events().any(|r| r.hook == "handle_mm_fault") {
        "handle_mm_fault"
    } else {
        "exceptions:page_fault_user"
    };
    let mut pages: Vec<u64> = t
        .events()
        .filter(|r| r.hook == fault_hook)
        .filter_map(|r| r.address)
        .filter(|a| (start..end).contains(a))
        .map(|a| a >> 12)
        .collect();
    pages.sort_unstable();
    pages.dedup();
    let seen = pages.len() as f64;
    assert!(
        (seen - PAGES as f64).abs() <= PAGES as f64 * 0.01,
        "{fault_hook}: {seen} of {PAGES} pages seen\n{stderr}"
    );
    // No counter row reports losses.
    for c in t.counters.per_cpu() {
        assert_eq!(c.dropped, 0, "cpu {} dropped events", c.cpu);
    }
    // tp_btf finds the vma: an anonymous, private one without vm_ops.
    if let Some(r) = t.events().find(|r| {
        r.hook == fault_hook
            && r.address.is_some_and(|a| (start..end).contains(&a))
            && r.vma_start.is_some()
    }) {
        assert!(
            r.vma_start.unwrap() <= start && r.vma_end.unwrap() >= end,
            "{r:?}"
        );
        assert_eq!(r.driver, None);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The child side of `a_rename_between_faults_shows_at_once`: faults in region A, renames
/// itself, faults in region B, and writes both regions.
#[test]
fn rename_child() {
    let Ok(out) = std::env::var("PFNSCOPE_RENAME") else {
        return;
    };
    let len = 512 * 4096;
    let a = workload::sys::Map::anon(len).unwrap();
    a.write_all(1);
    let name = c"pfnscope-renamd";
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) },
        0
    );
    let b = workload::sys::Map::anon(len).unwrap();
    b.write_all(1);
    std::fs::write(out, format!("{} {} {len}", a.ptr as usize, b.ptr as usize)).unwrap();
}

/// The fault programs reuse a thread's name from a per-CPU cache; a rename must show on the
/// very next fault, not when the cache entry ages out.
#[test]
fn a_rename_between_faults_shows_at_once() {
    if unsafe { libc::geteuid() } != 0 {
        return skip("needs root to load eBPF programs");
    }
    let dir = std::env::temp_dir().join(format!("pfnscope-rename-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("t.arrows");
    let regions = dir.join("regions");
    let stderr = record_child(
        &trace,
        &["--hooks", "page_fault_user"],
        "rename_child",
        "PFNSCOPE_RENAME",
        &regions,
    );
    let text = std::fs::read_to_string(&regions).expect("the child ran");
    let v: Vec<u64> = text.split(' ').map(|w| w.parse().unwrap()).collect();
    let (a, b, len) = (v[0], v[1], v[2]);
    let t = read_trace(&trace).unwrap();
    let names = |start: u64| -> Vec<String> {
        t.events()
            .filter(|r| r.hook == "exceptions:page_fault_user")
            .filter(|r| r.address.is_some_and(|x| (start..start + len).contains(&x)))
            .map(|r| r.comm.to_string())
            .collect()
    };
    let (before, after) = (names(a), names(b));
    let pages = (len / 4096) as usize;
    assert!(before.len() >= pages && after.len() >= pages, "{stderr}");
    assert!(
        before.iter().all(|n| n != "pfnscope-renamd"),
        "a fault before the rename carries the new name"
    );
    let stale = after.iter().filter(|n| *n != "pfnscope-renamd").count();
    assert_eq!(
        stale, 0,
        "{stale} faults after the rename carry the old name"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unknown_hook_bad_filter_and_missing_target_fail_in_one_line() {
    let table: &[(&[&str], &str)] = &[
        (
            &["record", "--hooks", "handle_mm_fault,nope", "-a"],
            "unknown hook `nope`",
        ),
        (
            &["record", "-o", "/nonexistent-dir/t.arrows", "-a"],
            "does not exist",
        ),
        (&["record"], "say what to trace"),
        (&["record", "-p", "999999999"], "no process with pid"),
        (
            &["record", "--addr-range", "5-1", "-a"],
            "START must be below END",
        ),
    ];
    for (args, want) in table {
        let out = Command::new(tracer()).args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            err.trim().lines().count() <= 3,
            "{args:?}: not a short error: {err}"
        );
    }
}

#[test]
fn doctor_json_describes_every_hook() {
    let out = Command::new(tracer())
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("doctor --json prints JSON");
    let hooks = v["hooks"].as_array().unwrap();
    assert_eq!(hooks.len(), pfnscope_abi::Hook::COUNT);
    assert!(v["kernel_release"].as_str().is_some_and(|s| !s.is_empty()));
    if unsafe { libc::geteuid() } != 0 {
        return skip("doctor ran unprivileged: attach modes not checked");
    }
    assert_eq!(v["ready"], true, "{v:#}");
    // Whatever this kernel is, page faults are covered by some rung.
    let fault = hooks
        .iter()
        .find(|h| h["hook"] == "handle_mm_fault")
        .unwrap();
    let tp = hooks
        .iter()
        .find(|h| h["hook"] == "exceptions:page_fault_user")
        .unwrap();
    assert!(fault["mode"].is_string() || tp["mode"].is_string(), "{v:#}");
}
