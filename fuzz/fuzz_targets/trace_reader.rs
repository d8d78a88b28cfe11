//! Any bytes handed to the trace reader give a trace, a damaged trace or an error: never a panic,
//! a hang or unbounded memory. Seeds: `cargo xtask fuzz` builds the corpus from the traces the
//! test box just recorded (whole and cut short), and runs this for a bounded time in CI.
//!
//! Under `cargo fuzz` the readers do not compare checksums (`--cfg fuzzing`): mutated bytes
//! must get past them to reach the decoders.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pfnscope_trace::{Damage, DamageKind, Record, TraceReader, read_trace_bytes};

/// Every row `r` reads a row at a time, as the replay does, and the damage that ended it.
fn rows_of(mut r: TraceReader<&[u8]>) -> (Vec<Record>, Option<Damage>) {
    let mut rows = vec![];
    loop {
        match r.next_rows() {
            Ok(Some(b)) => rows.extend((0..b.len()).map(|i| b.record(i))),
            Ok(None) => return (rows, None),
            Err(d) => return (rows, Some(d)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(t) = read_trace_bytes(data) else {
        return;
    };
    // Touch what readers use, so decoding bugs behind lazy paths surface too.
    let _ = t.counters.total();
    let _ = t.events().filter_map(|r| r.latency_ns).max();
    if let Some(d) = &t.damage {
        // What a reader says it kept is what it kept, and the message is one line.
        // Rows kept, counter rows included: the records are the events among them.
        assert!(d.records_kept as usize >= t.records.len());
        assert!(d.bytes_kept <= data.len() as u64);
        assert!(!d.to_string().contains('\n'));
        if d.kind == DamageKind::CutShort {
            assert_eq!(d.bytes_kept, data.len() as u64);
        }
    }
    let label = Path::new("<memory>");
    // The replay reads batches a row at a time instead: it must accept exactly what decoding
    // accepts, and read the same records.
    let r = TraceReader::from_bytes(data, label).expect("read once already");
    assert_eq!(rows_of(r), (t.records.clone(), t.damage.clone()));
    // Columns left unread read as absent and change nothing else, damage included: every
    // reader of a file agrees on it (without checksums to compare, they decode every column).
    const UNREAD: &[&str] = &["comm", "cache_out", "cpu", "vma_prot", "write"];
    let r = TraceReader::from_reader_without(data, label, UNREAD).expect("read once already");
    let (rows, damage) = rows_of(r);
    // A reader on a plain `Read` knows no file size.
    let sizeless = |d: Option<Damage>| d.map(|d| Damage {
        file_bytes: None,
        ..d
    });
    assert_eq!(sizeless(damage), sizeless(t.damage.clone()));
    let want: Vec<_> = t
        .records
        .iter()
        .map(|r| Record {
            comm: Default::default(),
            cache_out: None,
            cpu: 0,
            vma_prot: None,
            write: None,
            ..*r
        })
        .collect();
    assert_eq!(rows, want);
});
