//! The tracer's loss counters, handed out apart from the events.
//!
//! The tracer counts, per CPU, the events the ring buffer dropped, the calls whose entry or
//! return was lost, and the vma reads that failed. The counts only grow; the last values per
//! CPU are what a recording lost. A stream cannot rewrite its schema metadata at the end, so
//! the writer appends them to every batch as rows of a reserved hook ([`COUNTERS_HOOK`]), as
//! every schema has: a trace cut short still has the values of its last whole batch, and old
//! traces read the same. The reader takes those rows out of each batch before anyone sees it
//! and keeps them as [`LossCounters`] ([`crate::TraceReader::counters`]): no consumer filters
//! rows by hook name.

use std::collections::BTreeMap;

use arrow_array::{
    Array, BooleanArray, DictionaryArray, RecordBatch, StringArray, types::Int32Type,
};
use serde::Serialize;

use crate::columns::{
    Record, compat,
    kinds::{Bits, Column, OptU64, U32, bytes, check_strings, owned_column},
};
use crate::sym::Interner;

/// `hook` of the rows carrying cumulative per-CPU counters (written at every flush; the last row
/// per CPU holds the final values). Only the writer and the reader know it.
pub(crate) const COUNTERS_HOOK: &str = "pfnscope:counters";

/// One CPU's counters, cumulative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CpuCounters {
    pub cpu: u32,
    /// Events the ring buffer had no room for.
    pub dropped: u64,
    /// Calls whose entry or return was lost.
    pub unpaired: u64,
    /// vma reads that failed.
    pub read_failed: u64,
}

impl CpuCounters {
    /// The row the writer stores them as.
    pub(crate) fn to_record(self, ts_ns: u64) -> Record {
        Record {
            hook: COUNTERS_HOOK.into(),
            mode: "user".into(),
            ts_ns,
            cpu: self.cpu,
            dropped: Some(self.dropped),
            unpaired: Some(self.unpaired),
            read_failed: Some(self.read_failed),
            ..Default::default()
        }
    }
}

/// The latest counters of every CPU seen so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LossCounters {
    per_cpu: BTreeMap<u32, CpuCounters>,
}

impl LossCounters {
    /// A later reading of a CPU's counters replaces the earlier one.
    pub fn update(&mut self, c: CpuCounters) {
        self.per_cpu.insert(c.cpu, c);
    }

    /// Per CPU, by CPU number.
    pub fn per_cpu(&self) -> impl Iterator<Item = &CpuCounters> {
        self.per_cpu.values()
    }

    /// Summed over CPUs (`cpu` is the number of CPUs).
    pub fn total(&self) -> CpuCounters {
        self.per_cpu.values().fold(
            CpuCounters {
                cpu: self.per_cpu.len() as u32,
                ..Default::default()
            },
            |t, c| CpuCounters {
                dropped: t.dropped + c.dropped,
                unpaired: t.unpaired + c.unpaired,
                read_failed: t.read_failed + c.read_failed,
                ..t
            },
        )
    }

    pub fn is_empty(&self) -> bool {
        self.per_cpu.is_empty()
    }
}

/// The columns the counters are read from: a reader that leaves columns unread keeps these.
pub(crate) const COUNTER_COLUMNS: &[&str] = &["hook", "cpu", "dropped", "unpaired", "read_failed"];

/// `batch` without its counter rows, and their values in row order. `first_seq` is the position
/// of its first row in the file: where rows go from the middle of a batch, the rest keep their
/// positions ([`compat::normalize`]). A batch without counter rows (no counter name in
/// its hook dictionary) is returned as it is, and one with them only at its end (where the
/// writer puts them) is sliced: neither copies a column.
pub(crate) fn split(
    batch: RecordBatch,
    first_seq: u64,
) -> Result<(RecordBatch, Vec<CpuCounters>), String> {
    let rows = counter_rows(&batch)?;
    if rows.is_empty() {
        return Ok((batch, Vec::new()));
    }
    let mut names = Interner::default();
    let cpu = owned_column::<U32>(&batch, "cpu", &mut names)?;
    let [dropped, unpaired, read_failed] = ["dropped", "unpaired", "read_failed"]
        .map(|c| owned_column::<OptU64>(&batch, c, &mut names));
    let (dropped, unpaired, read_failed) = (dropped?, unpaired?, read_failed?);
    let counters = rows
        .iter()
        .map(|&i| CpuCounters {
            cpu: U32::at(&cpu, i),
            dropped: OptU64::at(&dropped, i).unwrap_or(0),
            unpaired: OptU64::at(&unpaired, i).unwrap_or(0),
            read_failed: OptU64::at(&read_failed, i).unwrap_or(0),
        })
        .collect();
    let n = batch.num_rows();
    let first = rows[0];
    if rows.len() == n - first {
        return Ok((batch.slice(0, first), counters));
    }
    let mut keep = vec![true; n];
    rows.iter().for_each(|&i| keep[i] = false);
    let batch = compat::normalize(&batch, first_seq)?;
    let kept = arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(keep))
        .map_err(|e| e.to_string())?;
    Ok((kept, counters))
}

/// The rows of `batch` whose hook is [`COUNTERS_HOOK`], in order.
fn counter_rows(batch: &RecordBatch) -> Result<Vec<usize>, String> {
    let Some(hook) = batch.column_by_name("hook") else {
        return Ok(Vec::new());
    };
    let is_counters = |s: &StringArray, i: usize| bytes(s, i) == COUNTERS_HOOK.as_bytes();
    let valid = |i: usize| Bits::valid_in(hook.as_ref(), i);
    if let Some(d) = hook.as_any().downcast_ref::<DictionaryArray<Int32Type>>()
        && let Some(values) = d.values().as_any().downcast_ref::<StringArray>()
    {
        check_strings(values).map_err(|e| format!("column `hook` dictionary {e}"))?;
        let keys: Vec<i32> = (0..values.len())
            .filter(|&k| is_counters(values, k))
            .map(|k| k as i32)
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let stored = d.keys().values();
        return Ok((0..d.len().min(stored.len()))
            .filter(|&i| valid(i) && keys.contains(&stored[i]))
            .collect());
    }
    if let Some(s) = hook.as_any().downcast_ref::<StringArray>() {
        check_strings(s).map_err(|e| format!("column `hook` {e}"))?;
        return Ok((0..s.len())
            .filter(|&i| valid(i) && is_counters(s, i))
            .collect());
    }
    // Another type: the row reader says what is wrong with it.
    Ok(Vec::new())
}
