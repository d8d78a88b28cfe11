//! Verdicts on a guest run: kernel trouble in its logs, and whether each trace reached the hooks
//! its workload declares (`workload::expect`).

use std::collections::BTreeMap;
use std::path::Path;

use pfnscope_abi::kernel::Series;
use pfnscope_abi::{Hook, Mode};
use pfnscope_trace::Trace;
use workload::bugzoo;
use workload::expect::{self, Check, Target};

/// Lines that mean the kernel itself went wrong.
pub fn kernel_trouble(log: &str) -> Vec<String> {
    const MARKERS: [&str; 9] = [
        "Kernel panic",
        "Oops:",
        "BUG:",
        "kernel BUG",
        "WARNING:",
        "general protection fault",
        "Bad page map",
        "Bad page state",
        "Call Trace:",
    ];
    log.lines()
        .filter(|l| MARKERS.iter().any(|m| l.contains(m)))
        .map(|l| l.trim_end().to_string())
        .collect()
}

#[derive(Default, Debug)]
pub struct HookStats {
    pub rows: u64,
    /// Rows per attach mode; `None` counts a mode name this build does not know.
    pub modes: BTreeMap<Option<Mode>, u64>,
    pub page: u64,
    pub no_page: u64,
}

/// Rows per hook; `Err(name)` keys hook names this build does not know.
pub fn stats(trace: &Trace) -> BTreeMap<Result<Hook, String>, HookStats> {
    let mut m: BTreeMap<Result<Hook, String>, HookStats> = BTreeMap::new();
    for r in trace.events() {
        let hook = Hook::parse(&r.hook).ok_or_else(|| r.hook.to_string());
        let s = m.entry(hook).or_default();
        s.rows += 1;
        *s.modes.entry(Mode::parse(&r.mode)).or_default() += 1;
        match r.page {
            Some(true) => s.page += 1,
            Some(false) => s.no_page += 1,
            None => {}
        }
    }
    m
}

/// Problems with one workload's trace, empty when it passes.
pub fn verify(workload: &str, target: Target, trace: &Trace) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(expected) = expect::expected(workload, target) else {
        return vec![format!("no expectations for {workload} on {target:?}")];
    };
    if let Some(d) = &trace.damage {
        problems.push(format!("trace damaged: {d}"));
    }
    let dropped: u64 = trace.counters.total().dropped;
    if dropped > 0 {
        problems.push(format!("{dropped} events dropped (ring buffer full)"));
    }
    let st = stats(trace);
    for e in expected {
        // Several hooks: the first with rows (a function renamed between releases).
        let Some((hook, s)) = e.hooks.iter().find_map(|&h| Some((h, st.get(&Ok(h))?))) else {
            for &h in e.hooks {
                problems.push(format!("{h}: no rows ({})", why_no_rows(trace, h)));
            }
            continue;
        };
        match e.check {
            Check::Any => {}
            Check::NoPage if s.no_page == 0 => {
                problems.push(format!("{hook}: never returned no page"))
            }
            Check::Page if s.page == 0 => problems.push(format!("{hook}: never returned a page")),
            _ => {}
        }
        let fentry_refused = trace
            .meta
            .hook_plan
            .iter()
            .filter(|p| p.hook == hook.name())
            .flat_map(|p| &p.failures)
            .any(|f| f.mode == Mode::Fentry.name());
        for mode in s.modes.keys() {
            match mode {
                Some(m) if expect::mode_ok(hook, *m, fentry_refused) => {}
                Some(m) => problems.push(format!(
                    "{hook}: recorded as {}, which is not acceptable here",
                    m.name()
                )),
                None => problems.push(format!("{hook}: recorded in an unknown mode")),
            }
        }
    }
    problems
}

fn why_no_rows(trace: &Trace, hook: Hook) -> String {
    match trace.meta.hook_plan.iter().find(|p| p.hook == hook.name()) {
        None => "not in the hook plan".to_string(),
        Some(p) => match &p.mode {
            Some(m) => format!("attached as {m} but never hit"),
            None => format!(
                "not attached: {}",
                p.failures
                    .iter()
                    .map(|f| format!("{}: {}", f.mode, f.error))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        },
    }
}

/// One line per hook: rows, modes, page / no-page split.
pub fn summary(trace: &Trace) -> String {
    stats(trace)
        .iter()
        .map(|(h, s)| {
            let h = match h {
                Ok(h) => h.name(),
                Err(name) => name.as_str(),
            };
            let modes: Vec<String> = s
                .modes
                .iter()
                .map(|(m, n)| format!("{}:{n}", m.map_or("?", Mode::name)))
                .collect();
            let pages = if s.page + s.no_page > 0 {
                format!(" page={} no_page={}", s.page, s.no_page)
            } else {
                String::new()
            };
            format!(
                "      {h:<44} {:>7} rows  {}{pages}",
                s.rows,
                modes.join(",")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Problems with the `x86/PAT:` lines in one workload's share of the kernel log (`dmesg`): only
/// bug zoo workloads may make PAT log anything, and only the lines their mode declares
/// (`workload::bugzoo`); a declared line that does not come is a problem too.
pub fn pat_problems(workload: &str, series: Series, dmesg: &str) -> Vec<String> {
    let declared = bugzoo::mode(workload)
        .and_then(|m| m.outcome(series))
        .map_or(&[][..], |o| o.pat_lines);
    bugzoo::pat_line_problems(declared, dmesg)
}

pub fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_kernel_trouble() {
        let log = "[    1.0] ok\n[    2.0] BUG: kernel NULL pointer dereference, address: 0\n[ 3.0] Kernel panic - not syncing: Fatal exception\nPFNSCOPE: fine\n";
        let t = kernel_trouble(log);
        assert_eq!(t.len(), 2);
        assert!(
            kernel_trouble("[ 1.0] x86/PAT: Configuration [0-7]: WB  WC  UC- UC  WB  WP  UC- WT\n")
                .is_empty()
        );
    }
}
