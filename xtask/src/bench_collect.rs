//! `cargo xtask bench collect`: how much `tracer collect` sustains with 1, 4 and 16 senders on
//! loopback, what it costs in CPU per million events, and how long a batch takes from leaving
//! its sender to being on the collector's disk (the acknowledgement comes after fdatasync).
//!
//! The senders are `cargo xtask __send` processes: each encodes one batch of fault rows with
//! the trace crate's stream encoder, as `tracer record` does (4096 events, a counter row, its
//! own dictionaries and checksum), and sends it over and over as fast as the collector takes
//! it, a thread reading the acknowledgements. So the collector, not a traced workload, is the
//! limit. The collector checks and decodes every batch as the trace readers would, then
//! appends and syncs it.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use pfnscope_trace::{
    CpuCounters, Record, TraceMeta,
    stream::{END_OF_STREAM, Hello, Reply, StreamEncoder, StreamId},
};

use crate::util::{self, replace_section};

const TOKEN: &str = "bench-collect-token-0123456789";
/// Events per batch: what a streaming tracer sends at most (its STREAM_BATCH).
const EVENTS_PER_BATCH: u64 = 4096;

/// One sender (`cargo xtask __send ADDR BATCHES ID`): prints `sent=N latencies_us=a,b,...`.
pub fn send(addr: &str, batches: u64, id: u64, pace_ms: u64) -> Result<()> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    let meta = TraceMeta {
        host: format!("bench{id}"),
        kernel_release: "6.12.0-bench".into(),
        started_unix_ns: 1_796_679_045_000_000_000 + id * 1_000_000,
        ..Default::default()
    };
    let mut enc = StreamEncoder::new(&meta)?;
    for i in 0..EVENTS_PER_BATCH {
        enc.push(&Record {
            id: i + 1,
            ts_ns: 1_000_000 + i * 3_000,
            cpu: (i % 2) as u32,
            pid: 4242,
            tid: 4242,
            comm: "touch".into(),
            hook: "exceptions:page_fault_user".into(),
            mode: "tp_btf".into(),
            address: Some(0x7f00_0000_0000 + i * 4096),
            error_code: Some(6),
            vma_id: Some(1),
            vma_start: Some(0x7f00_0000_0000),
            vma_end: Some(0x7f00_4000_0000),
            vma_flags: Some(0x100073),
            ..Default::default()
        });
    }
    enc.push_counters(&[CpuCounters::default()], 1);
    let batch = enc.batch()?.context("a batch")?.bytes;
    let hello = Hello {
        id: StreamId(0xbe00 + id),
        next: 1,
        token: TOKEN.into(),
    };
    s.write_all(hello.line().as_bytes())?;
    let mut replies = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    replies.read_line(&mut line)?;
    if !matches!(Reply::parse(&line), Some(Reply::Ok { .. })) {
        bail!("the collector answered {line:?}");
    }
    s.write_all(enc.schema_message())?;
    // Send times by batch number, taken by the ack reader.
    let sent_at: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let sent_at = sent_at.clone();
        std::thread::spawn(move || -> Result<Vec<u64>> {
            let mut lat = Vec::new();
            loop {
                let mut line = String::new();
                if replies.read_line(&mut line)? == 0 {
                    bail!("the collector closed the connection");
                }
                match Reply::parse(&line) {
                    Some(Reply::Ack { seq, .. }) => {
                        let t = sent_at.lock().unwrap()[seq as usize - 1];
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    Some(Reply::Done { .. }) => return Ok(lat),
                    other => bail!("unexpected reply {other:?}"),
                }
            }
        })
    };
    for _ in 0..batches {
        sent_at.lock().unwrap().push(Instant::now());
        s.write_all(&batch)?;
        if pace_ms > 0 {
            std::thread::sleep(Duration::from_millis(pace_ms));
        }
    }
    s.write_all(&END_OF_STREAM)?;
    let lat = reader.join().expect("ack reader")?;
    let shown: Vec<String> = lat.iter().map(|l| l.to_string()).collect();
    println!("sent={} latencies_us={}", batches, shown.join(","));
    Ok(())
}

/// CPU seconds (user + system) of a process so far, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after its ')'.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

struct Row {
    senders: usize,
    /// Milliseconds between a sender's batches (0: as fast as acknowledged).
    pace_ms: u64,
    events: u64,
    wall: f64,
    cpu: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn one(
    tracer: &Path,
    xtask: &Path,
    scratch: &Path,
    senders: usize,
    batches: u64,
    pace_ms: u64,
) -> Result<Row> {
    let dir = scratch.join(format!("collect-{senders}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let token = scratch.join("token");
    std::fs::write(&token, TOKEN)?;
    let mut collector = Command::new(tracer)
        .args([
            "collect",
            "--listen",
            "127.0.0.1:0",
            "-q",
            "--max-streams",
            "64",
            "-d",
        ])
        .arg(dir.join("traces"))
        .arg("--token-file")
        .arg(&token)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("collect.log"))?)
        .spawn()?;
    let mut line = String::new();
    BufReader::new(collector.stdout.take().unwrap()).read_line(&mut line)?;
    let addr = line
        .strip_prefix("listening ")
        .context("the collector did not say where it listens")?
        .trim()
        .to_string();
    let cpu0 = cpu_seconds(collector.id())?;
    let start = Instant::now();
    let children: Vec<_> = (0..senders)
        .map(|i| {
            Command::new(xtask)
                .args(["__send", &addr, &batches.to_string(), &i.to_string()])
                .arg(pace_ms.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let mut lat: Vec<u64> = Vec::new();
    for c in children {
        let o = c.wait_with_output()?;
        let out = String::from_utf8_lossy(&o.stdout);
        if !o.status.success() {
            bail!("a sender failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        let l = out
            .split_whitespace()
            .find_map(|w| w.strip_prefix("latencies_us="))
            .context("no latencies")?;
        lat.extend(l.split(',').filter_map(|x| x.parse::<u64>().ok()));
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(collector.id())? - cpu0;
    // SAFETY: our own child's pid.
    unsafe { libc::kill(collector.id() as i32, libc::SIGTERM) };
    collector.wait()?;
    // Every stream whole, with every event.
    let mut events = 0;
    for e in std::fs::read_dir(dir.join("traces"))? {
        let t = pfnscope_trace::read_trace(&e?.path())?;
        if let Some(d) = t.damage {
            bail!("a collected trace is damaged: {d}");
        }
        events += t.records.len() as u64;
    }
    let want = senders as u64 * batches * EVENTS_PER_BATCH;
    if events != want {
        bail!("{events} events collected, {want} sent");
    }
    let _ = std::fs::remove_dir_all(&dir);
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    Ok(Row {
        senders,
        pace_ms,
        events,
        wall,
        cpu,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    })
}

pub fn collect(batches: u64, no_write: bool) -> Result<()> {
    let root = util::workspace_root();
    let tracer = util::release_tracer()?;
    let xtask = std::env::current_exe()?;
    let scratch = util::target_dir().join("bench");
    std::fs::create_dir_all(&scratch)?;
    let mut rows = Vec::new();
    for senders in [1, 4, 16] {
        // The same events in all: fewer batches per sender where there are more senders.
        let per = (batches / senders as u64).max(1);
        let r = one(&tracer, &xtask, &scratch, senders, per, 0)?;
        eprintln!(
            "{senders:>2} senders: {} events in {:.2} s",
            r.events, r.wall
        );
        rows.push(r);
    }
    // At the streaming tracer's own rhythm: a batch every 100 ms, from 4 boxes.
    let r = one(&tracer, &xtask, &scratch, 4, 30, 100)?;
    eprintln!(" 4 paced senders: {} events in {:.2} s", r.events, r.wall);
    rows.push(r);
    let mut table = String::new();
    writeln!(
        table,
        "| senders | events | wall | events/s in total | per stream | collector CPU per M events | batch on disk after (p50 / p99) |"
    )?;
    writeln!(table, "|---|---|---|---|---|---|---|")?;
    for r in &rows {
        let rate = r.events as f64 / r.wall;
        let who = match r.pace_ms {
            0 => r.senders.to_string(),
            p => format!(
                "{}, a batch every {p} ms each (the tracer's rhythm)",
                r.senders
            ),
        };
        writeln!(
            table,
            "| {} | {} | {:.2} s | {:.2} M | {:.2} M | {:.2} CPU-s | {:.1} / {:.1} ms |",
            who,
            r.events,
            r.wall,
            rate / 1e6,
            rate / 1e6 / r.senders as f64,
            r.cpu / (r.events as f64 / 1e6),
            r.p50_ms,
            r.p99_ms
        )?;
    }
    let section = format!(
        "## streaming capture: tracer collect\n\nCommand: `cargo xtask bench collect --batches {batches}`. {} CPUs, loopback. \
         Each sender (`cargo xtask __send`) sends batches of {EVENTS_PER_BATCH} fault rows encoded by the trace crate's \
         stream encoder as fast as the collector acknowledges them; {batches} batches in all per row, split among the \
         senders. The collector checks and decodes each batch, appends it and fdatasyncs it before it acknowledges; \
         the latency is from the sender's write to the acknowledgement. Every collected file was read back whole with \
         every event. The host's speed drifts by ~20% from hour to hour: compare rows of one run only.\n\n{table}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
    );
    println!("{section}");
    if !no_write {
        replace_section(
            &root.join("BENCHMARKS.md"),
            "## streaming capture: tracer collect",
            &section,
        )?;
        eprintln!("BENCHMARKS.md updated");
    }
    Ok(())
}
