//! The summary tables, computed with polars lazy queries over [`Trace`] and returned as plain
//! rows (serialisable to JSON, printable as text, rendered into HTML).

use std::{collections::BTreeMap, str::FromStr};

use pfnscope_abi::Hook;
use pfnscope_abi::bits::{fault_flag, vm_fault};
use polars::prelude::*;
use serde::Serialize;

use crate::{
    error::{AnalyzerError, Result},
    load::Trace,
};

/// What the latency table is grouped by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupBy {
    /// Every probed call, by hook.
    Hook,
    /// Page faults by the vma's vm_ops symbol.
    #[default]
    Driver,
    VmaKind,
    /// Page faults by `comm[pid]`.
    Process,
    /// Page faults by read/write/exec and user/kernel.
    FaultType,
}

impl GroupBy {
    pub const ALL: [GroupBy; 5] = [
        GroupBy::Hook,
        GroupBy::Driver,
        GroupBy::VmaKind,
        GroupBy::Process,
        GroupBy::FaultType,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Hook => "hook",
            GroupBy::Driver => "driver",
            GroupBy::VmaKind => "vma-kind",
            GroupBy::Process => "process",
            GroupBy::FaultType => "fault-type",
        }
    }

    fn keys(self) -> Vec<&'static str> {
        match self {
            GroupBy::Hook => vec!["hook"],
            GroupBy::Driver => vec!["driver"],
            GroupBy::VmaKind => vec!["vma_kind"],
            GroupBy::Process => vec!["comm", "pid"],
            GroupBy::FaultType => vec!["fault_type"],
        }
    }

    /// What a null key means in this grouping.
    fn null_label(self) -> &'static str {
        match self {
            GroupBy::Driver => "(no vm_ops)",
            GroupBy::VmaKind | GroupBy::FaultType => "(unknown)",
            _ => "(none)",
        }
    }
}

impl FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        GroupBy::ALL
            .into_iter()
            .find(|g| g.name() == s)
            .ok_or_else(|| format!("unknown grouping `{s}`"))
    }
}

/// Latency of one group, in nanoseconds. The statistics are `None` when no row of the group
/// has a latency (tracepoints have no return).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyRow {
    pub group: String,
    pub count: u64,
    /// Rows with a latency.
    pub timed: u64,
    pub mean_ns: Option<f64>,
    pub p50_ns: Option<f64>,
    pub p90_ns: Option<f64>,
    pub p99_ns: Option<f64>,
    pub p999_ns: Option<f64>,
    pub max_ns: Option<u64>,
}

/// How often each `VM_FAULT_*` bit came back from one hook.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MixRow {
    pub hook: String,
    pub calls: u64,
    /// Returns of plain 0.
    pub zero: u64,
    /// (bit name, calls with it set), bits never seen left out.
    pub bits: Vec<(String, u64)>,
}

/// Retries of `handle_mm_fault`, per driver.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryRow {
    pub driver: String,
    pub faults: u64,
    /// Returned VM_FAULT_RETRY.
    pub retry: u64,
    /// ... of which on the per-VMA-lock attempt (FAULT_FLAG_VMA_LOCK): the fault is then run
    /// again under mmap_lock, a second `handle_mm_fault` for the same fault.
    pub retry_vma_lock: u64,
    /// Calls with FAULT_FLAG_TRIED: second attempts after a retry under mmap_lock.
    pub tried: u64,
    pub completed: u64,
}

/// Cache mode asked for and obtained, per hook and driver.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PatRow {
    pub hook: String,
    pub driver: String,
    pub requested: String,
    pub obtained: String,
    pub count: u64,
}

/// Final tracer counters of one CPU.
pub use pfnscope_trace::CpuCounters;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub trace: String,
    pub kernel_release: String,
    pub events: u64,
    pub faults: u64,
    pub span_ns: u64,
    pub damage: Option<pfnscope_trace::Damage>,
    pub by: GroupBy,
    pub latency_available: bool,
    /// Why latency is missing, when it is.
    pub latency_note: Option<String>,
    pub latency: Vec<LatencyRow>,
    pub vm_fault_mix: Vec<MixRow>,
    pub retries: Vec<RetryRow>,
    pub pat: Vec<PatRow>,
    pub counters: Vec<CpuCounters>,
}

impl Summary {
    pub fn compute(trace: &Trace, by: GroupBy) -> Result<Summary> {
        let pl = |what: &'static str| {
            move |err| AnalyzerError::Polars {
                path: trace.path.clone(),
                what,
                err,
            }
        };
        Ok(Summary {
            latency: latency_table(trace, by).map_err(pl("latency table"))?,
            vm_fault_mix: mix_table(trace).map_err(pl("VM_FAULT table"))?,
            retries: retry_table(trace).map_err(pl("retry table"))?,
            pat: pat_table(trace).map_err(pl("PAT table"))?,
            counters: trace.counters.per_cpu().copied().collect(),
            ..Summary::header(trace, by)
        })
    }

    fn header(trace: &Trace, by: GroupBy) -> Summary {
        let latency_available = trace.has_latency();
        let faults = trace
            .events
            .column("is_fault")
            .and_then(|c| c.bool().cloned())
            .map(|b| b.sum().unwrap_or(0) as u64)
            .unwrap_or(0);
        Summary {
            trace: trace.path.display().to_string(),
            kernel_release: trace.meta.kernel_release.clone(),
            events: trace.events.height() as u64,
            faults,
            span_ns: trace.time_range().map(|(a, b)| b - a).unwrap_or(0),
            damage: trace.damage.clone(),
            by,
            latency_available,
            latency_note: (!latency_available).then(|| latency_note(trace)),
            latency: Vec::new(),
            vm_fault_mix: Vec::new(),
            retries: Vec::new(),
            pat: Vec::new(),
            counters: Vec::new(),
        }
    }

    /// Only the latency table (the other tables do not depend on the grouping).
    pub fn latency_only(trace: &Trace, by: GroupBy) -> Result<Summary> {
        let mut s = Summary::header(trace, by);
        s.latency = latency_table(trace, by).map_err(|err| AnalyzerError::Polars {
            path: trace.path.clone(),
            what: "latency table",
            err,
        })?;
        Ok(s)
    }

    pub fn dropped(&self) -> u64 {
        self.counters.iter().map(|c| c.dropped).sum()
    }
}

fn latency_note(trace: &Trace) -> String {
    let tp: Vec<&str> = trace
        .meta
        .hook_plan
        .iter()
        .filter(|p| {
            p.mode
                .as_deref()
                .and_then(pfnscope_abi::Mode::parse)
                .is_some_and(pfnscope_abi::Mode::is_tracepoint)
        })
        .filter(|p| Hook::parse(&p.hook).is_some_and(Hook::is_fault))
        .map(|p| p.hook.as_str())
        .collect();
    if tp.is_empty() {
        "latency unavailable: no event in this trace has a return (recorded in tracepoint mode?); counts only".into()
    } else {
        format!(
            "latency unavailable: recorded in tracepoint mode ({}), which sees no returns; counts only",
            tp.join(", ")
        )
    }
}

/// The rows the latency table is computed on: every call for `--by hook`, the faults otherwise.
pub(crate) fn grouped_rows(trace: &Trace, by: GroupBy) -> LazyFrame {
    let lf = trace.events.clone().lazy();
    if by == GroupBy::Hook {
        lf
    } else {
        lf.filter(col("is_fault"))
    }
}

/// Polars' `QuantileMethod::Linear` for each of `qs` (ascending), by selection rather than a
/// sort: each rank is found with `select_nth_unstable` in the part above the previous one, so
/// all of them together cost about two passes over the values. `values` ends up reordered.
pub(crate) fn linear_quantiles<const N: usize>(
    values: &mut [u64],
    qs: [f64; N],
) -> [Option<f64>; N] {
    let n = values.len();
    let mut out = [None; N];
    if n == 0 {
        return out;
    }
    // Everything below `done` is at most values[done - 1] and already placed.
    let mut done = 0;
    for (o, q) in out.iter_mut().zip(qs) {
        let float_idx = (n - 1) as f64 * q;
        let idx = (float_idx as usize).min(n - 1).max(done);
        let (_, lower, above) = values[done..].select_nth_unstable(idx - done);
        let lower = *lower as f64;
        done = idx;
        *o = Some(if float_idx.ceil() as usize == idx {
            lower
        } else {
            let upper = above.iter().copied().min().unwrap_or(0) as f64;
            if lower == upper {
                lower
            } else {
                (float_idx - idx as f64) * (upper - lower) + lower
            }
        });
    }
    out
}

/// A table row from a group's latencies (`count` includes rows without one).
fn latency_row(group: String, count: u64, mut values: Vec<u64>) -> LatencyRow {
    let timed = values.len() as u64;
    let mean = (timed > 0).then(|| values.iter().map(|&v| v as f64).sum::<f64>() / timed as f64);
    let max = values.iter().copied().max();
    let [p50, p90, p99, p999] = linear_quantiles(&mut values, [0.5, 0.9, 0.99, 0.999]);
    LatencyRow {
        group,
        count,
        timed,
        mean_ns: mean,
        p50_ns: p50,
        p90_ns: p90,
        p99_ns: p99,
        p999_ns: p999,
        max_ns: max,
    }
}

fn values(c: &Column) -> PolarsResult<Vec<u64>> {
    let c = c.cast(&DataType::UInt64)?;
    Ok(c.u64()?.iter().flatten().collect())
}

/// Count, mean, percentiles and max per group. Polars groups the rows; the percentiles are
/// computed per group by [`linear_quantiles`] (polars' own per-group quantile sorts the group
/// once per percentile: 0.45 s per table on 10 M events).
fn latency_table(trace: &Trace, by: GroupBy) -> PolarsResult<Vec<LatencyRow>> {
    let rows = grouped_rows(trace, by);
    let keys = by.keys();
    let grouped = rows
        .clone()
        .group_by(keys.iter().map(|k| col(*k)).collect::<Vec<_>>())
        .agg([
            len().cast(DataType::UInt64).alias("count"),
            col("latency_ns").drop_nulls().alias("latencies"),
        ])
        .with_columns(
            keys.iter()
                .map(|k| col(*k).cast(DataType::String))
                .collect::<Vec<_>>(),
        )
        .sort_by_exprs(
            [col("count"), col(keys[0])],
            SortMultipleOptions::default().with_order_descending_multi([true, false]),
        )
        .collect()?;
    let labels = group_labels(&grouped, &keys, by.null_label())?;
    let counts = u64s(&grouped, "count")?;
    if counts.is_empty() {
        return Ok(Vec::new());
    }
    let lists = grouped.column("latencies")?.list()?;
    let mut out = Vec::with_capacity(counts.len() + 1);
    let mut all = Vec::new();
    for (i, (label, count)) in labels.into_iter().zip(counts).enumerate() {
        let v = match lists.get_as_series(i) {
            Some(s) => values(&s.into_column())?,
            None => Vec::new(),
        };
        all.extend_from_slice(&v);
        out.push(latency_row(label, count, v));
    }
    let total = out.iter().map(|r| r.count).sum();
    out.insert(0, latency_row("(all)".into(), total, all));
    Ok(out)
}

/// One label per row from the key columns (`comm[pid]` for two keys).
fn group_labels(df: &DataFrame, keys: &[&str], null: &str) -> PolarsResult<Vec<String>> {
    match keys {
        [] => Ok(vec![String::new(); df.height()]),
        [k] => strings(df, k, null),
        [comm, pid] => {
            let comm = strings(df, comm, null)?;
            let pid = df.column(pid)?.cast(&DataType::UInt32)?;
            let pid = pid.u32()?;
            Ok(comm
                .into_iter()
                .zip(pid.iter())
                .map(|(c, p)| match p {
                    Some(p) => format!("{c}[{p}]"),
                    None => c,
                })
                .collect())
        }
        _ => unreachable!("groupings have one or two keys"),
    }
}

pub(crate) fn strings(df: &DataFrame, name: &str, null: &str) -> PolarsResult<Vec<String>> {
    let c = df.column(name)?.cast(&DataType::String)?;
    Ok(c.str()?
        .iter()
        .map(|s| s.unwrap_or(null).to_string())
        .collect())
}

pub(crate) fn u64s(df: &DataFrame, name: &str) -> PolarsResult<Vec<u64>> {
    let c = df.column(name)?.cast(&DataType::UInt64)?;
    Ok(c.u64()?.iter().map(|v| v.unwrap_or(0)).collect())
}

/// Rows counted per distinct combination of `parts` (name, expression, bits it needs), with
/// one row of each combination's values. The return codes and flags take few distinct values,
/// so the per-bit counts are summed from this small table instead of one column expression
/// per bit over every row; the parts are packed into one integer key because polars groups
/// on one integer column without encoding every row's keys (a two-column group-by here took
/// 400 MB more on 10 M events).
fn distinct_counts(lf: LazyFrame, parts: &[(&str, Expr, u32)]) -> PolarsResult<DataFrame> {
    let mut key = lit(0i64);
    for (_, e, bits) in parts {
        key = key * lit(1i64 << bits) + e.clone().cast(DataType::Int64);
    }
    let mut aggs = vec![len().cast(DataType::UInt64).alias("n")];
    aggs.extend(parts.iter().map(|(name, _, _)| col(*name).first()));
    lf.group_by([key.alias("key")]).agg(aggs).collect()
}

/// The physical id of a categorical column (below 2^31), null as 2^31 - 1.
fn cat_id(name: &str) -> Expr {
    col(name)
        .to_physical()
        .cast(DataType::Int64)
        .fill_null(lit((1i64 << 31) - 1))
}

/// The bits the retry table counts, packed into 16 bits each for its group-by key.
const RETRY_RET_BITS: i64 = (vm_fault::RETRY | vm_fault::COMPLETED) as i64;
const RETRY_FLAG_BITS: i64 = (fault_flag::VMA_LOCK | fault_flag::TRIED) as i64;
const _: () = assert!(RETRY_RET_BITS >> 16 == 0 && RETRY_FLAG_BITS >> 16 == 0);

/// The `mask` bits of an integer column, null as none.
fn masked(name: &str, mask: i64) -> Expr {
    col(name)
        .cast(DataType::Int64)
        .and(lit(mask))
        .fill_null(lit(0i64))
}

fn i64s(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<i64>>> {
    let c = df.column(name)?.cast(&DataType::Int64)?;
    Ok(c.i64()?.iter().collect())
}

fn mix_table(trace: &Trace) -> PolarsResult<Vec<MixRow>> {
    let df = distinct_counts(
        trace.events.clone().lazy().filter(
            col("vm_fault_ret")
                .and(col("ret").is_not_null())
                .and(col("ret").gt_eq(lit(0i64))),
        ),
        &[
            ("hook", cat_id("hook"), 31),
            // Filtered to VM_FAULT bits (non-negative, 32 bits).
            ("ret", col("ret"), 32),
        ],
    )?;
    let (hooks, rets, ns) = (
        strings(&df, "hook", "?")?,
        i64s(&df, "ret")?,
        u64s(&df, "n")?,
    );
    let mut rows: BTreeMap<String, MixRow> = BTreeMap::new();
    for ((hook, ret), n) in hooks.into_iter().zip(rets).zip(ns) {
        let ret = ret.unwrap_or(0);
        let r = rows.entry(hook.clone()).or_insert_with(|| MixRow {
            hook,
            calls: 0,
            zero: 0,
            bits: vm_fault::NAMES
                .iter()
                .map(|(b, _)| (b.to_string(), 0))
                .collect(),
        });
        r.calls += n;
        if ret == 0 {
            r.zero += n;
        }
        for ((_, bit), (_, count)) in vm_fault::NAMES.iter().zip(r.bits.iter_mut()) {
            if ret & *bit as i64 != 0 {
                *count += n;
            }
        }
    }
    let mut rows: Vec<MixRow> = rows.into_values().collect();
    for r in &mut rows {
        r.bits.retain(|(_, c)| *c > 0);
    }
    rows.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.hook.cmp(&b.hook)));
    Ok(rows)
}

fn retry_table(trace: &Trace) -> PolarsResult<Vec<RetryRow>> {
    let df = distinct_counts(
        trace
            .events
            .clone()
            .lazy()
            .filter(col("hook").eq(lit("handle_mm_fault"))),
        &[
            ("driver", cat_id("driver"), 31),
            // Only the bits the table counts; both masks fit in 16 bits.
            ("ret", masked("ret", RETRY_RET_BITS), 16),
            ("fault_flags", masked("fault_flags", RETRY_FLAG_BITS), 16),
        ],
    )?;
    let driver = strings(&df, "driver", GroupBy::Driver.null_label())?;
    let (rets, flags, ns) = (
        i64s(&df, "ret")?,
        i64s(&df, "fault_flags")?,
        u64s(&df, "n")?,
    );
    let mut rows: BTreeMap<String, RetryRow> = BTreeMap::new();
    for (((driver, ret), ff), n) in driver.into_iter().zip(rets).zip(flags).zip(ns) {
        let r = rows.entry(driver.clone()).or_insert_with(|| RetryRow {
            driver,
            faults: 0,
            retry: 0,
            retry_vma_lock: 0,
            tried: 0,
            completed: 0,
        });
        let ret_has = |bit: i64| ret.is_some_and(|r| r & bit != 0);
        let flag = |bit: u32| ff.is_some_and(|f| f & bit as i64 != 0);
        r.faults += n;
        if ret_has(vm_fault::RETRY as i64) {
            r.retry += n;
            if flag(fault_flag::VMA_LOCK) {
                r.retry_vma_lock += n;
            }
        }
        if flag(fault_flag::TRIED) {
            r.tried += n;
        }
        if ret_has(vm_fault::COMPLETED as i64) {
            r.completed += n;
        }
    }
    let mut rows: Vec<RetryRow> = rows.into_values().collect();
    rows.sort_by(|a, b| {
        b.faults
            .cmp(&a.faults)
            .then_with(|| a.driver.cmp(&b.driver))
    });
    Ok(rows)
}

fn pat_table(trace: &Trace) -> PolarsResult<Vec<PatRow>> {
    if trace.pat.height() == 0 {
        return Ok(Vec::new());
    }
    let keys = ["hook", "driver", "cache_req", "cache_out"];
    let df = trace
        .pat
        .clone()
        .lazy()
        .group_by(keys.map(col))
        .agg([col("count").sum().cast(DataType::UInt64)])
        .with_columns(keys.map(|k| col(k).cast(DataType::String)))
        // Every key breaks ties: the group-by hands groups over in an order that varies from
        // run to run, and rows of equal count and hook came out in either order.
        .sort_by_exprs(
            [
                col("count"),
                col("hook"),
                col("driver"),
                col("cache_req"),
                col("cache_out"),
            ],
            SortMultipleOptions::default()
                .with_order_descending_multi([true, false, false, false, false]),
        )
        .collect()?;
    let [hook, driver, req, out] = keys.map(|k| strings(&df, k, "-"));
    let (hook, driver, req, out) = (hook?, driver?, req?, out?);
    let count = u64s(&df, "count")?;
    Ok((0..df.height())
        .map(|i| PatRow {
            hook: hook[i].clone(),
            driver: if driver[i] == "-" {
                GroupBy::Driver.null_label().into()
            } else {
                driver[i].clone()
            },
            requested: req[i].clone(),
            obtained: out[i].clone(),
            count: count[i],
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The selection-based percentiles must equal polars' own `QuantileMethod::Linear`.
    #[test]
    fn linear_quantiles_match_polars() {
        // A small LCG: sizes and values with many ties, unsorted.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            x >> 33
        };
        for n in [1usize, 2, 3, 7, 10, 101, 999, 1000, 4096] {
            let values: Vec<u64> = (0..n).map(|_| next() % 500 + 100).collect();
            let qs = [0.5, 0.9, 0.99, 0.999];
            let ours = linear_quantiles(&mut values.clone(), qs);
            let s = Series::new("v".into(), &values);
            for (q, got) in qs.into_iter().zip(ours) {
                let want = s.quantile_reduce(q, QuantileMethod::Linear).unwrap();
                let want = want.value().extract::<f64>().unwrap();
                assert!(
                    (got.unwrap() - want).abs() < 1e-9,
                    "n={n} q={q}: ours {got:?}, polars {want}"
                );
            }
        }
        assert_eq!(linear_quantiles(&mut [], [0.5]), [None]);
    }
}
