//! One connection to a collector: opened, greeted, its reply lines read on a thread of their
//! own so that writing batches never waits for them.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Shutdown, TcpStream, ToSocketAddrs},
    path::{Path, PathBuf},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use pfnscope_trace::stream::{Hello, MAX_LINE, Reply, StreamId};

use crate::destination::Destination;

/// How long connecting, and then the collector's answer to the hello, may take.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A write that makes no progress for this long counts as a lost connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the reply thread saw.
#[derive(Debug)]
pub enum Event {
    Reply(Reply),
    /// The connection ended or failed; why, in words.
    Closed(String),
}

/// Why no link came up.
#[derive(Debug)]
pub enum OpenError {
    /// Nobody answered: worth trying again later.
    Unreachable(String),
    /// The collector answered and refused: trying again will not help.
    Refused(String),
}

pub struct Link {
    out: Box<dyn Write + Send>,
    events: Receiver<Event>,
    id: StreamId,
    /// For a TCP link: shut down on drop, which also ends the reply thread.
    tcp: Option<TcpStream>,
}

impl Link {
    /// Connects to `dest`, says `hello` and waits for the collector's answer: the link and
    /// the last batch of this stream the collector already has.
    pub fn open(dest: &Destination, hello: &Hello) -> Result<(Link, u64), OpenError> {
        let (out, input, tcp): (Box<dyn Write + Send>, Box<dyn Read + Send>, _) = match dest {
            Destination::Tcp(addr) => {
                let s = connect(addr)?;
                let unreachable = |e: io::Error| OpenError::Unreachable(e.to_string());
                s.set_nodelay(true).map_err(unreachable)?;
                s.set_write_timeout(Some(WRITE_TIMEOUT))
                    .map_err(unreachable)?;
                let input = s.try_clone().map_err(unreachable)?;
                let closer = s.try_clone().map_err(unreachable)?;
                (Box::new(s), Box::new(input), Some(closer))
            }
            Destination::Virtio(name) => {
                let dev = virtio_port(Path::new("/sys/class/virtio-ports"), name)?;
                let f = File::options()
                    .read(true)
                    .write(true)
                    .open(&dev)
                    .map_err(|e| OpenError::Unreachable(format!("{}: {e}", dev.display())))?;
                let input = f
                    .try_clone()
                    .map_err(|e| OpenError::Unreachable(e.to_string()))?;
                (Box::new(f), Box::new(input), None)
            }
            Destination::File(_) | Destination::Stdout => {
                unreachable!("a link goes to a collector")
            }
        };
        let (tx, events) = mpsc::channel();
        std::thread::Builder::new()
            .name("pfnscope-replies".into())
            .spawn(move || read_replies(input, tx))
            .map_err(|e| OpenError::Unreachable(e.to_string()))?;
        let mut link = Link {
            out,
            events,
            id: hello.id,
            tcp,
        };
        link.write(hello.line().as_bytes())
            .map_err(|e| OpenError::Unreachable(format!("sending the handshake: {e}")))?;
        let deadline = Instant::now() + HELLO_TIMEOUT;
        loop {
            match link.next_event(deadline) {
                Some(Event::Reply(Reply::Ok { have, .. })) => return Ok((link, have)),
                Some(Event::Reply(Reply::Error(why))) => return Err(OpenError::Refused(why)),
                Some(Event::Reply(_)) => {}
                Some(Event::Closed(why)) => {
                    return Err(OpenError::Unreachable(format!(
                        "the connection closed before the collector answered ({why})"
                    )));
                }
                None => {
                    return Err(OpenError::Unreachable(format!(
                        "no answer to the handshake within {} s",
                        HELLO_TIMEOUT.as_secs()
                    )));
                }
            }
        }
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.out.flush()
    }

    /// The next event about this stream, waiting until `deadline`; None when none came.
    /// Replies about other streams (a previous tracer's on the same port) are skipped.
    pub fn next_event(&self, deadline: Instant) -> Option<Event> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = match self.events.recv_timeout(left) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => {
                    return Some(Event::Closed("the reply reader stopped".into()));
                }
            };
            if self.is_ours(&ev) {
                return Some(ev);
            }
        }
    }

    fn is_ours(&self, ev: &Event) -> bool {
        match ev {
            Event::Reply(
                Reply::Ok { id, .. }
                | Reply::Ack { id, .. }
                | Reply::Done { id, .. }
                | Reply::Bye { id, .. },
            ) => *id == self.id,
            Event::Reply(Reply::Error(_)) | Event::Closed(_) => true,
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(s) = &self.tcp {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn connect(addr: &str) -> Result<TcpStream, OpenError> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| OpenError::Unreachable(format!("cannot resolve {addr}: {e}")))?
        .collect();
    let mut last = format!("{addr} resolves to no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, HELLO_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(OpenError::Unreachable(last))
}

/// The device of the virtio-serial port named `name` (its sysfs `name` attribute).
fn virtio_port(sysfs: &Path, name: &str) -> Result<PathBuf, OpenError> {
    let ports = std::fs::read_dir(sysfs).map_err(|_| {
        OpenError::Unreachable(format!(
            "no virtio-serial ports here ({} is missing: is virtio_console loaded?)",
            sysfs.display()
        ))
    })?;
    for p in ports.flatten() {
        let named = std::fs::read_to_string(p.path().join("name")).unwrap_or_default();
        if named.trim() == name {
            return Ok(Path::new("/dev").join(p.file_name()));
        }
    }
    Err(OpenError::Unreachable(format!(
        "no virtio-serial port named {name} (qemu: -device virtserialport,name={name})"
    )))
}

/// Reads reply lines until the connection ends; each line longer than [`MAX_LINE`] or not a
/// reply ends it too.
fn read_replies(input: Box<dyn Read + Send>, tx: mpsc::Sender<Event>) {
    let mut r = BufReader::new(input);
    loop {
        let mut line = String::new();
        let got = (&mut r).take(MAX_LINE as u64).read_line(&mut line);
        let ev = match got {
            Ok(0) => Event::Closed("the collector closed the connection".into()),
            Ok(_) if !line.ends_with('\n') => Event::Closed("a reply line too long".into()),
            Ok(_) => match Reply::parse(&line) {
                Some(reply) => Event::Reply(reply),
                None => Event::Closed(format!("not a reply: {:?}", line.trim_end())),
            },
            Err(e) => Event::Closed(e.to_string()),
        };
        let last = matches!(ev, Event::Closed(_));
        if tx.send(ev).is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_virtio_port_is_found_by_its_name() {
        let d = std::env::temp_dir().join(format!("pfnscope-vports-{}", std::process::id()));
        for (port, name) in [("vport0p0", ""), ("vport1p1", "pfnscope\n")] {
            std::fs::create_dir_all(d.join(port)).unwrap();
            std::fs::write(d.join(port).join("name"), name).unwrap();
        }
        assert_eq!(
            virtio_port(&d, "pfnscope").unwrap(),
            PathBuf::from("/dev/vport1p1")
        );
        let e = virtio_port(&d, "other").unwrap_err();
        assert!(matches!(e, OpenError::Unreachable(w) if w.contains("name=other")));
        let e = virtio_port(&d.join("none"), "x").unwrap_err();
        assert!(matches!(e, OpenError::Unreachable(w) if w.contains("virtio_console")));
        std::fs::remove_dir_all(d).ok();
    }
}
