//! What `tracer record` refuses, and that it refuses before loading anything: an output it must
//! not write (a planted link, a device, an existing file). Regression tests for issue 21; they
//! need no root, except where they play root against another user.

use std::{
    io::Write,
    os::unix::fs::PermissionsExt,
    path::PathBuf,
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
