//! What `tracer record` refuses, and that it refuses before loading anything: an output it must
//! not write (a planted link, a device, an existing file), limits it cannot honour, a command
//! that does not exist. Regression tests for issue 21; they need no root, except where they
//! play root against another user.

use std::{
    io::Write,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn skip(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pfnscope-refusals-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tracer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(args)
        .output()
        .unwrap()
}

/// Fails, with one line on stderr that contains `want`.
fn refused(o: &Output, want: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "not refused: {err}");
    assert!(err.contains(want), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    err
}

/// Issue 21, point 1: root's `tracer record -o PATH` followed a link another user planted at
/// PATH in a shared directory and overwrote a root-only file with the trace. The directory here
/// is not sticky, so `fs.protected_symlinks` does not step in: only the tracer can refuse.
#[test]
fn record_never_writes_through_a_planted_link() {
    let dir = tmpdir("link");
    // World-writable, not sticky: anyone may plant a link here.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let victim = dir.join("secret");
    std::fs::write(&victim, "root only\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.join("t.arrows");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    if is_root() {
        // The link belongs to the unprivileged user who planted it.
        let c = std::ffi::CString::new(link.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::lchown(c.as_ptr(), 65534, 65534) }, 0);
    } else {
        skip("not root: the link is the test's own, not another user's");
    }
    let out = link.to_str().unwrap();
    for force in [false, true] {
        let mut args = vec!["record", "-a", "-o", out];
        if force {
            args.push("--force");
        }
        refused(&tracer(&args), "is a symbolic link");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root only\n");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 21, point 1: `-o /dev/full` was taken as an output; a device is never one, nor a
/// directory. An existing trace is kept unless --force says otherwise.
#[test]
fn record_writes_only_new_regular_files_unless_forced() {
    refused(&tracer(&["record", "-a", "-o", "/dev/full"]), "is a device");
    refused(
        &tracer(&["record", "-a", "-o", "/dev/full", "--force"]),
        "is a device",
    );
    let dir = tmpdir("existing");
    refused(
        &tracer(&["record", "-a", "-o", dir.to_str().unwrap()]),
        "is a directory",
    );
    let old = dir.join("t.arrows");
    std::fs::write(&old, "an earlier trace").unwrap();
    refused(
        &tracer(&["record", "-a", "-o", old.to_str().unwrap()]),
        "already exists: choose another name, or add --force",
    );
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "an earlier trace");
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 21, points 5 and 8: limits and the command are checked when the arguments are read,
/// before any probe is loaded: `--duration 1e30` panicked after the probes attached (leaving a
/// schema-only trace), and a missing command was reported only once the programs had loaded
/// (after their warnings). Each is now one line, and no trace file is left behind.
#[test]
fn bad_limits_and_commands_are_refused_before_anything_is_loaded() {
    let dir = tmpdir("limits");
    let out = dir.join("t.arrows");
    let o = out.to_str().unwrap();
    let table: &[(&[&str], &str)] = &[
        (&["record", "-a", "-o", o, "--duration", "1e30"], "at most"),
        (
            &["record", "-a", "-o", o, "--duration", "-1"],
            "must be positive, got -1",
        ),
        (&["record", "-a", "-o", o, "--hooks", ""], "no hook named"),
        (
            &["record", "-o", o, "--", "pfnscope-no-such-command"],
            "command not found: pfnscope-no-such-command",
        ),
    ];
    for (args, want) in table {
        let r = tracer(args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        // clap adds a usage hint line; our own refusals are one line.
        let most = if err.starts_with("error:") { 3 } else { 1 };
        assert!(err.trim().lines().count() <= most, "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} left a file");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 21, point 8: as an unprivileged user, `tracer doctor` said "tracefs not mounted" when
/// it was mounted but not readable by that user. Root runs it as `nobody` here.
#[test]
fn doctor_tells_an_unreadable_tracefs_from_a_missing_one() {
    if !is_root() {
        return skip("needs root to run doctor as another user");
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("tracefs"))
    {
        return skip("tracefs is not mounted on this machine");
    }
    let exe = Path::new(env!("CARGO_BIN_EXE_tracer"));
    // `nobody` must be able to reach the binary: copy it somewhere anyone can.
    let dir = tmpdir("doctor");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("tracer");
    std::fs::copy(exe, &copy).unwrap();
    let o = Command::new(&copy)
        .arg("doctor")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("tracefs"))
        .unwrap_or_else(|| panic!("no tracefs line: {text}"));
    if line.contains("/sys/kernel/tracing") && !line.contains("not readable") {
        return skip("tracefs is readable by nobody here: nothing to tell apart");
    }
    assert!(line.contains("not readable by this user"), "{line}");
    assert!(!line.contains("not mounted"), "{line}");
    std::fs::remove_dir_all(&dir).ok();
}
