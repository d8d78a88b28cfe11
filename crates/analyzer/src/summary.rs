//! The summary tables, computed with polars lazy queries over [`Trace`] and returned as plain
//! rows (serialisable to JSON, printable as text, rendered into HTML).

use std::str::FromStr;

use pfnscope_trace::kernel::vm_fault;
use polars::prelude::*;
use serde::Serialize;

use crate::{
    bits::{
        FAULT_FLAG_TRIED, FAULT_FLAG_VMA_LOCK, FAULT_HOOKS, VM_FAULT_COMPLETED, VM_FAULT_RETRY,
    },
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
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuCounters {
    pub cpu: u32,
    pub dropped: u64,
    pub unpaired: u64,
    pub read_failed: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub trace: String,
    pub kernel_release: String,
    pub events: u64,
    pub faults: u64,
    pub span_ns: u64,
    pub damage: Option<String>,
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
            move |source| AnalyzerError::Polars {
                path: trace.path.clone(),
                what,
                source,
            }
        };
        Ok(Summary {
            latency: latency_table(trace, by).map_err(pl("latency table"))?,
            vm_fault_mix: mix_table(trace).map_err(pl("VM_FAULT table"))?,
            retries: retry_table(trace).map_err(pl("retry table"))?,
            pat: pat_table(trace).map_err(pl("PAT table"))?,
            counters: counter_rows(trace).map_err(pl("counters"))?,
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
        s.latency = latency_table(trace, by).map_err(|source| AnalyzerError::Polars {
            path: trace.path.clone(),
            what: "latency table",
            source,
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
        .filter(|p| matches!(p.mode.as_deref(), Some("tracepoint" | "tp_btf" | "raw_tp")))
        .filter(|p| FAULT_HOOKS.contains(&p.hook.as_str()))
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

fn latency_aggs() -> Vec<Expr> {
    let lat = || col("latency_ns");
    let q = |p: f64, name: &str| {
        lat()
            .quantile(lit(p), QuantileMethod::Linear)
            .cast(DataType::Float64)
            .alias(name)
    };
    vec![
        len().cast(DataType::UInt64).alias("count"),
        lat().count().cast(DataType::UInt64).alias("timed"),
        lat().mean().cast(DataType::Float64).alias("mean"),
        q(0.5, "p50"),
        q(0.9, "p90"),
        q(0.99, "p99"),
        q(0.999, "p999"),
        lat().max().cast(DataType::UInt64).alias("max"),
    ]
}

fn latency_table(trace: &Trace, by: GroupBy) -> PolarsResult<Vec<LatencyRow>> {
    let rows = grouped_rows(trace, by);
    let keys = by.keys();
    let grouped = rows
        .clone()
        .group_by(keys.iter().map(|k| col(*k)).collect::<Vec<_>>())
        .agg(latency_aggs())
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
    let all = rows.select(latency_aggs()).collect()?;
    let mut out = latency_rows(&all, &[], by)?;
    if let Some(r) = out.first_mut() {
        r.group = "(all)".into();
    }
    if out.first().is_some_and(|r| r.count == 0) {
        out.clear();
    }
    out.extend(latency_rows(&grouped, &keys, by)?);
    Ok(out)
}

fn latency_rows(df: &DataFrame, keys: &[&str], by: GroupBy) -> PolarsResult<Vec<LatencyRow>> {
    let label = group_labels(df, keys, by.null_label())?;
    let u =
        |n: &str| -> PolarsResult<Vec<Option<u64>>> { Ok(df.column(n)?.u64()?.iter().collect()) };
    let f =
        |n: &str| -> PolarsResult<Vec<Option<f64>>> { Ok(df.column(n)?.f64()?.iter().collect()) };
    let (count, timed, max) = (u("count")?, u("timed")?, u("max")?);
    let (mean, p50, p90, p99, p999) = (f("mean")?, f("p50")?, f("p90")?, f("p99")?, f("p999")?);
    Ok((0..df.height())
        .map(|i| {
            let timed = timed[i].unwrap_or(0);
            let stat = |v: Option<f64>| v.filter(|x| timed > 0 && x.is_finite());
            LatencyRow {
                group: label[i].clone(),
                count: count[i].unwrap_or(0),
                timed,
                mean_ns: stat(mean[i]),
                p50_ns: stat(p50[i]),
                p90_ns: stat(p90[i]),
                p99_ns: stat(p99[i]),
                p999_ns: stat(p999[i]),
                max_ns: max[i].filter(|_| timed > 0),
            }
        })
        .collect())
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

fn bit_set(name: &str, bit: i64) -> Expr {
    col(name).and(lit(bit)).neq(lit(0i64))
}

fn mix_table(trace: &Trace) -> PolarsResult<Vec<MixRow>> {
    let mut aggs = vec![
        len().cast(DataType::UInt64).alias("calls"),
        col("ret")
            .eq(lit(0i64))
            .sum()
            .cast(DataType::UInt64)
            .alias("zero"),
    ];
    for (name, bit) in vm_fault::NAMES {
        aggs.push(
            bit_set("ret", *bit as i64)
                .sum()
                .cast(DataType::UInt64)
                .alias(*name),
        );
    }
    let df = trace
        .events
        .clone()
        .lazy()
        .filter(
            col("vm_fault_ret")
                .and(col("ret").is_not_null())
                .and(col("ret").gt_eq(lit(0i64))),
        )
        .group_by([col("hook")])
        .agg(aggs)
        .with_column(col("hook").cast(DataType::String))
        .sort(
            ["calls"],
            SortMultipleOptions::default().with_order_descending(true),
        )
        .collect()?;
    let hooks = strings(&df, "hook", "?")?;
    let calls = u64s(&df, "calls")?;
    let zero = u64s(&df, "zero")?;
    let per_bit = vm_fault::NAMES
        .iter()
        .map(|(n, _)| u64s(&df, n).map(|v| (*n, v)))
        .collect::<PolarsResult<Vec<_>>>()?;
    Ok((0..df.height())
        .map(|i| MixRow {
            hook: hooks[i].clone(),
            calls: calls[i],
            zero: zero[i],
            bits: per_bit
                .iter()
                .filter(|(_, v)| v[i] > 0)
                .map(|(n, v)| (n.to_string(), v[i]))
                .collect(),
        })
        .collect())
}

fn retry_table(trace: &Trace) -> PolarsResult<Vec<RetryRow>> {
    let flag = |b: u32| {
        col("fault_flags")
            .and(lit(b))
            .neq(lit(0u32))
            .fill_null(lit(false))
    };
    let retry = || bit_set("ret", VM_FAULT_RETRY).fill_null(lit(false));
    let df = trace
        .events
        .clone()
        .lazy()
        .filter(col("hook").eq(lit("handle_mm_fault")))
        .group_by([col("driver")])
        .agg([
            len().cast(DataType::UInt64).alias("faults"),
            retry().sum().cast(DataType::UInt64).alias("retry"),
            retry()
                .and(flag(FAULT_FLAG_VMA_LOCK))
                .sum()
                .cast(DataType::UInt64)
                .alias("retry_vma_lock"),
            flag(FAULT_FLAG_TRIED)
                .sum()
                .cast(DataType::UInt64)
                .alias("tried"),
            bit_set("ret", VM_FAULT_COMPLETED)
                .fill_null(lit(false))
                .sum()
                .cast(DataType::UInt64)
                .alias("completed"),
        ])
        .with_column(col("driver").cast(DataType::String))
        .sort(
            ["faults"],
            SortMultipleOptions::default().with_order_descending(true),
        )
        .collect()?;
    let driver = strings(&df, "driver", GroupBy::Driver.null_label())?;
    let [faults, retry, vma, tried, completed] =
        ["faults", "retry", "retry_vma_lock", "tried", "completed"].map(|n| u64s(&df, n));
    let (faults, retry, vma, tried, completed) = (faults?, retry?, vma?, tried?, completed?);
    Ok((0..df.height())
        .map(|i| RetryRow {
            driver: driver[i].clone(),
            faults: faults[i],
            retry: retry[i],
            retry_vma_lock: vma[i],
            tried: tried[i],
            completed: completed[i],
        })
        .collect())
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
        .agg([len().cast(DataType::UInt64).alias("count")])
        .with_columns(keys.map(|k| col(k).cast(DataType::String)))
        .sort_by_exprs(
            [col("count"), col("hook")],
            SortMultipleOptions::default().with_order_descending_multi([true, false]),
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

fn counter_rows(trace: &Trace) -> PolarsResult<Vec<CpuCounters>> {
    let df = &trace.counters;
    let cpu = u64s(df, "cpu")?;
    let [d, u, r] = ["dropped", "unpaired", "read_failed"].map(|n| u64s(df, n));
    let (d, u, r) = (d?, u?, r?);
    Ok((0..df.height())
        .map(|i| CpuCounters {
            cpu: cpu[i] as u32,
            dropped: d[i],
            unpaired: u[i],
            read_failed: r[i],
        })
        .collect())
}
