//! Bringing the probes up: privileges, BTF, hook resolution, load, the attach ladder per hook.
//! `tracer record` and `tracer doctor` share this, so doctor reports exactly what record would do.

use std::{collections::BTreeMap, path::PathBuf};

use aya::Ebpf;
use pfnscope_abi::{
    Filter, Hook, HookSpec, Mode, StackConfig,
    hook::{HOOKS, HookDef},
};
use pfnscope_trace::PlanEntry;

use crate::{
    attach::{self, LoadError},
    btf::{BtfError, KernelBtf},
    plan::{self, Resolved},
    system::{self, Kallsyms, Uname},
};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("tracing needs root (or CAP_BPF and CAP_PERFMON): run it with sudo")]
    Unprivileged,
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("{0}")]
    Layout(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("unknown hook `{0}`; known hooks: {1}")]
    UnknownHook(String, String),
    #[error(
        "none of the requested hooks could be attached on this kernel; run `tracer doctor` to see why"
    )]
    NothingAttached,
}

/// Parses `--hooks a,b,c` (names as in `tracer doctor`, tracepoints with or without group).
pub fn parse_hooks(list: &str) -> Result<Vec<&'static HookDef>, SessionError> {
    let mut out: Vec<&'static HookDef> = vec![];
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let def = Hook::parse(name).map(Hook::def).ok_or_else(|| {
            let known: Vec<&str> = Hook::all().map(Hook::name).collect();
            SessionError::UnknownHook(name.to_string(), known.join(", "))
        })?;
        if !out.iter().any(|d| d.hook == def.hook) {
            out.push(def);
        }
    }
    Ok(out)
}

pub struct Session {
    pub ebpf: Ebpf,
    /// Warnings the programs raise (a leaked task stack, an evicted entry), read by the collector.
    pub ebpf_log: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    pub uname: Uname,
    pub plan: Vec<PlanEntry>,
    /// Hooks that attached, as resolved for this kernel (the decoder's input).
    pub attached: Vec<Resolved>,
    pub kallsyms: Kallsyms,
    pub offsets: BTreeMap<String, u32>,
    pub vm_flag_bits: BTreeMap<String, u64>,
    pub tracefs: Option<PathBuf>,
}

/// What to bring up.
pub struct Setup<'a> {
    /// None: every hook in the table.
    pub hooks: Option<&'a [&'static HookDef]>,
    pub filter: Filter,
    /// vm_flags names (`VM_PFNMAP`, ...) for the in-kernel vma filter; bits come from BTF.
    pub vma_flags: Vec<String>,
    pub ring_bytes: u32,
    /// When the programs take stacks (`--stacks`).
    pub stacks: StackConfig,
}

pub fn start(setup: &Setup) -> Result<Session, SessionError> {
    if !system::privileged() {
        return Err(SessionError::Unprivileged);
    }
    let kbtf = KernelBtf::from_sys()?;
    let aya_btf = aya::Btf::from_sys_fs()
        .map_err(|e| SessionError::Layout(format!("kernel BTF: {}", attach::chain(&e))))?;
    let tracefs = system::tracefs();
    let kallsyms = Kallsyms::load();
    let (offsets, named_offsets) =
        plan::offsets(&kbtf, &kallsyms, tracefs.as_deref()).map_err(SessionError::Layout)?;
    let vm_flag_bits = plan::vm_flag_bits(&kbtf);
    let mut filter = setup.filter;
    for name in &setup.vma_flags {
        filter.vma_flags_mask |= vm_flag_bits
            .get(name)
            .copied()
            .ok_or_else(|| SessionError::Layout(format!("unknown vm flag {name}")))?;
    }
    let mut ebpf = attach::load(&offsets, &filter, &setup.stacks, setup.ring_bytes)?;
    let ebpf_log = init_ebpf_log(&mut ebpf);
    // Before any hook: a name cached by the first events must already be kept honest.
    if let Err(why) = attach::comm_cache(&mut ebpf)? {
        log::debug!("task names are read per event: task:task_rename did not attach ({why})");
    }
    // Nesting is looked up from the first attach on, and switched off below if no function
    // hook attached (then no tracepoint hit can be inside a probed call).
    attach::set_calls_live(&mut ebpf, true)?;
    let mut calls_live = false;

    let wanted: Vec<&'static HookDef> = match setup.hooks {
        Some(h) => h.to_vec(),
        None => HOOKS.iter().collect(),
    };
    let mut plan = vec![];
    let mut attached: Vec<Resolved> = vec![];
    let mut pending: Vec<&'static HookDef> = wanted.clone();
    let mut i = 0;
    while i < pending.len() {
        let def = pending[i];
        i += 1;
        let mut entry = PlanEntry {
            hook: def.name.to_string(),
            ..Default::default()
        };
        match plan::resolve(def, &kbtf, &kallsyms, tracefs.as_deref()) {
            Err(why) => entry.failures.push(pfnscope_trace::RungFailure {
                mode: "resolve".into(),
                error: why,
            }),
            Ok(res) => {
                entry.symbol = Some(res.symbol.clone());
                attach::set_spec(&mut ebpf, def.hook, res.spec())?;
                let (mode, failures) = attach::attach(&mut ebpf, &aya_btf, def, &res.symbol);
                entry.failures = failures;
                entry.mode = mode.map(|m| m.name().to_string());
                calls_live |= matches!(mode, Some(Mode::Fentry | Mode::Kprobe));
                if mode.is_some() {
                    attached.push(res);
                } else {
                    attach::set_spec(&mut ebpf, def.hook, HookSpec::DISABLED)?;
                }
            }
        }
        if entry.mode.is_none() && !def.fallback.is_empty() {
            // The stand-ins join the plan even if they were not asked for.
            for &fb in def.fallback {
                entry.served_by.push(fb.name().to_string());
                if !pending.iter().any(|d| d.hook == fb) {
                    pending.push(fb.def());
                }
            }
        }
        plan.push(entry);
    }
    if attached.is_empty() {
        return Err(SessionError::NothingAttached);
    }
    attach::set_calls_live(&mut ebpf, calls_live)?;
    // Following children needs the fork tracepoint even when its events were not asked for:
    // its program extends the traced set; with its spec disabled it emits nothing.
    if setup.filter.follow_children != 0
        && !attached
            .iter()
            .any(|r| r.def.hook == Hook::SchedProcessFork)
    {
        let def = Hook::SchedProcessFork.def();
        let (mode, failures) = attach::attach(&mut ebpf, &aya_btf, def, def.name);
        if mode.is_none() {
            let why = failures
                .first()
                .map(|f| f.error.clone())
                .unwrap_or_default();
            return Err(SessionError::Layout(format!(
                "cannot follow child processes: sched:sched_process_fork did not attach ({why})"
            )));
        }
    }
    Ok(Session {
        ebpf,
        ebpf_log,
        uname: system::uname(),
        plan,
        attached,
        kallsyms,
        offsets: named_offsets,
        vm_flag_bits,
        tracefs,
    })
}

/// eBPF warnings go to stderr as `tracer: ebpf: ...` lines.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }

    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!("tracer: ebpf: {}", r.args());
        }
    }

    fn flush(&self) {}
}

static STDERR_LOG: StderrLog = StderrLog;

fn init_ebpf_log(ebpf: &mut Ebpf) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
    if log::set_logger(&STDERR_LOG).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    // Without log statements in the object there is nothing to read: not an error.
    aya_log::EbpfLogger::init(ebpf).ok()
}
