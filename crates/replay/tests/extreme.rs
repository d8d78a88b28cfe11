//! Values no kernel produces (a pfn or size near 2^64, a vma that ends before it starts, a
//! latency that wraps a sum) in an otherwise correct trace: the replay and the overhead tally
//! must report on them, not panic. Tests build with overflow checks, so arithmetic that would
//! wrap in a release build fails here.

use pfnscope_abi::kernel::Series;
use pfnscope_trace::Record;
use replay::check_records;
use replay::kernel::KernelRules;
use replay::overhead::Overhead;
use replay::synth::workload;

type Field = (&'static str, fn(&mut Record, u64));

const FIELDS: &[Field] = &[
    ("address", |r, v| r.address = r.address.map(|_| v)),
    ("vma_start", |r, v| r.vma_start = r.vma_start.map(|_| v)),
    ("vma_end", |r, v| r.vma_end = r.vma_end.map(|_| v)),
    ("vma_pgoff", |r, v| r.vma_pgoff = r.vma_pgoff.map(|_| v)),
    ("vma_flags", |r, v| r.vma_flags = r.vma_flags.map(|_| v)),
    ("pte", |r, v| r.pte = r.pte.map(|_| v)),
    ("pfn", |r, v| r.pfn = r.pfn.map(|_| v)),
    ("size", |r, v| r.size = r.size.map(|_| v)),
    ("prot", |r, v| r.prot = r.prot.map(|_| v)),
    ("prot_out", |r, v| r.prot_out = r.prot_out.map(|_| v)),
    ("index", |r, v| r.index = r.index.map(|_| v)),
    ("ret", |r, v| r.ret = r.ret.map(|_| v as i64)),
    ("latency_ns", |r, v| r.latency_ns = r.latency_ns.map(|_| v)),
    ("ts_ns", |r, v| r.ts_ns = v),
    ("parent", |r, v| r.parent = v),
];

const VALUES: &[u64] = &[0, 1 << 63, u64::MAX - 4095, u64::MAX];

#[test]
fn absurd_field_values_are_replayed_without_a_panic() {
    for series in [Series::V6_1, Series::V6_12, Series::V6_16] {
        let b = workload(series);
        let (meta, clean) = (b.meta(), b.records());
        for &(name, set) in FIELDS {
            for &v in VALUES {
                // Every 5th record, so the value meets each hook and the state it left.
                let mut recs = clean.clone();
                recs.iter_mut().step_by(5).for_each(|r| set(r, v));
                let what = format!("{series}: {name} = {v:#x}");
                let rep = std::panic::catch_unwind(|| {
                    check_records(&meta, KernelRules::for_series(series), recs.clone(), &what)
                });
                assert!(rep.is_ok(), "check panicked on {what}");
                let o = std::panic::catch_unwind(|| {
                    let mut o = Overhead::default();
                    recs.into_iter().for_each(|r| o.push(r));
                    o.finish(&what, 10)
                });
                assert!(o.is_ok(), "overhead panicked on {what}");
            }
        }
    }
}
