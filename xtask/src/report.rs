//! A recorded trace's analysis on the host: `replay check` and `replay overhead` (as JSON), then
//! the analyzer's report, through the workspace's own binaries. `cargo xtask run` and the test
//! box's `--run` both go through here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use pfnscope_trace::ExitStatus;

use crate::util;

pub struct Tools {
    replay: PathBuf,
    analyzer: PathBuf,
}

impl Tools {
    /// Builds replay and analyzer in the dev profile, which `cargo xtask test` shares: a release
    /// polars is another ~13 minutes of compiling on 2 cores, for traces of a few thousand rows.
    pub fn build() -> Result<Tools> {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.current_dir(util::workspace_root())
            .args(["build", "-p", "replay", "-p", "analyzer"]);
        println!("==> {}", util::show(&c));
        util::run(&mut c)?;
        let bin = |n: &str| util::target_dir().join("debug").join(n);
        Ok(Tools {
            replay: bin("replay"),
            analyzer: bin("analyzer"),
        })
    }
}

/// What `replay check` said about one trace.
pub struct Replayed {
    pub events: u64,
    pub divergences: u64,
    pub findings: u64,
    /// Finding groups per rule id: a WC downgrade on every page is one finding seen 1000 times.
    pub finding_rules: BTreeMap<String, u64>,
    /// How the trace is not whole (cut short, truncated, corrupt): what was read was replayed.
    pub damage: Option<String>,
    pub check_json: PathBuf,
    pub overhead_json: PathBuf,
}

/// Replays `trace` into `dir/replay-check.json` and `dir/replay-overhead.json`. A damaged trace
/// is replayed as far as it reads (`damage` says how it is not whole); an unusable one is an
/// error with replay's own line.
pub fn replay(tools: &Tools, trace: &Path, dir: &Path) -> Result<Replayed> {
    std::fs::create_dir_all(dir)?;
    let check_json = dir.join("replay-check.json");
    let overhead_json = dir.join("replay-overhead.json");
    for (what, out) in [("check", &check_json), ("overhead", &overhead_json)] {
        let mut c = Command::new(&tools.replay);
        c.args([what, "--json"]).arg(trace);
        let stdout = run_tool(
            &mut c,
            &[ExitStatus::Ok, ExitStatus::Divergences, ExitStatus::Damaged],
        )?;
        std::fs::write(out, stdout)?;
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&check_json)?)
        .with_context(|| format!("{} is not JSON", check_json.display()))?;
    let mut finding_rules = BTreeMap::new();
    for f in v["findings"].as_array().into_iter().flatten() {
        if let Some(rule) = f["rule"].as_str() {
            *finding_rules.entry(rule.to_string()).or_insert(0u64) += 1;
        }
    }
    Ok(Replayed {
        events: v["events"].as_u64().unwrap_or(0),
        divergences: v["summary"]["divergences"].as_u64().unwrap_or(0),
        findings: v["summary"]["findings"].as_u64().unwrap_or(0),
        finding_rules,
        damage: v["truncated"].as_str().map(String::from),
        check_json,
        overhead_json,
    })
}

/// The analyzer's report of `trace` with the replay's results, in `out` (`out/index.html`). A
/// damaged trace gets the report of what it holds.
pub fn report(tools: &Tools, trace: &Path, r: &Replayed, out: &Path) -> Result<PathBuf> {
    let mut c = Command::new(&tools.analyzer);
    c.arg("report")
        .arg(trace)
        .arg("--replay")
        .arg(&r.check_json)
        .arg("--replay")
        .arg(&r.overhead_json)
        .arg("-o")
        .arg(out);
    run_tool(&mut c, &[ExitStatus::Ok, ExitStatus::Damaged])?;
    Ok(out.join("index.html"))
}

/// Runs one of the workspace's tools; its stdout when it exits with one of `accepted`, else an
/// error with its own message.
fn run_tool(c: &mut Command, accepted: &[ExitStatus]) -> Result<Vec<u8>> {
    let o = c
        .output()
        .with_context(|| format!("running {}", util::show(c)))?;
    if !accepted.iter().any(|s| o.status.code() == Some(*s as i32)) {
        bail!(
            "{}: {}",
            util::show(c),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(o.stdout)
}
