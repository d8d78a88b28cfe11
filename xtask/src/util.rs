use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

pub fn workspace_root() -> PathBuf {
    // `cargo run` sets the variable for the process too. The compile-time value is only a
    // fallback: a target directory shared between checkouts (CI's) can hold a binary built in
    // another one, and cargo does not rebuild it for a new manifest path.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    dir.parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, as cargo itself does.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Where downloads are kept between runs: `$PFNSCOPE_CACHE`, else `$XDG_CACHE_HOME/pfnscope`,
/// else `~/.cache/pfnscope`; inside the target directory when none of those can be created.
/// Nothing may rely on what is already in it.
pub fn cache_dir() -> PathBuf {
    let candidates = [
        std::env::var_os("PFNSCOPE_CACHE").map(PathBuf::from),
        std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("pfnscope")),
        std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/pfnscope")),
    ];
    for c in candidates.into_iter().flatten() {
        if std::fs::create_dir_all(&c).is_ok() {
            return c;
        }
    }
    target_dir().join("pfnscope-cache")
}

pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command with inherited stdio; a non-zero exit is an error naming the command.
pub fn run(cmd: &mut Command) -> Result<()> {
    let st = cmd
        .status()
        .with_context(|| format!("starting {}", show(cmd)))?;
    if !st.success() {
        bail!("{} failed: {st}", show(cmd));
    }
    Ok(())
}

/// Runs a command and returns its stdout; stderr is included in the error on failure.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("starting {}", show(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}\n{}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Where the test box leaves each kernel's results.
pub fn results_root() -> PathBuf {
    target_dir().join("testbox")
}

/// Runs a command, echoing its output, and hands every line to `seen`.
pub fn stream(cmd: &mut Command, mut seen: impl FnMut(&str)) -> Result<bool> {
    println!("==> {}", show(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| show(cmd))?;
    let err = child.stderr.take().unwrap();
    // stderr on its own thread: both pipes must drain or the child blocks.
    let errs = std::thread::spawn(move || {
        let mut lines = vec![];
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("{l}");
            lines.push(l);
        }
        lines
    });
    for l in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        println!("{l}");
        seen(&l);
    }
    for l in errs.join().unwrap_or_default() {
        seen(&l);
    }
    Ok(child.wait()?.success())
}

/// Replaces the `##` section starting with `heading` (or appends it), leaving the others alone.
pub fn replace_section(path: &Path, heading: &str, section: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let mut out = String::new();
    let mut skipping = false;
    let mut done = false;
    for line in old.lines() {
        if line.starts_with("## ") {
            // The whole heading: `## tracer overhead: where the time goes` is another section.
            skipping = line.trim_end() == heading;
            if skipping && !done {
                out.push_str(section.trim_end());
                out.push_str("\n\n");
                done = true;
            }
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !done {
        if !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(section.trim_end());
        out.push('\n');
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// Builds the release tracer (the benchmarks time it) and returns its path.
pub fn release_tracer() -> Result<PathBuf> {
    eprintln!("building tracer (release)...");
    run(Command::new("cargo").current_dir(workspace_root()).args([
        "build",
        "--release",
        "-p",
        "tracer",
    ]))?;
    Ok(target_dir().join("release/tracer"))
}
