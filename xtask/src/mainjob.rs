//! `cargo xtask run`: README's first command. From a fresh machine to one report directory:
//! set-up, build, real traces (DRM bochs and /dev/mem workloads on Debian 6.12 with the full hook
//! set, plus a fault workload on this machine's kernel in tracepoint mode), replay, analyzer
//! reports, and a five-line summary at the end.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use pfnscope_trace::read_trace;

use crate::{report, util};

#[derive(clap::Args)]
pub struct Args {
    /// Report directory (default: <target>/pfnscope-report).
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Test-box kernel for the driver workloads.
    #[arg(long, default_value = "6.12")]
    kernel: String,
    /// Driver workloads to record in the test box.
    #[arg(long, num_args = 1.., default_values_t = ["drm-bochs".to_string(), "devmem-shared".into(), "devmem-cow".into()])]
    workload: Vec<String>,
}

fn step(n: usize, what: &str) {
    println!("\n[{n}/6] {what}");
}

fn exe(cmd: &mut Command) -> Result<()> {
    println!("==> {}", util::show(cmd));
    util::run(cmd)
}

pub fn run(a: &Args) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("the main job installs packages and loads eBPF programs: run it as root");
    }
    let started = Instant::now();
    let target = util::target_dir();
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| target.join("pfnscope-report"));
    let me = std::env::current_exe()?;

    step(1, "set-up (installs only what is missing)");
    exe(Command::new(&me).arg("setup"))?;

    step(
        2,
        "building replay and analyzer (dev profile, shared with `cargo xtask test`)",
    );
    let tools = report::Tools::build()?;

    step(
        3,
        &format!(
            "recording driver workloads in the Debian {} test box (full hook set)",
            a.kernel
        ),
    );
    let mut tb = Command::new(&me);
    tb.args(["testbox", "--kernel", &a.kernel, "--workload"])
        .args(&a.workload);
    exe(&mut tb)?;

    step(
        4,
        "recording a fault workload on this machine's kernel (tracepoint mode)",
    );
    exe(Command::new(&me).args(["testbox", "--host", "--workload", "anon"]))?;

    let mut traces: Vec<(String, PathBuf)> = a
        .workload
        .iter()
        .map(|w| {
            (
                format!("{}-{w}", a.kernel),
                target
                    .join("testbox")
                    .join(&a.kernel)
                    .join(format!("{w}.arrows")),
            )
        })
        .collect();
    traces.push(("host-anon".into(), target.join("testbox/host/anon.arrows")));

    step(5, "replaying the traces against the reference model");
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(&out)?;
    let mut rows = vec![];
    for (name, trace) in &traces {
        let dir = out.join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(trace, dir.join("trace.arrows"))
            .with_context(|| format!("copying {}", trace.display()))?;
        let r = report::replay(&tools, trace, &dir)?;
        if let Some(d) = &r.damage {
            bail!("replay {}: the trace is damaged: {d}", trace.display());
        }
        let (div, find) = (r.divergences, r.findings);
        println!("  {name}: {div} divergences, {find} findings");
        rows.push(Row {
            name: name.clone(),
            trace: trace.clone(),
            stats: stats(trace)?,
            replayed: r,
        });
    }

    step(6, "writing the reports");
    for r in &rows {
        report::report(&tools, &r.trace, &r.replayed, &out.join(&r.name))?;
    }
    std::fs::write(out.join("index.html"), index_html(&rows))?;

    println!("\nreport: {}", out.join("index.html").display());
    println!("done in {:.0} s", started.elapsed().as_secs_f64());
    for line in five_lines(&rows) {
        println!("{line}");
    }
    Ok(())
}

struct Row {
    name: String,
    trace: PathBuf,
    replayed: report::Replayed,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    faults: u64,
    /// p99 of handle_mm_fault latency per driver (None: tracepoint mode, no latency).
    p99_by_driver: BTreeMap<String, u64>,
    dropped: u64,
    mode: String,
}

fn stats(path: &Path) -> Result<Stats> {
    let t = read_trace(path)?;
    let mut s = Stats::default();
    let mut lat: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in t.events() {
        match r.hook.as_str() {
            "handle_mm_fault" => {
                s.faults += 1;
                s.mode = r.mode.to_string();
                if let Some(l) = r.latency_ns {
                    lat.entry(r.driver.as_deref().unwrap_or("anonymous").to_string())
                        .or_default()
                        .push(l);
                }
            }
            "exceptions:page_fault_user" if s.mode.is_empty() || s.mode != "fentry" => {
                s.mode = r.mode.to_string();
            }
            _ => {}
        }
    }
    if s.faults == 0 {
        s.faults = t
            .events()
            .filter(|r| r.hook == "exceptions:page_fault_user")
            .count() as u64;
    }
    for (d, mut v) in lat {
        v.sort_unstable();
        s.p99_by_driver
            .insert(d, v[(v.len() * 99 / 100).min(v.len() - 1)]);
    }
    s.dropped = t.counters.total().dropped;
    Ok(s)
}

fn five_lines(rows: &[Row]) -> Vec<String> {
    let faults: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {}", r.name, r.stats.faults))
        .collect();
    let mut p99: BTreeMap<&str, u64> = BTreeMap::new();
    for r in rows {
        for (d, v) in &r.stats.p99_by_driver {
            let e = p99.entry(d).or_default();
            *e = (*e).max(*v);
        }
    }
    let p99: Vec<String> = p99
        .iter()
        .map(|(d, v)| format!("{d} {:.1} us", *v as f64 / 1e3))
        .collect();
    let div: u64 = rows.iter().map(|r| r.replayed.divergences).sum();
    let find: u64 = rows.iter().map(|r| r.replayed.findings).sum();
    let mut rules: BTreeMap<&str, u64> = BTreeMap::new();
    for r in rows {
        for (rule, n) in &r.replayed.finding_rules {
            *rules.entry(rule).or_default() += n;
        }
    }
    let rules: Vec<String> = rules
        .iter()
        .map(|(rule, groups)| format!("{rule} in {groups} group(s)"))
        .collect();
    let drops: u64 = rows.iter().map(|r| r.stats.dropped).sum();
    vec![
        format!("faults:       {}", faults.join(", ")),
        format!(
            "p99 latency:  {}",
            if p99.is_empty() {
                "n/a (no handle_mm_fault latency recorded)".into()
            } else {
                p99.join(", ")
            }
        ),
        format!(
            "divergences:  {div}{}",
            if div > 0 {
                " (see replay-check.json in each trace's directory)"
            } else {
                ""
            }
        ),
        format!(
            "findings:     {find}{}",
            if rules.is_empty() {
                String::new()
            } else {
                format!(" ({}; see each trace's report)", rules.join(", "))
            }
        ),
        format!("drops:        {drops}"),
    ]
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn index_html(rows: &[Row]) -> String {
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>pfnscope report</title>\
         <style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}th{background:#f3f3f3}</style></head><body>\
         <h1>pfnscope report</h1><p>One directory per trace: the analyzer's report, the replay's JSON and the trace itself.</p>\
         <table><tr><th>trace</th><th>mode</th><th>faults</th><th>p99 fault latency by driver</th><th>divergences</th><th>findings</th><th>drops</th></tr>",
    );
    for r in rows {
        let p99: Vec<String> = r
            .stats
            .p99_by_driver
            .iter()
            .map(|(d, v)| format!("{} {:.1}&nbsp;µs", esc(d), *v as f64 / 1e3))
            .collect();
        let _ = write!(
            h,
            "<tr><td><a href=\"{n}/index.html\">{n}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.stats.mode),
            r.stats.faults,
            if p99.is_empty() {
                "n/a".into()
            } else {
                p99.join("<br>")
            },
            r.replayed.divergences,
            r.replayed.findings,
            r.stats.dropped,
            n = esc(&r.name)
        );
    }
    h.push_str("</table></body></html>\n");
    h
}
