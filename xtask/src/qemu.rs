//! One boot of a guest under qemu (TCG), with a hard deadline and no process left behind.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::guest;

pub struct Boot<'a> {
    pub label: &'a str,
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    /// Raw virtio disks, /dev/vda first.
    pub disks: &'a [PathBuf],
    /// Kernel parameters after [`CMDLINE`] (a later one wins).
    pub cmdline: &'a [String],
    pub console: &'a Path,
    pub timeout: Duration,
    /// More qemu arguments (devices some workloads need), after the box's own: where an
    /// option can be given once (`-vga`, `-m`), these win.
    pub devices: &'a [String],
}

pub struct Outcome {
    pub console: String,
    pub timed_out: bool,
    pub exit: Option<std::process::ExitStatus>,
    pub elapsed: Duration,
}

/// Kills and reaps qemu however the boot ends (error, panic in xtask, timeout).
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Kernel command line: serial console, reboot (and so exit qemu, which runs with -no-reboot)
/// at once on a panic, a VESA mode so vesafb provides /dev/fb0, and three 32 MiB ranges of the
/// guest's RAM taken as legacy persistent memory (e820 type 12), one pmem region each, 2 MiB
/// aligned: two become device-dax instances (`dax`), the third holds a dax filesystem (`fsdax`).
pub const CMDLINE: &str =
    "console=ttyS0 quiet panic=-1 vga=0x318 memmap=32M!768M memmap=32M!832M memmap=32M!896M";

pub fn args(b: &Boot) -> Vec<String> {
    let mut a: Vec<String> = [
        // Multi-threaded TCG crashed both 6.x kernels while probes were being switched.
        "-accel",
        "tcg,thread=single",
        "-cpu",
        "max",
        "-m",
        "1024",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
        "-vga",
        "std",
        "-device",
        "edu",
    ]
    .map(String::from)
    .to_vec();
    a.extend(["-kernel".into(), b.vmlinuz.display().to_string()]);
    a.extend(["-initrd".into(), b.initrd.display().to_string()]);
    let cmdline = std::iter::once(CMDLINE)
        .chain(b.cmdline.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    a.extend(["-append".into(), cmdline]);
    for d in b.disks {
        a.extend([
            "-drive".into(),
            format!("file={},format=raw,if=virtio", d.display()),
        ]);
    }
    a.extend(b.devices.iter().cloned());
    a
}

pub fn boot(b: &Boot) -> Result<Outcome> {
    let console = std::fs::File::create(b.console)
        .with_context(|| format!("creating {}", b.console.display()))?;
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(args(b))
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console);
    // SAFETY: prctl is async-signal-safe. If xtask itself is killed (no destructors run), the
    // kernel kills qemu too.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    };
    let start = Instant::now();
    let mut qemu = Reaper(
        cmd.spawn()
            .context("starting qemu-system-x86_64 (cargo xtask setup installs it)")?,
    );
    let mut reader = std::fs::File::open(b.console)?;
    let mut seen = 0u64;
    let mut partial = String::new();
    let mut follow = |reader: &mut std::fs::File| -> Result<()> {
        reader.seek(SeekFrom::Start(seen))?;
        let mut buf = Vec::new();
        reader.read_to_end(&mut buf)?;
        seen += buf.len() as u64;
        partial.push_str(&String::from_utf8_lossy(&buf));
        while let Some(nl) = partial.find('\n') {
            let line: String = partial.drain(..=nl).collect();
            if let Some(rest) = line.trim_end().strip_prefix(guest::MARK) {
                println!(
                    "  [{} {:>5.1}s]{rest}",
                    b.label,
                    start.elapsed().as_secs_f64()
                );
            }
        }
        Ok(())
    };
    let (exit, timed_out) = loop {
        follow(&mut reader)?;
        if let Some(st) = qemu.0.try_wait()? {
            break (Some(st), false);
        }
        if start.elapsed() > b.timeout {
            let _ = qemu.0.kill();
            let _ = qemu.0.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(qemu);
    follow(&mut reader)?;
    let console = std::fs::read_to_string(b.console).unwrap_or_default();
    Ok(Outcome {
        console,
        timed_out,
        exit,
        elapsed: start.elapsed(),
    })
}

/// A sparse raw disk the guest writes its results to.
pub fn blank_disk(path: &PathBuf, bytes: u64) -> Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(bytes)?;
    Ok(())
}
