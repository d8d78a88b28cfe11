//! `cargo xtask testbox`: real Debian kernels under qemu, driver workloads traced inside, traces
//! back on the host under target/testbox/<kernel>/, each checked for the hooks it must reach.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use workload::bugzoo;
use workload::expect::{self, Target};

use crate::initramfs::{
    BOOT_MODULES, GuestBins, base_cpio, build_guest_binaries, find_static_busybox, static_binary,
    write_initrd,
};
use crate::kernels::{self, Apt, Kernel};
use crate::modules::ModuleTree;
use crate::select::{pick_series, pick_workloads};
use crate::util::results_root;
use crate::{check, guest, qemu, userbox, userspec, util, zoo};

#[derive(clap::Args)]
pub struct Args {
    /// Kernel series to boot: 6.1, 6.12, 7.2 or all (repeatable).
    #[arg(long, default_value = "all")]
    kernel: Vec<String>,
    /// Workloads to run (default: all that run where the box runs; see `workload --list`).
    #[arg(long, num_args = 1.., conflicts_with = "run")]
    workload: Vec<String>,
    /// Your command, run by /bin/sh -c under `tracer record` in the guest (repeatable, each
    /// traced on its own); its results go to target/testbox/<kernel>/<name>/, named after the
    /// program, and are replayed and reported on the host. Replaces the built-in workloads.
    #[arg(long = "run", value_name = "CMD ARGS", conflicts_with_all = ["host", "no_trace"])]
    run: Vec<String>,
    /// Your module: a source directory (Kbuild or Makefile), built against the guest kernel's
    /// own headers, or a prebuilt FILE.ko for exactly that kernel (repeatable). Loaded after the
    /// --load ones.
    #[arg(long = "module", value_name = "SRC_DIR|FILE.ko", requires = "run")]
    module: Vec<PathBuf>,
    /// A module of the guest kernel's own tree, loaded with its dependencies and parameters
    /// (`--load loop:max_loop=4`; repeatable). Also sets the parameters of a --module.
    #[arg(long = "load", value_name = "NAME[:ARGS]", requires = "run")]
    load: Vec<String>,
    /// A static binary, script or data file for the guest (repeatable). Default place:
    /// /bin/NAME when executable, else /root/NAME (the commands' working directory).
    #[arg(long = "file", value_name = "HOST_PATH[:GUEST_PATH]", requires = "run")]
    file: Vec<String>,
    /// More qemu arguments, e.g. "-device intel-iommu" or "-vga qxl" (after the box's own:
    /// an option given once wins over the box's).
    #[arg(
        long,
        value_name = "ARGS",
        allow_hyphen_values = true,
        requires = "run"
    )]
    qemu_args: Vec<String>,
    /// More kernel parameters, after the box's own.
    #[arg(
        long,
        value_name = "PARAMS",
        allow_hyphen_values = true,
        requires = "run"
    )]
    cmdline: Vec<String>,
    /// Keep the initramfs and disk image under target/testbox/<kernel>/work.
    #[arg(long)]
    keep: bool,
    /// Run the host's workloads (anon, file, vvar) on this machine's own kernel instead of
    /// booting guests.
    #[arg(long)]
    host: bool,
    /// Run the workloads without the tracer: proves the box and the workloads, checks no hooks.
    #[arg(long)]
    no_trace: bool,
    /// Hard limit for one boot in seconds (default: scaled by the number of workloads); with
    /// --run, each command's limit (default 240), the boot's being 120 s more per command.
    #[arg(long)]
    timeout: Option<u64>,
    /// Extra arguments for `tracer record` in the guest (whitespace-separated), e.g. "--buffer-mb 64".
    #[arg(long, allow_hyphen_values = true, default_value = "")]
    record_args: String,
    /// Put this (static) tracer binary in the guest instead of building one.
    #[arg(long, conflicts_with_all = ["no_trace", "host"])]
    tracer_bin: Option<PathBuf>,
    /// With --run: stream each trace to a `tracer collect` on the host through a virtio-serial
    /// port (no guest networking), so it arrives while the guest runs and survives a crash.
    #[arg(long, requires = "run")]
    stream: bool,
}

/// Seconds one traced workload may take in the guest (TCG is 10-50x slower than the host).
const WORKLOAD_TIMEOUT_S: u32 = 240;

pub fn run(args: &Args) -> Result<()> {
    if !args.run.is_empty() {
        let request = userspec::Request::parse(
            &args.module,
            &args.load,
            &args.file,
            &args.qemu_args,
            &args.cmdline,
            &args.run,
        )?;
        return userbox::run(&userbox::Options {
            request,
            series: pick_series(&args.kernel)?,
            run_timeout_s: args.timeout.map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
            keep: args.keep,
            record_args: args
                .record_args
                .split_whitespace()
                .map(String::from)
                .collect(),
            tracer_bin: args.tracer_bin.clone(),
            stream: args.stream,
        });
    }
    let workloads = pick_workloads(&args.workload, args.host)?;
    if args.host {
        return run_host(&workloads, args);
    }
    let series = pick_series(&args.kernel)?;
    let started = Instant::now();
    let mut bins = build_guest_binaries(!args.no_trace && args.tracer_bin.is_none())?;
    if let Some(t) = &args.tracer_bin {
        bins.tracer = Some(static_binary(t)?);
    }
    let busybox = find_static_busybox()?;
    let cache = util::cache_dir();
    let (apt, updated) = Apt::updated(&cache)?;
    let mut failures = Vec::new();
    for s in series {
        let one = Instant::now();
        let r = kernels::fetch(s, &apt, updated.as_ref().map(|_| ()), &cache)
            .and_then(|k| run_guest(&k, &workloads, &bins, &busybox, args));
        match r {
            Ok(()) => println!(
                "kernel {}: PASS ({:.0}s)\n",
                s.name(),
                one.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!("kernel {}: FAIL: {e:#}\n", s.name());
                failures.push(s.name());
            }
        }
    }
    println!(
        "testbox finished in {:.0}s; results under {}",
        started.elapsed().as_secs_f64(),
        results_root().display()
    );
    if args.no_trace {
        println!("hook checks SKIPPED: --no-trace ran the workloads without the tracer");
    }
    if !failures.is_empty() {
        bail!("testbox failed for kernel(s) {}", failures.join(", "));
    }
    Ok(())
}

fn run_guest(
    k: &Kernel,
    workloads: &[&'static str],
    bins: &GuestBins,
    busybox: &Path,
    args: &Args,
) -> Result<()> {
    let out = results_root().join(k.series.name());
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    let work = out.join("work");
    std::fs::create_dir_all(&work)?;
    println!("{}", k.heading());
    let zoo_plan = zoo::plan(k, workloads, &util::cache_dir())?;
    for (w, why) in &zoo_plan.skipped {
        println!("SKIPPED: {w} on kernel {}: {why}", k.series.name());
    }
    let workloads = &zoo_plan.run[..];

    let mut tree = ModuleTree::open(&k.modules)?;
    let mut loaded = HashSet::new();
    let mut stage = |wanted: &[String], loaded: &mut HashSet<String>| -> Result<Vec<String>> {
        let order = tree.resolve(wanted, loaded)?;
        loaded.extend(order.iter().cloned());
        Ok(order)
    };
    let boot_modules = stage(&BOOT_MODULES.map(String::from), &mut loaded)?;
    let zoo_depends = zoo_plan.driver.as_ref().map(|d| &d.depends[..]);
    let steps = guest_steps(workloads, zoo_depends, &mut loaded, &mut stage)?;
    let plan = guest::Plan {
        boot_modules,
        steps,
        workload_timeout_s: WORKLOAD_TIMEOUT_S,
        trace: bins.tracer.is_some(),
        record_args: args
            .record_args
            .split_whitespace()
            .map(String::from)
            .collect(),
    };
    println!(
        "  modules: {}",
        loaded.iter().cloned().collect::<Vec<_>>().join(" ")
    );

    let mut cpio = base_cpio(bins, busybox)?;
    for m in plan
        .boot_modules
        .iter()
        .chain(plan.steps.iter().flat_map(|s| &s.modules))
    {
        let data = match &zoo_plan.driver {
            Some(d) if m == zoo::MODULE => d.ko.clone(),
            _ => tree.data(m)?,
        };
        cpio.file(&format!("lib/modules/{m}.ko"), 0o644, &data);
    }
    let initrd = write_initrd(cpio, &guest::init_script(&plan), &work)?;

    let disk = work.join("results.img");
    qemu::blank_disk(&disk, 512 << 20)?;
    let console_path = out.join("console.log");
    let timeout = Duration::from_secs(
        args.timeout
            .unwrap_or(120 + workloads.len() as u64 * (u64::from(WORKLOAD_TIMEOUT_S) + 10)),
    );
    let devices = if zoo_plan.runs_zoo() {
        zoo::qemu_args()
    } else {
        Vec::new()
    };
    let boot = qemu::Boot {
        label: k.series.name(),
        vmlinuz: &k.vmlinuz,
        initrd: &initrd,
        disks: std::slice::from_ref(&disk),
        cmdline: &[],
        console: &console_path,
        timeout,
        devices: &devices,
    };
    println!(
        "  booting (hard limit {}s): qemu-system-x86_64 {}",
        timeout.as_secs(),
        qemu::args(&boot).join(" ")
    );
    let o = qemu::boot(&boot)?;
    let tail = || {
        format!(
            "console tail ({}):\n{}",
            console_path.display(),
            util::tail(&o.console, 40)
        )
    };
    if o.timed_out {
        bail!(
            "guest did not finish within {}s; qemu killed\n{}",
            timeout.as_secs(),
            tail()
        );
    }
    println!(
        "  guest finished in {:.1}s ({})",
        o.elapsed.as_secs_f64(),
        o.exit.map(|e| e.to_string()).unwrap_or_default()
    );
    let mut problems: Vec<String> = check::kernel_trouble(&o.console)
        .into_iter()
        .map(|l| format!("console: {l}"))
        .collect();
    if !o.console.contains(guest::DONE) {
        bail!("guest ended before its init script finished\n{}", tail());
    }
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&disk)
        .arg("-C")
        .arg(&out)
        .status()
        .context("running tar")?;
    if !st.success() {
        bail!(
            "no results archive on the guest's disk (tar: {st})\n{}",
            tail()
        );
    }
    zoo::file_away(&out, workloads)?;
    problems.extend(
        check::kernel_trouble(&check::read_text(&out.join("dmesg.txt")))
            .into_iter()
            .map(|l| format!("dmesg: {l}")),
    );
    for l in check::read_text(&out.join("modules.log"))
        .lines()
        .filter(|l| l.starts_with("FAILED") || l.contains("insmod:"))
    {
        problems.push(format!("modules: {l}"));
    }
    if bins.tracer.is_some() {
        let rc = check::read_text(&out.join("doctor.rc"));
        let json = check::read_text(&out.join("doctor.json"));
        if rc.trim() != "0" {
            problems.push(format!(
                "tracer doctor --json exited {}: {}",
                rc.trim(),
                check::read_text(&out.join("doctor.err")).trim()
            ));
        } else if let Err(e) = serde_json::from_str::<serde_json::Value>(&json) {
            problems.push(format!("doctor.json is not JSON: {e}"));
        }
    }
    let (features, _) = pfnscope_abi::kernel::Features::for_release(&k.release)
        .with_context(|| format!("no kernel version in release {}", k.release))?;
    for w in workloads {
        let dir = zoo::results_dir(&out, w);
        let dmesg = check::read_text(&dir.join(format!("{w}.dmesg")));
        problems.extend(
            workload_verdict(
                w,
                &dir,
                Target::Guest(features.series),
                bins.tracer.is_some(),
            )
            .into_iter()
            .chain(check::pat_problems(w, features.series, &dmesg))
            .map(|p| format!("{w}: {p}")),
        );
    }
    if !args.keep {
        std::fs::remove_dir_all(&work)?;
    }
    if !problems.is_empty() {
        bail!(
            "{} problem(s):\n  {}\n{}",
            problems.len(),
            problems.join("\n  "),
            tail()
        );
    }
    Ok(())
}

/// Orders the modules a step wants and adds them to those loaded (the module tree's resolve).
type Stage<'a> = dyn FnMut(&[String], &mut HashSet<String>) -> Result<Vec<String>> + 'a;

/// The guest's steps: each workload after the modules it needs that no earlier step loaded, and
/// the zoo's driver (after `zoo_depends`, what it needs; `None` when no zoo workload runs)
/// before the first zoo workload. `stage` orders modules and adds them to `loaded`.
fn guest_steps(
    workloads: &[&str],
    zoo_depends: Option<&[String]>,
    loaded: &mut HashSet<String>,
    stage: &mut Stage,
) -> Result<Vec<guest::Step>> {
    let mut steps = Vec::new();
    for w in workloads {
        let mut wanted: Vec<String> = expect::workload(w)
            .map(|x| x.modules.iter().map(|m| m.to_string()).collect())
            .unwrap_or_default();
        let zoo_first = bugzoo::mode(w).is_some() && !loaded.contains(zoo::MODULE);
        let zoo_first = zoo_depends.filter(|_| zoo_first);
        if let Some(deps) = zoo_first {
            wanted.extend(deps.iter().cloned());
        }
        let mut modules = stage(&wanted, loaded)?;
        if zoo_first.is_some() {
            loaded.insert(zoo::MODULE.to_string());
            modules.push(zoo::MODULE.to_string());
        }
        steps.push(guest::Step {
            workload: w.to_string(),
            modules,
        });
    }
    Ok(steps)
}

/// Checks one workload's exit status and trace; prints its hook summary.
fn workload_verdict(w: &str, dir: &Path, target: Target, traced: bool) -> Vec<String> {
    let rc = check::read_text(&dir.join(format!("{w}.rc")));
    let log = check::read_text(&dir.join(format!("{w}.log")));
    let mut problems = Vec::new();
    if rc.trim() != "0" {
        let why = if rc.trim() == "124" || rc.trim() == "143" {
            " (timed out)"
        } else {
            ""
        };
        problems.push(format!(
            "exited {}{why}; log:\n{}",
            rc.trim(),
            util::tail(&log, 15)
        ));
    }
    if !traced {
        println!(
            "    {w}: rc={} (untraced: hooks not checked) {}",
            rc.trim(),
            log.lines().last().unwrap_or("")
        );
        return problems;
    }
    let path = dir.join(format!("{w}.arrows"));
    match pfnscope_trace::read_trace(&path) {
        Err(e) => problems.push(format!("cannot read {}: {e}", path.display())),
        Ok(t) => {
            let p = check::verify(w, target, &t);
            println!(
                "    {w}: {} events, {} ({})",
                t.events().count(),
                if p.is_empty() {
                    "hooks OK"
                } else {
                    "MISSING HOOKS"
                },
                t.meta.kernel_release
            );
            println!("{}", check::summary(&t));
            problems.extend(p);
        }
    }
    problems
}

fn run_host(workloads: &[&str], args: &Args) -> Result<()> {
    if args.no_trace {
        bail!("--host --no-trace would check nothing: run the workload binary directly");
    }
    // The same static binaries the guests run: one release build serves both, and the host
    // runs exactly what the guests ran.
    let bins = build_guest_binaries(true)?;
    let tracer = bins.tracer.expect("built with the tracer");
    let out = results_root().join("host");
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    let scratch = out.join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let mut problems = Vec::new();
    let doctor = Command::new(&tracer)
        .args(["doctor", "--json"])
        .output()
        .context("running tracer doctor")?;
    std::fs::write(out.join("doctor.json"), &doctor.stdout)?;
    if !doctor.status.success() {
        problems.push(format!(
            "tracer doctor --json: {} {}",
            doctor.status,
            String::from_utf8_lossy(&doctor.stderr).trim()
        ));
    }
    let limit = Duration::from_secs(args.timeout.unwrap_or(300));
    for w in workloads {
        let log = std::fs::File::create(out.join(format!("{w}.log")))?;
        let mut cmd = Command::new(&tracer);
        cmd.args(["record", "-q", "-o"])
            .arg(out.join(format!("{w}.arrows")))
            .arg("--")
            .arg(&bins.workload)
            .arg(w);
        if *w == "file" {
            cmd.arg(&scratch);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        println!("  host: {}", util::show(&cmd));
        let mut child = cmd.spawn().context("starting tracer")?;
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break Some(st);
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let rc = match status {
            Some(st) => st.code().map_or_else(|| st.to_string(), |c| c.to_string()),
            None => "124".to_string(),
        };
        std::fs::write(out.join(format!("{w}.rc")), format!("{rc}\n"))?;
        problems.extend(
            workload_verdict(w, &out, Target::Host, true)
                .into_iter()
                .map(|p| format!("{w}: {p}")),
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if !problems.is_empty() {
        bail!(
            "host testbox: {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    println!("host: PASS; results under {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initramfs::is_static;

    #[test]
    fn the_zoo_driver_loads_before_the_first_zoo_workload() {
        // Stands in for the module tree: what is wanted and not loaded yet, in order.
        let mut stage = |wanted: &[String], loaded: &mut HashSet<String>| {
            let new: Vec<String> = wanted
                .iter()
                .filter(|m| !loaded.contains(*m))
                .cloned()
                .collect();
            loaded.extend(new.iter().cloned());
            Ok(new)
        };
        let ws = ["anon", "drm-vgem", "bugzoo-correct", "bugzoo-ram-wc"];
        let deps = ["drm".to_string(), "libfoo".to_string()];
        let steps = guest_steps(&ws, Some(&deps), &mut HashSet::new(), &mut stage).unwrap();
        let modules: Vec<Vec<String>> = steps.iter().map(|s| s.modules.clone()).collect();
        assert_eq!(
            modules,
            [
                vec![],
                vec!["vgem".to_string()],
                vec![
                    "drm".to_string(),
                    "libfoo".to_string(),
                    zoo::MODULE.to_string()
                ],
                vec![],
            ]
        );
        assert_eq!(steps[2].workload, "bugzoo-correct");
        // Without a driver (not buildable here) nothing is loaded for the zoo.
        let steps = guest_steps(&ws[2..], None, &mut HashSet::new(), &mut stage).unwrap();
        assert!(steps.iter().all(|s| s.modules.is_empty()));
        // And the init script runs the insmod before the workload.
        let steps = guest_steps(&ws, Some(&[]), &mut HashSet::new(), &mut stage).unwrap();
        let script = guest::init_script(&guest::Plan {
            boot_modules: vec![],
            steps,
            workload_timeout_s: 10,
            trace: true,
            record_args: vec![],
        });
        let load = script.find("load bugzoo\n").unwrap();
        assert!(script.find("/bin/workload drm-vgem").unwrap() < load);
        assert!(load < script.find("/bin/workload bugzoo-correct").unwrap());
        assert_eq!(script.matches("load bugzoo\n").count(), 1);
    }

    #[test]
    fn static_detection() {
        // This test binary is linked against the system's loader.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static(&me));
        assert!(!is_static(b"#!/bin/sh\n"));
        // A header with no program headers at all needs no loader.
        let mut elf = vec![0u8; 64];
        elf[..5].copy_from_slice(b"\x7fELF\x02");
        assert!(is_static(&elf));
    }
}
