//! Sending a recording to a collector (`tracer record -o tcp://... | virtio:...`), on a thread
//! of its own so the ring buffer is drained whatever the network does.
//!
//! Every batch is kept until the collector says it is on its disk (`ack`). When the connection
//! breaks, the thread tries again every second with the same stream id; the collector answers
//! with the last batch it has, and the thread resends the schema and what came after. When the
//! collector stays away longer than `--retry-for`, refuses the stream, or more than
//! [`MAX_UNACKED`] bytes wait, the schema and every batch not acknowledged go to a local file
//! named as the collector would name it, and so does the rest of the recording. Each batch is
//! readable after the schema alone ([`pfnscope_trace::stream::StreamEncoder`]), so that file is
//! a trace of its own. Nothing is dropped: batches are on the collector's disk, in the local
//! file (both, for those the collector had but had not acknowledged yet), or counted as lost
//! when the local file cannot be written either.

mod link;

use std::{
    collections::VecDeque,
    io::{Seek, Write},
    path::{Path, PathBuf},
    sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use pfnscope_trace::{
    Existing, NewFile, TraceMeta,
    stream::{END_OF_STREAM, Hello, Reply, StreamId, Token},
};

use crate::{destination::Destination, naming};
pub use link::HELLO_TIMEOUT;
use link::{Event, Link, OpenError};

/// While no collector takes them, at most this many bytes of batches wait in memory; then
/// they go to the local file at once.
pub const MAX_UNACKED: usize = 64 << 20;
/// Batches waiting between the ring-buffer consumer and this thread.
const QUEUE: usize = 64;
/// How long the collector may take to confirm the end of the stream.
const DONE_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings of a stream, checked before anything is loaded.
#[derive(Clone)]
pub struct Plan {
    pub dest: Destination,
    pub token: Token,
    pub fallback_dir: PathBuf,
    pub retry_for: Duration,
    pub id: StreamId,
}

/// A link that passed its handshake before the recording started.
pub struct Greeted {
    plan: Plan,
    link: Link,
}

/// Connects and presents the token, before the probes load: an unreachable collector or a
/// wrong token is refused before anything else happens.
pub fn greet(plan: Plan) -> Result<Greeted, String> {
    let hello = Hello {
        id: plan.id,
        next: 1,
        token: plan.token.as_str().to_string(),
    };
    match Link::open(&plan.dest, &hello) {
        Ok((link, _)) => Ok(Greeted { plan, link }),
        Err(OpenError::Unreachable(why)) => Err(format!(
            "cannot reach the collector at {}: {why}; start `tracer collect` there, or record to a file with -o FILE",
            plan.dest
        )),
        Err(OpenError::Refused(why)) => Err(format!(
            "the collector at {} refused the stream: {why}",
            plan.dest
        )),
    }
}

/// What happened to the stream, for the summary and the exit status.
#[derive(Debug, Default)]
pub struct Delivery {
    pub dest: String,
    pub batches: u64,
    pub events: u64,
    /// Events the collector confirmed on its disk.
    pub acked_events: u64,
    /// The collector confirmed the end of the stream: the whole trace is there.
    pub complete: bool,
    /// The local file the rest went to, the first batch in it, and its events.
    pub fallback: Option<(PathBuf, u64, u64)>,
    /// Why the rest went there.
    pub why_fallback: Option<String>,
    /// Events neither the collector nor the local file has (the local file failed too).
    pub lost_events: u64,
}

enum Job {
    Batch(Batch),
    Finish,
}

struct Batch {
    seq: u64,
    bytes: Vec<u8>,
    events: u64,
}

/// The running sender: batches in, a [`Delivery`] at the end.
pub struct Sender {
    tx: SyncSender<Job>,
    thread: JoinHandle<Delivery>,
    next_seq: u64,
}

impl Greeted {
    /// Starts sending: the schema first (`schema`, of a recording with `meta`).
    pub fn start(self, schema: Vec<u8>, meta: &TraceMeta) -> Sender {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let fallback_name = naming::trace_file_name(meta);
        let mut run = Run {
            delivery: Delivery {
                dest: self.plan.dest.to_string(),
                ..Default::default()
            },
            plan: self.plan,
            fallback_name,
            schema,
            link: Some(self.link),
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            lost_at: None,
            last_try: Instant::now(),
            fallback: None,
            finishing: None,
        };
        if let Some(l) = run.link.as_mut()
            && let Err(e) = l.write(&run.schema)
        {
            run.lose(format!("sending the schema: {e}"));
        }
        let thread = std::thread::Builder::new()
            .name("pfnscope-send".into())
            .spawn(move || run.serve(rx))
            .expect("spawning the sender thread");
        Sender {
            tx,
            thread,
            next_seq: 1,
        }
    }
}

impl Sender {
    /// Queues one batch (its messages) of `events` events; waits while the queue is full.
    pub fn send(&mut self, bytes: Vec<u8>, events: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        // The thread only ends after Finish: a send cannot fail before.
        let _ = self.tx.send(Job::Batch(Batch { seq, bytes, events }));
    }

    /// Ends the stream and waits until the collector confirmed it, or the rest is in the
    /// local file.
    pub fn finish(self) -> Delivery {
        let _ = self.tx.send(Job::Finish);
        drop(self.tx);
        self.thread.join().unwrap_or_else(|_| Delivery {
            why_fallback: Some("the sender thread panicked".into()),
            ..Default::default()
        })
    }
}

/// The local file the rest of a stream goes to; `out` is None once it failed.
struct Fallback {
    out: Option<NewFile>,
    path: PathBuf,
    /// Its length up to the end of the last whole batch.
    bytes: u64,
    first_seq: Option<u64>,
    events: u64,
}

struct Run {
    plan: Plan,
    fallback_name: String,
    schema: Vec<u8>,
    link: Option<Link>,
    /// Sent (or waiting to be) and not acknowledged, oldest first.
    unacked: VecDeque<Batch>,
    unacked_bytes: usize,
    /// Since when no link is up.
    lost_at: Option<Instant>,
    last_try: Instant,
    fallback: Option<Fallback>,
    /// Since when the end marker waits to be confirmed.
    finishing: Option<Instant>,
    delivery: Delivery,
}

impl Run {
    fn serve(mut self, rx: Receiver<Job>) -> Delivery {
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(Job::Batch(b)) => self.take(b),
                Ok(Job::Finish) | Err(RecvTimeoutError::Disconnected) => self.end(),
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.replies();
            self.keep_going();
            if self.finishing.is_some() && (self.delivery.complete || self.fallback.is_some()) {
                break;
            }
        }
        if let Some(f) = &self.fallback {
            self.delivery.fallback = Some((f.path.clone(), f.first_seq.unwrap_or(0), f.events));
        }
        self.delivery
    }

    fn take(&mut self, b: Batch) {
        self.delivery.batches += 1;
        self.delivery.events += b.events;
        if self.fallback.is_some() {
            self.keep_locally(&b);
            return;
        }
        if let Some(l) = self.link.as_mut()
            && let Err(e) = l.write(&b.bytes)
        {
            self.lose(format!("sending batch {}: {e}", b.seq));
        }
        self.unacked_bytes += b.bytes.len();
        self.unacked.push_back(b);
    }

    /// The end marker: after the last batch, on the link or in the local file.
    fn end(&mut self) {
        if self.finishing.is_some() {
            return;
        }
        self.finishing = Some(Instant::now());
        if let Some(f) = self.fallback.as_mut() {
            f.append(&END_OF_STREAM);
            return;
        }
        if let Some(l) = self.link.as_mut()
            && let Err(e) = l.write(&END_OF_STREAM)
        {
            self.lose(format!("sending the end of the stream: {e}"));
        }
    }

    /// Acts on what the collector said.
    fn replies(&mut self) {
        let Some(link) = &self.link else { return };
        let mut events = vec![];
        // A closed link says so on every call: it is the last event.
        while let Some(ev) = link.next_event(Instant::now()) {
            let closed = matches!(ev, Event::Closed(_));
            events.push(ev);
            if closed {
                break;
            }
        }
        for ev in events {
            match ev {
                Event::Reply(Reply::Ack { seq, .. }) => self.acked(seq),
                Event::Reply(Reply::Done { seq, .. }) => {
                    self.acked(seq);
                    self.delivery.complete = true;
                }
                Event::Reply(Reply::Bye { seq, .. }) => {
                    self.acked(seq);
                    self.lose("the collector stopped".into());
                }
                Event::Reply(Reply::Error(why)) => {
                    self.link = None;
                    self.keep_the_rest_locally(format!(
                        "the collector gave up on the stream: {why}"
                    ));
                }
                Event::Reply(Reply::Ok { .. }) => {}
                Event::Closed(why) => self.lose(why),
            }
            if self.link.is_none() {
                return;
            }
        }
    }

    fn acked(&mut self, seq: u64) {
        while self.unacked.front().is_some_and(|b| b.seq <= seq) {
            let b = self.unacked.pop_front().expect("checked");
            self.unacked_bytes -= b.bytes.len();
            self.delivery.acked_events += b.events;
        }
    }

    fn lose(&mut self, why: String) {
        self.link = None;
        if self.lost_at.is_none() {
            self.lost_at = Some(Instant::now());
            self.last_try = Instant::now();
            eprintln!(
                "tracer: lost the collector at {} ({why}); trying again for {} s",
                self.plan.dest,
                self.plan.retry_for.as_secs_f64()
            );
        }
    }

    /// Tries the collector again, or gives up on it; and gives up on an end it never confirms.
    fn keep_going(&mut self) {
        if self.fallback.is_some() || self.delivery.complete {
            return;
        }
        if self.link.is_some() {
            if self.finishing.is_some_and(|t| t.elapsed() > DONE_TIMEOUT) {
                self.lose(format!(
                    "it did not confirm the end of the stream within {} s",
                    DONE_TIMEOUT.as_secs()
                ));
            }
            return;
        }
        let lost = *self.lost_at.get_or_insert_with(Instant::now);
        if lost.elapsed() >= self.plan.retry_for {
            let why = format!(
                "the collector at {} stayed unreachable for {} s",
                self.plan.dest,
                self.plan.retry_for.as_secs_f64()
            );
            return self.keep_the_rest_locally(why);
        }
        if self.unacked_bytes > MAX_UNACKED {
            let why = format!(
                "more than {} MiB waited for the collector at {}",
                MAX_UNACKED >> 20,
                self.plan.dest
            );
            return self.keep_the_rest_locally(why);
        }
        if self.last_try.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_try = Instant::now();
        self.reconnect();
    }

    fn reconnect(&mut self) {
        let next = self
            .unacked
            .front()
            .map_or(self.delivery.batches + 1, |b| b.seq);
        let hello = Hello {
            id: self.plan.id,
            next,
            token: self.plan.token.as_str().to_string(),
        };
        let (mut link, have) = match Link::open(&self.plan.dest, &hello) {
            Ok(x) => x,
            Err(OpenError::Unreachable(_)) => return,
            Err(OpenError::Refused(why)) => {
                return self
                    .keep_the_rest_locally(format!("the collector refused the stream: {why}"));
            }
        };
        self.acked(have);
        let mut sent = link.write(&self.schema);
        for b in &self.unacked {
            sent = sent.and_then(|()| link.write(&b.bytes));
        }
        if self.finishing.is_some() {
            sent = sent.and_then(|()| link.write(&END_OF_STREAM));
            self.finishing = Some(Instant::now());
        }
        match sent {
            Ok(()) => {
                eprintln!(
                    "tracer: back on the collector at {} after batch {have}; sent the {} batches it lacked",
                    self.plan.dest,
                    self.unacked.len()
                );
                self.link = Some(link);
                self.lost_at = None;
            }
            Err(_) => self.last_try = Instant::now(),
        }
    }

    /// Opens the local file and puts the schema and every unacknowledged batch in it; the
    /// rest of the recording follows there.
    fn keep_the_rest_locally(&mut self, why: String) {
        if self.fallback.is_some() {
            return;
        }
        let mut f = Fallback::open(&self.plan.fallback_dir, &self.fallback_name);
        f.append(&self.schema);
        let first = self
            .unacked
            .front()
            .map_or(self.delivery.batches + 1, |b| b.seq);
        eprintln!(
            "tracer: {why}: the trace from batch {first} on goes to {} (the collector has the batches before it{})",
            f.path.display(),
            if self.unacked.is_empty() {
                ""
            } else {
                ", and maybe some of these"
            }
        );
        self.fallback = Some(f);
        let waiting = std::mem::take(&mut self.unacked);
        self.unacked_bytes = 0;
        for b in &waiting {
            self.keep_locally(b);
        }
        if self.finishing.is_some()
            && let Some(f) = self.fallback.as_mut()
        {
            f.append(&END_OF_STREAM);
        }
        self.delivery.why_fallback = Some(why);
    }

    fn keep_locally(&mut self, b: &Batch) {
        let f = self.fallback.as_mut().expect("a local file");
        if f.append(&b.bytes) {
            f.first_seq.get_or_insert(b.seq);
            f.events += b.events;
        } else {
            self.delivery.lost_events += b.events;
        }
    }
}

impl Fallback {
    /// A new file named `name` (numbered when that is taken) in `dir`; one that cannot be
    /// created is said once, and what would go there is counted as lost.
    fn open(dir: &Path, name: &str) -> Fallback {
        let mut f = Fallback {
            out: None,
            path: dir.join(name),
            bytes: 0,
            first_seq: None,
            events: 0,
        };
        let mut candidate = name.to_string();
        for n in 2..1000 {
            f.path = dir.join(&candidate);
            match NewFile::create(&f.path, Existing::Refuse, &[]) {
                Ok(mut out) => match out.place() {
                    Ok(()) => {
                        f.out = Some(out);
                        return f;
                    }
                    Err(pfnscope_trace::OutputError::Exists { .. }) => {}
                    Err(e) => return f.broken(&e.to_string()),
                },
                Err(pfnscope_trace::OutputError::Exists { .. }) => {}
                Err(e) => return f.broken(&e.to_string()),
            }
            candidate = naming::numbered(name, n);
        }
        f.broken("no free name")
    }

    fn broken(mut self, why: &str) -> Fallback {
        eprintln!("tracer: cannot keep the trace locally: {why}");
        self.out = None;
        self
    }

    /// Appends and syncs; false when the file is gone or this write failed (the file is cut
    /// back to its last whole batch, and nothing more is written to it).
    fn append(&mut self, bytes: &[u8]) -> bool {
        let Some(out) = &self.out else { return false };
        let mut f = out.file();
        match f.write_all(bytes).and_then(|()| f.sync_data()) {
            Ok(()) => {
                self.bytes += bytes.len() as u64;
                true
            }
            Err(e) => {
                // Back to the end of the last whole batch, the write position too.
                let _ = f
                    .set_len(self.bytes)
                    .and_then(|()| f.seek(std::io::SeekFrom::Start(self.bytes)))
                    .and_then(|_| f.sync_data());
                eprintln!(
                    "tracer: writing {} failed: {e}; it keeps what it has, the rest of the trace is lost",
                    self.path.display()
                );
                self.out = None;
                false
            }
        }
    }
}
