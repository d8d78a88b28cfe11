//! `analyzer export --format perfetto`: the trace as a Perfetto timeline (TrackEvent protobuf,
//! open it in ui.perfetto.dev or `trace_processor`), for people who think in timelines.
//!
//! One track per thread under one per process; each timed call is a slice (so a fault holds its
//! PFN insert, which holds the PAT call, which holds the memtype reservation, as they nested in
//! the kernel), each off-CPU episode a slice named after its blocking site, each untimed row
//! (tracepoints, forks) an instant. With `--replay`, every divergence and finding of a `replay
//! check --json` report is an instant on the thread of its deciding call, named by its rule id.
//! Timestamps are the trace's own CLOCK_MONOTONIC nanoseconds.

mod proto;

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufWriter, Write},
    path::Path,
};

use pfnscope_trace::{Damage, Existing, NewFile, Record, Sym, TraceReader};
use replay_report::CheckReport;

use crate::{
    error::{AnalyzerError, Result, write_err},
    replay::Replay,
};
use proto::{
    DebugAnnotation, EventType, ProcessDescriptor, SEQ_INCREMENTAL_STATE_CLEARED,
    TRACE_PACKET_FIELD, ThreadDescriptor, TracePacket, TrackDescriptor, TrackEvent,
};

/// The row kinds the timeline knows; every other hook is a slice or instant named by itself.
const EPISODE_HOOK: &str = "sched:sched_switch";

/// What the timeline needs of one row.
struct Row {
    id: u64,
    /// The call it ran inside (0: none); a rule event's is its deciding call.
    parent: u64,
    ts: u64,
    /// End of a slice; None: an instant.
    end: Option<u64>,
    pid: u32,
    tid: u32,
    comm: Sym,
    name: String,
    category: &'static str,
    args: Vec<DebugAnnotation>,
}

/// What the export wrote.
#[derive(Debug, Default)]
pub struct Written {
    pub rows: usize,
    pub threads: usize,
    pub rule_events: usize,
}

/// Reads `trace` (and the replay report, if any) and writes the timeline to `out`, created as
/// every command's output is (see [`pfnscope_trace::output`]). A damaged trace is exported up
/// to its damage, which is returned.
pub fn export(
    trace: &Path,
    replay: Option<&Path>,
    out: &Path,
    existing: Existing,
) -> Result<(Written, Option<Damage>)> {
    let mut inputs = vec![trace];
    inputs.extend(replay);
    pfnscope_trace::output::check(out, existing, &inputs)?;
    let check = match replay {
        Some(p) => Some(check_report(p)?),
        None => None,
    };
    let (mut rows, damage) = read_rows(trace)?;
    if rows.is_empty() {
        return Err(AnalyzerError::NoEvents {
            path: trace.to_owned(),
            damage: None,
        });
    }
    let rule_events = check.as_ref().map_or(0, |c| add_rule_events(&mut rows, c));
    let mut file = NewFile::create(out, existing, &inputs)?;
    let mut w = BufWriter::new(file.file());
    let threads = write_timeline(&rows, &mut w).map_err(write_err(out))?;
    w.flush().map_err(write_err(out))?;
    drop(w);
    file.place()?;
    Ok((
        Written {
            rows: rows.len() - rule_events,
            threads,
            rule_events,
        },
        damage,
    ))
}

fn check_report(path: &Path) -> Result<CheckReport> {
    match Replay::load(&[path.to_owned()])? {
        Replay {
            check: Some((_, c)),
            ..
        } => Ok(c),
        _ => Err(AnalyzerError::ReplayFormat {
            path: path.to_owned(),
            why: "the timeline shows `replay check --json` reports; this is an overhead report"
                .into(),
        }),
    }
}

fn read_rows(trace: &Path) -> Result<(Vec<Row>, Option<Damage>)> {
    let mut reader = TraceReader::open(trace)?;
    let mut out = vec![];
    loop {
        let rows = match reader.next_rows() {
            Ok(Some(r)) => r,
            Ok(None) => return Ok((out, None)),
            Err(d) if out.is_empty() => {
                return Err(AnalyzerError::NoEvents {
                    path: trace.to_owned(),
                    damage: Some(Box::new(d)),
                });
            }
            Err(d) => return Ok((out, Some(d))),
        };
        for i in 0..rows.len() {
            out.push(row(&rows.record(i)));
        }
    }
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

fn row(r: &Record) -> Row {
    let mut args = vec![DebugAnnotation::uint("id", r.id)];
    if let Some(d) = r.driver {
        args.push(DebugAnnotation::text("driver", d.as_str()));
    }
    if let Some(a) = r.address {
        args.push(DebugAnnotation::text("address", hex(a)));
    }
    if let Some(p) = r.pfn {
        args.push(DebugAnnotation::text("pfn", hex(p)));
    }
    if let Some(c) = r.cache_req {
        args.push(DebugAnnotation::text("cache requested", c.as_str()));
    }
    if let Some(c) = r.cache_out {
        args.push(DebugAnnotation::text("cache obtained", c.as_str()));
    }
    if let Some(v) = r.ret {
        args.push(DebugAnnotation::text("returned", hex(v as u64)));
    }
    if let Some(off) = r.offcpu_ns {
        args.push(DebugAnnotation::uint("off-CPU ns", off));
    }
    let (name, category) = if r.hook.as_str() == EPISODE_HOOK {
        if let Some(w) = r.waker_comm {
            args.push(DebugAnnotation::text("woken by", w.as_str()));
        }
        let site = r.block_site.map_or("(unknown)", |s| s.as_str());
        (format!("off-CPU: {site}"), "off-cpu")
    } else {
        (r.hook.to_string(), "call")
    };
    Row {
        id: r.id,
        parent: r.parent,
        ts: r.ts_ns,
        end: r.latency_ns.map(|l| r.ts_ns.saturating_add(l)),
        pid: r.pid,
        tid: r.tid,
        comm: r.comm,
        name,
        category,
        args,
    }
}

/// Adds an instant for each divergence and finding, at its deciding call; returns how many.
fn add_rule_events(rows: &mut Vec<Row>, c: &CheckReport) -> usize {
    let at: HashMap<u64, (u64, u32, u32, Sym)> = rows
        .iter()
        .map(|r| (r.id, (r.ts, r.pid, r.tid, r.comm)))
        .collect();
    let mut new = vec![];
    let divergences = c.divergences.iter().map(|d| {
        (
            "divergence",
            &d.rule,
            &d.ids,
            vec![
                DebugAnnotation::text("expected", d.expected.clone()),
                DebugAnnotation::text("observed", d.observed.clone()),
                DebugAnnotation::text("kernel source", d.source.to_string()),
            ],
        )
    });
    let findings = c.findings.iter().map(|f| {
        let mut args = vec![
            DebugAnnotation::text("message", f.message.clone()),
            DebugAnnotation::uint("occurrences", f.count),
            DebugAnnotation::text("kernel source", f.source.to_string()),
        ];
        if let Some(d) = &f.driver {
            args.push(DebugAnnotation::text("driver", d.clone()));
        }
        ("finding", &f.rule, &f.ids, args)
    });
    for (category, rule, ids, args) in divergences.chain(findings) {
        // The deciding call is listed first; a report of another trace names ids not here.
        let Some(&(ts, pid, tid, comm)) = ids.first().and_then(|id| at.get(id)) else {
            continue;
        };
        new.push(Row {
            id: 0,
            parent: ids[0],
            ts,
            end: None,
            pid,
            tid,
            comm,
            name: rule.clone(),
            category,
            args,
        });
    }
    let n = new.len();
    rows.extend(new);
    n
}

fn packet(ts: u64, seq: u32) -> TracePacket {
    TracePacket {
        timestamp: Some(ts),
        trusted_packet_sequence_id: Some(seq),
        ..Default::default()
    }
}

fn put(w: &mut (impl Write + ?Sized), p: &TracePacket, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    prost::encoding::message::encode(TRACE_PACKET_FIELD, p, buf);
    w.write_all(buf)
}

fn process_uuid(pid: u32) -> u64 {
    1 << 32 | pid as u64
}

fn thread_uuid(tid: u32) -> u64 {
    2 << 32 | tid as u64
}

/// Writes the descriptors, then each thread's events as one packet sequence in time order;
/// returns the number of threads.
fn write_timeline(rows: &[Row], w: &mut impl Write) -> std::io::Result<usize> {
    let mut by_tid: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut processes: BTreeMap<u32, Sym> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        by_tid.entry(r.tid).or_default().push(i);
        // The thread-group leader's name names the process when it is in the trace.
        if r.tid == r.pid || !processes.contains_key(&r.pid) {
            processes.insert(r.pid, r.comm);
        }
    }
    let mut buf = Vec::with_capacity(256);
    let first_ts = rows.iter().map(|r| r.ts).min().unwrap_or(0);
    let mut descriptor = |w: &mut dyn Write, d: TrackDescriptor| {
        let mut p = packet(first_ts, 1);
        p.track_descriptor = Some(d);
        put(w, &p, &mut buf)
    };
    for (&pid, comm) in &processes {
        descriptor(
            w,
            TrackDescriptor {
                uuid: Some(process_uuid(pid)),
                process: Some(ProcessDescriptor {
                    pid: Some(pid as i32),
                    process_name: Some(comm.to_string()),
                }),
                ..Default::default()
            },
        )?;
    }
    for (&tid, idx) in &by_tid {
        let r = &rows[idx[0]];
        descriptor(
            w,
            TrackDescriptor {
                uuid: Some(thread_uuid(tid)),
                parent_uuid: Some(process_uuid(r.pid)),
                thread: Some(ThreadDescriptor {
                    pid: Some(r.pid as i32),
                    tid: Some(tid as i64),
                    thread_name: Some(r.comm.to_string()),
                }),
                ..Default::default()
            },
        )?;
    }
    for (seq, (&tid, idx)) in by_tid.iter().enumerate() {
        thread_events(rows, idx, tid, seq as u32 + 2, w, &mut buf)?;
    }
    Ok(by_tid.len())
}

/// One thread's slices and instants, each call inside the call it ran in (its `parent`, as the
/// tracer linked them), in time order. The kernel runs a thread's calls nested or one after
/// the other; where the recorded times say otherwise (clock granularity, a call cut short),
/// a slice is clamped into its parent and after its previous sibling, so the timeline stays
/// well nested and in order without dropping a call.
fn thread_events(
    rows: &[Row],
    idx: &[usize],
    tid: u32,
    seq: u32,
    w: &mut impl Write,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    let here: HashMap<u64, usize> = idx
        .iter()
        .filter(|&&i| rows[i].id != 0)
        .map(|&i| (rows[i].id, i))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = vec![];
    for &i in idx {
        match here.get(&rows[i].parent) {
            Some(&p) if p != i => children.entry(p).or_default().push(i),
            _ => roots.push(i),
        }
    }
    // At a tie the longer first: an instant at a call's start goes inside it.
    let key = |&i: &usize| (rows[i].ts, std::cmp::Reverse(rows[i].end.unwrap_or(0)));
    roots.sort_by_key(key);
    for c in children.values_mut() {
        c.sort_by_key(key);
    }
    let mut t = Timeline {
        rows,
        children: &children,
        track: thread_uuid(tid),
        seq,
        first: true,
        buf,
    };
    let mut cur = 0;
    for r in roots {
        cur = t.node(w, r, cur, u64::MAX)?;
    }
    Ok(())
}

/// One thread's packet sequence being written.
struct Timeline<'a> {
    rows: &'a [Row],
    children: &'a HashMap<usize, Vec<usize>>,
    track: u64,
    seq: u32,
    first: bool,
    buf: &'a mut Vec<u8>,
}

impl Timeline<'_> {
    fn emit(&mut self, w: &mut impl Write, ts: u64, ev: TrackEvent) -> std::io::Result<()> {
        let mut p = packet(ts, self.seq);
        if std::mem::take(&mut self.first) {
            p.sequence_flags = Some(SEQ_INCREMENTAL_STATE_CLEARED);
        }
        p.track_event = Some(ev);
        put(w, &p, self.buf)
    }

    /// Writes row `i` and what ran inside it within [lo, hi]; returns where it ended.
    fn node(&mut self, w: &mut impl Write, i: usize, lo: u64, hi: u64) -> std::io::Result<u64> {
        let r = &self.rows[i];
        let start = r.ts.clamp(lo, hi);
        let ev = |kind: EventType| TrackEvent {
            r#type: Some(kind as i32),
            track_uuid: Some(self.track),
            name: Some(r.name.clone()),
            categories: vec![r.category.to_string()],
            debug_annotations: r.args.clone(),
        };
        let Some(end) = r.end else {
            self.emit(w, start, ev(EventType::Instant))?;
            return Ok(start);
        };
        let end = end.clamp(start, hi);
        self.emit(w, start, ev(EventType::SliceBegin))?;
        let mut cur = start;
        for &c in self.children.get(&i).map_or(&[][..], |v| v) {
            cur = self.node(w, c, cur, end)?;
        }
        let end_ev = TrackEvent {
            r#type: Some(EventType::SliceEnd as i32),
            track_uuid: Some(self.track),
            ..Default::default()
        };
        self.emit(w, end, end_ev)?;
        Ok(end)
    }
}
