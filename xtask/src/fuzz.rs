//! `cargo xtask fuzz`: the trace reader's fuzz target (`fuzz/`, cargo-fuzz) for a bounded time,
//! seeded with the traces the test box recorded. `cargo xtask test` runs a minute of it.
//!
//! No trace is committed: the seeds are built here from `target/testbox/<kernel>/*.arrows`,
//! each whole (when small) and cut at a third (a trace that stops mid-batch), plus the
//! regression files under `crates/pfnscope-trace/tests/data/`. Inputs the fuzzer finds
//! interesting are kept between runs in a directory of their own.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::util;

#[derive(clap::Args)]
pub struct Args {
    /// How long to fuzz, in seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
}

/// Seeds larger than this go in cut only: the fuzzer's speed falls with input size.
const WHOLE_MAX: u64 = 160 << 10;
/// The kept inputs are dropped once they grow past this.
const FOUND_MAX: u64 = 64 << 20;

pub fn run(a: &Args) -> Result<()> {
    let root = util::workspace_root();
    let target = util::target_dir();
    let dir = target.join("fuzz-corpus");
    let (seeds, found) = (dir.join("seeds"), dir.join("found"));
    let traces = testbox_traces(&target.join("testbox"))?;
    if traces.is_empty() {
        println!(
            "fuzz: no test-box traces under {} (run `cargo xtask testbox`): seeded with the regression files only",
            target.join("testbox").display()
        );
    }
    let n = build_seeds(
        &traces,
        &root.join("crates/pfnscope-trace/tests/data"),
        &seeds,
    )?;
    if dir_bytes(&found) > FOUND_MAX {
        std::fs::remove_dir_all(&found)?;
    }
    std::fs::create_dir_all(&found)?;

    // Built first, so the time below is the fuzzing's own: a cold sanitizer build of the
    // target takes minutes (CI's first run said "ran ... in 550 s" for a 60 s run).
    let started = Instant::now();
    let mut build = Command::new("cargo");
    build
        .current_dir(root.join("fuzz"))
        .args(["+nightly", "fuzz", "build", "trace_reader", "--target-dir"])
        .arg(target.join("fuzz"));
    println!("==> {}", util::show(&build));
    let status = build
        .status()
        .context("running cargo fuzz (`cargo xtask setup` installs it)")?;
    if !status.success() {
        bail!("building the fuzz target failed ({status})");
    }
    println!(
        "fuzz: target built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root.join("fuzz"))
        .args(["+nightly", "fuzz", "run", "trace_reader", "--target-dir"])
        .arg(target.join("fuzz"))
        // libFuzzer adds what it finds to the first directory.
        .arg(&found)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={}", a.seconds))
        .args(["-print_final_stats=1", "-timeout=20", "-rss_limit_mb=2048"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    println!("==> {}", util::show(&cmd));
    let out = cmd
        .output()
        .context("running cargo fuzz (`cargo xtask setup` installs it)")?;
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // libFuzzer's report (the panic, then the input) is at the end; the input's dump is
        // one huge line.
        for l in util::tail(&log, 80).lines() {
            println!("{}", l.chars().take(300).collect::<String>());
        }
        bail!(
            "the fuzz target failed ({}): the input is saved under fuzz/artifacts/",
            out.status
        );
    }
    let runs = stat(&log, "stat::number_of_executed_units")
        .context("no run count in libFuzzer's output")?;
    println!(
        "fuzz: trace_reader ran {runs} inputs in {:.0} s ({} seeds from {} test-box traces): no crash, hang or leak",
        started.elapsed().as_secs_f64(),
        n,
        traces.len()
    );
    Ok(())
}

/// Every `.arrows` file one level below `testbox`, sorted.
fn testbox_traces(testbox: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    let Ok(kernels) = std::fs::read_dir(testbox) else {
        return Ok(out);
    };
    for k in kernels.flatten() {
        let Ok(files) = std::fs::read_dir(k.path()) else {
            continue;
        };
        out.extend(
            files
                .flatten()
                .map(|f| f.path())
                .filter(|p| p.extension().is_some_and(|e| e == "arrows")),
        );
    }
    out.sort();
    Ok(out)
}

/// Fills `seeds` afresh; returns how many seeds it holds.
fn build_seeds(traces: &[PathBuf], regressions: &Path, seeds: &Path) -> Result<usize> {
    let _ = std::fs::remove_dir_all(seeds);
    std::fs::create_dir_all(seeds)?;
    let mut n = 0;
    for t in traces {
        let bytes = std::fs::read(t).with_context(|| t.display().to_string())?;
        let name = seed_name(t);
        if bytes.len() as u64 <= WHOLE_MAX {
            std::fs::write(seeds.join(format!("{name}.arrows")), &bytes)?;
            n += 1;
        }
        let cut = (bytes.len() / 3).min(WHOLE_MAX as usize);
        std::fs::write(seeds.join(format!("{name}-cut.arrows")), &bytes[..cut])?;
        n += 1;
    }
    for f in std::fs::read_dir(regressions)?.flatten() {
        std::fs::copy(f.path(), seeds.join(f.file_name()))?;
        n += 1;
    }
    Ok(n)
}

/// `<kernel>-<workload>` for `testbox/<kernel>/<workload>.arrows`.
fn seed_name(trace: &Path) -> String {
    let kernel = trace
        .parent()
        .and_then(Path::file_name)
        .map(|k| k.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = trace.file_stem().unwrap_or_default().to_string_lossy();
    format!("{kernel}-{stem}")
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|f| f.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// A `stat::name: value` line of libFuzzer's final statistics.
fn stat(log: &str, name: &str) -> Option<u64> {
    log.lines().find_map(|l| {
        l.trim()
            .strip_prefix(name)?
            .trim()
            .strip_prefix(':')?
            .trim()
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_run_count_and_names_seeds() {
        let log = "Done 8123 runs in 60 second(s)\nstat::number_of_executed_units: 8123\nstat::peak_rss_mb: 91\n";
        assert_eq!(stat(log, "stat::number_of_executed_units"), Some(8123));
        assert_eq!(stat(log, "stat::slowest_unit_time_sec"), None);
        assert_eq!(
            seed_name(Path::new("/t/testbox/6.12/drm-bochs.arrows")),
            "6.12-drm-bochs"
        );
    }
}
