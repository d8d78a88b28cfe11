//! The numbers behind the plots, gathered in single passes over the event columns (a Rust loop
//! over the physical arrays is faster here than one polars group-by per chart, and keeps the
//! 10 M-row case at one scan per chart).
//!
//! Latency bins are log-linear, as in HDR histograms: each power of two is cut in
//! [`SUB_BINS`] equal parts, so bin edges are `2^m * (1 + j/SUB_BINS)`.

use std::collections::HashMap;

use polars::prelude::*;

use crate::load::Trace;

pub const SUB_BINS: u32 = 4;
/// Bins up to 2^64 ns.
pub const N_BINS: usize = 64 * SUB_BINS as usize;

/// The bin holding `ns` (0 and 1 ns share bin 0).
pub fn bin_of(ns: u64) -> usize {
    if ns <= 1 {
        return 0;
    }
    let msb = 63 - ns.leading_zeros();
    let sub = if msb >= 2 {
        (ns >> (msb - 2)) & 3
    } else {
        (ns << (2 - msb)) & 3
    };
    (msb * SUB_BINS) as usize + sub as usize
}

/// Lower edge of bin `k`, in ns.
pub fn bin_low(k: usize) -> f64 {
    let (m, j) = (k as u32 / SUB_BINS, k as u32 % SUB_BINS);
    2f64.powi(m as i32) * (1.0 + j as f64 / SUB_BINS as f64)
}

/// Upper edge of bin `k`, in ns.
pub fn bin_high(k: usize) -> f64 {
    bin_low(k + 1)
}

/// Latency bins of one group.
#[derive(Clone, Debug, PartialEq)]
pub struct Binned {
    pub name: String,
    pub total: u64,
    pub bins: Vec<u64>,
}

impl Binned {
    /// Fraction of the group at or below each bin's upper edge.
    pub fn cdf(&self) -> Vec<f64> {
        let mut acc = 0u64;
        self.bins
            .iter()
            .map(|c| {
                acc += c;
                acc as f64 / self.total.max(1) as f64
            })
            .collect()
    }

    /// First and last non-empty bin.
    pub fn span(&self) -> Option<(usize, usize)> {
        let lo = self.bins.iter().position(|c| *c > 0)?;
        let hi = self.bins.iter().rposition(|c| *c > 0)?;
        Some((lo, hi))
    }
}

fn codes(df: &DataFrame, key: &str) -> PolarsResult<(Vec<Option<u32>>, Arc<CategoricalMapping>)> {
    let c = df.column(key)?.cat32()?;
    Ok((c.physical().iter().collect(), c.get_mapping().clone()))
}

/// Latency bins of the page faults with a latency, per value of the categorical column `key`,
/// largest groups first, at most `top` of them (the rest folded into "(other)").
pub fn latency_by(
    trace: &Trace,
    key: &str,
    null_label: &str,
    top: usize,
) -> PolarsResult<Vec<Binned>> {
    let df = &trace.events;
    let (keys, mapping) = codes(df, key)?;
    let lat = df.column("latency_ns")?.u64()?;
    let fault = df.column("is_fault")?.bool()?;
    let mut groups: HashMap<Option<u32>, Vec<u64>> = HashMap::new();
    for ((k, l), f) in keys.iter().zip(lat.iter()).zip(fault.iter()) {
        if let (Some(l), Some(true)) = (l, f) {
            groups.entry(*k).or_insert_with(|| vec![0; N_BINS])[bin_of(l)] += 1;
        }
    }
    let mut out: Vec<Binned> = groups
        .into_iter()
        .map(|(k, bins)| Binned {
            name: k
                .and_then(|k| mapping.cat_to_str(k))
                .unwrap_or(null_label)
                .to_string(),
            total: bins.iter().sum(),
            bins,
        })
        .collect();
    out.sort_by(|a, b| b.total.cmp(&a.total).then(a.name.cmp(&b.name)));
    if out.len() > top {
        let rest = out.split_off(top.saturating_sub(1));
        let mut other = Binned {
            name: "(other)".into(),
            total: 0,
            bins: vec![0; N_BINS],
        };
        for r in rest {
            other.total += r.total;
            for (o, c) in other.bins.iter_mut().zip(r.bins) {
                *o += c;
            }
        }
        out.push(other);
    }
    Ok(out)
}

/// A "nice" bucket width (1, 2 or 5 times a power of ten, in ns) giving at most `max` buckets.
/// A span near 2^64 (a corrupt timestamp) gets the widest width instead of overflowing.
pub fn nice_width(span_ns: u64, max: u64) -> u64 {
    let want = (span_ns / max.max(1)).max(1);
    let mut p = 1u64;
    loop {
        for m in [1, 2, 5] {
            match p.checked_mul(m) {
                Some(w) if w >= want => return w,
                Some(_) => {}
                None => return u64::MAX,
            }
        }
        p = p.saturating_mul(10);
    }
}

/// Gregg-style latency heatmap: fault counts per (time bucket, latency bin).
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap {
    pub t0_ns: u64,
    pub width_ns: u64,
    /// Lowest latency bin in `cells`' rows.
    pub bin0: usize,
    /// `cells[column][row]`.
    pub cells: Vec<Vec<u64>>,
    pub max: u64,
}

pub fn heatmap(trace: &Trace, max_columns: u64) -> PolarsResult<Option<Heatmap>> {
    let Some((t0, t1)) = trace.time_range() else {
        return Ok(None);
    };
    let width = nice_width((t1 - t0).saturating_add(1), max_columns);
    let ncol = ((t1 - t0) / width + 1) as usize;
    let df = &trace.events;
    let ts = df.column("ts_ns")?.u64()?;
    let lat = df.column("latency_ns")?.u64()?;
    let fault = df.column("is_fault")?.bool()?;
    let mut cells = vec![vec![0u64; N_BINS]; ncol];
    let mut any = false;
    for ((t, l), f) in ts.iter().zip(lat.iter()).zip(fault.iter()) {
        if let (Some(t), Some(l), Some(true)) = (t, l, f) {
            cells[((t - t0) / width) as usize][bin_of(l)] += 1;
            any = true;
        }
    }
    if !any {
        return Ok(None);
    }
    let used = |k: usize| cells.iter().any(|c| c[k] > 0);
    let lo = (0..N_BINS).find(|k| used(*k)).unwrap_or(0);
    let hi = (0..N_BINS).rev().find(|k| used(*k)).unwrap_or(0);
    let cells: Vec<Vec<u64>> = cells.into_iter().map(|c| c[lo..=hi].to_vec()).collect();
    let max = cells.iter().flatten().copied().max().unwrap_or(0);
    Ok(Some(Heatmap {
        t0_ns: t0,
        width_ns: width,
        bin0: lo,
        cells,
        max,
    }))
}

/// Events per second over time, per hook.
#[derive(Clone, Debug, PartialEq)]
pub struct Rates {
    pub t0_ns: u64,
    pub width_ns: u64,
    /// (hook, events in each bucket), busiest hook first.
    pub hooks: Vec<(String, Vec<u64>)>,
}

pub fn rates(trace: &Trace, max_points: u64, top: usize) -> PolarsResult<Option<Rates>> {
    let Some((t0, t1)) = trace.time_range() else {
        return Ok(None);
    };
    let width = nice_width((t1 - t0).saturating_add(1), max_points).max(1_000_000);
    let n = ((t1 - t0) / width + 1) as usize;
    let df = &trace.events;
    let (hooks, mapping) = codes(df, "hook")?;
    let ts = df.column("ts_ns")?.u64()?;
    let mut per: HashMap<Option<u32>, Vec<u64>> = HashMap::new();
    for (h, t) in hooks.iter().zip(ts.iter()) {
        if let Some(t) = t {
            per.entry(*h).or_insert_with(|| vec![0; n])[((t - t0) / width) as usize] += 1;
        }
    }
    let mut hooks: Vec<(String, Vec<u64>)> = per
        .into_iter()
        .map(|(h, v)| {
            let name = h
                .and_then(|h| mapping.cat_to_str(h))
                .unwrap_or("?")
                .to_string();
            (name, v)
        })
        .collect();
    hooks.sort_by(|a, b| {
        let (x, y): (u64, u64) = (a.1.iter().sum(), b.1.iter().sum());
        y.cmp(&x).then(a.0.cmp(&b.0))
    });
    hooks.truncate(top);
    // The last bucket is cut short by the end of the trace: its rate would read as a drop.
    if n > 2 {
        for (_, v) in &mut hooks {
            v.pop();
        }
    }
    Ok(Some(Rates {
        t0_ns: t0,
        width_ns: width,
        hooks,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_monotonic_and_bracket_their_values() {
        let mut last = 0;
        for ns in [2u64, 3, 5, 100, 1000, 1234, 65_536, 1 << 40, u64::MAX] {
            let k = bin_of(ns);
            assert!(k >= last);
            last = k;
            assert!(
                bin_low(k) <= ns as f64 && (ns as f64) < bin_high(k) * 1.0000001,
                "{ns} in {k}"
            );
        }
        assert_eq!(bin_of(1024), 40);
        assert_eq!(bin_of(1280), 41);
    }

    #[test]
    fn nice_widths() {
        assert_eq!(nice_width(100_000_000_000, 200), 500_000_000);
        assert_eq!(nice_width(150, 200), 1);
        assert_eq!(nice_width(3_000_000, 100), 50_000);
        assert_eq!(nice_width(u64::MAX, 1), u64::MAX);
        assert_eq!(nice_width(u64::MAX, 200), 100_000_000_000_000_000);
    }

    #[test]
    fn cdf_ends_at_one() {
        let b = Binned {
            name: "x".into(),
            total: 4,
            bins: vec![1, 0, 3],
        };
        assert_eq!(b.cdf(), vec![0.25, 0.25, 1.0]);
        assert_eq!(b.span(), Some((0, 2)));
    }
}
