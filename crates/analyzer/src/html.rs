//! index.html: one self-contained page (inline CSS, images by relative path, no scripts and no
//! network fetches) so it opens the same from a file:// URL, a CI artefact or a web server.

use std::fmt::Write as _;

use crate::{
    replay::Replay,
    summary::{LatencyRow, Summary},
    text::{LATENCY_HEAD, fmt_ns, latency_cells, mix_cells, retry_cells},
};

pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em auto;max-width:1000px;color:#222}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}\
th,td{border:1px solid #ccc;padding:2px 8px}td.n{text-align:right;font-variant-numeric:tabular-nums}\
th{background:#f0f0f0}.warn{background:#fff3cd;border:1px solid #e0c060;padding:.5em}\
.note{color:#555}figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}code{font-size:.95em}";

/// A page under construction.
#[derive(Default)]
pub struct Page {
    body: String,
}

impl Page {
    pub fn h1(&mut self, t: &str) {
        let _ = writeln!(self.body, "<h1>{}</h1>", escape(t));
    }

    pub fn h2(&mut self, t: &str, id: &str) {
        let _ = writeln!(self.body, "<h2 id=\"{}\">{}</h2>", escape(id), escape(t));
    }

    pub fn p(&mut self, t: &str) {
        let _ = writeln!(self.body, "<p>{}</p>", escape(t));
    }

    pub fn note(&mut self, t: &str) {
        let _ = writeln!(self.body, "<p class=\"note\">{}</p>", escape(t));
    }

    pub fn warn(&mut self, t: &str) {
        let _ = writeln!(self.body, "<p class=\"warn\">{}</p>", escape(t));
    }

    /// A table; cells that parse as numbers (or are `-`) are right-aligned.
    pub fn table(&mut self, head: &[&str], rows: &[Vec<String>]) {
        self.body.push_str("<table><tr>");
        for h in head {
            let _ = write!(self.body, "<th>{}</th>", escape(h));
        }
        self.body.push_str("</tr>\n");
        for r in rows {
            self.body.push_str("<tr>");
            for (i, c) in r.iter().enumerate() {
                let numeric = i > 0
                    && c.split_whitespace()
                        .next()
                        .is_some_and(|w| w == "-" || w.parse::<f64>().is_ok());
                let class = if numeric { " class=\"n\"" } else { "" };
                let _ = write!(self.body, "<td{class}>{}</td>", escape(c));
            }
            self.body.push_str("</tr>\n");
        }
        self.body.push_str("</table>\n");
    }

    /// A figure showing `stem.png`, linking `stem.svg`.
    pub fn figure(&mut self, stem: &str, alt: &str, caption: &str) {
        let _ = writeln!(
            self.body,
            "<figure><img src=\"{s}.png\" alt=\"{a}\" width=\"960\" height=\"480\">\
<figcaption>{c} (<a href=\"{s}.svg\">SVG</a>)</figcaption></figure>",
            s = escape(stem),
            a = escape(alt),
            c = escape(caption)
        );
    }

    /// An interactive SVG (a flame graph: hover for a frame's share, click to zoom), embedded
    /// as an object so its script runs.
    pub fn flame(&mut self, stem: &str, caption: &str) {
        let _ = writeln!(
            self.body,
            "<figure><object type=\"image/svg+xml\" data=\"{s}.svg\" width=\"100%\"></object>\
<figcaption>{c} (<a href=\"{s}.svg\">SVG</a>)</figcaption></figure>",
            s = escape(stem),
            c = escape(caption)
        );
    }

    pub fn finish(self, title: &str) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>{}</title><style>{STYLE}</style></head>\n<body>\n{}</body></html>\n",
            escape(title),
            self.body
        )
    }
}

pub fn latency_table(page: &mut Page, first: &str, rows: &[LatencyRow], with_latency: bool) {
    let mut head = LATENCY_HEAD.to_vec();
    head[0] = first;
    if !with_latency {
        head.truncate(2);
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| latency_cells(r, with_latency))
        .collect();
    page.table(&head, &rows);
}

pub fn summary_sections(page: &mut Page, s: &Summary) {
    if !s.vm_fault_mix.is_empty() {
        page.h2("VM_FAULT return mix", "vm-fault");
        let rows: Vec<Vec<String>> = s.vm_fault_mix.iter().map(|m| mix_cells(m, true)).collect();
        page.table(&["hook", "calls", "returned 0", "VM_FAULT bits set"], &rows);
    }
    if !s.retries.is_empty() {
        page.h2("Retries and second attempts (handle_mm_fault)", "retries");
        page.note(
            "RETRY on vma lock: the per-VMA-lock attempt gave up and the fault ran again under mmap_lock \
             (two handle_mm_fault calls for one fault). TRIED: the attempt after a retry under mmap_lock.",
        );
        let rows: Vec<Vec<String>> = s.retries.iter().map(retry_cells).collect();
        page.table(
            &[
                "driver",
                "faults",
                "RETRY",
                "RETRY on vma lock",
                "TRIED",
                "COMPLETED",
            ],
            &rows,
        );
    }
    if !s.pat.is_empty() {
        page.h2("PAT cache modes: requested vs obtained", "pat");
        let rows: Vec<Vec<String>> = s
            .pat
            .iter()
            .map(|p| {
                let changed = p.requested != p.obtained && p.requested != "-" && p.obtained != "-";
                vec![
                    p.hook.clone(),
                    p.driver.clone(),
                    p.requested.clone(),
                    p.obtained.clone(),
                    p.count.to_string(),
                    if changed {
                        "changed".into()
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();
        page.table(
            &["hook", "driver", "requested", "obtained", "count", ""],
            &rows,
        );
    }
}

pub fn losses(page: &mut Page, s: &Summary) {
    page.h2("Tracer losses", "losses");
    if s.counters.is_empty() {
        page.note("The trace has no counter rows: losses are unknown.");
        return;
    }
    if let Some(d) = &s.damage {
        page.warn(&crate::text::losses_after(d));
    }
    let total: u64 = s.dropped();
    if total > 0 {
        page.warn(&format!(
            "{total} events were dropped (ring buffer full): counts and rates below are lower bounds."
        ));
    }
    let rows: Vec<Vec<String>> = s
        .counters
        .iter()
        .map(|c| {
            vec![
                format!("cpu {}", c.cpu),
                c.dropped.to_string(),
                c.unpaired.to_string(),
                c.read_failed.to_string(),
            ]
        })
        .collect();
    page.table(&["", "dropped", "unpaired", "vma read failed"], &rows);
}

pub fn replay_sections(page: &mut Page, r: &Replay, overhead_chart: bool) {
    if let Some((path, o)) = &r.overhead {
        page.h2("Per-page fault time (replay overhead)", "overhead");
        page.note(&format!(
            "From {}: {} faults on {} pages. Probe cost estimate: {} per call window, {} per nested call ({}).",
            path.display(),
            o.faults,
            o.pages,
            fmt_ns(o.probe_cost.in_window_ns as f64),
            fmt_ns(o.probe_cost.per_nested_call_ns as f64),
            o.probe_cost.basis
        ));
        if overhead_chart {
            page.figure(
                "overhead_top",
                "per-page fault time",
                "Costliest pages: insert, PAT and the rest of the fault",
            );
        }
        let rows: Vec<Vec<String>> = o
            .top
            .iter()
            .map(|p| {
                vec![
                    crate::plots::page_label(p),
                    p.faults.to_string(),
                    fmt_ns(p.total_ns as f64),
                    fmt_ns(p.mean_ns as f64),
                    fmt_ns(p.insert_ns as f64),
                    fmt_ns(p.pat_ns as f64),
                    fmt_ns(p.corrected_total_ns as f64),
                ]
            })
            .collect();
        page.table(
            &[
                "page",
                "faults",
                "total",
                "mean",
                "insert",
                "PAT",
                "total less probe cost",
            ],
            &rows,
        );
    }
    if let Some((path, c)) = &r.check {
        page.h2("Replay: divergences and findings", "replay");
        page.note(&format!(
            "From {} (rules {}, {} events replayed).",
            path.display(),
            if c.rules.is_empty() { "?" } else { &c.rules },
            c.events
        ));
        if let Some(t) = &c.truncated {
            page.warn(&format!("The replayed trace was truncated: {t}"));
        }
        if c.divergences.is_empty() {
            page.p("No divergences: the kernel behaved as the reference model expects.");
        } else {
            page.warn(&format!(
                "{} divergences (kernel != model){}.",
                c.divergences.len() as u64 + c.divergences_omitted,
                if c.divergences_omitted > 0 {
                    format!(", {} not listed", c.divergences_omitted)
                } else {
                    String::new()
                }
            ));
            let rows: Vec<Vec<String>> = c
                .divergences
                .iter()
                .map(|d| {
                    vec![
                        d.rule.clone(),
                        d.expected.clone(),
                        d.observed.clone(),
                        seqs(&d.seqs),
                        d.source.to_string(),
                    ]
                })
                .collect();
            page.table(&["rule", "expected", "observed", "seq", "source"], &rows);
        }
        if c.findings.is_empty() {
            page.p("No findings.");
        } else {
            let rows: Vec<Vec<String>> = c
                .findings
                .iter()
                .map(|f| {
                    vec![
                        f.rule.clone(),
                        f.driver.clone().unwrap_or_else(|| "-".into()),
                        f.count.to_string(),
                        f.message.clone(),
                        seqs(&f.seqs),
                    ]
                })
                .collect();
            page.table(&["rule", "driver", "count", "first message", "seq"], &rows);
        }
        let rules: Vec<Vec<String>> = c
            .rule_table
            .iter()
            .filter(|r| r.tally != Default::default())
            .map(|r| {
                let (i, t) = (&r.rule, r.tally);
                vec![
                    i.id.clone(),
                    i.kind.clone(),
                    t.held.to_string(),
                    t.failed.to_string(),
                    t.not_checkable.to_string(),
                    i.what.clone(),
                ]
            })
            .collect();
        if !rules.is_empty() {
            page.table(
                &["rule", "kind", "held", "failed", "not checkable", "what"],
                &rules,
            );
        }
    }
}

fn seqs(s: &[u64]) -> String {
    let v: Vec<String> = s.iter().take(6).map(u64::to_string).collect();
    let more = if s.len() > 6 { " ..." } else { "" };
    format!("{}{more}", v.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }

    #[test]
    fn numbers_are_right_aligned() {
        let mut p = Page::default();
        p.table(
            &["a", "b"],
            &[
                vec!["x".into(), "12 µs".into()],
                vec!["1".into(), "y".into()],
            ],
        );
        let h = p.finish("t");
        assert!(h.contains("<td>x</td><td class=\"n\">12 µs</td>"), "{h}");
        assert!(h.contains("<td>1</td><td>y</td>"), "{h}");
    }
}
