//! `tracer doctor`: what this kernel offers and how each hook would attach, tried for real.

use std::fmt::Write as _;
use std::path::Path;

use pfnscope_abi::{Filter, Hook, hook::HOOKS};
use pfnscope_trace::PlanEntry;
use serde::Serialize;

use crate::{
    btf::VMLINUX,
    session::{self, Setup},
    system::{self, KPROBE_PMU, TracefsState},
};

#[derive(Serialize)]
pub struct Report {
    pub kernel_release: String,
    pub kernel_version: String,
    pub host: String,
    pub privileged: bool,
    pub btf: bool,
    pub kprobes: bool,
    /// Where tracefs is mounted (null: nowhere).
    pub tracefs: Option<String>,
    /// Whether this user can read it (unprivileged users cannot).
    pub tracefs_readable: bool,
    /// What `tracer record` can read of the kernel's state at start (PAT memtypes, RAM page
    /// memtypes, device ranges): counts, or why a part is missing.
    pub start_state: StartStateReport,
    pub hooks: Vec<HookReport>,
    /// At least one hook attaches: `tracer record` will work.
    pub ready: bool,
    /// Plain-language conclusions.
    pub notes: Vec<String>,
}

#[derive(Serialize)]
pub struct StartStateReport {
    pub memtypes: Option<usize>,
    pub ram_memtypes: Option<usize>,
    pub iomem: usize,
    pub notes: Vec<String>,
}

#[derive(Serialize)]
pub struct HookReport {
    pub what: String,
    pub kernels: String,
    #[serde(flatten)]
    pub plan: PlanEntry,
}

pub fn report() -> Report {
    let u = system::uname();
    let privileged = system::privileged();
    let btf = Path::new(VMLINUX).exists();
    let kprobes = system::kprobe_pmu();
    let (tracefs, tracefs_readable) = match system::tracefs_state() {
        TracefsState::Usable(p) => (Some(p), true),
        TracefsState::Unreadable(p) => (Some(p), false),
        TracefsState::NotMounted => (None, false),
    };
    let tracefs = tracefs.map(|p| p.display().to_string());
    let mut notes = vec![];
    let mut plan: Vec<PlanEntry> = vec![];
    if !btf {
        notes.push(format!("no kernel BTF at {VMLINUX}: this kernel cannot be traced (boot one built with CONFIG_DEBUG_INFO_BTF)"));
    } else if !privileged {
        notes.push("not root (nor CAP_BPF + CAP_PERFMON): attach modes were not tried; run `sudo tracer doctor`".into());
    } else {
        // Attach everything for real, but with a filter that matches no process: the probes
        // cost next to nothing while the ladder is climbed.
        let mut filter = Filter::ALL;
        filter.by_tgid = 1;
        let setup = Setup {
            stacks: pfnscope_abi::StackConfig::OFF,
            hooks: None,
            filter,
            vma_flags: vec![],
            ring_bytes: 1 << 20,
        };
        match session::start(&setup) {
            Ok(s) => plan = s.plan.clone(),
            Err(e) => notes.push(format!("bringing the probes up failed: {e}")),
        }
    }
    if !kprobes {
        notes.push(format!(
            "kprobes are absent ({KPROBE_PMU} missing): the kprobe rung cannot be used"
        ));
    }
    let first_fn_failure = plan
        .iter()
        .filter(|p| Hook::parse(&p.hook).is_some_and(Hook::is_function))
        .flat_map(|p| p.failures.iter())
        .find(|f| f.mode == "fentry");
    if let Some(f) = first_fn_failure
        && f.error.starts_with("EPERM")
    {
        notes.push("fentry/fexit are refused by this kernel (EPERM at load, even as root)".into());
    }
    let fn_attached = plan
        .iter()
        .any(|p| Hook::parse(&p.hook).is_some_and(Hook::is_function) && p.mode.is_some());
    if !plan.is_empty() && !fn_attached {
        let tp = plan
            .iter()
            .find(|p| p.hook == Hook::PageFaultUser.name())
            .and_then(|p| p.mode.clone());
        notes.push(match tp {
            Some(mode) => format!(
                "no function hook attaches here: faults are traced through the tracepoint rung (exceptions:page_fault_user via {mode}): \
                 address, error code{} per fault, but no return values, latencies, PFN inserts or PAT calls; use a test box kernel for those",
                if mode == "tp_btf" { ", vma" } else { "" }
            ),
            None => "no hook attaches on this kernel".into(),
        });
    }
    let hooks = HOOKS
        .iter()
        .map(|d| HookReport {
            what: d.what.into(),
            kernels: d.kernels.to_string(),
            plan: plan
                .iter()
                .find(|p| p.hook == d.name)
                .cloned()
                .unwrap_or_else(|| PlanEntry {
                    hook: d.name.into(),
                    ..Default::default()
                }),
        })
        .collect();
    let ready = plan.iter().any(|p| p.mode.is_some());
    let iomem = system::iomem();
    let st = crate::start_state::snapshot(&iomem, &system::system_ram(&iomem));
    let start_state = StartStateReport {
        memtypes: st.memtypes.as_ref().map(Vec::len),
        ram_memtypes: st.ram_memtypes.as_ref().map(Vec::len),
        iomem: st.iomem.len(),
        notes: st.notes,
    };
    Report {
        kernel_release: u.release,
        kernel_version: u.version,
        host: u.nodename,
        privileged,
        btf,
        kprobes,
        tracefs,
        tracefs_readable,
        start_state,
        hooks,
        ready,
        notes,
    }
}

/// The report as the table `tracer doctor` prints.
pub fn render_human(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "kernel      {} ({})", r.kernel_release, r.kernel_version);
    let _ = writeln!(s, "BTF         {}", if r.btf { VMLINUX } else { "missing" });
    let _ = writeln!(
        s,
        "privileges  {}",
        if r.privileged {
            "yes"
        } else {
            "no (run as root)"
        }
    );
    let _ = writeln!(
        s,
        "kprobes     {}",
        if r.kprobes { "available" } else { "absent" }
    );
    let _ = writeln!(
        s,
        "tracefs     {}",
        match (&r.tracefs, r.tracefs_readable) {
            (None, _) => "not mounted".to_string(),
            (Some(p), true) => p.clone(),
            (Some(p), false) =>
                format!("{p} (mounted, but not readable by this user: run as root)"),
        }
    );
    let st = &r.start_state;
    let count = |n: Option<usize>, what: &str| match n {
        Some(n) => format!("{n} {what}"),
        None => format!("no {what}"),
    };
    let _ = writeln!(
        s,
        "start state {}, {}, {} device ranges",
        count(st.memtypes, "PAT reservations"),
        count(st.ram_memtypes, "non-WB RAM runs"),
        st.iomem
    );
    for n in &st.notes {
        let _ = writeln!(s, "            {n}");
    }
    s.push('\n');
    let _ = writeln!(s, "{:<44} {:<11} detail", "hook", "mode");
    for h in &r.hooks {
        let mode = h.plan.mode.as_deref().unwrap_or("-");
        let mut detail: Vec<String> = h
            .plan
            .failures
            .iter()
            .map(|f| format!("{}: {}", f.mode, short(&f.error)))
            .collect();
        if !h.plan.served_by.is_empty() {
            detail.push(format!("served by {}", h.plan.served_by.join(" + ")));
        }
        if detail.is_empty() && h.plan.mode.is_some() {
            detail.push(h.what.clone());
        }
        let _ = writeln!(s, "{:<44} {:<11} {}", h.plan.hook, mode, detail.join("; "));
    }
    if !r.notes.is_empty() {
        s.push('\n');
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

fn short(s: &str) -> &str {
    // The errno explanation comes first; the bracketed raw error is for --json.
    s.split(" [").next().unwrap_or(s)
}
