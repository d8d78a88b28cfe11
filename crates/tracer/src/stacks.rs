//! Stacks: what `--stacks` asks the programs for, and turning the stack ids they record into
//! frames. Symbolization is blazesym's: kernel frames by kallsyms (`function+0xoff`, and the
//! module from `/proc/modules`; never an address), user frames by the task's mappings and the
//! ELF symbols of what is mapped (`function+0xoff (binary)`), or `build-id:HEX+0xoff` where
//! the binary is not readable.

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
};

use aya::maps::{MapData, StackTraceMap};
use blazesym::{
    Pid,
    normalize::{Normalizer, UserMeta},
    symbolize::{
        Input, Symbolized, Symbolizer,
        source::{Elf, Kernel, Process, Source},
    },
};
use pfnscope_abi::StackConfig;
use pfnscope_trace::Sym;

/// `--stacks` when not given: calls slower than this get their stacks.
pub const DEFAULT_THRESHOLD: &str = "100us";

/// What `--stacks[=THRESHOLD]` / `--no-stacks` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StackRequest {
    Off,
    /// Calls at least this slow, in ns.
    Slower(u64),
    /// Every call, and every entry-only fault.
    All,
}

impl StackRequest {
    /// The request, or the default with the one line that says why the given one was not
    /// usable: a bad threshold must not lose a recording.
    pub fn from_arg(stacks: Option<&str>, no_stacks: bool) -> (StackRequest, Option<String>) {
        if no_stacks {
            return (StackRequest::Off, None);
        }
        let given = stacks.unwrap_or(DEFAULT_THRESHOLD);
        match parse_threshold(given) {
            Ok(r) => (r, None),
            Err(why) => (
                parse_threshold(DEFAULT_THRESHOLD).expect("the default parses"),
                Some(format!(
                    "--stacks={given}: {why}; recording with the default {DEFAULT_THRESHOLD} (write e.g. --stacks=250us, --stacks=2ms, --stacks=all or --no-stacks)"
                )),
            ),
        }
    }

    pub fn config(&self) -> StackConfig {
        match self {
            StackRequest::Off => StackConfig::OFF,
            StackRequest::Slower(ns) => StackConfig {
                min_ns: *ns,
                ..StackConfig::OFF
            },
            StackRequest::All => StackConfig {
                min_ns: 0,
                at_entry: 1,
                _pad: [0; 7],
            },
        }
    }

    pub fn threshold_ns(&self) -> Option<u64> {
        match self {
            StackRequest::Off => None,
            StackRequest::Slower(ns) => Some(*ns),
            StackRequest::All => Some(0),
        }
    }
}

/// What the trace metadata says about stacks and off-CPU time: what was asked for, and what
/// this kernel's rungs could not give.
///
/// `requested`: `--stacks`'s value as given (None: not given), `no_stacks`: `--no-stacks`.
pub fn describe(
    requested: Option<&str>,
    no_stacks: bool,
    req: &StackRequest,
    bad: Option<String>,
    plan: &[pfnscope_trace::PlanEntry],
) -> pfnscope_trace::StacksMeta {
    let mode = |hook: &str| {
        plan.iter()
            .find(|p| p.hook == hook)
            .and_then(|p| p.mode.clone())
    };
    let mut missing: Vec<String> = bad.into_iter().collect();
    let fault_returns = matches!(
        mode("handle_mm_fault").as_deref(),
        Some("fentry" | "kprobe")
    );
    match req {
        StackRequest::Slower(_) if !fault_returns => missing.push(
            "faults have no return on this kernel (handle_mm_fault is served by the exceptions:page_fault_* tracepoints, entry only): a slow fault cannot be told from a fast one, so faults get no stacks; --stacks=all takes every fault's stacks at its entry, and off-CPU episodes keep their kernel stacks".into(),
        ),
        StackRequest::All if !fault_returns => missing.push(
            "faults have no return on this kernel: their stacks are taken at entry (the user call site; the kernel stack is the exception entry only)".into(),
        ),
        _ => {}
    }
    let offcpu = mode("sched:sched_switch").is_some();
    if !offcpu && plan.iter().any(|p| p.hook == "sched:sched_switch") {
        let why = plan
            .iter()
            .find(|p| p.hook == "sched:sched_switch")
            .and_then(|p| p.failures.last())
            .map(|f| f.error.clone())
            .unwrap_or_default();
        missing.push(format!(
            "off-CPU time is not measured: sched:sched_switch did not attach ({why})"
        ));
    }
    pfnscope_trace::StacksMeta {
        requested: if no_stacks {
            "off".into()
        } else {
            requested.unwrap_or(DEFAULT_THRESHOLD).into()
        },
        threshold_ns: req.threshold_ns(),
        at_entry: *req == StackRequest::All,
        offcpu,
        missing,
    }
}

/// `all`, or a duration with its unit: `500ns`, `100us` (or `µs`), `2ms`, `1s`.
pub fn parse_threshold(s: &str) -> Result<StackRequest, String> {
    let t = s.trim();
    if t == "all" {
        return Ok(StackRequest::All);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{t}` has no unit (ns, us, ms or s)"))?;
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{t}` is not a number with a unit"))?;
    let scale = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return Err(format!("unknown unit `{unit}` (use ns, us, ms or s)")),
    };
    let ns = v * scale;
    if !(ns.is_finite() && (1.0..=3600e9).contains(&ns)) {
        return Err(format!("`{t}` is not between 1ns and 1 hour"));
    }
    Ok(StackRequest::Slower(ns as u64))
}

/// Frames below these are the scheduler and generic waiting, not the reason for the wait.
const WAIT_MACHINERY: &[&str] = &[
    "__schedule",
    "schedule",
    "schedule_timeout",
    "schedule_hrtimeout_range",
    "schedule_preempt_disabled",
    "io_schedule",
    "io_schedule_timeout",
    "preempt_schedule",
    "preempt_schedule_common",
    "preempt_schedule_irq",
    "preempt_schedule_notrace",
    "__cond_resched",
    "_cond_resched",
    "bit_wait_io",
    "bit_wait",
    "__wait_on_bit",
    "__wait_on_bit_lock",
    "out_of_line_wait_on_bit",
    "__wait_for_common",
    "wait_for_completion",
    "wait_for_completion_timeout",
    "wait_for_completion_interruptible",
    "wait_for_completion_killable",
    "dma_fence_default_wait",
    "dma_fence_wait_timeout",
];

/// A frame's function, without its offset, module and compiler suffix (`.constprop.0`).
pub fn frame_function(frame: &str) -> &str {
    let f = frame.split(['+', ' ']).next().unwrap_or(frame);
    f.split('.').next().unwrap_or(f)
}

/// The blocking site of a kernel stack at switch-out (folded, outermost first): the innermost
/// frame that is not the scheduler's or a generic wait.
pub fn blocking_site(folded: &str) -> Option<&str> {
    folded
        .rsplit(';')
        .map(frame_function)
        .find(|f| !f.is_empty() && !WAIT_MACHINERY.contains(f))
}

/// Whether a kernel stack (folded) is inside the handling of a page fault. The exception stub
/// alone (`asm_exc_page_fault`) is not: it also reschedules on the way back to user mode, after
/// the fault was handled (`irqentry_exit_to_user_mode`).
pub fn in_fault(folded: &str) -> bool {
    folded
        .split(';')
        .map(frame_function)
        .any(|f| matches!(f, "handle_mm_fault" | "do_user_addr_fault"))
}

/// The tracer's own frames innermost on a kernel stack: the BPF program, the tracepoint or
/// trampoline that ran it.
fn is_probe_frame(function: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "bpf_prog_",
        "bpf_trace_run",
        "__bpf_trace_",
        "__traceiter_",
        "bpf_trampoline",
        "__bpf_prog_",
        "trace_call_bpf",
        "perf_trace_",
        "perf_trace_run_bpf_submit",
        "kprobe_",
        "kretprobe_",
        "__kretprobe_trampoline",
        "arch_rethook_",
        "rethook_",
        "kprobe_ftrace_handler",
        "ftrace_",
    ];
    PREFIXES.iter().any(|p| function.starts_with(p))
}

/// A loaded module's text, for naming the module of a kernel frame.
struct Module {
    start: u64,
    end: u64,
    name: String,
}

fn modules() -> Vec<Module> {
    let text = std::fs::read_to_string("/proc/modules").unwrap_or_default();
    let mut out: Vec<Module> = text
        .lines()
        .filter_map(|l| {
            // name size refcount deps state address [taint]
            let f: Vec<&str> = l.split_whitespace().collect();
            let size: u64 = f.get(1)?.parse().ok()?;
            let start = u64::from_str_radix(f.get(5)?.trim_start_matches("0x"), 16).ok()?;
            (start != 0).then(|| Module {
                start,
                end: start + size,
                name: f[0].to_string(),
            })
        })
        .collect();
    out.sort_by_key(|m| m.start);
    out
}

/// The stack map and everything needed to name its frames, with what was named already.
pub struct Stacks {
    map: StackTraceMap<MapData>,
    symbolizer: Symbolizer,
    normalizer: Normalizer,
    modules: Vec<Module>,
    kernel: HashMap<u32, Option<Sym>>,
    user: HashMap<(u32, u32), Option<Sym>>,
    /// Each process's executable mappings as last read while it ran, under the comm it had
    /// then (a new comm: an exec, read again).
    maps: HashMap<u32, (Sym, Vec<FileMap>)>,
    /// Binaries whose symbols could not be read: said once each.
    unreadable: BTreeSet<String>,
    quiet: bool,
}

impl Stacks {
    /// Reads kallsyms now, before the traced command runs: the first kernel stack otherwise
    /// held the collector up for the parse, long enough for short commands to exit before
    /// their user stacks could be named (their mappings go with them).
    pub fn new(map: StackTraceMap<MapData>, quiet: bool) -> Stacks {
        let symbolizer = Symbolizer::builder().enable_demangling(true).build();
        let _ = symbolizer.symbolize(&kernel_source(), Input::AbsAddr(&[0xffff_ffff_8100_0000]));
        Stacks {
            map,
            symbolizer,
            normalizer: Normalizer::builder().enable_build_ids(true).build(),
            modules: modules(),
            kernel: HashMap::new(),
            user: HashMap::new(),
            maps: HashMap::new(),
            unreadable: BTreeSet::new(),
            quiet,
        }
    }

    fn ips(&self, id: u32) -> Option<Vec<u64>> {
        let st = self.map.get(&id, 0).ok()?;
        let ips: Vec<u64> = st.frames().iter().map(|f| f.ip).collect();
        (!ips.is_empty()).then_some(ips)
    }

    /// The kernel stack an event names (`Event::kstack`, the id plus one), folded.
    pub fn kernel(&mut self, id_plus_one: u32) -> Option<Sym> {
        let id = id_plus_one.checked_sub(1)?;
        if let Some(s) = self.kernel.get(&id) {
            return *s;
        }
        let s = self.ips(id).map(|ips| Sym::from(self.kernel_frames(&ips)));
        self.kernel.insert(id, s);
        s
    }

    fn kernel_frames(&self, ips: &[u64]) -> String {
        let syms = self
            .symbolizer
            .symbolize(&kernel_source(), Input::AbsAddr(ips))
            .unwrap_or_default();
        let mut frames: Vec<String> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                let module = self
                    .modules
                    .iter()
                    .find(|m| m.start <= *ip && *ip < m.end)
                    .map(|m| format!(" [{}]", m.name))
                    .unwrap_or_default();
                match syms.get(i) {
                    Some(Symbolized::Sym(s)) => {
                        format!("{}+{:#x}{module}", clean(&s.name), s.offset)
                    }
                    // Never the address: the trace must not leak the kernel's layout.
                    _ => format!("[unknown]{module}"),
                }
            })
            .collect();
        // Innermost first: the probe's own frames go.
        let keep = frames
            .iter()
            .position(|f| !is_probe_frame(frame_function(f)))
            .unwrap_or(frames.len());
        fold(frames.split_off(keep))
    }

    /// An event of process `pid`, named `comm`, was decoded: the first of the process (or of
    /// its new program, after an exec) reads its mappings while it still runs. A short command
    /// is often gone by the time its last stacks are decoded, and its mappings with it.
    pub fn saw(&mut self, pid: u32, comm: Sym) {
        if self.maps.get(&pid).is_some_and(|(c, _)| *c == comm) {
            return;
        }
        if let Some(maps) = read_maps(pid) {
            self.maps.insert(pid, (comm, maps));
        }
    }

    /// The user stack an event names, of the process `pid`, folded.
    pub fn user(&mut self, pid: u32, id_plus_one: u32) -> Option<Sym> {
        let id = id_plus_one.checked_sub(1)?;
        if let Some(s) = self.user.get(&(pid, id)) {
            return *s;
        }
        let s = self.ips(id).map(|ips| {
            let cached = self.maps.get(&pid).map(|(_, m)| m.as_slice());
            let (folded, unreadable) =
                user_frames(&self.symbolizer, &self.normalizer, pid, &ips, cached);
            for path in unreadable {
                if self.unreadable.insert(path.clone()) && !self.quiet {
                    eprintln!(
                        "tracer: stacks: no symbols for {path}: its frames are build-id and file offset"
                    );
                }
            }
            Sym::from(folded)
        });
        self.user.insert((pid, id), s);
        s
    }
}

/// An executable file mapping of a process (`/proc/PID/maps`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileMap {
    start: u64,
    end: u64,
    /// File offset of `start`.
    offset: u64,
    path: PathBuf,
}

/// The executable file mappings of a running process; None when it is gone.
fn read_maps(pid: u32) -> Option<Vec<FileMap>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    Some(parse_maps(&text))
}

/// `start-end perms offset dev inode path` (fs/proc/task_mmu.c `show_map_vma`), hex numbers;
/// only executable mappings of files that still exist.
fn parse_maps(text: &str) -> Vec<FileMap> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            let (range, perms, offset) = (f.next()?, f.next()?, f.next()?);
            let path = f.nth(2)?;
            if !perms.contains('x') || !path.starts_with('/') || l.ends_with(" (deleted)") {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some(FileMap {
                start: u64::from_str_radix(a, 16).ok()?,
                end: u64::from_str_radix(b, 16).ok()?,
                offset: u64::from_str_radix(offset, 16).ok()?,
                path: PathBuf::from(path),
            })
        })
        .collect()
}

/// How a user frame names its binary: the file name of its path.
fn binary_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A frame of a process that is gone, named from the mappings read while it ran: the binary's
/// ELF symbols at the address's file offset, or the binary and that offset.
fn frame_from_maps(symbolizer: &Symbolizer, maps: &[FileMap], ip: u64) -> Option<String> {
    let m = maps.iter().find(|m| m.start <= ip && ip < m.end)?;
    let off = ip - m.start + m.offset;
    let binary = binary_name(&m.path);
    let src = Source::Elf(Elf::new(&m.path));
    Some(
        match symbolizer.symbolize_single(&src, Input::FileOffset(off)) {
            Ok(Symbolized::Sym(s)) => format!("{}+{:#x} ({binary})", clean(&s.name), s.offset),
            _ => format!("{binary}+{off:#x}"),
        },
    )
}

/// User frames of process `pid`, folded, and the binaries whose symbols could not be read.
/// Where the process is gone, `cached` (its mappings as read while it ran) still names them.
fn user_frames(
    symbolizer: &Symbolizer,
    normalizer: &Normalizer,
    pid: u32,
    ips: &[u64],
    cached: Option<&[FileMap]>,
) -> (String, Vec<String>) {
    let src = Source::Process(Process::new(Pid::from(pid)));
    let syms = symbolizer.symbolize(&src, Input::AbsAddr(ips));
    if let Err(e) = &syms {
        log::debug!("symbolizing pid {pid}: {e}");
    }
    let syms = syms.unwrap_or_default();
    let norm = normalizer.normalize_user_addrs(Pid::from(pid), ips).ok();
    let mut unreadable = vec![];
    {
        let mut frames = Vec::with_capacity(ips.len());
        for (i, ip) in ips.iter().enumerate() {
            let elf = norm.as_ref().and_then(|n| {
                let (off, meta) = n.outputs.get(i)?;
                match n.meta.get(*meta)? {
                    UserMeta::Elf(e) => Some((*off, e)),
                    _ => None,
                }
            });
            let binary = elf.map(|(_, e)| binary_name(&e.path)).unwrap_or_default();
            match syms.get(i) {
                Some(Symbolized::Sym(s)) => {
                    frames.push(format!("{}+{:#x} ({binary})", clean(&s.name), s.offset))
                }
                _ => match elf {
                    Some((off, e)) => {
                        unreadable.push(e.path.display().to_string());
                        let id = e
                            .build_id
                            .as_ref()
                            .map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>())
                            .unwrap_or_else(|| binary.clone());
                        frames.push(format!("build-id:{id}+{off:#x}"));
                    }
                    // The process is gone, or the address is in no file (JIT, anonymous).
                    None => frames.push(
                        cached
                            .and_then(|m| frame_from_maps(symbolizer, m, *ip))
                            .unwrap_or_else(|| format!("{ip:#x}")),
                    ),
                },
            }
        }
        (fold(frames), unreadable)
    }
}

/// The running kernel's symbols from kallsyms (no vmlinux search: debug info is not needed for
/// function names, and the search touches the disk).
fn kernel_source() -> Source<'static> {
    Source::Kernel(Kernel {
        vmlinux: blazesym::MaybeDefault::None,
        debug_syms: false,
        ..Default::default()
    })
}

/// Frames innermost first, as the kernel gives them, to the folded form: outermost first,
/// joined by `;`.
fn fold(mut frames: Vec<String>) -> String {
    frames.reverse();
    frames.join(";")
}

/// `;` separates frames: a demangled C++ name may hold one.
fn clean(name: &str) -> String {
    name.replace(';', ":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_function_of_ours() -> u64 {
        a_function_of_ours as *const () as u64
    }

    /// blazesym names a function of this very test binary from its mappings and ELF symbols.
    #[test]
    fn user_frames_are_named_from_the_process_mappings() {
        let ip = a_function_of_ours() + 4;
        let sym = Symbolizer::builder().enable_demangling(true).build();
        let norm = Normalizer::builder().enable_build_ids(true).build();
        let (folded, unreadable) = user_frames(&sym, &norm, std::process::id(), &[ip], None);
        assert!(folded.contains("a_function_of_ours+0x4 ("), "{folded}");
        assert!(unreadable.is_empty(), "{unreadable:?}");
    }

    /// A process that exited before its stack was decoded is named from the mappings read
    /// while it ran: here a child running this test binary, which prints where one of its
    /// functions is and exits. Without the maps, the frame is only its address.
    #[test]
    fn a_gone_process_is_named_from_the_mappings_read_while_it_ran() {
        // The child: say where the function is, then live a little and exit.
        if let Some(out) = std::env::var_os("PFNSCOPE_FN_OUT") {
            std::fs::write(out, format!("{:x}", a_function_of_ours() + 4)).unwrap();
            std::thread::sleep(std::time::Duration::from_secs(2));
            return;
        }
        let out = std::env::temp_dir().join(format!("pfnscope-fn-{}", std::process::id()));
        let _ = std::fs::remove_file(&out);
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "stacks::tests::a_gone_process_is_named_from_the_mappings_read_while_it_ran",
                "--test-threads=1",
            ])
            .env("PFNSCOPE_FN_OUT", &out)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let ip = loop {
            if let Ok(hex) = std::fs::read_to_string(&out)
                && let Ok(ip) = u64::from_str_radix(hex.trim(), 16)
            {
                break ip;
            }
            assert!(started.elapsed().as_secs() < 30, "the child never said");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let maps = read_maps(child.id()).expect("the child runs");
        assert!(child.wait().unwrap().success());
        let _ = std::fs::remove_file(&out);
        let (sym, norm) = (
            Symbolizer::builder().enable_demangling(true).build(),
            Normalizer::builder().enable_build_ids(true).build(),
        );
        let (gone, _) = user_frames(&sym, &norm, child.id(), &[ip], None);
        assert_eq!(
            gone,
            format!("{ip:#x}"),
            "the child is gone: no name without its maps"
        );
        let (named, _) = user_frames(&sym, &norm, child.id(), &[ip], Some(&maps));
        assert!(named.contains("a_function_of_ours+0x4 ("), "{named}");
    }

    #[test]
    fn maps_lines_as_the_kernel_prints_them() {
        let text = "\
00400000-00401000 r--p 00000000 fe:01 123  /usr/bin/workload
00401000-00480000 r-xp 00001000 fe:01 123  /usr/bin/workload
7f0000000000-7f0000021000 r-xp 00002000 fe:01 77  /lib/x86_64-linux-gnu/libc.so.6 (deleted)
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0  [stack]
7ffd00100000-7ffd00102000 r-xp 00000000 00:00 0  [vdso]
";
        assert_eq!(
            parse_maps(text),
            [FileMap {
                start: 0x401000,
                end: 0x480000,
                offset: 0x1000,
                path: "/usr/bin/workload".into()
            }]
        );
    }

    #[test]
    fn thresholds() {
        assert_eq!(parse_threshold("100us"), Ok(StackRequest::Slower(100_000)));
        assert_eq!(parse_threshold("2ms"), Ok(StackRequest::Slower(2_000_000)));
        assert_eq!(
            parse_threshold("1.5s"),
            Ok(StackRequest::Slower(1_500_000_000))
        );
        assert_eq!(parse_threshold("500ns"), Ok(StackRequest::Slower(500)));
        assert_eq!(parse_threshold("all"), Ok(StackRequest::All));
        for bad in ["100", "fast", "10 parsecs", "0ns", "-5us", "1e3us", ""] {
            assert!(parse_threshold(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_threshold_keeps_the_default_and_says_so() {
        let (r, why) = StackRequest::from_arg(Some("10 parsecs"), false);
        assert_eq!(r, StackRequest::Slower(100_000));
        let why = why.unwrap();
        assert!(
            why.contains("--stacks=10 parsecs") && why.contains("default 100us"),
            "{why}"
        );
        assert_eq!(
            StackRequest::from_arg(None, true),
            (StackRequest::Off, None)
        );
        assert_eq!(
            StackRequest::from_arg(None, false),
            (StackRequest::Slower(100_000), None)
        );
        assert_eq!(StackRequest::Off.config().min_ns, u64::MAX);
        assert_eq!(StackRequest::All.config().at_entry, 1);
    }

    #[test]
    fn blocking_sites_skip_the_scheduler() {
        // As the 6.12 guest records a cold page-cache fault (outermost first).
        let folio = "asm_exc_page_fault+0x26;exc_page_fault+0x7e;do_user_addr_fault+0x1d0;handle_mm_fault+0x9a;__handle_mm_fault+0x5e2;do_fault+0x2f1;__do_fault+0x36;filemap_fault+0x5b1;__folio_lock_or_retry+0x10e;folio_wait_bit_common+0x13d;io_schedule+0x46;schedule+0x27;__schedule+0x3c2";
        assert_eq!(blocking_site(folio), Some("folio_wait_bit_common"));
        assert!(in_fault(folio));
        let rwsem = "asm_exc_page_fault+0x26;exc_page_fault+0x7e;do_user_addr_fault+0x2b5;lock_mm_and_find_vma+0x9c;down_read+0x5c;rwsem_down_read_slowpath.constprop.0+0x27b;schedule_preempt_disabled+0x15;schedule+0x27;__schedule+0x3c2";
        assert_eq!(blocking_site(rwsem), Some("rwsem_down_read_slowpath"));
        let fence = "ttm_bo_vm_fault+0x53 [ttm];dma_resv_wait_timeout+0x71;dma_fence_default_wait+0x1c2;schedule_timeout+0x9e;schedule+0x27;__schedule+0x3c2";
        assert_eq!(blocking_site(fence), Some("dma_resv_wait_timeout"));
        let after = "asm_exc_page_fault+0x22;irqentry_exit_to_user_mode+0x11f;schedule+0x23;__schedule+0x628";
        assert!(!in_fault(after));
        let syscall = "entry_SYSCALL_64+0x76;do_syscall_64+0x82;__x64_sys_nanosleep+0x9b;hrtimer_nanosleep+0x8d;do_nanosleep+0x6a;schedule+0x27;__schedule+0x3c2";
        assert!(!in_fault(syscall));
    }
}
