//! `analyzer diff A B`: per-driver fault latency of two traces side by side, and whether each
//! change is beyond sampling noise.
//!
//! ## The noise test
//! For each driver and each of p50 and p99, a percentile bootstrap of the difference
//! `quantile(B) - quantile(A)`: both samples are resampled with replacement [`RESAMPLES`] times,
//! the quantile difference is taken each time, and the 2.5th and 97.5th percentiles of those
//! differences form a 95% confidence interval. A change is called beyond noise when the interval
//! excludes zero. The random numbers come from a fixed-seed SplitMix64, so a diff is
//! reproducible. Samples above [`MAX_SAMPLE`] are first thinned to a seeded random subsample
//! (the interval gets a little wider than the full data would give; the quantiles shown are
//! from the full data). p99 needs 100 samples per side to be tested at all.
//!
//! The bootstrap sees the variation *within* each recording. Variation between runs (cache
//! state, other load) can be larger: record each side more than once when a change is small.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::{
    error::{AnalyzerError, Result},
    load::Trace,
};

pub const RESAMPLES: usize = 1000;
pub const MAX_SAMPLE: usize = 10_000;
const SEED: u64 = 0x5eed_0f9f_75c0_9e17;
const MIN_P50: usize = 20;
const MIN_P99: usize = 100;

/// SplitMix64: tiny, fast and good enough for resampling indices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }
}

/// Nearest-rank quantile of a sorted slice.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// p50 and p99 of a bootstrap resample of `sorted`, without sorting: draw how often each
/// element is picked, then walk the counts to the two ranks.
fn resampled_quantiles(sorted: &[u64], counts: &mut [u32], rng: &mut Rng) -> (u64, u64) {
    let n = sorted.len();
    counts.iter_mut().for_each(|c| *c = 0);
    for _ in 0..n {
        counts[rng.below(n)] += 1;
    }
    let r50 = ((0.5 * n as f64).ceil() as usize).max(1);
    let r99 = ((0.99 * n as f64).ceil() as usize).max(1);
    let (mut seen, mut p50) = (0usize, None);
    for (i, c) in counts.iter().enumerate() {
        seen += *c as usize;
        if p50.is_none() && seen >= r50 {
            p50 = Some(sorted[i]);
        }
        if seen >= r99 {
            return (p50.unwrap_or(sorted[i]), sorted[i]);
        }
    }
    let last = sorted[n - 1];
    (p50.unwrap_or(last), last)
}

fn thin(mut v: Vec<u64>, rng: &mut Rng) -> Vec<u64> {
    if v.len() > MAX_SAMPLE {
        // Partial Fisher-Yates: the first MAX_SAMPLE slots become a uniform subsample.
        for i in 0..MAX_SAMPLE {
            let j = i + rng.below(v.len() - i);
            v.swap(i, j);
        }
        v.truncate(MAX_SAMPLE);
    }
    v.sort_unstable();
    v
}

/// 95% interval of `quantile_b - quantile_a` for p50 and p99.
fn bootstrap(a: &[u64], b: &[u64], rng: &mut Rng) -> ((f64, f64), (f64, f64)) {
    let a = thin(a.to_vec(), rng);
    let b = thin(b.to_vec(), rng);
    let (mut ca, mut cb) = (vec![0u32; a.len()], vec![0u32; b.len()]);
    let mut d50 = Vec::with_capacity(RESAMPLES);
    let mut d99 = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        let (a50, a99) = resampled_quantiles(&a, &mut ca, rng);
        let (b50, b99) = resampled_quantiles(&b, &mut cb, rng);
        d50.push(b50 as f64 - a50 as f64);
        d99.push(b99 as f64 - a99 as f64);
    }
    let ci = |mut d: Vec<f64>| {
        d.sort_by(|x, y| x.total_cmp(y));
        let at = |q: f64| d[((q * (d.len() - 1) as f64).round() as usize).min(d.len() - 1)];
        (at(0.025), at(0.975))
    };
    (ci(d50), ci(d99))
}

/// One quantile compared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub a_ns: u64,
    pub b_ns: u64,
    /// (b - a) / a, in percent.
    pub change_pct: f64,
    /// 95% bootstrap interval of b - a, in ns; None when too few samples to test.
    pub ci_ns: Option<(f64, f64)>,
    pub beyond_noise: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiffRow {
    pub driver: String,
    pub a_faults: u64,
    pub b_faults: u64,
    /// None when the driver has no timed faults on one side.
    pub p50: Option<Change>,
    pub p99: Option<Change>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diff {
    pub a: String,
    pub b: String,
    pub resamples: usize,
    pub rows: Vec<DiffRow>,
}

fn change(a: &[u64], b: &[u64], q: f64, ci: Option<(f64, f64)>) -> Change {
    let (qa, qb) = (quantile(a, q), quantile(b, q));
    Change {
        a_ns: qa,
        b_ns: qb,
        change_pct: if qa == 0 {
            0.0
        } else {
            100.0 * (qb as f64 - qa as f64) / qa as f64
        },
        beyond_noise: ci.is_some_and(|(lo, hi)| lo > 0.0 || hi < 0.0),
        ci_ns: ci,
    }
}

/// Timed fault latencies per driver, sorted.
fn latencies(t: &Trace) -> Result<BTreeMap<String, Vec<u64>>> {
    let pl = |err| AnalyzerError::Polars {
        path: t.path.clone(),
        what: "reading latencies",
        err,
    };
    let df = &t.events;
    let drv = df
        .column("driver")
        .and_then(|c| c.cat32().cloned())
        .map_err(pl)?;
    let lat = df
        .column("latency_ns")
        .and_then(|c| c.u64().cloned())
        .map_err(pl)?;
    let fault = df
        .column("is_fault")
        .and_then(|c| c.bool().cloned())
        .map_err(pl)?;
    let mapping = drv.get_mapping().clone();
    let mut by: HashMap<Option<u32>, Vec<u64>> = HashMap::new();
    for ((d, l), f) in drv.physical().iter().zip(lat.iter()).zip(fault.iter()) {
        if let (Some(l), Some(true)) = (l, f) {
            by.entry(d).or_default().push(l);
        }
    }
    Ok(by
        .into_iter()
        .map(|(d, mut v)| {
            v.sort_unstable();
            let name = d
                .and_then(|d| mapping.cat_to_str(d))
                .unwrap_or("(no vm_ops)");
            (name.to_string(), v)
        })
        .collect())
}

pub fn diff(a: &Trace, b: &Trace) -> Result<Diff> {
    for t in [a, b] {
        if !t.has_latency() {
            return Err(AnalyzerError::NoLatency {
                path: t.path.clone(),
            });
        }
    }
    let (la, lb) = (latencies(a)?, latencies(b)?);
    let mut drivers: Vec<&String> = la.keys().chain(lb.keys()).collect();
    drivers.sort();
    drivers.dedup();
    let mut rng = Rng(SEED);
    let empty = Vec::new();
    let mut rows: Vec<DiffRow> = drivers
        .into_iter()
        .map(|d| {
            let (va, vb) = (la.get(d).unwrap_or(&empty), lb.get(d).unwrap_or(&empty));
            let both = !va.is_empty() && !vb.is_empty();
            let (ci50, ci99) = if va.len().min(vb.len()) >= MIN_P50 {
                let (c50, c99) = bootstrap(va, vb, &mut rng);
                (
                    Some(c50),
                    (va.len().min(vb.len()) >= MIN_P99).then_some(c99),
                )
            } else {
                (None, None)
            };
            DiffRow {
                driver: d.clone(),
                a_faults: va.len() as u64,
                b_faults: vb.len() as u64,
                p50: both.then(|| change(va, vb, 0.5, ci50)),
                p99: both.then(|| change(va, vb, 0.99, ci99)),
            }
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.a_faults + r.b_faults));
    Ok(Diff {
        a: a.path.display().to_string(),
        b: b.path.display().to_string(),
        resamples: RESAMPLES,
        rows,
    })
}

/// The diff as a text table.
pub fn render(d: &Diff) -> String {
    use crate::text::{fmt_ns, table};
    let cell = |c: &Option<Change>| match c {
        None => ("-".to_string(), "-".to_string()),
        Some(c) => (
            format!(
                "{} -> {} ({:+.1}%)",
                fmt_ns(c.a_ns as f64),
                fmt_ns(c.b_ns as f64),
                c.change_pct
            ),
            match c.ci_ns {
                None => "too few samples".into(),
                Some(_) if c.beyond_noise => {
                    if c.b_ns > c.a_ns {
                        "SLOWER".into()
                    } else {
                        "FASTER".into()
                    }
                }
                Some(_) => "noise".into(),
            },
        ),
    };
    let rows: Vec<Vec<String>> = d
        .rows
        .iter()
        .map(|r| {
            let (p50, v50) = cell(&r.p50);
            let (p99, v99) = cell(&r.p99);
            vec![
                r.driver.clone(),
                r.a_faults.to_string(),
                r.b_faults.to_string(),
                p50,
                v50,
                p99,
                v99,
            ]
        })
        .collect();
    format!(
        "A: {}\nB: {}\nfault latency per driver; verdict = 95% bootstrap interval of B-A ({} resamples) excludes 0\n{}",
        d.a,
        d.b,
        d.resamples,
        table(
            &[
                "driver",
                "faults A",
                "faults B",
                "p50 A -> B",
                "p50",
                "p99 A -> B",
                "p99"
            ],
            &rows
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rng: &mut Rng, n: usize, base: u64, spread: u64) -> Vec<u64> {
        let mut v: Vec<u64> = (0..n).map(|_| base + rng.next() % spread).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&[7], 0.99), 7);
    }

    #[test]
    fn same_distribution_is_noise_and_shift_is_not() {
        let mut r = Rng(1);
        let a = sample(&mut r, 5000, 1000, 400);
        let b = sample(&mut r, 5000, 1000, 400);
        let (c50, c99) = bootstrap(&a, &b, &mut Rng(2));
        assert!(c50.0 <= 0.0 && c50.1 >= 0.0, "{c50:?}");
        assert!(c99.0 <= 0.0 && c99.1 >= 0.0, "{c99:?}");
        let slow = sample(&mut r, 5000, 1100, 400);
        let (c50, _) = bootstrap(&a, &slow, &mut Rng(2));
        assert!(c50.0 > 0.0, "a 100 ns shift must be detected: {c50:?}");
    }

    #[test]
    fn bootstrap_is_deterministic() {
        let mut r = Rng(3);
        let a = sample(&mut r, 30_000, 500, 1000);
        let b = sample(&mut r, 20_000, 520, 1000);
        assert_eq!(
            bootstrap(&a, &b, &mut Rng(SEED)),
            bootstrap(&a, &b, &mut Rng(SEED))
        );
    }
}
