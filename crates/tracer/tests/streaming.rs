//! Streaming capture over loopback: `tracer record -o tcp://...` into `tracer collect`, and
//! `-o -`. Several tracers at once, each stream whole in its own file; a sender killed
//! mid-stream leaves a trace readers call cut short; a collector that goes away is retried,
//! then the rest of the recording goes to a local file; bad input (a wrong token, bytes that
//! are no stream, a foreign Arrow schema, a stalled sender) is one log line and a closed
//! connection while another stream goes on untouched.
//!
//! The tests that record load eBPF for real (root; tracepoint mode is enough) and print
//! `SKIPPED: <reason>` otherwise; the bad-input test needs no root: its good stream is made
//! with the trace crate's own encoder.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use pfnscope_trace::{
    CpuCounters, DamageKind, Record, TraceMeta, read_trace,
    stream::{END_OF_STREAM, Hello, Reply, StreamEncoder, StreamId},
};

const TRACER: &str = env!("CARGO_BIN_EXE_tracer");
const TOKEN: &str = "c3RyZWFtaW5nLXRlc3QtdG9rZW4tMDEyMzQ1";

fn skip(why: &str) -> bool {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
    true
}

fn not_root() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    !root && skip("needs root to load eBPF programs")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pfnscope-stream-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A `tracer collect` on a free loopback port, its log in a file.
struct Collector {
    child: Child,
    addr: String,
    dir: PathBuf,
    log: PathBuf,
    token: PathBuf,
}

impl Collector {
    fn start(base: &Path, extra: &[&str]) -> Collector {
        let token = base.join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let (dir, log) = (base.join("traces"), base.join("collect.log"));
        let mut child = Command::new(TRACER)
            .args(["collect", "--listen", "127.0.0.1:0", "-q", "-d"])
            .arg(&dir)
            .arg("--token-file")
            .arg(&token)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("collector said {line:?}"))
            .trim()
            .to_string();
        Collector {
            child,
            addr,
            dir,
            log,
            token,
        }
    }

    fn url(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has `n` lines containing `what`.
    fn wait_for(&self, what: &str, n: usize) {
        let t = Instant::now();
        while self.log().matches(what).count() < n {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no {n}x {what:?} in the collector's log:\n{}",
                self.log()
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and its exit status and log.
    fn stop(mut self) -> (i32, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = self.child.wait().unwrap();
        (st.code().unwrap_or(-1), self.log())
    }

    fn traces(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "arrows"))
            .collect();
        v.sort();
        v
    }
}

/// `tracer record` streaming to `c`, tracing `sh -c CMD`.
fn record_to(c: &Collector, extra: &[&str], cmd: &str) -> Child {
    Command::new(TRACER)
        .args(["record", "-q", "-o", &c.url(), "--token-file"])
        .arg(&c.token)
        .args(extra)
        .args(["--", "/bin/sh", "-c", cmd])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The per-hook counts of the tracer's summary (`  hook   count` lines).
fn summary_counts(stderr: &str) -> BTreeMap<String, u64> {
    stderr
        .lines()
        .filter(|l| l.starts_with("  ") && !l.trim_start().starts_with("dropped"))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (hook, n) = (w.next()?, w.next()?.parse().ok()?);
            w.next().is_none().then(|| (hook.to_string(), n))
        })
        .collect()
}

fn file_counts(records: &[Record]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(r.hook.to_string()).or_insert(0) += 1;
    }
    m
}

/// Faults in this process (fresh anonymous mappings) until `d` has passed.
fn make_faults(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        let m = workload::sys::Map::anon(4 << 20).unwrap();
        m.write_all(1);
        drop(m);
        sleep(Duration::from_millis(20));
    }
}

#[test]
fn several_senders_at_once_each_stream_whole_in_its_own_file() {
    if not_root() {
        return;
    }
    let base = tmpdir("many");
    let c = Collector::start(&base, &[]);
    // Each sender maps a buffer of its own size (dd's block) and touches it several times.
    let senders: Vec<(u32, Child)> = (1..=4)
        .map(|k| {
            let cmd = format!(
                "dd if=/dev/zero of=/dev/null bs={}M count=4 2>/dev/null; sleep 0.3",
                2 * k
            );
            (k, record_to(&c, &[], &cmd))
        })
        .collect();
    let mut expected = BTreeMap::new();
    for (k, child) in senders {
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(0), "sender {k}: {err}");
        assert!(
            err.contains("and the end of the stream"),
            "sender {k} did not hear that the collector has everything: {err}"
        );
        expected.insert(format!("bs={}M", 2 * k), summary_counts(&err));
    }
    let traces = c.traces();
    let (rc, log) = c.stop();
    assert_eq!(rc, 0, "{log}");
    assert_eq!(traces.len(), 4, "one file per stream: {traces:?}\n{log}");
    assert_eq!(log.matches(": finished ").count(), 4, "{log}");
    for p in &traces {
        let t = read_trace(p).unwrap();
        assert_eq!(t.damage, None, "{}", p.display());
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let want_prefix = format!("{}-{}-", t.meta.host, t.meta.kernel_release);
        assert!(
            name.starts_with(&want_prefix.replace('+', "_")),
            "{name}: not named from the box's hostname and kernel"
        );
        let cmd = t.meta.command_line.join(" ");
        let (_, counts) = expected
            .iter()
            .find(|(k, _)| cmd.contains(k.as_str()))
            .unwrap_or_else(|| panic!("{name}: no sender ran {cmd}"));
        // The tracer counted each event as it decoded it; the file has every one of them.
        assert_eq!(&file_counts(&t.records), counts, "{name}");
        assert!(t.records.len() > 200, "{name}: {} events", t.records.len());
        // The loss counters came along, as a file the tracer wrote keeps them.
        assert!(!t.counters.is_empty(), "{name}: no loss counters");
    }
}

#[test]
fn a_sender_killed_mid_stream_leaves_a_trace_read_as_cut_short() {
    if not_root() {
        return;
    }
    let base = tmpdir("killed");
    let c = Collector::start(&base, &[]);
    let child = Command::new(TRACER)
        .args(["record", "-a", "-q", "-o", &c.url(), "--token-file"])
        .arg(&c.token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    c.wait_for("streaming to", 1);
    make_faults(Duration::from_millis(1500));
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let mut child = child;
    child.wait().unwrap();
    c.wait_for("went away", 1);
    let traces = c.traces();
    let (_, log) = c.stop();
    assert_eq!(traces.len(), 1, "{log}");
    let t = read_trace(&traces[0]).unwrap();
    let d = t.damage.expect("a stream whose sender died is reported");
    assert_eq!(d.kind, DamageKind::CutShort, "{d}");
    assert!(!t.records.is_empty(), "nothing kept");
    assert!(!t.counters.is_empty(), "no loss counters kept");
    assert_eq!(
        log.lines().filter(|l| l.contains("went away")).count(),
        1,
        "{log}"
    );
}

#[test]
fn a_lost_collector_is_retried_then_the_rest_goes_to_a_local_file() {
    if not_root() {
        return;
    }
    let base = tmpdir("lost");
    let local = base.join("local");
    std::fs::create_dir_all(&local).unwrap();
    let mut c = Collector::start(&base, &[]);
    let child = Command::new(TRACER)
        .args([
            "record",
            "-a",
            "-q",
            "--retry-for",
            "2",
            "-o",
            &c.url(),
            "--token-file",
        ])
        .arg(&c.token)
        .arg("--fallback-dir")
        .arg(&local)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.wait_for("streaming to", 1);
    make_faults(Duration::from_millis(1000));
    c.child.kill().unwrap();
    c.child.wait().unwrap();
    make_faults(Duration::from_millis(3500));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{:?} {err}", o.status);
    assert!(err.contains("lost the collector"), "{err}");
    assert!(err.contains("trying again for 2 s"), "{err}");
    assert!(err.contains("stayed unreachable"), "{err}");
    let at_collector = c.traces();
    assert_eq!(at_collector.len(), 1);
    let kept = std::fs::read_dir(&local)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect::<Vec<_>>();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(err.contains(&kept[0].display().to_string()), "{err}");
    let far = read_trace(&at_collector[0]).unwrap();
    assert_eq!(far.damage.map(|d| d.kind), Some(DamageKind::CutShort));
    let near = read_trace(&kept[0]).unwrap();
    assert_eq!(near.damage, None, "the local file is finished");
    assert!(!near.records.is_empty() && !near.counters.is_empty());
    // Nothing dropped silently: the two files hold every event the tracer recorded (a batch
    // the collector wrote but never acknowledged is in both).
    let total: u64 = summary_counts(&err).values().sum();
    let have = (far.records.len() + near.records.len()) as u64;
    assert!(
        have >= total,
        "{have} events in the two files, {total} recorded"
    );
}

#[test]
fn a_trace_on_standard_output_reads_like_a_file() {
    if not_root() {
        return;
    }
    let base = tmpdir("stdout");
    let out = base.join("t.arrows");
    let o = Command::new(TRACER)
        .args(["record", "-q", "-o", "-", "--", "/bin/sh", "-c"])
        .arg("echo from-the-command; dd if=/dev/zero of=/dev/null bs=4M count=2 2>/dev/null")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // The command's own output goes to standard error: standard output is the trace's.
    assert!(err.contains("from-the-command"), "{err}");
    let t = read_trace(&out).unwrap();
    assert_eq!(t.damage, None);
    assert_eq!(file_counts(&t.records), summary_counts(&err));
    assert!(!t.counters.is_empty());
}

/// A stream made by hand with the trace crate's encoder: the hello, then the schema.
struct HandSender {
    s: TcpStream,
    replies: BufReader<TcpStream>,
    enc: StreamEncoder,
    id: StreamId,
}

impl HandSender {
    fn connect(addr: &str, token: &str, id: u64) -> HandSender {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let replies = BufReader::new(s.try_clone().unwrap());
        let meta = TraceMeta {
            host: "handmade".into(),
            kernel_release: "6.12.0".into(),
            started_unix_ns: 1_796_679_045_123_000_000 + id,
            ..Default::default()
        };
        let mut h = HandSender {
            s,
            replies,
            enc: StreamEncoder::new(&meta).unwrap(),
            id: StreamId(id),
        };
        let hello = Hello {
            id: h.id,
            next: 1,
            token: token.into(),
        };
        h.s.write_all(hello.line().as_bytes()).unwrap();
        h
    }

    fn reply(&mut self) -> Option<Reply> {
        let mut line = String::new();
        match self.replies.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Reply::parse(&line),
        }
    }

    fn schema(&mut self) {
        let schema = self.enc.schema_message().to_vec();
        self.s.write_all(&schema).unwrap();
    }

    fn batch(&mut self, n: u64) {
        self.try_batch(n).unwrap();
    }

    fn try_batch(&mut self, n: u64) -> std::io::Result<()> {
        for i in 0..n {
            self.enc.push(&Record {
                hook: "exceptions:page_fault_user".into(),
                address: Some(0x7f00_0000_0000 + i * 4096),
                ..Default::default()
            });
        }
        self.enc.push_counters(
            &[CpuCounters {
                cpu: 0,
                dropped: 3,
                ..Default::default()
            }],
            1,
        );
        let b = self.enc.batch().unwrap().unwrap();
        self.s.write_all(&b.bytes)
    }

    /// Whether the collector closed the connection (after at most one more reply).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.replies.read_to_end(&mut rest).is_ok()
    }
}

#[test]
fn bad_input_is_one_line_and_a_closed_connection_while_other_streams_go_on() {
    let base = tmpdir("bad");
    let c = Collector::start(&base, &["--stall-timeout", "1"]);
    let mut good = HandSender::connect(&c.addr, TOKEN, 1);
    assert!(matches!(good.reply(), Some(Reply::Ok { have: 0, .. })));
    good.schema();
    let mut seq = 0;
    let mut sent = 0;
    // One batch of the good stream, acknowledged.
    let mut good_batch = |good: &mut HandSender| {
        good.batch(10);
        seq += 1;
        sent += 10;
        let r = good.reply();
        assert!(
            matches!(r, Some(Reply::Ack { seq: s, .. }) if s == seq),
            "{r:?}"
        );
    };
    good_batch(&mut good);

    // A wrong token.
    let mut bad = HandSender::connect(&c.addr, "the-wrong-token-of-some-length", 2);
    assert!(matches!(bad.reply(), Some(Reply::Error(w)) if w.contains("wrong token")));
    assert!(bad.closed());
    good_batch(&mut good);
    // Bytes that are no stream at all.
    let mut raw = TcpStream::connect(&c.addr).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("error not a pfnscope stream"),
        "{answer}"
    );
    good_batch(&mut good);
    // An Arrow stream sent without the handshake.
    let mut arrow = TcpStream::connect(&c.addr).unwrap();
    let mut no_hello = StreamEncoder::new(&TraceMeta::default())
        .unwrap()
        .schema_message()
        .to_vec();
    no_hello.extend_from_slice(&END_OF_STREAM);
    arrow.write_all(&no_hello).unwrap();
    let mut answer = String::new();
    arrow.read_to_string(&mut answer).unwrap();
    assert!(
        answer.contains("without the pfnscope handshake"),
        "{answer}"
    );
    good_batch(&mut good);
    // A schema the collector does not know: an Arrow stream that is no trace.
    let mut foreign = HandSender::connect(&c.addr, TOKEN, 3);
    assert!(matches!(foreign.reply(), Some(Reply::Ok { .. })));
    let mut bytes = Vec::new();
    {
        let s = arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "x",
            arrow_schema::DataType::Int32,
            false,
        )]);
        let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut bytes, &s).unwrap();
        w.finish().unwrap();
    }
    foreign.s.write_all(&bytes).unwrap();
    assert!(matches!(foreign.reply(), Some(Reply::Error(_))));
    assert!(foreign.closed());
    good_batch(&mut good);
    // A sender that stalls after its schema, while the good one keeps sending.
    let mut stalled = HandSender::connect(&c.addr, TOKEN, 4);
    assert!(matches!(stalled.reply(), Some(Reply::Ok { .. })));
    stalled.schema();
    stalled
        .s
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let t = Instant::now();
    let why = loop {
        good_batch(&mut good);
        if let Some(r) = stalled.reply() {
            break r;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "never cut off");
    };
    assert_eq!(why, Reply::Error("stalled".into()));
    assert!(stalled.closed());

    // The good stream went on meanwhile, and ends whole.
    good.s.write_all(&END_OF_STREAM).unwrap();
    assert!(matches!(good.reply(), Some(Reply::Done { seq: s, .. }) if s == seq));

    let traces = c.traces();
    let (rc, log) = c.stop();
    assert_eq!(rc, 0, "{log}");
    // One line for each bad input.
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("collect: refused ") || l.contains(": stalled: "))
        .collect();
    assert_eq!(lines.len(), 5, "{log}");
    for want in [
        "wrong token",
        "not a pfnscope stream",
        "without the pfnscope handshake",
        "is not a pfnscope trace",
        "stalled: nothing came for 1 s",
    ] {
        assert_eq!(
            lines.iter().filter(|l| l.contains(want)).count(),
            1,
            "{want}: {log}"
        );
    }
    // The good stream's file is whole; the stalled one's holds its schema, cut short.
    assert_eq!(traces.len(), 2, "{traces:?}");
    let mut whole = 0;
    for p in &traces {
        let t = read_trace(p).unwrap();
        match t.damage {
            None => {
                whole += 1;
                assert_eq!(t.records.len() as u64, sent);
                assert_eq!(t.counters.total().dropped, 3);
            }
            Some(d) => {
                assert_eq!(d.kind, DamageKind::CutShort, "{d}");
                assert!(t.records.is_empty());
            }
        }
    }
    assert_eq!(whole, 1);
}

#[test]
fn a_full_disk_is_one_line_and_the_file_keeps_every_complete_batch() {
    if not_root() {
        return;
    }
    let base = tmpdir("full");
    let disk = base.join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let c_disk = std::ffi::CString::new(disk.to_str().unwrap()).unwrap();
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c_disk.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"size=256k".as_ptr().cast(),
        )
    };
    if rc != 0 {
        skip(&format!(
            "cannot mount a small tmpfs: {}",
            std::io::Error::last_os_error()
        ));
        return;
    }
    let token = base.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let log = base.join("collect.log");
    let mut child = Command::new(TRACER)
        .args(["collect", "--listen", "127.0.0.1:0", "-q", "-d"])
        .arg(disk.join("traces"))
        .arg("--token-file")
        .arg(&token)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().strip_prefix("listening ").unwrap().to_string();
    let mut s = HandSender::connect(&addr, TOKEN, 9);
    assert!(matches!(s.reply(), Some(Reply::Ok { .. })));
    s.schema();
    let mut acked = 0;
    let why = loop {
        if s.try_batch(2000).is_err() {
            break s.reply();
        }
        match s.reply() {
            Some(Reply::Ack { seq, .. }) => acked = seq,
            other => break other,
        }
        assert!(acked < 10_000, "the disk never filled");
    };
    assert_eq!(
        why,
        Some(Reply::Error("the collector's disk is full".into()))
    );
    let files: Vec<PathBuf> = std::fs::read_dir(disk.join("traces"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let t = read_trace(&files[0]);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    unsafe { libc::umount2(c_disk.as_ptr(), libc::MNT_DETACH) };
    let log = std::fs::read_to_string(&log).unwrap();
    let full: Vec<&str> = log.lines().filter(|l| l.contains("disk full")).collect();
    assert_eq!(full.len(), 1, "{log}");
    assert!(
        full[0].contains(&format!("keeps its {acked} batches")),
        "{log}"
    );
    // Every batch it acknowledged, and not a byte of the one that did not fit.
    let t = t.unwrap();
    assert_eq!(t.records.len() as u64, acked * 2000);
    assert_eq!(t.damage.map(|d| d.kind), Some(DamageKind::CutShort));
}

/// A connection that breaks inside a batch: the sender comes back with the same stream id, the
/// collector says which batch it has, and the stream goes on in the same file, whole.
#[test]
fn a_sender_that_comes_back_goes_on_in_the_same_file() {
    let base = tmpdir("resume");
    let c = Collector::start(&base, &[]);
    let mut s = HandSender::connect(&c.addr, TOKEN, 7);
    assert!(matches!(s.reply(), Some(Reply::Ok { have: 0, .. })));
    s.schema();
    s.batch(10);
    assert!(matches!(s.reply(), Some(Reply::Ack { seq: 1, .. })));
    // Half of batch 2, then the connection is gone.
    for i in 0..20 {
        s.enc.push(&Record {
            hook: "exceptions:page_fault_user".into(),
            address: Some(i),
            ..Default::default()
        });
    }
    let two = s.enc.batch().unwrap().unwrap().bytes;
    s.s.write_all(&two[..two.len() / 2]).unwrap();
    s.s.shutdown(std::net::Shutdown::Both).unwrap();
    c.wait_for("went away inside batch 2", 1);

    let mut back = HandSender::connect(&c.addr, TOKEN, 7);
    // The hello said `next 1`; the collector has batch 1.
    assert!(matches!(back.reply(), Some(Reply::Ok { have: 1, .. })));
    back.schema();
    back.s.write_all(&two).unwrap();
    assert!(matches!(back.reply(), Some(Reply::Ack { seq: 2, .. })));
    back.batch(5);
    assert!(matches!(back.reply(), Some(Reply::Ack { seq: 3, .. })));
    back.s.write_all(&END_OF_STREAM).unwrap();
    assert!(matches!(back.reply(), Some(Reply::Done { seq: 3, .. })));
    let traces = c.traces();
    let (_, log) = c.stop();
    assert_eq!(traces.len(), 1, "{log}");
    assert!(log.contains("back; "), "{log}");
    let t = read_trace(&traces[0]).unwrap();
    assert_eq!(t.damage, None);
    assert_eq!(t.records.len(), 10 + 20 + 5);
}

/// SIGTERM while streams are open: each file gets its end marker after its last complete
/// batch, and each sender hears where its file ends (`bye`), to keep the rest itself.
#[test]
fn sigterm_finishes_every_open_stream() {
    let base = tmpdir("sigterm");
    let c = Collector::start(&base, &[]);
    let mut senders: Vec<HandSender> = (0..3)
        .map(|i| HandSender::connect(&c.addr, TOKEN, 20 + i))
        .collect();
    for (i, s) in senders.iter_mut().enumerate() {
        assert!(matches!(s.reply(), Some(Reply::Ok { .. })));
        s.schema();
        for b in 1..=i as u64 + 1 {
            s.batch(10);
            assert!(matches!(s.reply(), Some(Reply::Ack { seq, .. }) if seq == b));
        }
    }
    let traces = c.traces();
    let (rc, log) = c.stop();
    assert_eq!(rc, 0, "{log}");
    for (i, s) in senders.iter_mut().enumerate() {
        let n = i as u64 + 1;
        assert!(
            matches!(s.reply(), Some(Reply::Bye { seq, .. }) if seq == n),
            "{log}"
        );
    }
    assert_eq!(traces.len(), 3);
    let mut events: Vec<usize> = traces
        .iter()
        .map(|p| {
            let t = read_trace(p).unwrap();
            assert_eq!(t.damage, None, "{}", p.display());
            t.records.len()
        })
        .collect();
    events.sort();
    assert_eq!(events, [10, 20, 30]);
    assert_eq!(log.matches("stopped by SIGTERM").count(), 3, "{log}");
}
