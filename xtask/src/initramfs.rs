//! The guest's initramfs: the static binaries it carries, its directories and /init.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cpio::Cpio;
use crate::util;

/// The guest's binaries are built static for this target.
const GUEST_TRIPLE: &str = "x86_64-unknown-linux-gnu";
/// virtio-blk carries the results back; on some kernels these are built in.
pub const BOOT_MODULES: [&str; 2] = ["virtio_pci", "virtio_blk"];

pub struct GuestBins {
    pub tracer: Option<PathBuf>,
    pub workload: PathBuf,
}

pub fn build_guest_binaries(with_tracer: bool) -> Result<GuestBins> {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(util::workspace_root()).args([
        "build",
        "--release",
        "--target",
        GUEST_TRIPLE,
        "-p",
        "workload",
    ]);
    if with_tracer {
        c.args(["-p", "tracer"]);
    }
    // Static for the busybox guest, which has no libc. Per-target flags rather than RUSTFLAGS, so
    // proc-macros and build scripts (and tracer's nested eBPF build) are left alone.
    c.env(
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
        "-C target-feature=+crt-static",
    );
    println!("building static guest binaries: {}", util::show(&c));
    util::run(&mut c)?;
    let dir = util::target_dir().join(GUEST_TRIPLE).join("release");
    let tracer = if with_tracer {
        Some(static_binary(&dir.join("tracer"))?)
    } else {
        None
    };
    Ok(GuestBins {
        tracer,
        workload: static_binary(&dir.join("workload"))?,
    })
}

pub fn static_binary(p: &Path) -> Result<PathBuf> {
    let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    if !is_static(&data) {
        bail!(
            "{} is dynamically linked and cannot run in the guest (RUSTFLAGS in the environment overrides the per-target static flag?)",
            p.display()
        );
    }
    Ok(p.to_path_buf())
}

/// An ELF64 executable without a PT_INTERP segment needs no dynamic loader.
pub fn is_static(elf: &[u8]) -> bool {
    let rd = |o: usize, n: usize| {
        elf.get(o..o + n)
            .map(|b| b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    };
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (rd(0x20, 8), rd(0x36, 2), rd(0x38, 2))
    else {
        return false;
    };
    (0..phnum).all(|i| rd((phoff + i * phentsize) as usize, 4).is_some_and(|t| t != 3))
}

pub fn find_static_busybox() -> Result<PathBuf> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if let Ok(data) = std::fs::read(p)
            && is_static(&data)
        {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("no static busybox found (apt-get install busybox-static, or cargo xtask setup)")
}

/// The initramfs's directories.
pub const BASE_DIRS: [&str; 10] = [
    "bin",
    "dev",
    "proc",
    "sys",
    "tmp",
    "out",
    "lib",
    "lib/modules",
    "etc",
    "root",
];

/// The initramfs every guest starts from: its directories, console, busybox, and the static
/// `workload` and (when tracing) `tracer`.
pub fn base_cpio(bins: &GuestBins, busybox: &Path) -> Result<Cpio> {
    let mut cpio = Cpio::new();
    for d in BASE_DIRS {
        cpio.dir(d);
    }
    // The kernel opens the initial console before /init can mount devtmpfs.
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.char_dev("dev/null", 0o666, 1, 3);
    cpio.file("bin/busybox", 0o755, &std::fs::read(busybox)?);
    cpio.file("bin/workload", 0o755, &std::fs::read(&bins.workload)?);
    if let Some(t) = &bins.tracer {
        cpio.file("bin/tracer", 0o755, &std::fs::read(t)?);
    }
    Ok(cpio)
}

/// Adds `script` as /init, writes the gzipped initramfs under `work` (with a copy of /init to
/// read) and returns its path.
pub fn write_initrd(mut cpio: Cpio, script: &str, work: &Path) -> Result<PathBuf> {
    cpio.file("init", 0o755, script.as_bytes());
    let cpio_path = work.join("initramfs.cpio");
    std::fs::write(&cpio_path, cpio.finish())?;
    util::run(
        Command::new("gzip")
            .args(["-1", "-n", "-f"])
            .arg(&cpio_path),
    )?;
    std::fs::write(work.join("init"), script)?;
    Ok(work.join("initramfs.cpio.gz"))
}
