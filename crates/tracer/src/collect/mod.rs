//! `tracer collect`: receives traces streamed by `tracer record -o tcp://...` (or through a
//! test box's virtio-serial port) from many boxes at once, one file per stream.
//!
//! One thread per connection ([`conn`]) reads the stream's messages, checks each as the trace
//! readers would ([`pfnscope_trace::stream::Incoming`]) and appends each whole batch to its
//! file ([`streams`]), synced before the sender hears of it. The main thread accepts
//! connections ([`listen`]), prints a live line per box and, on SIGINT or SIGTERM, lets every
//! connection finish its file before it exits.

pub mod conn;
pub mod listen;
pub mod streams;

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use pfnscope_trace::stream::{Reply, Token};

use crate::cli::CollectArgs;
use listen::{Conn, Listener};
use streams::{State, Streams};

pub use crate::destination::DEFAULT_PORT;

/// How long accept waits before it looks at the signals and the live lines again.
const ACCEPT_WAIT: Duration = Duration::from_millis(100);

/// What every connection shares.
pub struct Shared {
    pub token: Token,
    pub streams: Streams,
    /// A sender that sends nothing for this long is cut off.
    pub stall: Duration,
    /// Longest message a connection may hold in memory.
    pub max_message: u64,
    /// Connections refused (bad token, not a stream, ...).
    pub refused: AtomicU64,
    /// Log lines go out one at a time, never interleaved with a live line.
    log: Mutex<()>,
}

impl Shared {
    /// One log line on standard error.
    pub fn say(&self, line: &str) {
        let _g = self.log.lock().expect("log");
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "collect: {line}");
        let _ = err.flush();
    }
}

/// Runs the collector until SIGINT or SIGTERM; 0 when it stopped on one, with every file
/// finished.
pub fn run(args: CollectArgs) -> anyhow::Result<i32> {
    let addr = listen::parse(&args.listen).map_err(|e| anyhow!(e))?;
    let token = Token::read(&args.token_file)?;
    let dir = prepare_dir(&args.dir)?;
    listen::catch_signals().context("catching SIGINT and SIGTERM")?;
    let listener = Listener::bind(&addr).map_err(|e| anyhow!(e))?;
    let shared = Arc::new(Shared {
        token,
        streams: Streams::new(&dir),
        stall: args.stall_timeout,
        max_message: u64::from(args.max_message_mb) << 20,
        refused: AtomicU64::new(0),
        log: Mutex::new(()),
    });
    shared.say(&format!(
        "listening on {}, traces go to {}{}",
        listener.describe(),
        dir.display(),
        if listener.beyond_this_machine() {
            "; reachable from other machines: the token and the traces travel in clear, so use it only on a trusted network"
        } else {
            ""
        }
    ));
    // Tests and scripts read the address (port 0 picks a free one) from this line.
    println!("listening {}", listener.describe());
    let _ = std::io::stdout().flush();

    let live_every = if std::io::stderr().is_terminal() {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    let mut live = Live {
        seen: Default::default(),
        at: Instant::now(),
    };
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut last_live = Instant::now();
    while listen::stop_signal().is_none() {
        match listener.accept(ACCEPT_WAIT) {
            Ok(Some((conn, peer))) => {
                threads.retain(|t| !t.is_finished());
                if threads.len() >= args.max_streams as usize {
                    refuse_busy(conn, &peer, &shared, args.max_streams);
                    continue;
                }
                let no = conn::CONNECTIONS.fetch_add(1, Ordering::Relaxed) + 1;
                let s = shared.clone();
                let t = std::thread::Builder::new()
                    .name(format!("collect-{no}"))
                    .spawn(move || conn::serve(conn, peer, s, no))
                    .context("starting a connection's thread")?;
                threads.push(t);
            }
            Ok(None) => {}
            Err(e) => shared.say(&format!("accepting a connection: {e}")),
        }
        if !args.quiet && last_live.elapsed() >= live_every {
            live.print(&shared);
            last_live = Instant::now();
        }
    }
    let sig = listen::stop_signal().unwrap_or("a signal");
    shared.say(&format!("{sig}: finishing every open stream"));
    for t in threads {
        let _ = t.join();
    }
    drop(listener);
    let all = shared.streams.all();
    let failed = all
        .iter()
        .filter(|s| matches!(s.state(), State::Failed(_)))
        .count();
    shared.say(&format!(
        "stopped: {} streams ({} finished by their sender, {} cut short, {} failed), {} connections refused",
        all.len(),
        all.iter().filter(|s| s.state() == State::Finished).count(),
        all.iter()
            .filter(|s| matches!(s.state(), State::Detached(_)))
            .count(),
        failed,
        shared.refused.load(Ordering::Relaxed)
    ));
    Ok(0)
}

/// The traces' directory: created if missing, refused if it is no directory.
fn prepare_dir(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!(
            "-d {}: not a directory (a link or a file): give a directory for the traces",
            dir.display()
        ),
        Err(_) => std::fs::create_dir_all(dir)
            .with_context(|| format!("-d {}: cannot create the directory", dir.display()))?,
    }
    let probe = dir.join(".pfnscope-collect-check.arrows");
    pfnscope_trace::output::check(&probe, pfnscope_trace::Existing::Replace, &[])
        .map_err(|e| anyhow!("-d {}: {e}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// One line to a connection over the limit, then it is closed.
fn refuse_busy(mut conn: Conn, peer: &str, shared: &Shared, max: u32) {
    shared.refused.fetch_add(1, Ordering::Relaxed);
    shared.say(&format!(
        "refused {peer}: already {max} connections (--max-streams)"
    ));
    let _ = conn.set_write_timeout(Duration::from_secs(1));
    let _ = conn.write_all(
        Reply::Error(format!("the collector takes at most {max} streams at once"))
            .line()
            .as_bytes(),
    );
    conn.shutdown();
}

/// The live lines: one per box with events/s, drops and the age of its last batch.
struct Live {
    /// Events per stream at the last print.
    seen: std::collections::HashMap<u64, u64>,
    /// When the last print was (or the collector started).
    at: Instant,
}

impl Live {
    fn print(&mut self, shared: &Shared) {
        let secs = self.at.elapsed().as_secs_f64().max(1e-3);
        self.at = Instant::now();
        let now = shared.streams.now_ms();
        let _g = shared.log.lock().expect("log");
        let mut err = std::io::stderr().lock();
        for s in shared.streams.all() {
            if s.state() != State::Open {
                continue;
            }
            let events = s.stats.events.load(Ordering::Relaxed);
            let before = self.seen.insert(s.id.0, events).unwrap_or(0);
            let age = now.saturating_sub(s.stats.last_batch_ms.load(Ordering::Relaxed));
            let _ = writeln!(
                err,
                "collect: {:<40} {:>9.0} events/s, {} events, {} dropped, last batch {:.1} s ago",
                s.label(),
                (events - before) as f64 / secs,
                events,
                s.stats.dropped.load(Ordering::Relaxed),
                age as f64 / 1000.0
            );
        }
        let _ = err.flush();
    }
}
