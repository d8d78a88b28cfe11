//! Off-CPU time and stacks, for real on this machine's kernel, as root: faults on a file whose
//! pages were dropped from the page cache must block for the disk, and the trace must say so:
//! the time off-CPU, the episodes linked to their faults, the blocking site the kernel's code
//! says (mm/filemap.c: filemap_read_folio waits on the folio lock, folio_wait_bit_common), and
//! user stacks that name the workload's own function.
//!
//! The workload is this test binary re-run with PFNSCOPE_COLD_FILE set; it prints how long its
//! faulting loop took, the wall time the off-CPU time is compared with.

use std::{io::Write, path::PathBuf, process::Command};

use pfnscope_trace::read_trace;

fn skip(why: &str) {
    // Straight to fd 2: the harness captures eprintln!, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED {}: {why}", module_path!());
}

/// The child side: runs only when re-executed by the test below.
#[test]
fn cold_file_child() {
    let Ok(dir) = std::env::var("PFNSCOPE_COLD_FILE") else {
        return;
    };
    workload::blocking::cold_file(Some(&dir)).unwrap();
    // Stay a moment: the collector names user frames from the running process, and on a busy
    // machine it can decode the last stacks after a process that exits at once is gone (its
    // mappings with it; the tracer's limit, said in README). This test is about where faults
    // block and what the stacks say, so its process lives until they are decoded.
    std::thread::sleep(std::time::Duration::from_secs(1));
}

/// A directory on a disk-backed filesystem (tmpfs pages never leave memory: nothing to wait
/// for), or why there is none.
fn disk_dir() -> Result<PathBuf, String> {
    let dir = PathBuf::from("/var/tmp");
    let c = std::ffi::CString::new("/var/tmp").unwrap();
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err("cannot statfs /var/tmp".into());
    }
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    if matches!(st.f_type as i64, TMPFS_MAGIC | RAMFS_MAGIC) {
        return Err(
            "/var/tmp is in memory (tmpfs or ramfs): file faults never wait for a disk".into(),
        );
    }
    Ok(dir)
}

#[test]
fn cold_file_faults_block_on_the_folio_lock_and_say_where() {
    if unsafe { libc::geteuid() } != 0 {
        return skip("needs root to load eBPF programs");
    }
    let dir = match disk_dir() {
        Ok(d) => d,
        Err(why) => return skip(&why),
    };
    let out = std::env::temp_dir().join(format!("pfnscope-why-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let trace = out.join("t.arrows");
    let o = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["record", "--quiet", "--stacks=all", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cold_file_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PFNSCOPE_COLD_FILE", &dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "tracer record failed: {stderr}");
    // "cold-file: 1024 pages faulted from disk in 164669 us"
    let line = stdout
        .split("cold-file:")
        .nth(1)
        .unwrap_or_else(|| panic!("the workload did not run: {stdout}"));
    let line = line.lines().next().unwrap_or_default();
    let words: Vec<&str> = line.split_whitespace().collect();
    let pages: u64 = words[0].parse().unwrap();
    let loop_ns: u64 = words[words.len() - 2].parse::<u64>().unwrap() * 1000;

    let t = read_trace(&trace).unwrap();
    assert_eq!(t.damage, None);
    let meta = t
        .meta
        .stacks
        .as_ref()
        .expect("the trace says what stacks it has");
    if !meta.offcpu {
        return skip(&format!(
            "sched:sched_switch did not attach here: {:?}",
            meta.missing
        ));
    }
    let faults: std::collections::HashMap<u64, &pfnscope_trace::Record> = t
        .events()
        .filter(|r| pfnscope_abi::Hook::parse(&r.hook).is_some_and(|h| h.is_fault()))
        .map(|r| (r.id, r))
        .collect();
    let episodes: Vec<&pfnscope_trace::Record> = t
        .events()
        .filter(|r| r.hook == "sched:sched_switch")
        .collect();
    // Readahead is off: about one wait per page (a page already read by a neighbour's I/O
    // does not wait).
    assert!(
        episodes.len() as u64 >= pages / 2,
        "{} off-CPU episodes for {pages} cold pages",
        episodes.len()
    );
    for e in &episodes {
        // Inside a fault: a fault row is its parent (directly, or through the calls nested
        // in it where function hooks attached).
        let mut p = e.parent;
        let mut hops = 0;
        while !faults.contains_key(&p) {
            p = t
                .events()
                .find(|r| r.id == p)
                .unwrap_or_else(|| panic!("episode {} has no fault above it", e.id))
                .parent;
            hops += 1;
            assert!(hops < 8, "episode {} has no fault above it", e.id);
        }
        assert_eq!(
            e.offcpu_ns, e.latency_ns,
            "an episode's time is its off-CPU time"
        );
        let k = e.kstack.expect("an episode has its kernel stack");
        assert!(!k.contains("0xffff"), "a raw kernel address in {k}");
    }
    let at_folio = episodes
        .iter()
        .filter(|e| e.block_site.is_some_and(|s| s == "folio_wait_bit_common"))
        .count();
    assert!(
        at_folio * 10 >= episodes.len() * 9,
        "{at_folio} of {} episodes blocked in folio_wait_bit_common: {:?}",
        episodes.len(),
        episodes.iter().map(|e| e.block_site).collect::<Vec<_>>()
    );
    // The loop spent most of its time waiting for the disk.
    let off: u64 = episodes.iter().filter_map(|e| e.offcpu_ns).sum();
    assert!(
        off * 2 >= loop_ns,
        "off-CPU {off} ns of a {loop_ns} ns faulting loop"
    );
    // The user stacks name the function that faulted.
    let named = faults
        .values()
        .filter(|f| f.ustack.is_some_and(|u| u.contains("touch_cold_pages")))
        .count() as u64;
    assert!(
        named >= pages / 2,
        "{named} of {pages} faults have a user stack naming touch_cold_pages"
    );
    let _ = std::fs::remove_dir_all(&out);
}
