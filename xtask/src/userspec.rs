//! The user's side of the test box (`testbox --module/--load/--file/--qemu-args/--cmdline/
//! --run`): each option parsed and checked here, before anything is built or booted, so a bad
//! one is refused in one line that says what to do. Everything that reaches the guest's /init
//! is either validated (names, paths) or single-quoted (module arguments, commands).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::modules::canonical;

/// `--module`: a module source directory or a prebuilt module file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleSrc {
    /// A Kbuild/Makefile directory, built against the guest kernel's headers.
    Source(PathBuf),
    /// A `.ko` (or `.ko.xz`, `.ko.zst`, `.ko.gz`) built elsewhere.
    Prebuilt(PathBuf),
}

/// `--load NAME[:ARGS]`: a module by name, with its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Load {
    /// Canonical (`_` for `-`), as the kernel names it.
    pub name: String,
    /// `key=value` or `key` words, each checked by [`module_arg`].
    pub args: Vec<String>,
}

/// `--file HOST_PATH[:GUEST_PATH]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestFile {
    pub host: PathBuf,
    /// Absolute; `None` until the host file's mode decides the default (see [`default_place`]).
    pub guest: Option<String>,
}

/// `--run "CMD ARGS"`: one command line, run by `/bin/sh -c` under `tracer record`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// Its results' directory under `target/testbox/<kernel>/`, unique in the request.
    pub name: String,
    pub command: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub modules: Vec<ModuleSrc>,
    pub loads: Vec<Load>,
    pub files: Vec<GuestFile>,
    pub qemu_args: Vec<String>,
    pub cmdline: Vec<String>,
    pub runs: Vec<Run>,
}

/// Directory names under `target/testbox/<kernel>/` that the box's own results use.
const RESERVED: [&str; 2] = ["bugzoo", "work"];

/// Where the guest mounts something over the initramfs, or keeps the box's own files: a file
/// put there would be hidden or would replace the box.
const NOT_IN: [&str; 6] = ["/proc", "/sys", "/dev", "/tmp", "/out", "/lib/modules"];
const BOX_FILES: [&str; 4] = ["/init", "/bin/busybox", "/bin/tracer", "/bin/workload"];

impl Request {
    pub fn parse(
        modules: &[PathBuf],
        loads: &[String],
        files: &[String],
        qemu_args: &[String],
        cmdline: &[String],
        runs: &[String],
    ) -> Result<Request> {
        let mut r = Request {
            modules: modules
                .iter()
                .map(|m| module_src(m))
                .collect::<Result<_>>()?,
            loads: loads.iter().map(|l| load(l)).collect::<Result<_>>()?,
            files: files.iter().map(|f| guest_file(f)).collect::<Result<_>>()?,
            qemu_args: qemu_args
                .iter()
                .flat_map(|a| a.split_whitespace())
                .map(String::from)
                .collect(),
            cmdline: cmdline
                .iter()
                .flat_map(|a| a.split_whitespace())
                .map(String::from)
                .collect(),
            runs: Vec::new(),
        };
        for l in &r.loads {
            if r.loads.iter().filter(|o| o.name == l.name).count() > 1 {
                bail!(
                    "--load {} is given twice: put all its parameters in one --load {}:ARGS",
                    l.name,
                    l.name
                );
            }
        }
        for a in &r.qemu_args {
            if let Some(why) = qemu_arg_refused(a) {
                bail!("--qemu-args {a}: {why}");
            }
        }
        for w in &r.cmdline {
            if !w.bytes().all(|b| b.is_ascii_graphic()) {
                bail!("--cmdline {w:?}: kernel parameters are printable ASCII words");
            }
        }
        for c in runs {
            if c.trim().is_empty() || c.contains('\0') {
                bail!("--run {c:?}: give a command line, e.g. --run \"mytest --iterations 10\"");
            }
            let taken: Vec<&str> = r.runs.iter().map(|x| x.name.as_str()).collect();
            r.runs.push(Run {
                name: run_name(c, &taken),
                command: c.clone(),
            });
        }
        Ok(r)
    }
}

fn module_src(p: &Path) -> Result<ModuleSrc> {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
    let ko = name.as_deref().is_some_and(|n| {
        [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
            .iter()
            .any(|x| n.ends_with(x))
    });
    if p.is_dir() {
        Ok(ModuleSrc::Source(p.to_path_buf()))
    } else if ko && p.is_file() {
        Ok(ModuleSrc::Prebuilt(p.to_path_buf()))
    } else if !p.exists() {
        bail!("--module {}: no such file or directory", p.display())
    } else {
        bail!(
            "--module {}: give a module source directory (with a Kbuild or Makefile) or a .ko file",
            p.display()
        )
    }
}

/// A module name as insmod and the initramfs know it.
pub fn is_module_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 56
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn load(spec: &str) -> Result<Load> {
    let (name, args) = spec.split_once(':').unwrap_or((spec, ""));
    if !is_module_name(name) {
        bail!(
            "--load {spec:?}: {name:?} is not a module name (letters, digits, '_' and '-'); the form is NAME[:ARGS], e.g. --load loop:max_loop=4"
        );
    }
    let args: Vec<String> = args.split_whitespace().map(String::from).collect();
    for a in &args {
        module_arg(a).map_err(|why| anyhow::anyhow!("--load {spec:?}: {why}"))?;
    }
    Ok(Load {
        name: canonical(name),
        args,
    })
}

/// A module parameter as insmod takes it: `key=value` (or a bare `key` for a bool). The value
/// may hold anything printable but whitespace; it reaches /init single-quoted.
pub fn module_arg(a: &str) -> Result<(), String> {
    let (key, value) = a.split_once('=').unwrap_or((a, ""));
    let key_ok = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !key_ok || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "module parameter {a:?} is not key=value (the key: letters, digits, '_', '.' and '-'; the value: printable, no spaces)"
        ));
    }
    Ok(())
}

fn guest_file(spec: &str) -> Result<GuestFile> {
    // HOST_PATH may hold ':' itself: only an absolute path after the last one is the guest's.
    let (host, guest) = match spec.rsplit_once(':') {
        Some((h, g)) if g.starts_with('/') && !h.is_empty() => (h, Some(g.to_string())),
        _ => (spec, None),
    };
    let host = PathBuf::from(host);
    if !host.is_file() {
        bail!(
            "--file {spec}: {} is not a file (give files one by one, as HOST_PATH[:GUEST_PATH])",
            host.display()
        );
    }
    if let Some(g) = &guest {
        guest_path(g).map_err(|why| anyhow::anyhow!("--file {spec}: {why}"))?;
    }
    Ok(GuestFile { host, guest })
}

/// The default place of a `--file` without GUEST_PATH: executables in /bin (the guest's PATH),
/// anything else in /root (the commands' working directory).
pub fn default_place(host: &Path, executable: bool) -> String {
    let name = host
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{}/{name}", if executable { "/bin" } else { "/root" })
}

/// An absolute guest path of plain names: it goes into the initramfs and may be named in
/// /init, and it must not hide or replace the box's own files.
pub fn guest_path(g: &str) -> Result<(), String> {
    let parts: Vec<&str> = g.strip_prefix('/').unwrap_or("").split('/').collect();
    let plain = g.starts_with('/')
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.,+@=-".contains(&b))
        });
    if !plain {
        return Err(format!(
            "guest path {g:?} must be absolute, made of names with letters, digits and _.,+@=- only"
        ));
    }
    if let Some(d) = NOT_IN
        .iter()
        .find(|d| g == **d || g.starts_with(&format!("{d}/")))
    {
        return Err(format!(
            "{g} is under {d}, which the guest mounts over or keeps for the box: use /root or /bin"
        ));
    }
    if BOX_FILES.contains(&g) {
        return Err(format!("{g} is the box's own: pick another guest path"));
    }
    Ok(())
}

/// Why the box cannot take a qemu argument: it sets these itself.
fn qemu_arg_refused(a: &str) -> Option<&'static str> {
    match a.trim_start_matches('-') {
        "kernel" | "initrd" => {
            Some("the box boots its own kernel and initramfs (pick the kernel with --kernel)")
        }
        "append" => Some("the box sets the kernel command line: add parameters with --cmdline"),
        _ => None,
    }
}

/// A results directory name from a command line: the base name of its program (the first word
/// that is not a `VAR=value`), made of safe characters, unique among `taken` and the box's own.
pub fn run_name(command: &str, taken: &[&str]) -> String {
    let program = command
        .split_whitespace()
        .find(|w| !w.contains('='))
        .unwrap_or("run");
    let base = program.rsplit('/').next().unwrap_or(program);
    let safe: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let safe = safe.trim_matches(|c| c == '-' || c == '.');
    let base = if safe.is_empty() { "run" } else { safe };
    let used = |n: &str| taken.contains(&n) || RESERVED.contains(&n);
    if !used(base) {
        return base.to_string();
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !used(n))
        .expect("some suffix is free")
}

/// `s` as one word for sh, whatever it holds: single quotes, with each `'` as `'\''`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Why a file cannot run in the busybox guest, if it cannot: a dynamically linked ELF (the
/// guest has no libc) or a script whose interpreter the guest lacks. `guest_has(path)` says
/// whether the guest will have a file there.
pub fn unrunnable(data: &[u8], guest_has: impl Fn(&str) -> bool) -> Option<String> {
    if data.starts_with(b"\x7fELF") {
        if !crate::initramfs::is_static(data) {
            return Some(
                "it is dynamically linked and the guest has no libc: link it statically (cc -static; for Rust RUSTFLAGS='-C target-feature=+crt-static' cargo build --target x86_64-unknown-linux-gnu)".into(),
            );
        }
        return None;
    }
    let first = data.split(|&b| b == b'\n').next()?;
    let interp = String::from_utf8_lossy(first.strip_prefix(b"#!")?)
        .split_whitespace()
        .next()?
        .to_string();
    if !guest_has(&interp) {
        return Some(format!(
            "its interpreter {interp} is not in the guest (busybox's /bin/sh is; or copy the interpreter in with --file)"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_runs(runs: &[&str]) -> Result<Request> {
        let runs: Vec<String> = runs.iter().map(|s| s.to_string()).collect();
        Request::parse(&[], &[], &[], &[], &[], &runs)
    }

    #[test]
    fn run_names_are_unique_safe_and_leave_the_box_its_own() {
        let r = parse_runs(&[
            "/root/my test --x",
            "FOO=1 mytest",
            "mytest 2",
            "echo c > /proc/sysrq-trigger",
            "bugzoo",
            "$(reboot)",
            "../..",
        ])
        .unwrap();
        let names: Vec<&str> = r.runs.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "my", "mytest", "mytest-2", "echo", "bugzoo-2", "reboot", "run"
            ]
        );
        assert_eq!(r.runs[3].command, "echo c > /proc/sysrq-trigger");
        assert!(parse_runs(&["  "]).is_err());
    }

    #[test]
    fn loads_take_names_and_checked_parameters() {
        let l = load("drm-kms-helper:poll=0 edid_firmware=HDMI-A-1:edid/1280x720.bin").unwrap();
        assert_eq!(l.name, "drm_kms_helper");
        assert_eq!(
            l.args,
            ["poll=0", "edid_firmware=HDMI-A-1:edid/1280x720.bin"]
        );
        assert_eq!(load("loop").unwrap().args, Vec::<String>::new());
        for bad in [
            "",
            "a;b",
            "../x",
            "loop:max_loop=4 =x",
            "x:$(reboot)=1",
            "x:a=\u{1}",
        ] {
            assert!(load(bad).is_err(), "{bad:?}");
        }
        // A value may hold shell characters: it is quoted, not parsed, on its way to insmod.
        assert!(load("x:name='$(reboot)'").is_ok());
        let twice = Request::parse(
            &[],
            &["loop".into(), "loop:max_loop=4".into()],
            &[],
            &[],
            &[],
            &[],
        );
        assert!(twice.unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn guest_paths_stay_out_of_the_box() {
        for ok in ["/root/data.bin", "/bin/mytest", "/opt/x/y-1.2,3+4@5=6"] {
            assert!(guest_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "root/x",
            "/",
            "/root/",
            "/root/../init",
            "/root/./x",
            "/root/a b",
            "/root/$(x)",
            "/tmp/x",
            "/proc",
            "/dev/mem",
            "/lib/modules/x.ko",
            "/out/x",
            "/init",
            "/bin/tracer",
        ] {
            assert!(guest_path(bad).is_err(), "{bad}");
        }
        assert_eq!(default_place(Path::new("/h/mytest"), true), "/bin/mytest");
        assert_eq!(
            default_place(Path::new("/h/data.bin"), false),
            "/root/data.bin"
        );
    }

    #[test]
    fn files_split_at_the_last_colon_before_a_guest_path() {
        let dir = std::env::temp_dir().join(format!("pfnscope-userspec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a:b");
        std::fs::write(&f, b"x").unwrap();
        let g = guest_file(&format!("{}:/root/x", f.display())).unwrap();
        assert_eq!((g.host, g.guest.as_deref()), (f.clone(), Some("/root/x")));
        assert_eq!(guest_file(&f.display().to_string()).unwrap().guest, None);
        assert!(guest_file(&format!("{}:/tmp/x", f.display())).is_err());
        assert!(guest_file(&dir.display().to_string()).is_err());
        assert!(module_src(&f).is_err());
        assert_eq!(module_src(&dir).unwrap(), ModuleSrc::Source(dir.clone()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn qemu_arguments_and_kernel_parameters() {
        let r = Request::parse(
            &[],
            &[],
            &[],
            &["-device intel-iommu  -vga qxl".into()],
            &["panic=5 loglevel=7".into()],
            &["true".into()],
        )
        .unwrap();
        assert_eq!(r.qemu_args, ["-device", "intel-iommu", "-vga", "qxl"]);
        assert_eq!(r.cmdline, ["panic=5", "loglevel=7"]);
        for bad in ["-kernel x", "--append y", "-initrd z"] {
            let e = Request::parse(&[], &[], &[], &[bad.into()], &[], &[]).unwrap_err();
            assert!(e.to_string().starts_with("--qemu-args"), "{e}");
        }
    }

    #[test]
    fn quoting_keeps_any_string_one_word() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf %s {}",
                sh_quote("$(echo no) `x` 'q' \"d\"\n;|&")
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "$(echo no) `x` 'q' \"d\"\n;|&"
        );
    }

    #[test]
    fn what_cannot_run_in_the_guest() {
        let none = |_: &str| false;
        let sh = |p: &str| p == "/bin/sh";
        assert!(unrunnable(b"#!/bin/sh\necho hi\n", sh).is_none());
        assert!(
            unrunnable(b"#!/bin/bash\necho hi\n", sh)
                .unwrap()
                .contains("/bin/bash")
        );
        assert!(unrunnable(b"plain data", none).is_none());
        // This test binary links against the system's loader.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(unrunnable(&me, none).unwrap().contains("statically"));
    }
}
