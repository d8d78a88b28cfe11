//! `testbox --run --stream`: the guest's traces go to a `tracer collect` on the host through a
//! virtio-serial port backed by a Unix socket (the guest has no network), so each trace is on
//! the host's disk while the guest runs, batch by batch, and a guest that crashes leaves its
//! trace up to the crash (less at most the tracer's last 100 ms).
//!
//! qemu connects to the collector's socket as a client (`-chardev socket,path=...`); one
//! connection carries each command's stream in turn. The collector names its files from the
//! box's hostname, kernel and start time; each is matched back to its `--run` command by the
//! command line in its metadata and placed as that command's `trace.arrows`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::guest::{PORT, UserRun};

/// The oops or panic the console showed, next to the trace of the command the guest died in.
pub const OOPS: &str = "oops.txt";

/// The qemu arguments of the port, its host side the collector's socket. `reconnect=1`: should
/// the collector drop the connection (a stream it refused), qemu connects again.
pub fn qemu_args(socket: &Path) -> Vec<String> {
    vec![
        "-device".into(),
        "virtio-serial-pci".into(),
        "-chardev".into(),
        format!("socket,id=pfnstream,path={},reconnect=1", socket.display()),
        "-device".into(),
        format!("virtserialport,chardev=pfnstream,name={PORT}"),
    ]
}

/// A `tracer collect` for one boot.
pub struct HostCollector {
    child: Child,
    pub socket: PathBuf,
    pub dir: PathBuf,
    pub log: PathBuf,
    /// The token, for the guest's initramfs.
    pub token: Vec<u8>,
}

impl HostCollector {
    /// Starts `tracer` (the static guest binary runs here too) listening on a socket of its
    /// own; its files go to `work/streams`, its log to `log`.
    pub fn start(tracer: &Path, work: &Path, log: &Path) -> Result<HostCollector> {
        let mut raw = [0u8; 24];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))
            .context("reading /dev/urandom for the stream token")?;
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let token_file = work.join("stream-token");
        std::fs::write(&token_file, format!("{token}\n"))?;
        // Short: a Unix socket's path has at most 107 bytes, a target directory may be long.
        let socket = std::env::temp_dir().join(format!("pfnscope-box-{}.sock", std::process::id()));
        let dir = work.join("streams");
        let mut child = Command::new(tracer)
            .arg("collect")
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("-d")
            .arg(&dir)
            .arg("--token-file")
            .arg(&token_file)
            .arg("-q")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .with_context(|| format!("starting {} collect", tracer.display()))?;
        let mut line = String::new();
        let said = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
        if !matches!(said, Ok(n) if n > 0) || !line.starts_with("listening ") {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the host's collector did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default().trim()
            );
        }
        Ok(HostCollector {
            child,
            socket,
            dir,
            log: log.to_path_buf(),
            token: format!("{token}\n").into_bytes(),
        })
    }

    /// SIGTERM (it finishes every open file), then its files.
    pub fn finish(mut self) -> Result<Vec<PathBuf>> {
        // SAFETY: kill has no memory preconditions; the pid is our own child's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while self.child.try_wait()?.is_none() {
            if t.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "the host's collector did not stop within 30 s of SIGTERM ({})",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(&self.socket);
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(d) => d
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "arrows"))
                .collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        Ok(files)
    }
}

impl Drop for HostCollector {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Places each streamed trace as its command's `<out>/<name>/trace.arrows`: the one whose
/// recorded command line ends in `/bin/sh -c COMMAND`, the earliest first where commands
/// repeat. One line per trace that matches no command.
pub fn place(files: &[PathBuf], runs: &[UserRun], out: &Path) -> Vec<String> {
    let mut found: Vec<(u64, PathBuf, Vec<String>)> = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        match pfnscope_trace::TraceReader::open(f) {
            Ok(r) => found.push((
                r.meta().started_unix_ns,
                f.clone(),
                r.meta().command_line.clone(),
            )),
            Err(e) => problems.push(format!("streamed trace {}: {e}", f.display())),
        }
    }
    found.sort();
    let mut taken = vec![false; runs.len()];
    for (_, f, cmdline) in found {
        let n = cmdline.len();
        let which = runs.iter().enumerate().position(|(i, r)| {
            !taken[i] && n >= 3 && cmdline[n - 3..] == ["/bin/sh", "-c", r.command.as_str()]
        });
        let Some(i) = which else {
            problems.push(format!(
                "streamed trace {} is of no --run command (it recorded {})",
                f.display(),
                cmdline.join(" ")
            ));
            continue;
        };
        taken[i] = true;
        let dir = out.join(&runs[i].name);
        let placed = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::rename(&f, dir.join("trace.arrows")));
        if let Err(e) = placed {
            problems.push(format!("placing {}: {e}", f.display()));
        }
    }
    problems
}

/// The console from the first line of the crash (the oops, BUG, sysrq crash or panic) on: what
/// goes next to the trace of the command the guest died in.
pub fn oops(console: &str) -> Option<String> {
    const FIRST: [&str; 6] = [
        "sysrq: Trigger a crash",
        "BUG:",
        "Oops:",
        "general protection fault",
        "kernel BUG at",
        "Kernel panic",
    ];
    let lines: Vec<&str> = console.lines().collect();
    let at = lines
        .iter()
        .position(|l| FIRST.iter().any(|f| l.contains(f)))?;
    Some(lines[at..].join("\n") + "\n")
}

/// Writes the oops next to the run's trace.
pub fn save_oops(console: &str, run_dir: &Path) -> Result<bool> {
    let Some(text) = oops(console) else {
        return Ok(false);
    };
    std::fs::create_dir_all(run_dir)?;
    std::fs::File::create(run_dir.join(OOPS))?.write_all(text.as_bytes())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oops_is_cut_from_the_first_crash_line_on() {
        let console = "PFNSCOPE: run x start\n[ 9.1] sysrq: Trigger a crash\n[ 9.2] Kernel panic - not syncing: sysrq triggered crash\n[ 9.3] CPU: 0 PID: 1\n";
        let o = oops(console).unwrap();
        assert!(o.starts_with("[ 9.1] sysrq: Trigger a crash\n"));
        assert!(o.ends_with("CPU: 0 PID: 1\n"));
        assert_eq!(oops("PFNSCOPE: all well\n"), None);
    }

    #[test]
    fn the_port_and_its_socket() {
        let a = qemu_args(Path::new("/tmp/s.sock")).join(" ");
        assert_eq!(
            a,
            "-device virtio-serial-pci -chardev socket,id=pfnstream,path=/tmp/s.sock,reconnect=1 -device virtserialport,chardev=pfnstream,name=pfnscope"
        );
    }
}
