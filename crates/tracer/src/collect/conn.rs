//! One connection: handshake, then the stream's messages to its file, one after another;
//! every way it can end is one log line, and none of them touches another stream.

use std::{
    cell::Cell,
    io::{self, BufRead, BufReader, Read, Write},
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use pfnscope_trace::{
    DamageKind,
    stream::{Hello, Incoming, IncomingError, MAX_LINE, Received, Reply},
};

use super::{
    Shared,
    listen::{self, Conn},
    streams::{AppendError, Slot, Started, State},
};

/// How often a waiting read looks at the stop flag and the stall clock.
const TICK: Duration = Duration::from_millis(200);
/// A reply that cannot be written for this long is given up (the sender is not reading).
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `conn` until it ends; `no` tells it from other connections of the same stream.
pub fn serve(conn: Conn, peer: String, shared: Arc<Shared>, no: u64) {
    let replies = match conn.try_clone() {
        Ok(c) => c,
        Err(e) => return shared.say(&format!("{peer}: {e}")),
    };
    let _ = replies.set_write_timeout(REPLY_TIMEOUT);
    let _ = conn.set_read_timeout(TICK);
    let halt = Rc::new(Cell::new(None));
    let mut c = Connection {
        replies,
        halt: halt.clone(),
        input: BufReader::with_capacity(
            1 << 16,
            Patient {
                conn,
                stall: shared.stall,
                last: Instant::now(),
                halt,
            },
        ),
        peer,
        shared,
        no,
        finished: 0,
    };
    while c.one_stream() {}
    c.input.get_ref().conn.shutdown();
}

/// Why a read gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Halt {
    /// The collector is stopping.
    Stopping,
    /// Nothing came for the stall timeout.
    Stalled,
}

/// Reads that wait in short ticks, so a stop or a stalled sender ends them.
struct Patient {
    conn: Conn,
    stall: Duration,
    /// When the last byte came.
    last: Instant,
    /// Set when it gave up (shared with the connection, which reads it after the error).
    halt: Rc<Cell<Option<Halt>>>,
}

impl Read for Patient {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.read(buf) {
                Ok(n) => {
                    self.last = Instant::now();
                    return Ok(n);
                }
                // A sender that dies with replies unread resets the connection: it went away,
                // as if it had closed it.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return Ok(0);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    let halt = if listen::stop_signal().is_some() {
                        Halt::Stopping
                    } else if self.last.elapsed() >= self.stall {
                        Halt::Stalled
                    } else {
                        continue;
                    };
                    self.halt.set(Some(halt));
                    return Err(io::Error::new(io::ErrorKind::TimedOut, format!("{halt:?}")));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

struct Connection {
    replies: Conn,
    halt: Rc<Cell<Option<Halt>>>,
    input: BufReader<Patient>,
    peer: String,
    shared: Arc<Shared>,
    no: u64,
    /// Streams this connection carried to their end marker.
    finished: u64,
}

impl Connection {
    fn reply(&mut self, r: &Reply) {
        // A sender that does not read its replies only loses them; its stream goes on.
        let _ = self.replies.write_all(r.line().as_bytes());
    }

    /// One line, then the connection closes.
    fn refuse(&mut self, why: &str, tell: &str) {
        self.shared.refused.fetch_add(1, Ordering::Relaxed);
        self.shared.say(&format!("refused {}: {why}", self.peer));
        self.reply(&Reply::Error(tell.to_string()));
    }

    /// Serves one stream; whether the connection may carry another.
    fn one_stream(&mut self) -> bool {
        // After a finished stream the connection may wait for the next as long as it likes: a
        // virtio-serial port stays connected while the guest does other things between
        // tracers. Only a first handshake and a stream under way have the stall timeout.
        if self.finished > 0 {
            self.input.get_mut().stall = Duration::MAX;
        }
        let line = read_line(&mut self.input);
        self.input.get_mut().stall = self.shared.stall;
        let line = match line {
            Ok(Some(l)) => l,
            // Closed between streams: all is well.
            Ok(None) => return false,
            Err(e) => {
                match self.halt.get() {
                    Some(Halt::Stopping) => {}
                    Some(Halt::Stalled) => self.refuse(
                        &format!(
                            "no handshake within {} s (--stall-timeout)",
                            self.shared.stall.as_secs()
                        ),
                        "no handshake in time",
                    ),
                    None => self.refuse(&e.to_string(), &e.to_string()),
                }
                return false;
            }
        };
        let hello = match Hello::parse(&line) {
            Ok(h) => h,
            Err(e) => {
                self.refuse(&e.to_string(), &e.to_string());
                return false;
            }
        };
        if !self.shared.token.matches(&hello.token) {
            self.refuse(
                "wrong token (the sender's --token-file differs from the collector's)",
                "wrong token",
            );
            return false;
        }
        let (slot, have) = match self.shared.streams.claim(&hello, self.no) {
            Ok(x) => x,
            Err(why) => {
                self.refuse(&why, &why);
                return false;
            }
        };
        self.reply(&Reply::Ok { id: hello.id, have });
        let more = self.stream(&slot);
        if slot.path().is_none() {
            self.shared.streams.forget(&slot);
        }
        more
    }

    /// The messages of one stream, into its file; whether the connection may go on.
    fn stream(&mut self, slot: &Arc<Slot>) -> bool {
        let shared = self.shared.clone();
        let (peer, no) = (self.peer.clone(), self.no);
        let mut incoming = Incoming::new(&mut self.input, "the stream", shared.max_message);
        let mut name = format!("stream from {peer}");
        loop {
            let trouble = match incoming.next_message() {
                Ok(Received::Schema { meta, bytes }) => {
                    name = format!("box {} ({}, {peer})", meta.host, meta.kernel_release);
                    match shared.streams.start(slot, &meta, bytes, no) {
                        Ok(Started::New(p)) => {
                            shared.say(&format!("{name}: streaming to {}", p.display()));
                            continue;
                        }
                        Ok(Started::Resumed(p)) => {
                            shared.say(&format!(
                                "{name}: back; {} goes on after batch {}",
                                p.display(),
                                slot.stats.batches.load(Ordering::Relaxed)
                            ));
                            continue;
                        }
                        Err(why) => Trouble::Refused(why),
                    }
                }
                Ok(Received::Batch {
                    bytes,
                    events,
                    counters,
                }) => {
                    let now = shared.streams.now_ms();
                    match slot.append(no, bytes, events, &counters, now) {
                        Ok(seq) => {
                            let ack = Reply::Ack { id: slot.id, seq };
                            let _ = self.replies.write_all(ack.line().as_bytes());
                            continue;
                        }
                        Err(e) => Trouble::Write(e),
                    }
                }
                Ok(Received::End) => match slot.finish(no, State::Finished) {
                    Ok(seq) => {
                        self.finished += 1;
                        let done = Reply::Done { id: slot.id, seq };
                        let _ = self.replies.write_all(done.line().as_bytes());
                        shared.say(&format!(
                            "{name}: finished {}: {} events in {seq} batches",
                            path(slot),
                            slot.stats.events.load(Ordering::Relaxed)
                        ));
                        return true;
                    }
                    Err(e) => Trouble::Write(e),
                },
                Err(e) => Trouble::Ended(e),
            };
            drop(incoming);
            match trouble {
                Trouble::Refused(why) => self.refuse(&format!("{name}: {why}"), &why),
                Trouble::Write(e) => self.write_failed(slot, &name, e),
                Trouble::Ended(e) => self.ended(slot, &name, e),
            }
            return false;
        }
    }

    /// A batch or end marker that did not reach the file.
    fn write_failed(&mut self, slot: &Slot, name: &str, e: AppendError) {
        match e {
            AppendError::TakenOver => self.shared.say(&format!(
                "{name}: a newer connection of the same stream took over; this one closes"
            )),
            AppendError::Write { path, err } => {
                let full = err.raw_os_error() == Some(libc::ENOSPC);
                let why = format!(
                    "writing {} failed: {err}{}; connection closed, the file keeps its {} batches ({} events)",
                    path.display(),
                    if full { " (disk full: free space)" } else { "" },
                    slot.stats.batches.load(Ordering::Relaxed),
                    slot.stats.events.load(Ordering::Relaxed)
                );
                slot.set(self.no, State::Failed(why.clone()));
                let tell = if full {
                    "the collector's disk is full".to_string()
                } else {
                    format!("the collector cannot write: {err}")
                };
                self.reply(&Reply::Error(tell));
                self.shared.say(&format!("{name}: {why}"));
            }
        }
    }

    /// A stream that ended without its end marker.
    fn ended(&mut self, slot: &Slot, name: &str, e: IncomingError) {
        let (batches, events) = (
            slot.stats.batches.load(Ordering::Relaxed),
            slot.stats.events.load(Ordering::Relaxed),
        );
        let kept = match slot.path() {
            Some(p) => format!(
                "{} keeps its {batches} batches ({events} events)",
                p.display()
            ),
            None => "nothing was written".into(),
        };
        match (self.halt.get(), e) {
            (Some(Halt::Stopping), _) if slot.path().is_some() => {
                let sig = listen::stop_signal().unwrap_or("a signal");
                match slot.finish(self.no, State::Stopped) {
                    Ok(seq) => {
                        self.reply(&Reply::Bye { id: slot.id, seq });
                        self.shared.say(&format!(
                            "{name}: stopped by {sig}: finished {} after batch {seq} ({events} events); the sender keeps the rest",
                            path(slot)
                        ));
                    }
                    Err(e) => self.write_failed(slot, name, e),
                }
            }
            (Some(Halt::Stopping), _) => {}
            (Some(Halt::Stalled), _) => {
                let why = format!(
                    "stalled: nothing came for {} s (--stall-timeout); connection closed, {kept}",
                    self.shared.stall.as_secs()
                );
                slot.set(self.no, State::Detached(why.clone()));
                self.reply(&Reply::Error("stalled".into()));
                self.shared.say(&format!("{name}: {why}"));
            }
            (None, IncomingError::Stopped) => {
                let why = format!(
                    "the sender went away after batch {batches}: {kept}, and ends there (cut short, as readers will say) unless it comes back"
                );
                slot.set(self.no, State::Detached(why.clone()));
                self.shared.say(&format!("{name}: {why}"));
            }
            (None, IncomingError::Damage { batch, broken })
                if broken.kind == DamageKind::Truncated =>
            {
                let why = format!(
                    "the sender went away inside batch {batch} ({}): {kept}, and ends there (cut short, as readers will say) unless it comes back",
                    broken.why
                );
                slot.set(self.no, State::Detached(why.clone()));
                self.shared.say(&format!("{name}: {why}"));
            }
            (
                None,
                e @ (IncomingError::NotArrow(_)
                | IncomingError::NoSchema
                | IncomingError::Schema(_)),
            ) => {
                self.refuse(&format!("{name}: {e}"), &e.to_string());
            }
            (None, IncomingError::Damage { batch, broken }) => {
                let class = match broken.kind {
                    DamageKind::Truncated => "truncated",
                    DamageKind::Corrupt => "corrupt",
                    DamageKind::CutShort => "cut short",
                };
                let why = format!(
                    "batch {batch} is {class} ({}): connection closed; {kept}",
                    broken.why
                );
                slot.set(self.no, State::Failed(why.clone()));
                self.reply(&Reply::Error(format!("batch {batch} is {class}")));
                self.shared.say(&format!("{name}: {why}"));
            }
        }
    }
}

/// What stopped a stream before its end marker.
enum Trouble {
    /// Its schema cannot start or resume its file.
    Refused(String),
    Write(AppendError),
    Ended(IncomingError),
}

fn path(slot: &Slot) -> String {
    slot.path()
        .map_or_else(String::new, |p| p.display().to_string())
}

/// One line of at most [`MAX_LINE`] bytes, without its newline; None when the connection
/// closed before its first byte.
fn read_line(r: &mut BufReader<Patient>) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        // An Arrow stream sent without a handshake has no newline soon: say what it is.
        if let Err(e) = Hello::parse(&line) {
            return Err(io::Error::other(e.to_string()));
        }
        return Err(io::Error::other(format!(
            "a handshake line longer than {MAX_LINE} bytes"
        )));
    }
    line.pop();
    Ok(Some(line))
}

/// Numbers connections so a stream knows which one may write it.
pub static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
