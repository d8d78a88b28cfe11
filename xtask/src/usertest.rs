//! `testbox --run` tested the way a driver engineer uses it, as part of `cargo xtask test`: one
//! guest boot on one kernel that builds a module from source (`xtask/testdata/pfndemo`), loads
//! a Debian module by name with a parameter on a qemu device of its own (qxl, `-vga qxl`),
//! runs a static binary brought in with `--file`, a command that fails and one that panics the
//! guest, every trace streamed to the host through a virtio-serial port (`--stream`); then the
//! traces (the crashed one up to the crash), reports and summary are checked. Before that, without a boot, a
//! module built for another kernel and a module name the kernel lacks must each be refused in
//! one line.

use std::path::{Path, PathBuf};
use std::process::Command;

use pfnscope_trace::read_trace;

use crate::{modules, util};

pub enum Verdict {
    Pass,
    Fail(String),
    Skip(String),
}

/// Each case's name and verdict, on `kernel` (a series name).
pub fn run(kernel: &str) -> Vec<(String, Verdict)> {
    let scratch = util::target_dir().join("usertest");
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        return vec![("testbox --run".into(), Verdict::Fail(e.to_string()))];
    }
    let out = vec![
        (
            format!("testbox --run refuses a wrong vermagic ({kernel})"),
            wrong_vermagic(kernel, &scratch),
        ),
        (
            format!("testbox --run refuses a missing module ({kernel})"),
            missing_module(kernel),
        ),
        (
            format!("testbox --run end to end ({kernel})"),
            end_to_end(kernel, &scratch),
        ),
    ];
    let _ = std::fs::remove_dir_all(&scratch);
    out
}

/// Runs `cargo xtask testbox ARGS`, echoing its output; its success and its output.
fn testbox(args: &[&str]) -> Result<(bool, String), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut c = Command::new(exe);
    c.arg("testbox").args(args);
    let mut text = String::new();
    let ok = util::stream(&mut c, |l| {
        text.push_str(l);
        text.push('\n');
    })
    .map_err(|e| format!("{e:#}"))?;
    Ok((ok, text))
}

fn fail(why: impl Into<String>) -> Verdict {
    Verdict::Fail(why.into())
}

/// A refusal: a non-zero exit, no boot, and one `error:` line that says `expected`.
fn refused(r: Result<(bool, String), String>, expected: &[&str]) -> Verdict {
    let (ok, text) = match r {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    if ok {
        return fail("exited 0");
    }
    if text.contains("booting") {
        return fail("booted a guest before refusing");
    }
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    match errors[..] {
        [line] if expected.iter().all(|e| line.contains(e)) => Verdict::Pass,
        _ => fail(format!(
            "expected one error line with {expected:?}, got {errors:?}"
        )),
    }
}

fn wrong_vermagic(kernel: &str, scratch: &Path) -> Verdict {
    let ko = scratch.join("old.ko");
    let elf =
        modules::tiny_elf(b"vermagic=5.10.0-30-amd64 SMP mod_unload modversions \0name=old\0");
    if let Err(e) = std::fs::write(&ko, elf) {
        return fail(e.to_string());
    }
    refused(
        testbox(&[
            "--kernel",
            kernel,
            "--module",
            &ko.display().to_string(),
            "--run",
            "true",
        ]),
        &[
            "built for 5.10.0-30-amd64",
            "but the guest runs",
            "--module",
        ],
    )
}

fn missing_module(kernel: &str) -> Verdict {
    refused(
        testbox(&[
            "--kernel",
            kernel,
            "--load",
            "pfnscope_no_such_module",
            "--run",
            "true",
        ]),
        &["the kernel has no module pfnscope_no_such_module"],
    )
}

/// The command that crashes the guest: after it mapped its pages, so its trace, streamed to
/// the host, must hold them.
const CRASH: &str = "pfndemo-touch 16 && sleep 1 && echo c > /proc/sysrq-trigger";

fn end_to_end(kernel: &str, scratch: &Path) -> Verdict {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Verdict::Skip(
            "building a module for the guest needs root (debootstrap, chroot)".into(),
        );
    }
    let data = util::workspace_root().join("xtask/testdata");
    let touch = scratch.join("pfndemo-touch");
    // Static: the guest has no libc. cc is there wherever Rust links.
    let cc = Command::new("cc")
        .args(["-static", "-O2", "-Wall", "-o"])
        .arg(&touch)
        .arg(data.join("pfndemo-touch.c"))
        .output();
    match cc {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return fail(format!(
                "cc -static: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Err(e) => return fail(format!("cc: {e}")),
    }
    let module = data.join("pfndemo").display().to_string();
    let file = touch.display().to_string();
    let (ok, text) = match testbox(&[
        "--kernel",
        kernel,
        "--module",
        &module,
        "--load",
        "pfndemo:pages=16",
        "--load",
        "qxl:num_heads=2",
        "--qemu-args",
        "-vga qxl",
        "--file",
        &file,
        "--run",
        "pfndemo-touch 16",
        "--run",
        "workload drm-dumb qxl && cat /sys/module/qxl/parameters/num_heads",
        "--run",
        "false",
        "--run",
        CRASH,
        "--stream",
    ]) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    if let Some(l) = text.lines().find(|l| l.contains("cannot build it for")) {
        return Verdict::Skip(l.trim().to_string());
    }
    let out = util::results_root().join(kernel);
    match check_end_to_end(ok, &text, &out) {
        Ok(()) => Verdict::Pass,
        Err(why) => fail(why),
    }
}

fn check_end_to_end(ok: bool, text: &str, out: &Path) -> Result<(), String> {
    let read =
        |p: PathBuf| std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()));
    if ok {
        return Err("exited 0 although a command failed and the guest panicked".into());
    }
    // One line for the failing command, one for the panic, nothing else.
    let fails: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("FAIL: "))
        .collect();
    let expected = [
        "FAIL: run false exited 1",
        "FAIL: the guest panicked during run pfndemo-touch-2: Kernel panic - not syncing: sysrq triggered crash",
    ];
    let matches = |l: &str, e: &str| l.trim().starts_with(e);
    if fails.len() != 2 || !expected.iter().all(|e| fails.iter().any(|l| matches(l, e))) {
        return Err(format!("FAIL lines: expected {expected:?}, got {fails:?}"));
    }
    if !text.contains("console tail") {
        return Err("no console tail for the guest that panicked".into());
    }

    // The module from source, loaded with its parameter, mapped by the binary from --file.
    let dir = out.join("pfndemo-touch");
    let summary = text
        .lines()
        .find(|l| l.trim().starts_with("pfndemo-touch: exit 0, "))
        .ok_or("no summary line `pfndemo-touch: exit 0, ...`")?;
    let index = dir.join("report/index.html");
    if !summary.contains(" events, ") || !summary.contains(&format!("report {}", index.display())) {
        return Err(format!("summary line: {summary}"));
    }
    if !index.is_file() || !dir.join("replay-check.json").is_file() {
        return Err(format!("no report or replay result in {}", dir.display()));
    }
    if !read(dir.join("output.log"))?.contains("pfndemo-touch: 16 pages mapped") {
        return Err("pfndemo-touch did not map its 16 pages (output.log)".into());
    }
    let t = read_trace(&dir.join("trace.arrows")).map_err(|e| e.to_string())?;
    if let Some(d) = &t.damage {
        return Err(format!("pfndemo-touch's trace is damaged: {d}"));
    }
    let inserts = pfndemo_inserts(&t);
    if inserts < 16 {
        return Err(format!(
            "{inserts} vmf_insert_pfn rows of [pfndemo], expected 16 or more"
        ));
    }
    for f in [
        "dmesg.txt",
        "pat_memtype_list.txt",
        "iomem.txt",
        "console.log",
        "rc",
    ] {
        if !dir.join(f).is_file() {
            return Err(format!("no {f} in {}", dir.display()));
        }
    }
    let loaded = read(dir.join("modules.log"))?;
    for l in ["loaded qxl num_heads=2", "loaded pfndemo pages=16"] {
        if !loaded.lines().any(|x| x.trim() == l) {
            return Err(format!("modules.log lacks `{l}`:\n{loaded}"));
        }
    }

    // The Debian driver on its qemu device, with its parameter in force.
    let dir = out.join("workload");
    let log = read(dir.join("output.log"))?;
    if !log.contains("drm-dumb: ") || !log.lines().any(|l| l.trim() == "2") {
        return Err(format!("drm-dumb on qxl, num_heads=2: output.log:\n{log}"));
    }
    let t = read_trace(&dir.join("trace.arrows")).map_err(|e| e.to_string())?;
    if !t.events().any(|r| r.hook == "vmf_insert_pfn_prot") {
        return Err("qxl's trace has no vmf_insert_pfn_prot".into());
    }
    if !dir.join("report/index.html").is_file() {
        return Err("no report for the qxl run".into());
    }

    // The failing command's status, and what the guest that died left.
    if read(out.join("false/rc"))?.trim() != "1" {
        return Err("false/rc is not 1".into());
    }
    let dir = out.join("pfndemo-touch-2");
    if !dir.join("console.log").is_file() || dir.join("rc").exists() {
        return Err("the panicked run should keep the console and have no exit status".into());
    }
    // Streamed to the host up to the crash: the pages it mapped before, a trace readers call
    // cut short, replayed, and the console's oops next to it.
    let t = read_trace(&dir.join("trace.arrows")).map_err(|e| format!("the crashed run: {e}"))?;
    match &t.damage {
        Some(d) if d.kind == pfnscope_trace::DamageKind::CutShort => {}
        other => {
            return Err(format!(
                "the crashed run's trace: {other:?}, expected cut short"
            ));
        }
    }
    let inserts = pfndemo_inserts(&t);
    if inserts < 16 {
        return Err(format!(
            "the crashed run's streamed trace has {inserts} vmf_insert_pfn rows of [pfndemo], expected 16 or more"
        ));
    }
    if !read(dir.join("oops.txt"))?.contains("sysrq triggered crash") {
        return Err("oops.txt lacks the panic".into());
    }
    if !dir.join("replay-check.json").is_file() {
        return Err("the crashed run's trace was not replayed".into());
    }
    if !text.contains("the host's collector took 4 streamed trace(s)") {
        return Err("the collector did not take one trace per command".into());
    }
    Ok(())
}

/// The `vmf_insert_pfn` rows of the pfndemo driver in `t`: its touch maps one page each.
fn pfndemo_inserts(t: &pfnscope_trace::Trace) -> usize {
    t.events()
        .filter(|r| {
            r.hook == "vmf_insert_pfn"
                && r.driver.as_deref().is_some_and(|d| d.contains("[pfndemo]"))
        })
        .count()
}
