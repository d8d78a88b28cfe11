//! Verdicts on a guest run: kernel trouble in its logs, and whether each trace reached the hooks
//! its workload declares (`workload::expect`).

use std::collections::BTreeMap;
use std::path::Path;

use pfnscope_trace::Trace;
use workload::bugzoo;
use workload::expect::{self, Check, Family, Target};

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
    pub modes: BTreeMap<String, u64>,
    pub page: u64,
    pub no_page: u64,
}

pub fn stats(trace: &Trace) -> BTreeMap<String, HookStats> {
    let mut m: BTreeMap<String, HookStats> = BTreeMap::new();
    for r in trace.events() {
        let s = m.entry(r.hook.to_string()).or_default();
        s.rows += 1;
        *s.modes.entry(r.mode.to_string()).or_default() += 1;
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
    let dropped: u64 = trace.counters().iter().map(|c| c.1).sum();
    if dropped > 0 {
        problems.push(format!("{dropped} events dropped (ring buffer full)"));
    }
    let st = stats(trace);
    for e in expected {
        // `a|b`: the first name with rows (a function renamed between releases).
        let names = e.hook.split('|');
        let Some((hook, s)) = names.clone().find_map(|h| Some((h, st.get(h)?))) else {
            for h in names {
                problems.push(format!("{h}: no rows ({})", why_no_rows(trace, h)));
            }
            continue;
        };
        let e = expect::Expect { hook, ..e };
        match e.check {
            Check::Any => {}
            Check::NoPage if s.no_page == 0 => {
                problems.push(format!("{}: never returned no page", e.hook))
            }
            Check::Page if s.page == 0 => {
                problems.push(format!("{}: never returned a page", e.hook))
            }
            _ => {}
        }
        let fentry_refused = trace
            .meta
            .hook_plan
            .iter()
            .filter(|p| p.hook == e.hook)
            .flat_map(|p| &p.failures)
            .any(|f| f.mode == "fentry");
        for mode in s
            .modes
            .keys()
            .filter(|m| !expect::mode_ok(e.hook, m, fentry_refused))
        {
            problems.push(format!(
                "{}: recorded as {mode}, which is not acceptable here",
                e.hook
            ));
        }
    }
    problems
}

fn why_no_rows(trace: &Trace, hook: &str) -> String {
    match trace.meta.hook_plan.iter().find(|p| p.hook == hook) {
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
            let modes: Vec<String> = s.modes.iter().map(|(m, n)| format!("{m}:{n}")).collect();
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
pub fn pat_problems(workload: &str, fam: Family, dmesg: &str) -> Vec<String> {
    let declared = bugzoo::mode(workload)
        .and_then(|m| m.outcome(fam))
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
