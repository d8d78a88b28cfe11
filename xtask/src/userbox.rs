//! `cargo xtask testbox --run`: your own driver and test in the box. Modules built from source
//! against the guest kernel's headers (or prebuilt, if their vermagic fits), Debian modules by
//! name with parameters, files, qemu devices and kernel parameters; each `--run` command traced
//! on its own, its results brought back under `target/testbox/<kernel>/<name>/`, replayed and
//! reported on the host. Everything that can refuse the request does so before anything is
//! built or booted; a guest that panics or hangs still leaves what it recorded.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::guest::{self, UserPlan, UserRun};
use crate::initramfs::{self, GuestBins};
use crate::kernels::{self, Apt, BoxKernel, Kernel};
use crate::modules::{self, Found, ModuleTree};
use crate::userspec::{self, ModuleSrc, Request, Run};
use crate::{check, kmod, qemu, report, stream, util};

pub struct Options {
    pub request: Request,
    pub series: Vec<BoxKernel>,
    /// Each command's limit in seconds (`--timeout`).
    pub run_timeout_s: Option<u32>,
    pub keep: bool,
    pub record_args: Vec<String>,
    pub tracer_bin: Option<PathBuf>,
    /// Traces stream to the host through a virtio-serial port ([`crate::stream`]).
    pub stream: bool,
}

/// Seconds one command may take unless `--timeout` says otherwise.
const RUN_TIMEOUT_S: u32 = 240;
/// The box's own work files, under `<kernel>/`: a run's name never starts with a dot.
const WORK: &str = ".run-work";
/// The serial console of the last `--run` boot, under `<kernel>/` (and copied into each run's
/// directory).
const CONSOLE: &str = "run-console.log";
/// The host's collector's log of the last `--run --stream` boot, under `<kernel>/`.
const COLLECT_LOG: &str = "run-collect.log";
/// Each results disk (sparse: only what the guest writes takes space).
const DISK_BYTES: u64 = 512 << 20;

pub fn run(o: &Options) -> Result<()> {
    let cache = util::cache_dir();
    let (apt, updated) = Apt::updated(&cache)?;
    let busybox = initramfs::find_static_busybox()?;
    let applets = applets(&busybox)?;
    // Everything that can refuse the request, for every kernel, before anything is built.
    let mut prepared = Vec::new();
    for &s in &o.series {
        let k = kernels::fetch(s, &apt, updated.as_ref().map(|_| ()), &cache)?;
        let p = prepare(&k, &o.request, &cache, &applets, o.stream)
            .with_context(|| format!("kernel {} ({})", s.name(), k.release))?;
        prepared.push((k, p));
    }
    let mut bins = initramfs::build_guest_binaries(o.tracer_bin.is_none())?;
    if let Some(t) = &o.tracer_bin {
        bins.tracer = Some(initramfs::static_binary(t)?);
    }
    let tools = report::Tools::build()?;
    let mut failed = Vec::new();
    for (k, p) in &prepared {
        let started = Instant::now();
        match boot(k, p, o, &bins, &busybox, &tools) {
            Ok(()) => println!(
                "kernel {}: PASS ({:.0}s)\n",
                k.series.name(),
                started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!("kernel {}: FAIL: {e:#}\n", k.series.name());
                failed.push(k.series.name());
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "testbox --run failed on kernel {} (the FAIL lines above say why)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// What one kernel's guest gets.
pub struct Prepared {
    /// `lib/modules/<name>.ko` in the initramfs.
    modules: BTreeMap<String, Vec<u8>>,
    boot_modules: Vec<String>,
    loads: Vec<(String, Vec<String>)>,
    /// The user's kernel parameters, then those of built-in modules asked for by `--load`.
    cmdline: Vec<String>,
    /// (guest path, mode, contents).
    files: Vec<(String, u32, Vec<u8>)>,
}

/// A module of the user's: built from source or prebuilt.
struct UserModule {
    data: Vec<u8>,
    depends: Vec<String>,
}

fn prepare(
    k: &Kernel,
    req: &Request,
    cache: &Path,
    applets: &HashSet<String>,
    stream: bool,
) -> Result<Prepared> {
    let mut tree = ModuleTree::open(&k.modules)?;
    let user = user_modules(k, req, cache)?;
    let mut loaded = HashSet::new();
    let mut boot = initramfs::BOOT_MODULES.map(String::from).to_vec();
    if stream {
        // The virtio-serial port the traces leave by (built in on 6.12 and 7.2).
        boot.push("virtio_console".into());
    }
    let boot_modules = tree.resolve(&boot, &loaded)?;
    loaded.extend(boot_modules.iter().cloned());

    let mut args: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut from_tree = Vec::new();
    let mut cmdline = req.cmdline.clone();
    for l in &req.loads {
        args.insert(l.name.clone(), l.args.clone());
        if user.iter().any(|(n, _)| *n == l.name) {
            continue;
        }
        match tree.find(&l.name) {
            Found::File => from_tree.push(l.name.clone()),
            Found::BuiltIn => {
                println!(
                    "  --load {}: built into {}; its parameters go on the kernel command line",
                    l.name, k.release
                );
                cmdline.extend(l.args.iter().map(|a| format!("{}.{a}", l.name)));
            }
            Found::Missing { listed } => bail!("{}", missing_module(&tree, &l.name, listed)),
        }
    }
    // Tree modules (and what they need) first, the user's after them; the user's own win over
    // the tree's of the same name, as a patched driver should.
    let mine = |m: &str| user.iter().find(|(n, _)| n == m).map(|(_, u)| u);
    let mut depends = |m: &str| -> Result<Option<Vec<String>>> {
        if let Some(u) = mine(m) {
            return Ok(Some(u.depends.clone()));
        }
        if let Found::Missing { listed: true } = tree.find(m) {
            bail!(
                "a module needs {m}, which {} does not have: pass it with --module",
                k.release
            );
        }
        tree.depends(m)
    };
    let first = modules::load_order(&from_tree, &loaded, &mut depends)?;
    loaded.extend(first.iter().cloned());
    let names: Vec<String> = user.iter().map(|(n, _)| n.clone()).collect();
    let then = modules::load_order(&names, &loaded, &mut depends)?;
    let mut modules = BTreeMap::new();
    for m in boot_modules.iter().chain(&first).chain(&then) {
        let data = match mine(m) {
            Some(u) => u.data.clone(),
            None => tree.data(m)?,
        };
        modules.insert(m.clone(), data);
    }
    let loads = first
        .iter()
        .chain(&then)
        .map(|m| (m.clone(), args.get(m).cloned().unwrap_or_default()))
        .collect();
    Ok(Prepared {
        modules,
        boot_modules,
        loads,
        cmdline,
        files: guest_files(req, applets)?,
    })
}

fn missing_module(tree: &ModuleTree, name: &str, listed: bool) -> String {
    let similar = tree.similar(name, 5);
    let hint = if similar.is_empty() {
        "check the name, or give your own with --module".to_string()
    } else {
        format!("similar: {}", similar.join(", "))
    };
    let unlisted = if listed {
        ""
    } else {
        "; its package does not list built-in modules, so leave a built-in one out"
    };
    format!(
        "--load {name}: the kernel has no module {name} (no .ko in its package{unlisted}); {hint}"
    )
}

/// The user's modules by name, in the order given: each `--module` source directory built for
/// `k`, each prebuilt one checked against `k`'s release.
fn user_modules(k: &Kernel, req: &Request, cache: &Path) -> Result<Vec<(String, UserModule)>> {
    let mut out: Vec<(String, UserModule)> = Vec::new();
    for m in &req.modules {
        let files: Vec<(PathBuf, Vec<u8>)> = match m {
            ModuleSrc::Source(dir) => {
                let dir = dir
                    .canonicalize()
                    .with_context(|| format!("--module {}", dir.display()))?;
                let built = match kmod::build(&dir, k, cache)
                    .with_context(|| format!("--module {}", dir.display()))?
                {
                    Ok(b) => b,
                    Err(kmod::Unavailable(why)) => bail!(
                        "--module {}: cannot build it for {} on this machine: {why}",
                        dir.display(),
                        k.release
                    ),
                };
                for w in &built.warnings {
                    println!("  --module {}: {w}", dir.display());
                }
                built
                    .modules
                    .iter()
                    .map(|p| Ok((p.clone(), std::fs::read(p)?)))
                    .collect::<Result<_>>()?
            }
            ModuleSrc::Prebuilt(f) => {
                let data = modules::decompress(f)?;
                if let Err(why) = vermagic_fits(&data, &k.release) {
                    bail!("--module {}: {why}", f.display());
                }
                vec![(f.clone(), data)]
            }
        };
        for (path, data) in files {
            let info = modules::elf_section(&data, ".modinfo")
                .with_context(|| format!("--module {}: no .modinfo", path.display()))?;
            let name = modules::modinfo_value(info, "name")
                .unwrap_or_else(|| module_stem(&path))
                .replace('-', "_");
            if !userspec::is_module_name(&name) {
                bail!(
                    "--module {}: module name {name:?} is not usable",
                    path.display()
                );
            }
            if out.iter().any(|(n, _)| *n == name) {
                bail!("--module: two modules are called {name}: give each once");
            }
            let depends = modules::modinfo_depends(info);
            out.push((name, UserModule { data, depends }));
        }
    }
    Ok(out)
}

fn module_stem(p: &Path) -> String {
    let n = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    n.split(".ko").next().unwrap_or(&n).to_string()
}

/// `Err(what to do)` when a prebuilt module was built for another release than `release`.
pub fn vermagic_fits(ko: &[u8], release: &str) -> Result<(), String> {
    let Some(vermagic) = modules::vermagic(ko) else {
        return Err("no vermagic in its .modinfo: is it a kernel module?".into());
    };
    if kmod::check_vermagic(ko, release).is_err() {
        return Err(format!(
            "built for {} (vermagic {:?}), but the guest runs {release}: build it against that release's headers, or pass its source directory to --module",
            vermagic.split_whitespace().next().unwrap_or("?"),
            vermagic.trim()
        ));
    }
    Ok(())
}

/// The `--file`s with their guest paths and modes, refused when they cannot be placed or run.
fn guest_files(req: &Request, applets: &HashSet<String>) -> Result<Vec<(String, u32, Vec<u8>)>> {
    use std::os::unix::fs::PermissionsExt;
    let mut placed: Vec<(String, u32, Vec<u8>)> = Vec::new();
    for f in &req.files {
        let data =
            std::fs::read(&f.host).with_context(|| format!("--file {}", f.host.display()))?;
        let executable = std::fs::metadata(&f.host)?.permissions().mode() & 0o111 != 0;
        let guest = f
            .guest
            .clone()
            .unwrap_or_else(|| userspec::default_place(&f.host, executable));
        if let Err(why) = userspec::guest_path(&guest) {
            bail!(
                "--file {}: {why} (name its place: --file HOST_PATH:GUEST_PATH)",
                f.host.display()
            );
        }
        if placed.iter().any(|p| p.0 == guest) {
            bail!("--file {}: a second file for {guest}", f.host.display());
        }
        placed.push((guest, if executable { 0o755 } else { 0o644 }, data));
    }
    // Scripts may name each other, or busybox's applets, as their interpreter.
    let has = |p: &str| {
        placed.iter().any(|f| f.0 == p)
            || p.strip_prefix("/bin/")
                .is_some_and(|a| applets.contains(a) || a == "busybox")
    };
    for (guest, mode, data) in &placed {
        if mode & 0o111 != 0
            && let Some(why) = userspec::unrunnable(data, has)
        {
            bail!("--file for {guest} cannot run in the guest: {why}");
        }
    }
    Ok(placed)
}

/// The applets busybox makes in the guest's /bin.
fn applets(busybox: &Path) -> Result<HashSet<String>> {
    Ok(util::output(Command::new(busybox).arg("--list"))?
        .lines()
        .map(String::from)
        .collect())
}

fn boot(
    k: &Kernel,
    p: &Prepared,
    o: &Options,
    bins: &GuestBins,
    busybox: &Path,
    tools: &report::Tools,
) -> Result<()> {
    let runs = &o.request.runs;
    let out = util::results_root().join(k.series.name());
    let work = out.join(WORK);
    for d in runs.iter().map(|r| out.join(&r.name)).chain([work.clone()]) {
        if d.exists() {
            std::fs::remove_dir_all(&d).with_context(|| format!("clearing {}", d.display()))?;
        }
    }
    std::fs::create_dir_all(&work)?;
    println!("{}", k.heading());
    let run_timeout_s = o.run_timeout_s.unwrap_or(RUN_TIMEOUT_S);
    let plan = UserPlan {
        boot_modules: p.boot_modules.clone(),
        loads: p.loads.clone(),
        runs: runs
            .iter()
            .map(|r| UserRun {
                name: r.name.clone(),
                command: r.command.clone(),
            })
            .collect(),
        run_timeout_s,
        record_args: o.record_args.clone(),
        stream: o.stream,
    };
    if !p.loads.is_empty() {
        let loads: Vec<String> = p
            .loads
            .iter()
            .map(|(m, a)| {
                [m.clone()]
                    .into_iter()
                    .chain(a.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        println!("  insmod in order: {}", loads.join(", "));
    }
    // Started before qemu, which connects to its socket as the guest boots.
    let collector = match (o.stream, &bins.tracer) {
        (true, Some(tracer)) => Some(stream::HostCollector::start(
            tracer,
            &work,
            &out.join(COLLECT_LOG),
        )?),
        (true, None) => bail!("--stream needs the tracer binary"),
        (false, _) => None,
    };
    let token = collector.as_ref().map(|c| c.token.as_slice());
    let initrd = initramfs(p, &plan, bins, busybox, &work, token)?;
    let mut devices = o.request.qemu_args.clone();
    if let Some(c) = &collector {
        devices.extend(stream::qemu_args(&c.socket));
    }
    let disks = [work.join("results.img"), work.join("running.img")];
    for d in &disks {
        qemu::blank_disk(d, DISK_BYTES)?;
    }
    // Outside the work directory, which goes unless --keep: the console is what a guest that
    // died leaves in any case.
    let console_path = out.join(CONSOLE);
    // The watchdog's SIGKILL comes 10 s after the limit, then the results are saved.
    let timeout = Duration::from_secs(120 + runs.len() as u64 * (u64::from(run_timeout_s) + 20));
    let b = qemu::Boot {
        label: k.series.name(),
        vmlinuz: &k.vmlinuz,
        initrd: &initrd,
        disks: &disks,
        cmdline: &p.cmdline,
        console: &console_path,
        timeout,
        devices: &devices,
    };
    println!(
        "  booting (hard limit {}s): qemu-system-x86_64 {}",
        timeout.as_secs(),
        qemu::args(&b).join(" ")
    );
    let booted = qemu::boot(&b)?;
    println!(
        "  guest ended after {:.1}s ({})",
        booted.elapsed.as_secs_f64(),
        booted
            .exit
            .map_or_else(|| "killed".to_string(), |e| e.to_string())
    );

    // What the guest left: the last snapshot of a command it died in, then every archive it
    // finished, which replace the snapshot where both have a file.
    let staging = work.join("out");
    std::fs::create_dir_all(&staging)?;
    let _ = untar_all(&disks[1], &staging);
    let unpacked = untar_all(&disks[0], &staging);
    let finished = booted.console.contains(guest::DONE);
    let mut problems = Vec::new();
    if let Err(e) = unpacked
        && finished
    {
        problems.push(format!("the results disk does not unpack: {e:#}"));
    }
    let box_dir = staging.join(guest::USER_BOX);
    for r in runs {
        let from = staging.join(&r.name);
        if from.is_dir() {
            let to = out.join(&r.name);
            std::fs::rename(&from, &to)?;
            std::fs::copy(&console_path, to.join("console.log"))?;
            if box_dir.join("modules.log").exists() {
                std::fs::copy(box_dir.join("modules.log"), to.join("modules.log"))?;
            }
        }
    }

    let died = booted.timed_out || !finished;
    let mut problems_streaming = Vec::new();
    if let Some(c) = collector {
        let files = c.finish()?;
        println!(
            "  the host's collector took {} streamed trace(s) ({})",
            files.len(),
            out.join(COLLECT_LOG).display()
        );
        problems_streaming = stream::place(&files, &plan.runs, &out);
    }
    problems.extend(problems_streaming);
    if died
        && let Some(r) = runs.iter().find(|r| {
            let (start, end) = guest::run_marks(&r.name);
            booted.console.contains(&start) && !booted.console.contains(&end)
        })
        && stream::save_oops(&booted.console, &out.join(&r.name))?
    {
        println!(
            "  the console's oops is in {}",
            out.join(&r.name).join(stream::OOPS).display()
        );
    }
    problems.extend(guest_problems(
        &booted.console,
        booted.timed_out.then_some(timeout),
        runs,
        &check::read_text(&box_dir.join("modules.log")),
        &check::read_text(&box_dir.join("dmesg.txt")),
    ));
    println!("  results under {}:", out.display());
    for r in runs {
        let (line, problem) = summarise(&r.name, &out.join(&r.name), died, tools);
        println!("    {line}");
        problems.extend(problem);
    }
    if died {
        println!(
            "  console tail ({}):\n{}",
            console_path.display(),
            util::tail(&booted.console, 25)
        );
    }
    if !o.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    if problems.is_empty() {
        return Ok(());
    }
    for p in &problems {
        eprintln!("  FAIL: {p}");
    }
    bail!("{} problem(s), listed above", problems.len())
}

/// The initramfs: the box's own files, the modules, the user's files, and /init for `plan`.
fn initramfs(
    p: &Prepared,
    plan: &UserPlan,
    bins: &GuestBins,
    busybox: &Path,
    work: &Path,
    stream_token: Option<&[u8]>,
) -> Result<PathBuf> {
    let mut cpio = initramfs::base_cpio(bins, busybox)?;
    if let Some(t) = stream_token {
        cpio.file(guest::GUEST_TOKEN.trim_start_matches('/'), 0o600, t);
    }
    for (m, data) in &p.modules {
        cpio.file(&format!("lib/modules/{m}.ko"), 0o644, data);
    }
    let mut dirs: HashSet<String> = initramfs::BASE_DIRS.iter().map(|d| d.to_string()).collect();
    for (guest, mode, data) in &p.files {
        let parts: Vec<&str> = guest.trim_start_matches('/').split('/').collect();
        for i in 1..parts.len() {
            let parent = parts[..i].join("/");
            if dirs.insert(parent.clone()) {
                cpio.dir(&parent);
            }
        }
        cpio.file(&parts.join("/"), *mode, data);
    }
    initramfs::write_initrd(cpio, &guest::user_script(plan), work)
}

/// One line for each thing that went wrong with the guest itself: a panic, a hang (`hung`: the
/// limit qemu was killed at), a script that did not finish, a module that did not load, and
/// kernel trouble (oops, BUG, WARNING) before any panic.
pub fn guest_problems(
    console: &str,
    hung: Option<Duration>,
    runs: &[Run],
    modules_log: &str,
    dmesg: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    let during = runs
        .iter()
        .find(|r| {
            let (start, end) = guest::run_marks(&r.name);
            console.contains(&start) && !console.contains(&end)
        })
        .map(|r| format!(" during run {}", r.name))
        .unwrap_or_default();
    let panic = console
        .lines()
        .find(|l| l.contains("Kernel panic"))
        .map(untimed);
    match (panic, hung) {
        (Some(line), None) => problems.push(format!("the guest panicked{during}: {line}")),
        (Some(line), Some(t)) => problems.push(format!(
            "the guest panicked{during}: {line}; it did not reboot (panic= on --cmdline?), so qemu was killed after {}s",
            t.as_secs()
        )),
        (None, Some(t)) => problems.push(format!(
            "the guest hung{during}: qemu was killed after {}s",
            t.as_secs()
        )),
        (None, None) if !console.contains(guest::DONE) => problems.push(format!(
            "the guest stopped{during} before its script finished"
        )),
        (None, None) => {}
    }
    problems.extend(insmod_failures(modules_log));
    // Trouble before a panic (the oops that led to it, a warning); the panic's own dump is the
    // panic line's. The console and dmesg.txt share lines: each counts once.
    let before_panic = console
        .find("Kernel panic")
        .map_or(console, |i| &console[..i]);
    let mut trouble: Vec<&str> = Vec::new();
    let (a, b) = (
        check::kernel_trouble(before_panic),
        check::kernel_trouble(dmesg),
    );
    for l in a.iter().chain(&b).map(|l| untimed(l)) {
        if !trouble.contains(&l) {
            trouble.push(l);
        }
    }
    if let Some(first) = trouble.first() {
        let more = match trouble.len() {
            1 => String::new(),
            n => format!(" (+{} more lines)", n - 1),
        };
        problems.push(format!(
            "the kernel logged trouble: {first}{more} (console.log, dmesg.txt)"
        ));
    }
    problems
}

/// `tar --ignore-zeros`: every archive the guest appended to the disk, in order.
fn untar_all(disk: &Path, into: &Path) -> Result<()> {
    let o = Command::new("tar")
        .arg("--ignore-zeros")
        .arg("-xf")
        .arg(disk)
        .arg("-C")
        .arg(into)
        .output()
        .context("running tar")?;
    if !o.status.success() {
        bail!("tar: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(())
}

/// One line per module that did not load, with insmod's reason.
pub fn insmod_failures(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let m = l.strip_prefix("FAILED ")?;
            // insmod's complaint is the line just before.
            let why = i
                .checked_sub(1)
                .map(|j| lines[j])
                .filter(|p| p.contains("insmod"))
                .map(|p| format!(": {}", p.trim()))
                .unwrap_or_default();
            Some(format!("insmod {m} failed{why} (dmesg.txt may say more)"))
        })
        .collect()
}

/// The last line a command wrote before the tracer's own closing lines, if it wrote any; else
/// the tracer's last line when the tracer itself failed before the command ran.
pub fn last_words(output: &str) -> Option<&str> {
    let lines: Vec<&str> = output.lines().map(str::trim).collect();
    match lines.iter().position(|l| l.starts_with("tracer: wrote ")) {
        Some(end) => lines[..end].iter().rev().find(|l| !l.is_empty()).copied(),
        None => lines.iter().rev().find(|l| !l.is_empty()).copied(),
    }
}

/// A kernel log line without its `[   37.564007] ` time stamp.
pub fn untimed(line: &str) -> &str {
    let l = line.trim();
    match l.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        Some((stamp, rest)) if stamp.trim().parse::<f64>().is_ok() => rest,
        _ => l,
    }
}

/// One run's summary line and, if it failed, its problem; replays and reports its trace.
fn summarise(
    name: &str,
    dir: &Path,
    died: bool,
    tools: &report::Tools,
) -> (String, Option<String>) {
    if !dir.is_dir() {
        return (format!("{name}: not run (the guest ended before it)"), None);
    }
    let rc = check::read_text(&dir.join("rc")).trim().to_string();
    let ended = !rc.is_empty();
    let status = if !ended {
        "did not finish".to_string()
    } else if rc == guest::TIMED_OUT.to_string() {
        "timed out".to_string()
    } else {
        format!("exit {rc}")
    };
    let trace = dir.join("trace.arrows");
    let analysed = if std::fs::metadata(&trace).is_ok_and(|m| m.len() > 0) {
        report::replay(tools, &trace, dir)
            .and_then(|r| Ok((report::report(tools, &trace, &r, &dir.join("report"))?, r)))
    } else {
        Err(anyhow::anyhow!("no trace"))
    };
    let mut problem = None;
    let line = match &analysed {
        Ok((index, r)) => format!(
            "{name}: {status}, {} events, {} divergences, {} findings{}; report {}",
            r.events,
            r.divergences,
            r.findings,
            r.damage
                .as_ref()
                .map(|d| format!(" (trace {d})"))
                .unwrap_or_default(),
            index.display()
        ),
        Err(e) => {
            // A command the guest died in may leave nothing to replay: the crash is the problem.
            if ended || !died {
                problem = Some(format!("run {name}: {e:#}"));
            }
            format!("{name}: {status}, {e:#}; see {}", dir.display())
        }
    };
    if ended && rc != "0" {
        let output = check::read_text(&dir.join("output.log"));
        problem = Some(format!(
            "run {name} {}: {} ({})",
            if status == "timed out" {
                "timed out".to_string()
            } else {
                format!("exited {rc}")
            },
            last_words(&output).unwrap_or("it printed nothing"),
            dir.join("output.log").display()
        ));
    }
    (line, problem)
}

#[cfg(test)]
mod tests;
