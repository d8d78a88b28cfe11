//! The summary as aligned plain-text tables for a terminal.

use std::fmt::Write as _;

use crate::summary::{LatencyRow, MixRow, RetryRow, Summary};

/// `850 ns`, `12.3 µs`, `1.45 ms`, `2.10 s`.
pub fn fmt_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        let v = format!("{:.2}", ns / 1e3);
        format!("{} µs", v.trim_end_matches('0').trim_end_matches('.'))
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// `-` where a statistic is missing (no row of the group had a latency).
pub fn opt_ns(v: Option<f64>) -> String {
    v.map(fmt_ns).unwrap_or_else(|| "-".into())
}

/// A plain table: first column left-aligned, the others right-aligned.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if i == 0 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(head.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

pub(crate) fn latency_cells(r: &LatencyRow, with_latency: bool) -> Vec<String> {
    let mut v = vec![r.group.clone(), r.count.to_string()];
    if with_latency {
        v.extend([
            r.timed.to_string(),
            opt_ns(r.mean_ns),
            opt_ns(r.p50_ns),
            opt_ns(r.p90_ns),
            opt_ns(r.p99_ns),
            opt_ns(r.p999_ns),
            opt_ns(r.max_ns.map(|m| m as f64)),
        ]);
    }
    v
}

/// One row of the retry table, for the text and the HTML report alike.
pub(crate) fn retry_cells(r: &RetryRow) -> Vec<String> {
    vec![
        r.driver.clone(),
        r.faults.to_string(),
        r.retry.to_string(),
        r.retry_vma_lock.to_string(),
        r.tried.to_string(),
        r.completed.to_string(),
    ]
}

/// One row of the VM_FAULT mix, for the text and the HTML report alike; `shares` adds each
/// bit's share of the calls (the HTML page has the room).
pub(crate) fn mix_cells(m: &MixRow, shares: bool) -> Vec<String> {
    let bits: Vec<String> = m
        .bits
        .iter()
        .map(|(n, c)| match shares {
            true => format!(
                "{n} {c} ({:.1}%)",
                100.0 * *c as f64 / m.calls.max(1) as f64
            ),
            false => format!("{n} {c}"),
        })
        .collect();
    vec![
        m.hook.clone(),
        m.calls.to_string(),
        m.zero.to_string(),
        if bits.is_empty() {
            "-".into()
        } else {
            bits.join(", ")
        },
    ]
}

pub(crate) const LATENCY_HEAD: [&str; 9] = [
    "", "count", "timed", "mean", "p50", "p90", "p99", "p99.9", "max",
];

/// The whole summary as text.
pub fn render(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "trace: {}  kernel {}  {} events, {} faults over {}",
        s.trace,
        if s.kernel_release.is_empty() {
            "?"
        } else {
            &s.kernel_release
        },
        s.events,
        s.faults,
        fmt_ns(s.span_ns as f64)
    );
    if let Some(d) = &s.damage {
        let _ = writeln!(o, "damaged: {d}");
    }
    let what = match s.by {
        crate::GroupBy::Hook => "every probed call",
        _ => "page faults",
    };
    let _ = writeln!(o, "\nLATENCY by {} ({what})", s.by.name());
    if let Some(n) = &s.latency_note {
        let _ = writeln!(o, "{n}");
    }
    let rows: Vec<Vec<String>> = s
        .latency
        .iter()
        .map(|r| latency_cells(r, s.latency_available))
        .collect();
    let mut head = LATENCY_HEAD.to_vec();
    head[0] = s.by.name();
    if !s.latency_available {
        head.truncate(2);
    }
    o.push_str(&table(&head, &rows));

    if !s.vm_fault_mix.is_empty() {
        let _ = writeln!(o, "\nVM_FAULT RETURNS");
        let rows: Vec<Vec<String>> = s.vm_fault_mix.iter().map(|m| mix_cells(m, false)).collect();
        o.push_str(&table(&["hook", "calls", "0", "bits set"], &rows));
    }
    if !s.retries.is_empty() {
        let _ = writeln!(o, "\nRETRIES (handle_mm_fault)");
        let rows: Vec<Vec<String>> = s.retries.iter().map(retry_cells).collect();
        o.push_str(&table(
            &[
                "driver",
                "faults",
                "RETRY",
                "RETRY on vma lock",
                "2nd attempt (TRIED)",
                "COMPLETED",
            ],
            &rows,
        ));
    }
    if !s.pat.is_empty() {
        let _ = writeln!(o, "\nPAT CACHE MODES (requested -> obtained)");
        let rows: Vec<Vec<String>> = s
            .pat
            .iter()
            .map(|p| {
                vec![
                    p.hook.clone(),
                    p.driver.clone(),
                    format!(
                        "{} -> {}{}",
                        p.requested,
                        p.obtained,
                        if p.requested != p.obtained && p.requested != "-" && p.obtained != "-" {
                            "  (changed)"
                        } else {
                            ""
                        }
                    ),
                    p.count.to_string(),
                ]
            })
            .collect();
        o.push_str(&table(&["hook", "driver", "cache mode", "count"], &rows));
    }
    let _ = writeln!(o, "\nTRACER LOSSES");
    if s.counters.is_empty() {
        let _ = writeln!(o, "no counter rows in the trace (losses unknown)");
    } else {
        let (d, u, f) = s.counters.iter().fold((0, 0, 0), |a, c| {
            (a.0 + c.dropped, a.1 + c.unpaired, a.2 + c.read_failed)
        });
        let _ = writeln!(
            o,
            "{d} dropped (ring buffer full), {u} unpaired, {f} vma reads failed, over {} CPUs",
            s.counters.len()
        );
    }
    if let Some(d) = &s.damage {
        let _ = writeln!(o, "{}", losses_after(d));
    }
    o
}

/// The counters are cumulative, written with each batch: a trace that is not whole has them
/// only up to its last complete batch.
pub fn losses_after(d: &pfnscope_trace::Damage) -> String {
    format!(
        "counted up to batch {} only: the trace is {}, and events lost after it are not counted",
        d.batches_kept,
        d.kind.name()
    )
}

/// `analyzer summary --by stack`: fault time by stack, then the blocking sites per driver.
pub fn render_why(w: &crate::why::Why) -> String {
    use crate::why::short_stack;
    let mut out = String::new();
    if !w.recorded {
        out.push_str("This trace was recorded without stacks or off-CPU time (before schema 5): record it again with `tracer record` (stacks of calls slower than 100us by default).\n");
        return out;
    }
    out.push_str(&format!(
        "{} faults, {} with a stack; {} off-CPU episodes inside them\n",
        w.faults, w.faults_with_stack, w.episodes
    ));
    for m in &w.missing {
        out.push_str(&format!("note: {m}\n"));
    }
    out.push_str("\nFAULT TIME BY STACK (user > kernel, innermost frames last)\n");
    let rows: Vec<Vec<String>> = w
        .stacks
        .iter()
        .take(20)
        .map(|r| {
            vec![
                r.faults.to_string(),
                r.latency_ns.map_or("-".into(), |l| fmt_ns(l as f64)),
                r.latency_ns
                    .map_or("-".into(), |l| fmt_ns(l as f64 / r.faults.max(1) as f64)),
                fmt_ns(r.offcpu_ns as f64),
                short_stack(&r.stack, 6),
            ]
        })
        .collect();
    out.push_str(&table(
        &["faults", "total", "mean", "off-CPU", "stack"],
        &rows,
    ));
    out.push_str("\nTOP BLOCKING SITES PER DRIVER\n");
    let rows: Vec<Vec<String>> = w.sites.iter().map(site_cells).collect();
    out.push_str(&table(&SITE_HEADER, &rows));
    out
}

/// The blocking-site table's columns, the same in the terminal and in the HTML report.
pub const SITE_HEADER: [&str; 6] = [
    "driver",
    "blocked in",
    "episodes",
    "off-CPU",
    "share",
    "woken by (mostly)",
];

/// A blocking site's cells under [`SITE_HEADER`].
pub fn site_cells(s: &crate::why::SiteRow) -> Vec<String> {
    vec![
        s.driver.clone(),
        s.site.clone(),
        s.episodes.to_string(),
        fmt_ns(s.offcpu_ns as f64),
        format!("{:.1}%", s.share * 100.0),
        s.waker.clone().unwrap_or_else(|| "-".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(fmt_ns(850.0), "850 ns");
        assert_eq!(fmt_ns(12_300.0), "12.3 µs");
        assert_eq!(fmt_ns(2_000.0), "2 µs");
        assert_eq!(fmt_ns(1_450_000.0), "1.45 ms");
        assert_eq!(fmt_ns(2.1e9), "2.10 s");
    }

    #[test]
    fn table_aligns() {
        let t = table(
            &["a", "n"],
            &[
                vec!["long".into(), "1".into()],
                vec!["x".into(), "22".into()],
            ],
        );
        assert_eq!(t, "a      n\nlong   1\nx     22\n");
    }
}
