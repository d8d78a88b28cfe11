//! Where the collector listens (TCP, or a Unix socket that qemu's virtio-serial backend
//! connects to), its connections, and the signals that stop it.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs},
    os::{
        fd::{AsRawFd, RawFd},
        unix::{
            fs::{FileTypeExt, PermissionsExt},
            net::{UnixListener, UnixStream},
        },
    },
    path::PathBuf,
    sync::atomic::{AtomicI32, Ordering},
    time::Duration,
};

/// Where to listen, parsed without touching the system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(String),
    Unix(PathBuf),
}

pub fn parse(s: &str) -> Result<ListenAddr, String> {
    if let Some(p) = s.strip_prefix("unix:") {
        if p.is_empty() {
            return Err("unix: needs a socket path, e.g. unix:/run/pfnscope.sock".into());
        }
        return Ok(ListenAddr::Unix(PathBuf::from(p)));
    }
    let ok = s
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !ok {
        return Err(format!(
            "--listen {s}: give HOST:PORT (e.g. 127.0.0.1:{}) or unix:PATH",
            super::DEFAULT_PORT
        ));
    }
    Ok(ListenAddr::Tcp(s.to_string()))
}

pub enum Listener {
    Tcp(TcpListener),
    /// The socket's path, removed when the collector ends.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    pub fn bind(addr: &ListenAddr) -> Result<Listener, String> {
        let l = match addr {
            ListenAddr::Tcp(a) => {
                let addrs: Vec<SocketAddr> = a
                    .to_socket_addrs()
                    .map_err(|e| format!("--listen {a}: {e}"))?
                    .collect();
                let l = TcpListener::bind(&addrs[..]).map_err(|e| format!("--listen {a}: {e}"))?;
                Listener::Tcp(l)
            }
            ListenAddr::Unix(p) => {
                if let Ok(m) = std::fs::symlink_metadata(p) {
                    if !m.file_type().is_socket() {
                        return Err(format!(
                            "--listen unix:{}: it exists and is not a socket: choose another path",
                            p.display()
                        ));
                    }
                    if UnixStream::connect(p).is_ok() {
                        return Err(format!(
                            "--listen unix:{}: another collector listens there",
                            p.display()
                        ));
                    }
                    // A socket nobody listens on: left by a collector that was killed.
                    std::fs::remove_file(p)
                        .map_err(|e| format!("--listen unix:{}: {e}", p.display()))?;
                }
                let l = UnixListener::bind(p)
                    .map_err(|e| format!("--listen unix:{}: {e}", p.display()))?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| format!("--listen unix:{}: {e}", p.display()))?;
                Listener::Unix(l, p.clone())
            }
        };
        match &l {
            Listener::Tcp(t) => t.set_nonblocking(true),
            Listener::Unix(u, _) => u.set_nonblocking(true),
        }
        .map_err(|e| e.to_string())?;
        Ok(l)
    }

    /// Where it listens, in words (the port the system chose for port 0 included).
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(t) => t
                .local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string()),
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }

    /// Whether connections can come from other machines.
    pub fn beyond_this_machine(&self) -> bool {
        match self {
            Listener::Tcp(t) => t.local_addr().is_ok_and(|a| !a.ip().is_loopback()),
            Listener::Unix(..) => false,
        }
    }

    /// The next connection and its peer in words, waiting at most `wait`.
    pub fn accept(&self, wait: Duration) -> io::Result<Option<(Conn, String)>> {
        let mut pfd = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as libc::c_int) };
        if n <= 0 {
            return Ok(None);
        }
        let got = match self {
            Listener::Tcp(t) => t.accept().map(|(s, a)| (Conn::Tcp(s), a.to_string())),
            Listener::Unix(u, p) => u
                .accept()
                .map(|(s, _)| (Conn::Unix(s), format!("unix:{}", p.display()))),
        };
        match got {
            Ok((c, peer)) => {
                c.set_blocking()?;
                Ok(Some((c, peer)))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            Listener::Tcp(t) => t.as_raw_fd(),
            Listener::Unix(u, _) => u.as_raw_fd(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// One connection, either kind.
pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn set_blocking(&self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_nonblocking(false),
            Conn::Unix(s) => s.set_nonblocking(false),
        }
    }

    pub fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }

    pub fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(Some(t)),
            Conn::Unix(s) => s.set_read_timeout(Some(t)),
        }
    }

    pub fn set_write_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_write_timeout(Some(t)),
            Conn::Unix(s) => s.set_write_timeout(Some(t)),
        }
    }

    pub fn shutdown(&self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The signal that asked the collector to stop (0: none yet).
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNALLED.store(sig, Ordering::SeqCst);
}

/// Catches SIGINT and SIGTERM from now on: [`stop_signal`] tells whether one came.
pub fn catch_signals() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The name of the signal that came, if one did.
pub fn stop_signal() -> Option<&'static str> {
    match SIGNALLED.load(Ordering::SeqCst) {
        0 => None,
        libc::SIGINT => Some("SIGINT"),
        _ => Some("SIGTERM"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse("127.0.0.1:7430"),
            Ok(ListenAddr::Tcp("127.0.0.1:7430".into()))
        );
        assert_eq!(
            parse("unix:/run/x.sock"),
            Ok(ListenAddr::Unix("/run/x.sock".into()))
        );
        for bad in ["7430", "unix:", "host:port", ":7430"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_unix_socket_is_never_bound_over_a_file() {
        let d = std::env::temp_dir().join(format!("pfnscope-listen-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("file");
        std::fs::write(&f, "keep").unwrap();
        let e = Listener::bind(&ListenAddr::Unix(f.clone())).err().unwrap();
        assert!(e.contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "keep");
        let s = d.join("sock");
        let l = Listener::bind(&ListenAddr::Unix(s.clone())).unwrap();
        let e = Listener::bind(&ListenAddr::Unix(s.clone())).err().unwrap();
        assert!(e.contains("another collector"), "{e}");
        drop(l);
        assert!(!s.exists(), "the socket is removed with its listener");
        std::fs::remove_dir_all(d).ok();
    }
}
