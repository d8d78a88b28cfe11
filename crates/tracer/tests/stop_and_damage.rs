//! How a recording ends: SIGINT/SIGTERM finish the file cleanly (even while the programs are
//! still loading), SIGKILL loses at most the last second and the file says it was cut short,
//! a full disk stops with a clear error and keeps every complete batch in a file every Arrow
//! reader opens. Root only (they load eBPF for real); skipped with the reason otherwise.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use pfnscope_trace::{DamageKind, read_trace};

fn skip(why: &str) -> bool {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
    true
}

fn not_root() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    !root && skip("needs root to load eBPF programs")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pfnscope-stop-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn record_all(out: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["record", "-a", "--quiet", "--force", "-o"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Faults in this process while the tracer records everything, until `d` has passed.
fn make_faults(d: Duration) {
    let start = Instant::now();
    let len = 8 << 20;
    while start.elapsed() < d {
        // Fresh mappings each time: malloc would recycle memory and fault only once.
        let m = workload::sys::Map::anon(len).unwrap();
        m.write_all(1);
        drop(m);
        sleep(Duration::from_millis(20));
    }
}

fn wait_until_recording(out: &Path) {
    let t = Instant::now();
    while !out.exists() && t.elapsed() < Duration::from_secs(30) {
        sleep(Duration::from_millis(50));
    }
    assert!(out.exists(), "tracer never created {}", out.display());
}

#[test]
fn sigterm_and_sigint_finish_the_file_and_exit_zero() {
    if not_root() {
        return;
    }
    for (sig, name) in [(libc::SIGTERM, "term"), (libc::SIGINT, "int")] {
        let out = tmpdir(name).join("t.arrows");
        let child = record_all(&out);
        wait_until_recording(&out);
        make_faults(Duration::from_millis(800));
        unsafe { libc::kill(child.id() as i32, sig) };
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{name}: {err}");
        assert!(
            err.contains("wrote") && err.contains("dropped"),
            "{name}: no summary: {err}"
        );
        let t = read_trace(&out).unwrap();
        assert_eq!(t.damage, None, "{name}");
        assert!(t.events().count() > 0, "{name}: nothing recorded");
        assert!(!t.counters.is_empty(), "{name}: no final counters");
    }
}

/// Issue 21: SIGINT or SIGTERM in the first instant, while the programs load, killed the
/// tracer. Now the recording ends as at any other time: exit 0, a whole (empty) trace, and a
/// held command is never started.
#[test]
fn a_signal_while_the_programs_load_still_finishes_the_file() {
    if not_root() {
        return;
    }
    for (sig, name) in [(libc::SIGINT, "int"), (libc::SIGTERM, "term")] {
        let dir = tmpdir(&format!("early-{name}"));
        let (out, ran) = (dir.join("t.arrows"), dir.join("ran"));
        let child = Command::new(env!("CARGO_BIN_EXE_tracer"))
            .args(["record", "--quiet", "--force", "-o"])
            .arg(&out)
            .args(["--", "touch"])
            .arg(&ran)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        sleep(Duration::from_millis(50));
        unsafe { libc::kill(child.id() as i32, sig) };
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{name}: {err}");
        assert!(err.contains("stopped by SIG"), "{name}: {err}");
        let t = read_trace(&out).unwrap();
        assert_eq!(t.damage, None, "{name}");
        assert!(!ran.exists(), "{name}: the command ran after the signal");
    }
}

/// A signal that stops the recording of a command that is still running ends the command too
/// (SIGTERM, as `perf record` does): the tracer used to finish its file and then wait for the
/// command for good, so `timeout 60 tracer record -- CMD` hung the test box.
#[test]
fn a_signal_ends_the_recorded_command_too() {
    if not_root() {
        return;
    }
    let dir = tmpdir("command");
    let out = dir.join("t.arrows");
    let child = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["record", "--quiet", "--force", "-o"])
        .arg(&out)
        .args(["--", "sleep", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_recording(&out);
    sleep(Duration::from_millis(300));
    let started = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the tracer outlived its signal by {:?}: {err}",
        started.elapsed()
    );
    assert!(
        err.contains("sending SIGTERM to the traced command"),
        "{err}"
    );
    assert_eq!(read_trace(&out).unwrap().damage, None);
    // No `sleep 1000` of ours is left: its parent was the tracer, now gone.
    let left = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("cmdline")).ok())
        .any(|c| c == "sleep\u{0}1000\u{0}");
    assert!(!left, "sleep 1000 still runs");
}

/// Issue 21: a SIGKILLed recording read as whole ("truncated": null, "0 dropped") though its
/// last second was lost. Every complete batch is still there, and every reader now says the
/// trace was cut short.
#[test]
fn sigkill_keeps_everything_but_the_last_second_and_reads_as_cut_short() {
    if not_root() {
        return;
    }
    let out = tmpdir("kill").join("t.arrows");
    let mut child = record_all(&out);
    wait_until_recording(&out);
    make_faults(Duration::from_millis(2600));
    let flushed_before_kill = std::fs::metadata(&out).unwrap().len();
    child.kill().unwrap();
    child.wait().unwrap();
    let t = read_trace(&out).expect("a killed recording is still a trace");
    // At least two one-second flushes happened: their rows are there.
    assert!(
        t.events().count() > 0,
        "nothing survived SIGKILL ({flushed_before_kill} bytes on disk)"
    );
    assert!(!t.counters.is_empty());
    let d = t.damage.expect("a killed recording is reported");
    // Killed between two batches (cut short) or in the middle of writing one.
    assert_ne!(d.kind, DamageKind::Corrupt, "{d}");
    // Rows kept count the loss counters' rows too (at least one per CPU), which the reader
    // hands out apart from the records.
    assert!(d.records_kept as usize >= t.records.len() + t.counters.per_cpu().count());
}

/// The child side of the full-disk test: a few faults, a pause long enough for one flush, then a
/// flood of faults far larger than the disk.
#[test]
fn flood_child() {
    if std::env::var_os("PFNSCOPE_FLOOD").is_none() {
        return;
    }
    make_faults(Duration::from_millis(10));
    sleep(Duration::from_millis(1800));
    make_faults(Duration::from_secs(5));
}

#[test]
fn full_disk_is_a_clear_error_and_the_file_stays_readable() {
    if not_root() {
        return;
    }
    let dir = tmpdir("full");
    let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"size=256k".as_ptr().cast(),
        )
    };
    if rc != 0 {
        skip(&format!(
            "cannot mount a small tmpfs: {}",
            std::io::Error::last_os_error()
        ));
        return;
    }
    let out = dir.join("t.arrows");
    let o = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["record", "--quiet", "-o"])
        .arg(&out)
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "flood_child", "--test-threads=1"])
        .env("PFNSCOPE_FLOOD", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let t = read_trace(&out);
    // Out of the tmpfs, for the Python readers.
    let copy = tmpdir("full-copy").join("t.arrows");
    std::fs::copy(&out, &copy).unwrap();
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    assert!(
        !o.status.success(),
        "tracer did not fail on a full disk: {err}"
    );
    assert!(err.contains("disk full"), "{err}");
    assert!(err.contains("safely on disk"), "{err}");
    let t = t.expect("what was written before the disk filled is readable");
    assert!(!t.counters.is_empty(), "the first batch was lost: {err}");
    assert!(t.events().count() > 0, "{err}");
    // Issue 21: the partial batch is cut off, so the file ends cleanly after its last
    // complete batch (cut short, not truncated), and polars opens it as pyarrow does.
    let d = t
        .damage
        .expect("a recording stopped by a full disk is not whole");
    assert_eq!(d.kind, DamageKind::CutShort, "{d}");
    assert!(err.contains("cut off"), "{err}");
    for (module, read) in [
        ("polars", "polars.read_ipc_stream(p).height"),
        ("pyarrow", "pyarrow.ipc.open_stream(p).read_all().num_rows"),
    ] {
        match python_rows(module, read, &copy) {
            // Arrow readers see the loss counters' rows as rows.
            Ok(rows) => assert_eq!(rows as u64, d.records_kept, "{module}"),
            Err(why) => {
                skip(&format!("reading the full-disk trace with {module}: {why}"));
            }
        }
    }
}

/// Rows `read` (a Python expression over the module and `p`, the path) finds in the trace at
/// `p`; Err with the reason when Python or the module is missing.
fn python_rows(module: &str, read: &str, p: &Path) -> Result<usize, String> {
    let script = format!("import sys, {module}\np = sys.argv[1]\nprint({read})");
    let o = Command::new("python3")
        .args(["-c", &script])
        .arg(p)
        .output()
        .map_err(|e| format!("no python3 ({e})"))?;
    let err = String::from_utf8_lossy(&o.stderr);
    if err.contains("ModuleNotFoundError") {
        return Err(format!(
            "python3 has no {module} (`cargo xtask setup` installs it)"
        ));
    }
    assert!(o.status.success(), "{module} cannot read the trace: {err}");
    Ok(String::from_utf8_lossy(&o.stdout).trim().parse().unwrap())
}
