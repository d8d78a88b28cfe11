//! `analyzer report`: the summary tables, the plots and the replay's results in one directory
//! with an index.html.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use crate::{
    error::{AnalyzerError, Result, write_err},
    html::{self, Page},
    load::Trace,
    plots::{
        self, LatencyCdf, LatencyHeatmap, LatencyHistogram, OverheadTop, PatMatrix, RateChart,
    },
    replay::Replay,
    series,
    summary::{GroupBy, Summary},
    text::fmt_ns,
};

/// Groups drawn per chart before the rest fold into "(other)".
const TOP_GROUPS: usize = 8;
const HEATMAP_COLUMNS: u64 = 200;
const RATE_POINTS: u64 = 200;

#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Pages in the per-page overhead chart.
    pub top_pages: usize,
    /// One tick per step (tables, each chart, the page).
    pub progress: ProgressBar,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            top_pages: 20,
            progress: ProgressBar::hidden(),
        }
    }
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Written {
    pub index: PathBuf,
    /// Every PNG (each has an SVG beside it).
    pub images: Vec<PathBuf>,
}

/// Whether a report may be written to `dir` without destroying one of its `inputs`: `dir` is
/// a directory (or not there yet), and no input is a file the report writes there (its
/// `index.html`, PNGs and SVGs). A report is a directory of generated files, so an existing
/// one is refreshed in place: `cargo xtask run` keeps the replay files it reads there.
pub fn check_output(dir: &Path, inputs: &[&Path]) -> Result<()> {
    use pfnscope_trace::OutputError;
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(if inputs.iter().any(|i| same_file(i, dir)) {
                OutputError::IsInput {
                    path: dir.to_owned(),
                }
            } else {
                OutputError::NotADirectory {
                    path: dir.to_owned(),
                }
            }
            .into());
        }
        _ => {}
    }
    let written = |p: &Path| {
        p.file_name().is_some_and(|n| n == "index.html")
            || p.extension().is_some_and(|e| e == "png" || e == "svg")
    };
    for i in inputs {
        let inside = i.parent().is_some_and(|p| {
            same_file(p, dir) || (p.as_os_str().is_empty() && same_file(Path::new("."), dir))
        });
        if inside && written(i) {
            return Err(OutputError::IsInput {
                path: i.to_path_buf(),
            }
            .into());
        }
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

pub fn write_report(
    trace: &Trace,
    replay: &Replay,
    dir: &Path,
    opts: &ReportOptions,
) -> Result<Written> {
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let bar = &opts.progress;
    bar.set_length(10);
    let pl = |what: &'static str| {
        move |err| AnalyzerError::Polars {
            path: trace.path.clone(),
            what,
            err,
        }
    };
    let mut images = Vec::new();
    let mut page = Page::default();

    bar.set_message("tables");
    let summary = Summary::compute(trace, GroupBy::Driver)?;
    let extra: Vec<(GroupBy, Summary)> = [GroupBy::VmaKind, GroupBy::FaultType, GroupBy::Hook]
        .into_iter()
        .map(|by| Summary::latency_only(trace, by).map(|s| (by, s)))
        .collect::<Result<_>>()?;
    bar.inc(1);

    let title = format!("pfnscope report: {}", trace.path.display());
    page.h1(&title);
    page.p(&format!(
        "Kernel {} ({}), {} events, {} page faults over {}.",
        if trace.meta.kernel_release.is_empty() {
            "?"
        } else {
            &trace.meta.kernel_release
        },
        if trace.meta.host.is_empty() {
            "host ?"
        } else {
            &trace.meta.host
        },
        summary.events,
        summary.faults,
        fmt_ns(summary.span_ns as f64)
    ));
    if !trace.meta.command_line.is_empty() {
        page.note(&format!(
            "Recorded with: {}",
            trace.meta.command_line.join(" ")
        ));
    }
    if let Some(d) = &trace.damage {
        page.warn(&format!(
            "The trace is damaged; what follows covers the part before the damage. {d}"
        ));
    }
    if let Some(n) = &summary.latency_note {
        page.warn(n);
    }
    html::losses(&mut page, &summary);

    page.h2("Fault latency by driver", "by-driver");
    html::latency_table(
        &mut page,
        "driver",
        &summary.latency,
        summary.latency_available,
    );
    // Latency plots need faults with a latency: a trace can time the inserts (fentry) while
    // its faults come from tracepoints.
    let with_latency = trace.has_fault_latency();
    if summary.latency_available && !with_latency {
        page.note("No latency plots: the page faults in this trace have no latency (tracepoint mode); only other hooks were timed.");
    }
    if with_latency {
        bar.set_message("latency histogram");
        let by_driver = series::latency_by(trace, "driver", "(no vm_ops)", TOP_GROUPS)
            .map_err(pl("binning latency"))?;
        images.push(plots::render(
            &LatencyHistogram {
                name: "latency_hist_driver",
                title: "Fault latency by driver",
                groups: &by_driver,
            },
            dir,
        )?);
        page.figure(
            "latency_hist_driver",
            "latency histogram per driver",
            "Fault latency histogram per driver (log-scaled latency and counts; 4 bins per power of two)",
        );
    }
    bar.inc(1);

    if trace.meta.stacks.is_some() {
        bar.set_message("stacks and off-CPU time");
        why_sections(&mut page, trace, dir)?;
    }

    for (by, s) in &extra {
        let (title, id) = match by {
            GroupBy::VmaKind => ("Fault latency by vma kind", "by-vma-kind"),
            GroupBy::FaultType => ("Fault latency by fault type", "by-fault-type"),
            _ => ("Latency of every probed call, by hook", "by-hook"),
        };
        page.h2(title, id);
        html::latency_table(&mut page, by.name(), &s.latency, summary.latency_available);
        if *by == GroupBy::VmaKind && with_latency {
            bar.set_message("latency CDF");
            let by_kind = series::latency_by(trace, "vma_kind", "(unknown)", TOP_GROUPS)
                .map_err(pl("binning latency"))?;
            images.push(plots::render(
                &LatencyCdf {
                    name: "latency_cdf_vma_kind",
                    title: "Fault latency CDF by vma kind",
                    groups: &by_kind,
                },
                dir,
            )?);
            page.figure(
                "latency_cdf_vma_kind",
                "latency CDF per vma kind",
                "Cumulative distribution of fault latency per vma kind",
            );
        }
        bar.inc(1);
    }

    page.h2("Over time", "time");
    if with_latency {
        bar.set_message("heatmap");
        if let Some(map) = series::heatmap(trace, HEATMAP_COLUMNS).map_err(pl("heatmap"))? {
            images.push(plots::render(&LatencyHeatmap { map: &map }, dir)?);
            page.figure(
                "latency_heatmap",
                "latency heatmap",
                "Latency heatmap: time across, latency up (log), colour = faults in the cell",
            );
        }
    } else {
        page.note("No latency heatmap: the trace has no latencies.");
    }
    bar.inc(1);
    bar.set_message("rates");
    if let Some(rates) = series::rates(trace, RATE_POINTS, TOP_GROUPS).map_err(pl("rates"))? {
        images.push(plots::render(&RateChart { rates: &rates }, dir)?);
        page.figure(
            "rate_per_hook",
            "events per second per hook",
            "Events per second, per hook",
        );
    }
    bar.inc(1);

    html::summary_sections(&mut page, &summary);
    if !summary.pat.is_empty() {
        bar.set_message("PAT matrix");
        let (req, out, counts) = pat_matrix(&summary);
        images.push(plots::render(
            &PatMatrix {
                requested: &req,
                obtained: &out,
                counts: &counts,
            },
            dir,
        )?);
        page.figure(
            "pat_matrix",
            "PAT requested vs obtained matrix",
            "Cache mode requested (rows) against obtained (columns), all PAT hooks",
        );
    }
    bar.inc(1);

    let overhead_rows = replay
        .overhead
        .as_ref()
        .map(|(_, o)| {
            o.top
                .iter()
                .take(opts.top_pages)
                .cloned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if !overhead_rows.is_empty() {
        bar.set_message("overhead");
        images.push(plots::render(
            &OverheadTop {
                rows: &overhead_rows,
            },
            dir,
        )?);
    }
    html::replay_sections(&mut page, replay, !overhead_rows.is_empty());
    if replay.is_empty() {
        page.note("No replay report given (--replay): per-page overhead, divergences and findings come from `replay check --json` and `replay overhead --json`.");
    }
    bar.inc(1);

    hook_plan(&mut page, trace);
    let index = dir.join("index.html");
    std::fs::write(&index, page.finish(&title)).map_err(write_err(&index))?;
    bar.finish_and_clear();
    Ok(Written { index, images })
}

/// Requested × obtained counts over all PAT rows with both modes known.
pub fn pat_matrix(s: &Summary) -> (Vec<String>, Vec<String>, Vec<Vec<u64>>) {
    let known = |m: &str| m != "-";
    let order = |mut v: Vec<String>| {
        // In `enum page_cache_mode` order; a name no mode has goes last.
        let rank = |m: &str| pfnscope_abi::Cache::parse(m).map_or(9, |c| c as usize);
        v.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
        v.dedup();
        v
    };
    let rows: Vec<_> = s
        .pat
        .iter()
        .filter(|p| known(&p.requested) && known(&p.obtained))
        .collect();
    let req = order(rows.iter().map(|p| p.requested.clone()).collect());
    let out = order(rows.iter().map(|p| p.obtained.clone()).collect());
    let mut counts = vec![vec![0u64; out.len()]; req.len()];
    for p in rows {
        let r = req
            .iter()
            .position(|x| *x == p.requested)
            .expect("collected above");
        let c = out
            .iter()
            .position(|x| *x == p.obtained)
            .expect("collected above");
        counts[r][c] += p.count;
    }
    (req, out, counts)
}

fn hook_plan(page: &mut Page, trace: &Trace) {
    if trace.meta.hook_plan.is_empty() {
        return;
    }
    page.h2("How each hook was attached", "hook-plan");
    let rows: Vec<Vec<String>> = trace
        .meta
        .hook_plan
        .iter()
        .map(|p| {
            let failures: Vec<String> = p
                .failures
                .iter()
                .map(|f| format!("{}: {}", f.mode, f.error))
                .collect();
            vec![
                p.hook.clone(),
                p.symbol.clone().unwrap_or_else(|| "-".into()),
                p.mode.clone().unwrap_or_else(|| "not attached".into()),
                failures.join("; "),
            ]
        })
        .collect();
    page.table(&["hook", "symbol", "mode", "rungs that failed"], &rows);
}

/// Why faults were slow: flame graphs of fault time by stack, on-CPU and off-CPU, and the
/// sites faults blocked at per driver (traces recorded with stacks and off-CPU time).
fn why_sections(page: &mut Page, trace: &Trace, dir: &Path) -> Result<()> {
    let w = crate::why::Why::compute(&trace.path)?;
    page.h2("Why faults were slow", "why");
    page.p(&format!(
        "{} faults, {} with a stack; {} off-CPU episodes inside traced calls.",
        w.faults, w.faults_with_stack, w.episodes
    ));
    for m in &w.missing {
        page.note(m);
    }
    let on_title = if w.on_cpu_unit == "ns" {
        "On-CPU fault time by stack (latency minus time switched out)"
    } else {
        "Faults by stack (counts: faults have no latency in this trace)"
    };
    if crate::why::Why::flame_graph(
        &w.on_cpu,
        on_title,
        w.on_cpu_unit,
        &dir.join("flame_oncpu.svg"),
    )? {
        page.flame("flame_oncpu", on_title);
    } else {
        page.note("No fault has a stack: none was slower than the stack threshold (`tracer record --stacks=THRESHOLD`).");
    }
    let off_title = "Off-CPU time inside faults, by the fault's user stack and the kernel stack where it blocked";
    if crate::why::Why::flame_graph(&w.off_cpu, off_title, "ns", &dir.join("flame_offcpu.svg"))? {
        page.flame("flame_offcpu", off_title);
    } else {
        page.note("No fault was switched out while it ran.");
    }
    page.h2("Top blocking sites per driver", "blocking-sites");
    let rows: Vec<Vec<String>> = w.sites.iter().map(crate::text::site_cells).collect();
    page.table(&crate::text::SITE_HEADER, &rows);
    page.note("A wakeup from interrupt context (a disk completion) names the task the interrupt happened to hit.");
    Ok(())
}
