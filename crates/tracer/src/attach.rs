//! Loading the eBPF object and the attach ladder: for each hook, fentry/fexit, then
//! kprobe/kretprobe, then the tracepoint forms; every failed rung is kept with its reason.

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::{BtfTracePoint, FEntry, FExit, KProbe, Program, RawTracePoint, TracePoint},
};
use pfnscope_abi::{
    Filter, Hook, HookSpec, Mode, Offsets, StackConfig,
    hook::{HookDef, Kind},
};
use pfnscope_trace::RungFailure;

use crate::system::{KPROBE_PMU, kprobe_pmu};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the eBPF object failed: {0}")]
    Object(String),
    #[error("the eBPF object lacks map `{0}` (tracer and tracer-ebpf out of sync: rebuild)")]
    NoMap(&'static str),
}

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

/// Loads the object with the runtime settings baked in as read-only globals.
pub fn load(
    offsets: &Offsets,
    filter: &Filter,
    stacks: &StackConfig,
    ring_bytes: u32,
) -> Result<Ebpf, LoadError> {
    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones ignore it, and a
    // container may forbid raising it, so a failure here is not an error.
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    EbpfLoader::new()
        .override_global("OFFSETS", offsets, true)
        .override_global("FILTER", filter, true)
        .override_global("STACK_CONFIG", stacks, true)
        .map_max_entries("EVENTS", ring_bytes)
        .load(OBJECT)
        .map_err(|e| LoadError::Object(chain(&e)))
}

pub fn set_spec(ebpf: &mut Ebpf, hook: Hook, spec: HookSpec) -> Result<(), LoadError> {
    set_array(ebpf, "HOOK_SPECS", hook as u32, spec)
}

/// Tells the programs whether any function hook is attached (`CALLS_LIVE`).
pub fn set_calls_live(ebpf: &mut Ebpf, live: bool) -> Result<(), LoadError> {
    set_array(ebpf, "CALLS_LIVE", 0, live as u32)
}

/// Lets the fault programs reuse a task's name from their per-CPU cache: attaches the
/// `task:task_rename` program that invalidates it, then switches the cache on. Where that
/// program cannot attach, every event asks the kernel for the name, as before; returns why.
pub fn comm_cache(ebpf: &mut Ebpf) -> Result<Result<(), String>, LoadError> {
    let res = (|| {
        let p: &mut RawTracePoint = program(ebpf, "task_rename_raw")?;
        p.load().map_err(|e| chain(&e))?;
        p.attach("task_rename").map(drop).map_err(|e| chain(&e))
    })();
    if res.is_ok() {
        set_array(ebpf, "COMM_EPOCH", 1, 1u64)?;
    }
    Ok(res)
}

/// Writes slot `index` of the array map `name`.
fn set_array<T: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    index: u32,
    value: T,
) -> Result<(), LoadError> {
    let map = ebpf.map_mut(name).ok_or(LoadError::NoMap(name))?;
    let mut a: Array<&mut MapData, T> =
        Array::try_from(map).map_err(|e| LoadError::Object(chain(&e)))?;
    a.set(index, value, 0)
        .map_err(|e| LoadError::Object(chain(&e)))
}

/// The error and its sources on one line, plus what the errno means for us.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut errno = None;
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            errno = errno.or(io.raw_os_error());
        }
        cur = s.source();
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        errno = errno.or(io.raw_os_error());
    }
    // Verifier logs are long: the reason is at the end, after the instruction trace.
    const HEAD: usize = 160;
    const TAIL: usize = 900;
    if msg.len() > HEAD + TAIL + 16 {
        let mut a = HEAD;
        while !msg.is_char_boundary(a) {
            a -= 1;
        }
        let mut b = msg.len() - TAIL;
        while !msg.is_char_boundary(b) {
            b += 1;
        }
        msg = format!("{} ... {}", &msg[..a], &msg[b..]);
    }
    match errno.and_then(meaning) {
        Some(m) => format!("{m} [{msg}]"),
        None => msg,
    }
}

fn meaning(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM: refused by this kernel even as root (lockdown or hypervisor policy)",
        libc::EACCES => "EACCES: the verifier rejected the program",
        libc::ENOENT => "ENOENT: no such symbol or tracepoint in this kernel",
        libc::ESRCH => "ESRCH: no BTF id for this function",
        libc::EINVAL => {
            "EINVAL: the kernel rejected the attach (e.g. a struct argument its trampolines cannot take)"
        }
        libc::E2BIG => "E2BIG: the function has more arguments than a trampoline can take",
        libc::EOPNOTSUPP | 524 => "ENOTSUPP: not supported by this kernel for this function",
        libc::EBUSY => "EBUSY: another tracer holds this attach point",
        libc::EEXIST => "EEXIST: already attached",
        _ => return None,
    })
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut Program>,
    <&'a mut T as TryFrom<&'a mut Program>>::Error: std::fmt::Display,
{
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program `{name}` missing from the eBPF object (rebuild)"))?;
    p.try_into()
        .map_err(|e: <&'a mut T as TryFrom<&'a mut Program>>::Error| {
            format!("program `{name}`: {e}")
        })
}

fn unload(ebpf: &mut Ebpf, name: &str) {
    let _ = match ebpf.program_mut(name) {
        Some(Program::FEntry(p)) => p.unload(),
        Some(Program::FExit(p)) => p.unload(),
        Some(Program::KProbe(p)) => p.unload(),
        _ => Ok(()),
    };
}

fn fentry_rung(ebpf: &mut Ebpf, btf: &Btf, sym: &str, stem: &str) -> Result<(), String> {
    let entry = format!("{stem}_fentry");
    let exit = format!("{stem}_fexit");
    // The return half first: a call entered between the two attaches would never see its
    // return, and its task's later calls all named it as parent. A return seen without its
    // entry is ignored by `leave`.
    let res = (|| {
        let p: &mut FExit = program(ebpf, &exit)?;
        p.load(sym, btf).map_err(|e| chain(&e))?;
        p.attach().map_err(|e| chain(&e))?;
        let p: &mut FEntry = program(ebpf, &entry)?;
        p.load(sym, btf).map_err(|e| chain(&e))?;
        p.attach().map_err(|e| chain(&e))?;
        Ok(())
    })();
    if res.is_err() {
        unload(ebpf, &entry);
        unload(ebpf, &exit);
    }
    res
}

fn kprobe_rung(ebpf: &mut Ebpf, sym: &str, stem: &str) -> Result<(), String> {
    if !kprobe_pmu() {
        return Err(format!(
            "no kprobes in this kernel ({KPROBE_PMU} is missing: built without CONFIG_KPROBES)"
        ));
    }
    let entry = format!("{stem}_kprobe");
    let exit = format!("{stem}_kretprobe");
    let res = (|| {
        // The return half first, as in `fentry_rung`.
        for name in [&exit, &entry] {
            let p: &mut KProbe = program(ebpf, name)?;
            p.load().map_err(|e| chain(&e))?;
            p.attach(sym, 0).map_err(|e| chain(&e))?;
        }
        Ok(())
    })();
    if res.is_err() {
        unload(ebpf, &entry);
        unload(ebpf, &exit);
    }
    res
}

/// A tracepoint rung: its programs are named after the event (`<event>_btf`, `_raw`, `_tp`).
fn tracepoint_rung(
    ebpf: &mut Ebpf,
    btf: &Btf,
    group: &str,
    event: &str,
    mode: Mode,
) -> Result<(), String> {
    let stem = event;
    match mode {
        Mode::TpBtf => {
            let p: &mut BtfTracePoint = program(ebpf, &format!("{stem}_btf"))?;
            p.load(event, btf).map_err(|e| chain(&e))?;
            p.attach().map(drop).map_err(|e| chain(&e))
        }
        Mode::RawTp => {
            let p: &mut RawTracePoint = program(ebpf, &format!("{stem}_raw"))?;
            p.load().map_err(|e| chain(&e))?;
            p.attach(event).map(drop).map_err(|e| chain(&e))
        }
        Mode::Tracepoint => {
            let p: &mut TracePoint = program(ebpf, &format!("{stem}_tp"))?;
            p.load().map_err(|e| chain(&e))?;
            p.attach(group, event).map(drop).map_err(|e| chain(&e))
        }
        Mode::Fentry | Mode::Kprobe => Err("not a tracepoint rung".into()),
    }
}

/// Climbs the ladder for one hook. Returns the rung that attached, if any, and every failure.
pub fn attach(
    ebpf: &mut Ebpf,
    btf: &Btf,
    def: &HookDef,
    symbol: &str,
) -> (Option<Mode>, Vec<RungFailure>) {
    let mut failures = vec![];
    for &mode in def.hook.rungs() {
        let res = match def.kind {
            Kind::Function { .. } => match mode {
                Mode::Fentry => fentry_rung(ebpf, btf, symbol, def.name),
                _ => kprobe_rung(ebpf, symbol, def.name),
            },
            Kind::Tracepoint { group, event, .. } => tracepoint_rung(ebpf, btf, group, event, mode),
        };
        match res {
            Ok(()) => return (Some(mode), failures),
            Err(error) => failures.push(RungFailure {
                mode: mode.name().to_string(),
                error,
            }),
        }
    }
    (None, failures)
}
