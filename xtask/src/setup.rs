//! `cargo xtask setup`: what a fresh Debian machine needs to build the eBPF programs and run the
//! test box. Each step checks first and says whether it did anything.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

#[derive(clap::Args)]
pub struct Args {
    /// Say what would be done without doing it.
    #[arg(long)]
    dry_run: bool,
}

/// Debian packages the test box runs (qemu, the guest's busybox, module decompression and
/// building).
pub const APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "xz-utils",
    "zstd",
    // The analyzer test renders the report in headless Chromium; fonts for its page text.
    "chromium",
    "fonts-dejavu-core",
    "kmod",
    "gzip",
    "tar",
    // Guest kernel modules (the bug zoo's driver) build in Debian chroots (xtask/src/kmod.rs).
    "debootstrap",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run(args: &Args) -> Result<()> {
    apt_packages(args)?;
    rust_src(args)?;
    bpf_linker(args)?;
    cargo_fuzz(args)?;
    python_readers(args)?;
    println!("setup: done");
    Ok(())
}

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo-fuzz, for `cargo xtask fuzz` (the nightly toolchain comes with rust-src above).
fn cargo_fuzz(args: &Args) -> Result<()> {
    let v = Command::new("cargo").args(["fuzz", "--version"]).output();
    if v.is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)
    }) {
        println!("setup: cargo-fuzz {CARGO_FUZZ_VERSION} present");
        return Ok(());
    }
    step(
        args,
        "installing cargo-fuzz",
        Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]),
    )
}

/// Python packages the tests read pfnscope's files with, to check them with decoders other than
/// its own: Arrow readers for traces, Perfetto's generated protobuf classes for the timeline
/// export. (pip name, module to import.) Not fatal: without them those checks print `SKIPPED`
/// (a system Python may refuse pip).
const PYTHON_PACKAGES: &[(&str, &str)] = &[
    ("pyarrow", "pyarrow"),
    ("polars", "polars"),
    ("protobuf", "google.protobuf"),
    (
        "perfetto",
        "perfetto.protos.perfetto.trace.perfetto_trace_pb2",
    ),
];

fn python_readers(args: &Args) -> Result<()> {
    let missing: Vec<&str> = PYTHON_PACKAGES
        .iter()
        .filter(|(_, m)| {
            !Command::new("python3")
                .args(["-c", &format!("import {m}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|(pip, _)| *pip)
        .collect();
    if missing.is_empty() {
        let all: Vec<&str> = PYTHON_PACKAGES.iter().map(|(pip, _)| *pip).collect();
        println!("setup: python modules present ({})", all.join(" "));
        return Ok(());
    }
    let mut pip = Command::new("python3");
    pip.args(["-m", "pip", "install", "--quiet"]).args(&missing);
    if let Err(e) = step(args, "installing python modules", &mut pip) {
        println!(
            "setup: {e:#}: the tests that read traces with {} will say SKIPPED",
            missing.join(" and ")
        );
    }
    Ok(())
}

fn step(args: &Args, what: &str, cmd: &mut Command) -> Result<()> {
    if args.dry_run {
        println!("setup: would run {}", util::show(cmd));
        return Ok(());
    }
    println!("setup: {what}: {}", util::show(cmd));
    util::run(cmd)
}

fn apt_packages(args: &Args) -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        println!("setup: apt packages present ({})", APT_PACKAGES.join(" "));
        return Ok(());
    }
    step(
        args,
        "refreshing package lists",
        Command::new("apt-get").arg("update"),
    )?;
    let mut c = Command::new("apt-get");
    c.args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    step(args, "installing", &mut c)
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
}

fn rust_src(args: &Args) -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output();
    let have_nightly = out.as_ref().is_ok_and(|o| o.status.success());
    if have_nightly
        && String::from_utf8_lossy(&out.as_ref().unwrap().stdout)
            .lines()
            .any(|l| l.starts_with("rust-src"))
    {
        println!("setup: nightly rust-src present");
        return Ok(());
    }
    if !have_nightly {
        step(
            args,
            "installing the nightly toolchain",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
        )?;
    }
    step(
        args,
        "adding rust-src",
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
    )
}

/// The nightly toolchain's real libLLVM (`libLLVM.so.<ver>-rust-<rustver>-nightly`) and the
/// LLVM major version it carries.
pub fn nightly_llvm(libdir_entries: &[String]) -> Option<(String, u32)> {
    libdir_entries
        .iter()
        .filter_map(|n| {
            let ver = n.strip_prefix("libLLVM.so.")?;
            let major = ver.split(['.', '-']).next()?.parse().ok()?;
            Some((n.clone(), major))
        })
        .max_by_key(|(_, major)| *major)
}

fn bpf_linker(args: &Args) -> Result<()> {
    let installed = Command::new("bpf-linker").arg("--version").output();
    if let Ok(o) = &installed {
        let v = String::from_utf8_lossy(&o.stdout);
        if o.status.success() && v.contains(BPF_LINKER_VERSION) {
            println!("setup: bpf-linker {BPF_LINKER_VERSION} present");
            return Ok(());
        }
    }
    let sysroot = util::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("nightly toolchain")?;
    let libdir = Path::new(sysroot.trim()).join("lib");
    let entries: Vec<String> = std::fs::read_dir(&libdir)
        .with_context(|| format!("reading {}", libdir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let (lib, major) = nightly_llvm(&entries)
        .with_context(|| format!("no libLLVM.so.* in {}", libdir.display()))?;
    // bpf-linker links against `libLLVM.so` and keeps an rpath to this directory, so it has to
    // stay where it is (not /tmp).
    let shim = shim_dir()?;
    let shim_lib = shim.join("lib");
    if args.dry_run {
        println!(
            "setup: would link {}/{{libLLVM.so,{lib}}} -> {}",
            shim_lib.display(),
            libdir.join(&lib).display()
        );
    } else {
        std::fs::create_dir_all(&shim_lib)?;
        for name in ["libLLVM.so", lib.as_str()] {
            let link = shim_lib.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(libdir.join(&lib), &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
        println!(
            "setup: LLVM shim {} -> {}",
            shim_lib.display(),
            libdir.join(&lib).display()
        );
    }
    let mut c = Command::new("cargo");
    c.args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--no-default-features",
        "--features",
    ])
    .arg(format!("llvm-{major}"))
    .env("LLVM_PREFIX", &shim);
    step(
        args,
        "building bpf-linker against the nightly's LLVM (minutes)",
        &mut c,
    )?;
    if !args.dry_run
        && !Command::new("bpf-linker")
            .arg("--version")
            .status()
            .is_ok_and(|s| s.success())
    {
        bail!("bpf-linker installed but does not run (is ~/.cargo/bin on PATH?)");
    }
    Ok(())
}

fn shim_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME not set")?;
    Ok(PathBuf::from(home).join(".cache/pfnscope/llvm-shim"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_real_libllvm() {
        let entries: Vec<String> = [
            "libLLVM-22-rust-1.97.0-nightly.so",
            "libLLVM.so.22.1-rust-1.97.0-nightly",
            "librustc_driver-b5a9.so",
            "rustlib",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            nightly_llvm(&entries),
            Some(("libLLVM.so.22.1-rust-1.97.0-nightly".to_string(), 22))
        );
        assert_eq!(nightly_llvm(&["libLLVM-22.so".to_string()]), None);
    }
}
