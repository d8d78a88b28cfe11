//! Why faults were slow: fault time by stack, split into on-CPU and off-CPU, and the sites
//! faults blocked at, per driver. Read from the trace's rows directly (the trace crate's row
//! reader, a second pass over the file): the compact polars form keeps no stacks or ids, and
//! linking an off-CPU episode to its fault needs both.
//!
//! A fault's stack is its user stack then its kernel stack, outermost first (the folded form
//! flame graphs read). An off-CPU episode is charged to the stack of the fault it blocked in
//! (its user part) followed by its own kernel stack at switch-out, so the off-CPU flame graph
//! ends in the blocking site.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use pfnscope_abi::Hook;
use pfnscope_trace::{Sym, TraceReader};
use serde::Serialize;

use crate::error::{AnalyzerError, Result};

/// Fault time of one stack.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StackRow {
    /// Folded, outermost frame first.
    pub stack: String,
    pub faults: u64,
    /// Faults with a latency (None where none had: tracepoint mode).
    pub latency_ns: Option<u64>,
    pub offcpu_ns: u64,
}

/// Off-CPU time at one blocking site, for the faults of one driver.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SiteRow {
    pub driver: String,
    pub site: String,
    pub episodes: u64,
    pub offcpu_ns: u64,
    /// Of the driver's fault time (entry to return) where faults were timed; else of the
    /// driver's off-CPU time.
    pub share: f64,
    /// The most frequent waker.
    pub waker: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Why {
    /// Folded stack -> on-CPU ns of the faults with that stack (fault counts where faults
    /// have no latency: `on_cpu_unit`).
    pub on_cpu: BTreeMap<String, u64>,
    pub on_cpu_unit: &'static str,
    /// Folded stack -> off-CPU ns.
    pub off_cpu: BTreeMap<String, u64>,
    pub stacks: Vec<StackRow>,
    pub sites: Vec<SiteRow>,
    /// Faults, faults with a stack, off-CPU episodes.
    pub faults: u64,
    pub faults_with_stack: u64,
    pub episodes: u64,
    /// From the trace metadata: what stacks could not be had.
    pub missing: Vec<String>,
    /// False for traces recorded without stacks and off-CPU tracing (schema 4 and older).
    pub recorded: bool,
}

/// A call as the episodes need it.
struct Call {
    parent: u64,
    driver: Option<Sym>,
    ustack: Option<Sym>,
}

#[derive(Default)]
struct Site {
    episodes: u64,
    off: u64,
    wakers: HashMap<Sym, u64>,
}

fn join(u: Option<Sym>, k: Option<Sym>) -> Option<String> {
    match (u, k) {
        (Some(u), Some(k)) => Some(format!("{u};{k}")),
        (Some(s), None) | (None, Some(s)) => Some(s.to_string()),
        (None, None) => None,
    }
}

impl Why {
    pub fn compute(path: &Path) -> Result<Why> {
        let mut reader = TraceReader::open(path)?;
        let meta = reader.meta().clone();
        let mut why = Why {
            recorded: meta.stacks.is_some(),
            missing: meta
                .stacks
                .as_ref()
                .map(|s| s.missing.clone())
                .unwrap_or_default(),
            on_cpu_unit: "ns",
            ..Why::default()
        };
        let mut calls: HashMap<u64, Call> = HashMap::new();
        let mut episodes = vec![];
        let mut stacks: HashMap<String, (u64, Option<u64>, u64)> = HashMap::new();
        let mut driver_time: HashMap<String, u64> = HashMap::new();
        let mut timed = false;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        // Faults whose rows carry no off-CPU time (entry-only tracepoints): their episodes'
        // time is added to their stack's row here.
        let mut untimed_faults: HashMap<u64, String> = HashMap::new();
        loop {
            let rows = match reader.next_rows() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                // Damage is reported by the main load; what came before it is analysed.
                Err(_) => break,
            };
            for i in 0..rows.len() {
                let r = rows.record(i);
                if r.hook == "sched:sched_switch" {
                    episodes.push(r);
                    continue;
                }
                calls.insert(
                    r.id,
                    Call {
                        parent: r.parent,
                        driver: r.driver,
                        ustack: r.ustack,
                    },
                );
                if !Hook::parse(&r.hook).is_some_and(Hook::is_fault) {
                    continue;
                }
                why.faults += 1;
                let off = r.offcpu_ns.unwrap_or(0);
                if let Some(l) = r.latency_ns {
                    timed = true;
                    *driver_time.entry(driver_name(r.driver)).or_default() += l;
                }
                let Some(folded) = join(r.ustack, r.kstack) else {
                    continue;
                };
                why.faults_with_stack += 1;
                if r.offcpu_ns.is_none() {
                    untimed_faults.insert(r.id, folded.clone());
                }
                let e = stacks.entry(folded.clone()).or_default();
                e.0 += 1;
                if let Some(l) = r.latency_ns {
                    e.1 = Some(e.1.unwrap_or(0) + l);
                    *why.on_cpu.entry(folded).or_default() += l.saturating_sub(off);
                } else {
                    *counts.entry(folded).or_default() += 1;
                }
                e.2 += off;
            }
        }
        if !timed {
            why.on_cpu = counts;
            why.on_cpu_unit = "faults";
        }
        let mut sites: BTreeMap<(String, String), Site> = BTreeMap::new();
        let mut driver_off: HashMap<String, u64> = HashMap::new();
        for e in &episodes {
            why.episodes += 1;
            let off = e.offcpu_ns.unwrap_or(0);
            // Up to the fault: the first call above with a vma names the driver, the fault
            // itself (the outermost) its user stack.
            let (mut driver, mut ustack, mut p, mut hops) = (None, None, e.parent, 0);
            while let Some(c) = calls.get(&p) {
                driver = driver.or(c.driver);
                ustack = c.ustack.or(ustack);
                if let Some(folded) = untimed_faults.get(&p)
                    && let Some(row) = stacks.get_mut(folded)
                {
                    row.2 += off;
                }
                p = c.parent;
                hops += 1;
                if p == 0 || hops > 8 {
                    break;
                }
            }
            let d = driver_name(driver);
            *driver_off.entry(d.clone()).or_default() += off;
            if let Some(folded) = join(ustack, e.kstack) {
                *why.off_cpu.entry(folded).or_default() += off;
            }
            let site = e
                .block_site
                .map(|s| s.to_string())
                .unwrap_or_else(|| "(unknown)".into());
            let s = sites.entry((d, site)).or_default();
            s.episodes += 1;
            s.off += off;
            if let Some(w) = e.waker_comm {
                *s.wakers.entry(w).or_default() += 1;
            }
        }
        why.sites = sites
            .into_iter()
            .map(|((driver, site), s)| {
                let whole = if timed {
                    driver_time.get(&driver).copied().unwrap_or(0)
                } else {
                    driver_off.get(&driver).copied().unwrap_or(0)
                };
                SiteRow {
                    share: if whole > 0 {
                        s.off as f64 / whole as f64
                    } else {
                        0.0
                    },
                    waker: s
                        .wakers
                        .iter()
                        .max_by_key(|(w, n)| (**n, std::cmp::Reverse(w.as_str())))
                        .map(|(w, _)| w.to_string()),
                    driver,
                    site,
                    episodes: s.episodes,
                    offcpu_ns: s.off,
                }
            })
            .collect();
        why.sites.sort_by(|a, b| {
            (
                a.driver.as_str(),
                std::cmp::Reverse(a.offcpu_ns),
                a.site.as_str(),
            )
                .cmp(&(
                    b.driver.as_str(),
                    std::cmp::Reverse(b.offcpu_ns),
                    b.site.as_str(),
                ))
        });
        why.stacks = stacks
            .into_iter()
            .map(|(stack, (faults, latency_ns, offcpu_ns))| StackRow {
                stack,
                faults,
                latency_ns,
                offcpu_ns,
            })
            .collect();
        why.stacks.sort_by(|a, b| {
            (b.latency_ns, b.faults, &a.stack).cmp(&(a.latency_ns, a.faults, &b.stack))
        });
        Ok(why)
    }

    /// Folded lines (`frame;frame;frame weight`) for a flame graph, heaviest stack first.
    fn folded(map: &BTreeMap<String, u64>) -> Vec<String> {
        map.iter()
            .filter(|(_, w)| **w > 0)
            .map(|(s, w)| format!("{} {w}", s.replace(' ', "\u{a0}")))
            .collect()
    }

    /// Writes `stem.svg`, an interactive flame graph (inferno, the classic Perl tool's
    /// port), of `map`; false when there is nothing to draw.
    pub fn flame_graph(
        map: &BTreeMap<String, u64>,
        title: &str,
        unit: &str,
        path: &Path,
    ) -> Result<bool> {
        let lines = Why::folded(map);
        if lines.is_empty() {
            return Ok(false);
        }
        let mut opts = inferno::flamegraph::Options::default();
        opts.title = title.to_string();
        opts.count_name = unit.to_string();
        let mut out = Vec::new();
        inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut out)
            .map_err(|e| AnalyzerError::Plot {
                path: path.to_owned(),
                why: e.to_string(),
            })?;
        std::fs::write(path, out).map_err(|err| AnalyzerError::Write {
            path: path.to_owned(),
            err,
        })?;
        Ok(true)
    }
}

fn driver_name(d: Option<Sym>) -> String {
    d.map(|d| d.to_string())
        .unwrap_or_else(|| "(no vm_ops)".into())
}

/// A folded stack shortened for a table: its last `n` frames (the innermost), offsets dropped.
pub fn short_stack(folded: &str, n: usize) -> String {
    let frames: Vec<&str> = folded
        .split(';')
        .map(|f| f.split(['+', ' ']).next().unwrap_or(f))
        .collect();
    let skip = frames.len().saturating_sub(n);
    let mut s = frames[skip..].join(" > ");
    if skip > 0 {
        s = format!("... > {s}");
    }
    s
}

#[cfg(test)]
mod tests {
    use pfnscope_trace::{Record, StacksMeta, TraceMeta, TraceWriter};

    use super::*;

    /// Two timed faults of one driver with stacks, one of them blocked 600 of its 1000 ns on a
    /// folio lock: the on-CPU graph gets 400 + 300 ns, the off-CPU graph 600 ns ending in the
    /// blocking site, and the site table 600 of the driver's 1300 ns.
    #[test]
    fn fault_time_splits_into_on_and_off_cpu_by_stack() {
        let dir = std::env::temp_dir().join(format!("pfnscope-why-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.arrows");
        let meta = TraceMeta {
            stacks: Some(StacksMeta {
                requested: "all".into(),
                threshold_ns: Some(0),
                offcpu: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut w = TraceWriter::create(&path, &meta).unwrap();
        let fault = |id, lat, off, k: &str| Record {
            id,
            hook: "handle_mm_fault".into(),
            latency_ns: Some(lat),
            offcpu_ns: Some(off),
            driver: Some("ext4_file_vm_ops".into()),
            ustack: Some("main+0x1 (w);touch+0x2 (w)".into()),
            kstack: Some(k.into()),
            ..Default::default()
        };
        w.push(&fault(
            1,
            1000,
            600,
            "handle_mm_fault+0x0;filemap_fault+0x9",
        ));
        w.push(&fault(
            2,
            300,
            0,
            "handle_mm_fault+0x0;do_anonymous_page+0x3",
        ));
        w.push(&Record {
            id: 3,
            parent: 1,
            hook: "sched:sched_switch".into(),
            latency_ns: Some(600),
            offcpu_ns: Some(600),
            kstack: Some("filemap_fault+0x9;folio_wait_bit_common+0x1;schedule+0x2".into()),
            block_site: Some("folio_wait_bit_common".into()),
            waker_comm: Some("kworker/0:1".into()),
            ..Default::default()
        });
        w.finish().unwrap();
        let why = Why::compute(&path).unwrap();
        assert_eq!((why.faults, why.faults_with_stack, why.episodes), (2, 2, 1));
        assert_eq!(
            why.on_cpu
                .get("main+0x1 (w);touch+0x2 (w);handle_mm_fault+0x0;filemap_fault+0x9"),
            Some(&400)
        );
        assert_eq!(why.on_cpu.values().sum::<u64>(), 700);
        assert_eq!(
            why.off_cpu,
            BTreeMap::from([(
                "main+0x1 (w);touch+0x2 (w);filemap_fault+0x9;folio_wait_bit_common+0x1;schedule+0x2"
                    .to_string(),
                600
            )])
        );
        let s = &why.sites[0];
        assert_eq!(
            (s.driver.as_str(), s.site.as_str()),
            ("ext4_file_vm_ops", "folio_wait_bit_common")
        );
        assert!((s.share - 600.0 / 1300.0).abs() < 1e-9, "{}", s.share);
        assert_eq!(s.waker.as_deref(), Some("kworker/0:1"));
        // The slowest stack first.
        assert_eq!(why.stacks[0].latency_ns, Some(1000));
        assert_eq!(
            short_stack(&why.stacks[0].stack, 2),
            "... > handle_mm_fault > filemap_fault"
        );
        let svg = dir.join("off.svg");
        assert!(Why::flame_graph(&why.off_cpu, "off", "ns", &svg).unwrap());
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("folio_wait_bit_common") && text.starts_with("<?xml"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
