//! `tracer record`: bring the probes up, start (or find) what to trace, stream to the file,
//! stop on the command's exit, a duration, SIGINT or SIGTERM, and say what was recorded.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, anyhow, bail};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf, StackTraceMap};
use pfnscope_abi::{COMM_LEN, Filter};
use pfnscope_trace::{
    Existing, TraceMeta, TraceWriter,
    stream::{StreamId, Token},
};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::{
    cli::RecordArgs,
    collector::{Collector, Recorded, monotonic_ns},
    decode::{Decoder, PAT_TABLE},
    destination::Destination,
    send::{self, Greeted},
    session::{self, Setup},
    sink::{Delivered, Sink},
    stacks::{StackRequest, Stacks},
};

/// Why the recording ended.
enum Stop {
    Signal(&'static str),
    Duration,
    ChildExited(i32),
    TargetGone,
}

pub fn run(args: RecordArgs) -> anyhow::Result<i32> {
    // SIGINT and SIGTERM are caught from the first instant: loading the programs takes most
    // of a second, and a signal then killed the tracer instead of ending the recording.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut signals = {
        let _in_runtime = rt.enter();
        Signals::new()?
    };
    let target = Target::from_args(&args)?;
    // Before any probe is attached: a refusal then costs nothing.
    let existing = Existing::replace_if(args.force);
    let mut greeted = check_destination(&args, existing)?;
    let hooks = match &args.hooks {
        Some(list) => Some(session::parse_hooks(list)?),
        None => None,
    };
    let mut filter = Filter::ALL;
    filter.self_tgid = std::process::id();
    match &target {
        Target::Pid(_) | Target::Command(..) => {
            filter.by_tgid = 1;
            filter.follow_children = 1;
        }
        Target::Comm(c) => {
            filter.by_comm = 1;
            filter.comm[..c.len()].copy_from_slice(c.as_bytes());
        }
        Target::All => {}
    }
    if let Some((lo, hi)) = args.addr_range {
        filter.addr_lo = lo;
        filter.addr_hi = hi;
    }
    let (stack_request, bad_stacks) =
        StackRequest::from_arg(args.stacks.as_deref(), args.no_stacks);
    if let Some(why) = &bad_stacks {
        eprintln!("tracer: {why}");
    }
    let setup = Setup {
        stacks: stack_request.config(),
        hooks: hooks.as_deref(),
        filter,
        vma_flags: args.vma_flags.clone().map(|v| v.0).unwrap_or_default(),
        ring_bytes: args.buffer_mb << 20,
    };
    let mut s = session::start(&setup)?;
    if !args.quiet {
        report_unattached(&s.plan, args.hooks.is_some());
    }

    let mut tgids: BpfHashMap<MapData, u32, u8> = BpfHashMap::try_from(
        s.ebpf
            .take_map("TGIDS")
            .ok_or_else(|| anyhow!("eBPF object lacks TGIDS"))?,
    )?;
    let mut child = None;
    match &target {
        Target::Pid(pid) => tgids
            .insert(pid, 1, 0)
            .context("adding the pid to the in-kernel filter")?,
        Target::Command(path, cmd) => {
            // The trace owns standard output: the command's goes to standard error.
            let c = GatedChild::spawn(path, cmd, args.output == Destination::Stdout)?;
            tgids
                .insert(c.pid as u32, 1, 0)
                .context("adding the command to the in-kernel filter")?;
            child = Some(c);
        }
        _ => {}
    }

    let stacks_meta = crate::stacks::describe(
        args.stacks.as_deref(),
        args.no_stacks,
        &stack_request,
        bad_stacks,
        &s.plan,
    );
    if !args.quiet {
        for m in &stacks_meta.missing {
            eprintln!("tracer: stacks: {m}");
        }
    }
    let u = &s.uname;
    let iomem = crate::system::iomem();
    let system_ram = crate::system::system_ram(&iomem);
    // After the probes attached and before the command runs: what changes from here on is in
    // the trace, what is older is in the snapshot.
    let start_state = crate::start_state::snapshot(&iomem, &system_ram);
    if !args.quiet {
        for n in &start_state.notes {
            eprintln!("tracer: start state: {n}");
        }
    }
    let meta = TraceMeta {
        tool: format!("pfnscope tracer {}", env!("CARGO_PKG_VERSION")),
        kernel_release: u.release.clone(),
        kernel_version: u.version.clone(),
        host: u.nodename.clone(),
        command_line: std::env::args().collect(),
        clock: "CLOCK_MONOTONIC (bpf_ktime_get_ns)".into(),
        started_unix_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        started_monotonic_ns: monotonic_ns(),
        hook_plan: s.plan.clone(),
        offsets: s.offsets.clone(),
        vm_flag_bits: s.vm_flag_bits.clone(),
        pat_table: PAT_TABLE.0.iter().map(|c| c.name().to_string()).collect(),
        filters: describe_filters(&args, &target),
        ring_buffer_bytes: (args.buffer_mb as u64) << 20,
        system_ram,
        zero_pfn: crate::system::zero_pfn(&s.kallsyms, &iomem),
        start_state: Some(start_state),
        stacks: Some(stacks_meta),
        ..Default::default()
    };
    let sink = match &args.output {
        Destination::File(path) => Sink::File(TraceWriter::create_with(path, &meta, existing)?),
        Destination::Stdout => Sink::stdout(&meta)?,
        Destination::Tcp(_) | Destination::Virtio(_) => {
            Sink::collector(greeted.take().expect("greeted before loading"), &meta)?
        }
    };
    let ring = RingBuf::try_from(
        s.ebpf
            .take_map("EVENTS")
            .ok_or_else(|| anyhow!("eBPF object lacks EVENTS"))?,
    )?;
    let counters: PerCpuArray<MapData, u64> = PerCpuArray::try_from(
        s.ebpf
            .take_map("COUNTERS")
            .ok_or_else(|| anyhow!("eBPF object lacks COUNTERS"))?,
    )?;
    let mut decoder = Decoder::new(
        std::mem::take(&mut s.attached),
        std::mem::take(&mut s.kallsyms),
    );
    if let Some(map) = s.ebpf.take_map("STACKS") {
        decoder.set_stacks(Stacks::new(StackTraceMap::try_from(map)?, args.quiet));
    }
    let collector = Collector {
        ring,
        counters,
        decoder,
        sink,
        status: !args.quiet,
        ebpf_log: s.ebpf_log.take(),
        // Raw: `s` keeps the programs loaded until the collector is done.
        programs: s
            .ebpf
            .programs()
            .filter_map(|(_, p)| p.fd().ok())
            .map(|fd| std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(fd)))
            .collect(),
    };

    let watched_pid = match target {
        Target::Pid(p) => Some(p),
        _ => None,
    };
    let (result, stop) = rt.block_on(async {
        if let Some(c) = &child {
            // A signal that came while the probes were coming up: the command is not let go,
            // and the file is finished empty. (The runtime sees a signal once it runs.)
            if let Ok(name) = tokio::time::timeout(Duration::from_millis(10), signals.recv()).await
            {
                c.abort();
                return Ok(collector.run(std::future::ready(Stop::Signal(name))).await);
            }
            c.release()?;
        }
        let watcher = wait_for_stop(
            signals,
            args.duration,
            child.as_ref().map(|c| c.pid),
            watched_pid,
        );
        Ok::<_, anyhow::Error>(collector.run(watcher).await)
    })?;
    // Detach before the summary: dropping the object unloads every program.
    drop(s);
    // Stopped by a signal while the command runs: it goes too (as `perf record` does), or the
    // runtime's blocking wait for it would keep the tracer alive after its file was finished.
    if let (Some(Stop::Signal(_)), Some(c)) = (&stop, &child) {
        end_command(c.pid);
    }

    let (summary, delivered) = match result {
        Ok(x) => x,
        Err((e, summary)) => {
            print_summary(&summary, &args.output, None);
            bail!("{e}");
        }
    };
    print_summary(&summary, &args.output, Some(&delivered));
    if let Delivered::Stream(d) = &delivered
        && let Some(why) = stream_trouble(d)
    {
        // Its own status: the recording is kept, but not all of it where it was sent.
        eprintln!("tracer: {why}");
        return Ok(STREAM_INCOMPLETE);
    }
    Ok(match stop {
        Some(Stop::ChildExited(code)) if code != 0 => {
            eprintln!("tracer: the traced command exited with status {code}");
            code
        }
        Some(Stop::Signal(name)) => {
            eprintln!("tracer: stopped by {name}");
            0
        }
        _ => 0,
    })
}

/// One line per distinct reason, not one per hook: on a kernel without fentry and kprobes every
/// function hook fails the same way. Hooks this kernel simply lacks are only worth a word when
/// they were asked for by name.
fn report_unattached(plan: &[pfnscope_trace::PlanEntry], explicit: bool) {
    let mut by_reason: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for p in plan.iter().filter(|p| p.mode.is_none()) {
        let Some(last) = p.failures.last() else {
            continue;
        };
        if last.mode == "resolve" && !explicit {
            continue;
        }
        let reasons: Vec<String> = p
            .failures
            .iter()
            .map(|f| format!("{}: {}", f.mode, f.error.split(" [").next().unwrap_or("")))
            .collect();
        by_reason
            .entry(reasons.join("; "))
            .or_default()
            .push(&p.hook);
    }
    for (reason, hooks) in by_reason {
        eprintln!("tracer: not attached ({}): {reason}", hooks.join(", "));
    }
    for p in plan.iter().filter(|p| !p.served_by.is_empty()) {
        eprintln!(
            "tracer: {} is served by {} (no return values or latencies in this mode)",
            p.hook,
            p.served_by.join(" + ")
        );
    }
}

enum Target {
    Pid(u32),
    Comm(String),
    All,
    /// The program (found before anything is loaded) and the command line.
    Command(PathBuf, Vec<String>),
}

impl Target {
    fn from_args(a: &RecordArgs) -> anyhow::Result<Target> {
        let chosen = a.pid.is_some() as u8
            + a.comm.is_some() as u8
            + a.all as u8
            + !a.command.is_empty() as u8;
        if chosen > 1 {
            bail!("choose one of -p PID, --comm NAME, -a, or -- CMD");
        }
        Ok(if let Some(p) = a.pid {
            if !Path::new(&format!("/proc/{p}")).exists() {
                bail!("no process with pid {p}");
            }
            Target::Pid(p)
        } else if let Some(c) = &a.comm {
            debug_assert!(c.len() < COMM_LEN);
            Target::Comm(c.clone())
        } else if a.all {
            Target::All
        } else if !a.command.is_empty() {
            Target::Command(resolve_command(&a.command[0])?, a.command.clone())
        } else {
            bail!("say what to trace: -p PID, --comm NAME, -a (everything), or -- CMD ARGS...");
        })
    }
}

fn describe_filters(a: &RecordArgs, t: &Target) -> Vec<String> {
    let mut f = vec![match t {
        Target::Pid(p) => format!("pid {p} and its children"),
        Target::Comm(c) => format!("comm == {c}"),
        Target::All => "all processes".into(),
        Target::Command(_, c) => format!("command `{}` and its children", c.join(" ")),
    }];
    if let Some(v) = &a.vma_flags {
        f.push(format!("vma flags any of {}", v.0.join("|")));
    }
    if let Some((lo, hi)) = a.addr_range {
        f.push(format!("address in [{lo:#x}, {hi:#x})"));
    }
    if let Some(h) = &a.hooks {
        f.push(format!("hooks {h}"));
    }
    f
}

/// SIGINT and SIGTERM, caught from when the tracer starts.
struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    /// Needs the runtime entered.
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("catching SIGINT")?,
            term: signal(SignalKind::terminate()).context("catching SIGTERM")?,
        })
    }

    /// The next signal's name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

async fn wait_for_stop(
    mut signals: Signals,
    duration: Option<Duration>,
    child: Option<libc::pid_t>,
    pid: Option<u32>,
) -> Stop {
    let sleep = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let child_exit = async {
        match child {
            Some(pid) => tokio::task::spawn_blocking(move || wait_child(pid))
                .await
                .unwrap_or(1),
            None => std::future::pending().await,
        }
    };
    let target_gone = async {
        match pid {
            Some(p) => loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if !Path::new(&format!("/proc/{p}")).exists() {
                    break;
                }
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        name = signals.recv() => Stop::Signal(name),
        _ = sleep => Stop::Duration,
        code = child_exit => Stop::ChildExited(code),
        _ = target_gone => Stop::TargetGone,
    }
}

/// SIGTERM to the traced command, SIGKILL if it is still there 5 s later. The runtime's
/// blocking `waitpid` may reap it first: then ours fails with ECHILD, and it is gone as well.
fn end_command(pid: libc::pid_t) {
    let gone = || {
        let mut status = 0;
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        r == pid || r < 0
    };
    eprintln!("tracer: sending SIGTERM to the traced command (pid {pid})");
    unsafe { libc::kill(pid, libc::SIGTERM) };
    for _ in 0..50 {
        if gone() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("tracer: the traced command (pid {pid}) ignored SIGTERM for 5 s: sending SIGKILL");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    while !gone() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_child(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 1;
        }
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

/// A forked child held before `exec` until its pid is in the in-kernel filter, so not one of
/// its faults is missed. (std's `Command::spawn` waits for the exec, so it cannot be gated.)
struct GatedChild {
    pid: libc::pid_t,
    gate: libc::c_int,
}

impl GatedChild {
    /// `stdout_to_stderr`: the command's standard output goes where its standard error goes.
    fn spawn(path: &Path, cmd: &[String], stdout_to_stderr: bool) -> anyhow::Result<GatedChild> {
        let prog = CString::new(path.as_os_str().as_bytes())?;
        let argv: Vec<CString> = cmd
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut fds = [0; 2];
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            bail!("pipe2: {}", std::io::Error::last_os_error());
        }
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        if pid == 0 {
            // Child: only async-signal-safe calls from here to exec.
            unsafe {
                libc::close(fds[1]);
                let mut b = 0u8;
                let n = libc::read(fds[0], &mut b as *mut u8 as *mut libc::c_void, 1);
                if n != 1 {
                    libc::_exit(127);
                }
                if stdout_to_stderr {
                    libc::dup2(2, 1);
                }
                libc::execv(prog.as_ptr(), argv_ptrs.as_ptr());
                libc::_exit(127);
            }
        }
        unsafe { libc::close(fds[0]) };
        Ok(GatedChild { pid, gate: fds[1] })
    }

    /// Ends the held child without letting it run: with its gate closed it exits before
    /// `exec`.
    fn abort(&self) {
        unsafe { libc::close(self.gate) };
        wait_child(self.pid);
    }

    fn release(&self) -> anyhow::Result<()> {
        let b = 1u8;
        let n = unsafe { libc::write(self.gate, &b as *const u8 as *const libc::c_void, 1) };
        unsafe { libc::close(self.gate) };
        if n != 1 {
            bail!(
                "releasing the traced command: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }
}

fn resolve_command(name: &str) -> anyhow::Result<PathBuf> {
    let is_exec = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map(|c| unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0)
            .unwrap_or(false)
            && p.is_file()
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        if is_exec(&p) {
            return Ok(p);
        }
        bail!("cannot run {name}: not an executable file");
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if is_exec(&p) {
            return Ok(p);
        }
    }
    bail!("command not found: {name}")
}

/// Checks where the trace goes, before anything is loaded: a file that may be written,
/// standard output that is no terminal, or a collector that answers and takes the token (the
/// link comes back, greeted).
fn check_destination(args: &RecordArgs, existing: Existing) -> anyhow::Result<Option<Greeted>> {
    if args.token_file.is_some() && !args.output.is_collector() {
        bail!(
            "--token-file is for a collector (-o tcp://HOST:PORT or virtio:NAME), not for {}",
            args.output
        );
    }
    match &args.output {
        Destination::File(path) => {
            pfnscope_trace::output::check(path, existing, &[])?;
            Ok(None)
        }
        Destination::Stdout => {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                bail!(
                    "-o - writes the binary trace to standard output, which is a terminal: redirect it (> t.arrows) or pipe it"
                );
            }
            Ok(None)
        }
        Destination::Tcp(_) | Destination::Virtio(_) => {
            let Some(token_file) = &args.token_file else {
                bail!(
                    "{} needs the collector's token: add --token-file FILE (the file `tracer collect --token-file` was given)",
                    args.output
                );
            };
            let token = Token::read(token_file)?;
            let dir = &args.fallback_dir;
            let probe = dir.join(".pfnscope-fallback-check.arrows");
            pfnscope_trace::output::check(&probe, Existing::Replace, &[])
                .map_err(|e| anyhow!("--fallback-dir {}: {e}", dir.display()))?;
            let plan = send::Plan {
                dest: args.output.clone(),
                token,
                fallback_dir: dir.clone(),
                retry_for: args.retry_for,
                id: StreamId::random(),
            };
            Ok(Some(send::greet(plan).map_err(|e| anyhow!(e))?))
        }
    }
}

/// `tracer record`'s exit status when the collector did not get the whole trace: the rest is
/// in the local file the message names (or counted as lost).
pub const STREAM_INCOMPLETE: i32 = 3;

/// What went wrong with a stream, if anything: the rest in a local file, or events lost.
fn stream_trouble(d: &send::Delivery) -> Option<String> {
    if d.complete {
        return None;
    }
    let mut why = format!(
        "the stream to {} is incomplete: the collector has {} of the {} events",
        d.dest, d.acked_events, d.events
    );
    if let Some((path, first, events)) = &d.fallback {
        why.push_str(&format!(
            "; {events} events from batch {first} on are in {}",
            path.display()
        ));
    }
    if d.lost_events > 0 {
        why.push_str(&format!("; {} events are lost", d.lost_events));
    }
    if let Some(w) = &d.why_fallback {
        why.push_str(&format!(" ({w})"));
    }
    Some(why)
}

fn print_summary(s: &Recorded, dest: &Destination, delivered: Option<&Delivered>) {
    match (dest, delivered) {
        (Destination::File(path), _) => {
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            eprintln!(
                "tracer: wrote {} events to {} ({:.1} MiB) in {:.1} s",
                s.events,
                path.display(),
                size as f64 / (1 << 20) as f64,
                s.elapsed.as_secs_f64()
            );
        }
        (_, Some(Delivered::Stream(d))) => eprintln!(
            "tracer: streamed {} events in {} batches to {} in {:.1} s; the collector has {} of them on disk{}",
            d.events,
            d.batches,
            d.dest,
            s.elapsed.as_secs_f64(),
            d.acked_events,
            if d.complete {
                ", and the end of the stream"
            } else {
                ""
            }
        ),
        _ => eprintln!(
            "tracer: wrote {} events to {dest} in {:.1} s",
            s.events,
            s.elapsed.as_secs_f64()
        ),
    }
    for (hook, n) in &s.per_hook {
        eprintln!("  {hook:<45} {n:>10}");
    }
    let drops: Vec<String> = s.per_cpu.iter().map(|c| c.dropped.to_string()).collect();
    let unpaired: u64 = s.per_cpu.iter().map(|c| c.unpaired).sum();
    eprintln!(
        "  dropped: {} (per CPU: {}); unpaired returns: {unpaired}",
        s.dropped(),
        drops.join(" ")
    );
    if s.dropped() > 0 {
        eprintln!(
            "  events were lost: raise --buffer-mb or narrow the trace (--hooks, --vma-flags, -p)"
        );
    }
}
