//! Issue 21's damage matrix, read by the library: each case gets the class of damage it has,
//! with the batches before it kept, whether a reader decodes every column or leaves some
//! compressed. (`replay` and `analyzer` run their commands over the same cases.)

#[path = "matrix/mod.rs"]
mod matrix;

use matrix::Expect;
use pfnscope_trace::{Record, TraceMeta, TraceReader, TraceWriter, read_trace};

fn clean(path: &std::path::Path) -> Vec<usize> {
    let mut w = TraceWriter::create(path, &TraceMeta::default()).unwrap();
    let mut per_batch = vec![];
    for b in 0..5u64 {
        for i in 0..200u64 {
            w.push(&Record {
                id: b * 200 + i + 1,
                ts_ns: 1000 * (b * 200 + i),
                hook: "handle_mm_fault".into(),
                comm: "matrix".into(),
                address: Some(0x7f00_0000_0000 + (i << 12)),
                latency_ns: Some(500 + i),
                ..Default::default()
            });
        }
        w.flush_batch().unwrap();
        per_batch.push(200);
    }
    w.finish().unwrap();
    per_batch
}

#[test]
fn every_case_reads_as_its_class_with_the_batches_before_it_kept() {
    let dir = std::env::temp_dir().join(format!("pfnscope-matrix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("clean.arrows");
    let per_batch = clean(&path);
    for case in matrix::cases(&dir.join("cases"), &path) {
        let name = case.name;
        match (case.expect, read_trace(&case.path)) {
            (Expect::Whole, Ok(t)) => assert_eq!(t.damage, None, "{name}"),
            (Expect::Damaged(kind), Ok(t)) => {
                let d = t.damage.unwrap_or_else(|| panic!("{name}: no damage"));
                assert_eq!(d.kind, kind, "{name}: {d}");
                assert_eq!(d.batches_kept as usize, case.batches_kept, "{name}: {d}");
                let rows: usize = per_batch[..case.batches_kept].iter().sum();
                assert_eq!(t.records.len(), rows, "{name}");
                assert_eq!(d.records_kept as usize, rows, "{name}");
                // A reader that leaves columns compressed finds the same.
                let mut r = TraceReader::open_without(&case.path, &["comm", "address"]).unwrap();
                let projected = loop {
                    match r.next_rows() {
                        Ok(Some(_)) => {}
                        Ok(None) => break None,
                        Err(d) => break Some(d),
                    }
                };
                assert_eq!(projected.as_ref(), Some(&d), "{name}");
            }
            (Expect::Unusable(words), Err(e)) => {
                assert!(e.to_string().contains(words), "{name}: {e}")
            }
            (want, got) => panic!("{name}: expected {want:?}, got {got:?}"),
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
