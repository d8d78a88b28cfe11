//! Front ends that read a trace file and drive the engine. The model itself never does I/O;
//! this is the one place that opens files.

use std::io::Read;
use std::path::Path;
use std::sync::mpsc::sync_channel;

use pfnscope_trace::{RawBatch, Record, TraceError, TraceMeta, TraceReader};

use crate::engine::Engine;
use crate::kernel::{BadRelease, KernelRules};
use crate::overhead::{Overhead, OverheadReport};
use crate::report::{Collector, Report, ReportHead};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Rules(#[from] BadRelease),
}

/// Options of a check run.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Force a rule set (`6.1`, `6.12`, `6.18`, a full release) instead of the trace's.
    pub kernel_rules: Option<String>,
}

/// The rules for a trace: forced, or from its metadata.
pub fn rules_for(meta: &TraceMeta, forced: Option<&str>) -> Result<KernelRules, BadRelease> {
    match forced {
        Some(v) => KernelRules::from_release(v),
        None => Ok(KernelRules::from_meta_release(&meta.kernel_release)),
    }
}

/// Replays records already in memory.
pub fn check_records(
    meta: &TraceMeta,
    rules: KernelRules,
    records: impl IntoIterator<Item = Record>,
    trace: &str,
) -> Report {
    let head_rules = rules.clone();
    let mut e = Engine::new(meta, rules, Collector::new());
    e.push_all(records);
    let (c, losses, events) = e.finish();
    Report::from_collector(
        c,
        ReportHead {
            trace: trace.to_string(),
            kernel_release: meta.kernel_release.clone(),
            rules: head_rules.series().to_string(),
            rules_note: head_rules.note,
            events,
            truncated: None,
            losses,
        },
    )
}

/// Streams a trace file through the engine batch by batch. `progress(rows, bytes)` is called
/// after every piece with the rows replayed and the bytes of the file read so far. A damaged
/// tail is replayed up to the damage and reported in `truncated`.
pub fn check_file(
    path: &Path,
    opts: &CheckOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<Report, ReplayError> {
    let mut reader = TraceReader::open(path)?;
    let meta = reader.meta().clone();
    let rules = rules_for(&meta, opts.kernel_rules.as_deref())?;
    let head_rules = rules.clone();
    let mut e = Engine::new(&meta, rules, Collector::new());
    let mut rows = 0u64;
    let truncated = each_batch(&mut reader, |piece, bytes| {
        rows += piece.len() as u64;
        e.take_all(piece);
        progress(rows, bytes);
    });
    let (c, losses, events) = e.finish();
    Ok(Report::from_collector(
        c,
        ReportHead {
            trace: path.display().to_string(),
            kernel_release: meta.kernel_release.clone(),
            rules: head_rules.series().to_string(),
            rules_note: head_rules.note,
            events,
            truncated,
            losses,
        },
    ))
}

/// `replay overhead`: streams a trace file through the per-page tally. `progress(rows, bytes)`
/// is called after every piece, as for [`check_file`]. Returns the report and the damage that
/// ended a truncated trace.
pub fn overhead_file(
    path: &Path,
    top: usize,
    mut progress: impl FnMut(u64, u64),
) -> Result<(OverheadReport, Option<String>), TraceError> {
    let mut reader = TraceReader::open(path)?;
    let mut o = Overhead::default();
    let mut rows = 0u64;
    let damage = each_batch(&mut reader, |piece, bytes| {
        rows += piece.len() as u64;
        o.take_all(piece);
        progress(rows, bytes);
    });
    Ok((o.finish(&path.display().to_string(), top), damage))
}

/// Records per piece handed from the decoding thread to the replay: 2 MiB.
pub const CHUNK_ROWS: usize = 4096;

/// Hands every record of `reader` to `f`, in order and in pieces of at most [`CHUNK_ROWS`],
/// while one thread reads and decompresses batches and another turns them into records: each
/// stage costs about as much as replaying, so the three overlap. `f` also gets the bytes of
/// the file read up to the end of the piece's batch. Returns the damage that ended a truncated
/// trace.
///
/// `f` may take the records out of the piece (leaving stale ones or none): the piece then goes
/// back to the decoder, which writes the next records over what is left.
pub fn each_batch<R: Read + Send>(
    reader: &mut TraceReader<R>,
    mut f: impl FnMut(&mut Vec<Record>, u64),
) -> Option<String> {
    // One raw batch (~15 MB decompressed) waits between reading and decoding. Records
    // (~0.5 KB each) travel in pieces of CHUNK_ROWS, up to four waiting (9 MiB): with one, the
    // replay stalled whenever decoding a piece took longer than replaying the last. On the 10M
    // bench trace, alternating binaries: 2.65 s wall with one, 2.45 with four, no better with
    // eight or with two raw batches; the same CPU time and peak RSS (~130 MiB) throughout.
    let (raw_tx, raw_rx) = sync_channel::<(RawBatch, u64)>(1);
    let (tx, rx) = sync_channel::<(Vec<Record>, u64)>(4);
    // Pieces coming back, as many as can be out at once, so none is freed and allocated
    // again. On the 10M bench trace, alternating binaries: `replay check` 3.19 -> 3.04 CPU-s
    // (1.86 -> 1.80 s wall), `replay overhead` 2.60 -> 2.48.
    let (back_tx, back_rx) = sync_channel::<Vec<Record>>(6);
    let mut decoder = reader.batch_decoder();
    std::thread::scope(|s| {
        let read = s.spawn(move || {
            loop {
                match reader.next_raw() {
                    Ok(Some(batch)) => {
                        if raw_tx.send((batch, reader.bytes_read())).is_err() {
                            return None;
                        }
                    }
                    Ok(None) => return None,
                    Err(d) => return Some(d),
                }
            }
        });
        let decode = s.spawn(move || {
            for (batch, bytes) in raw_rx {
                match decoder.decode_chunks(
                    &batch,
                    CHUNK_ROWS,
                    || back_rx.try_recv().ok(),
                    |records| tx.send((records, bytes)).is_ok(),
                ) {
                    Ok(true) => {}
                    Ok(false) => return None,
                    // Dropping the channel stops the reader at its next batch.
                    Err(d) => return Some(d),
                }
            }
            None
        });
        for (mut piece, bytes) in rx {
            f(&mut piece, bytes);
            // Full or gone (the decoder is done): the piece is freed here instead.
            let _ = back_tx.try_send(piece);
        }
        // A corrupt batch comes before anything the reader met after it.
        let corrupt = decode.join().expect("the trace decoder thread panicked");
        let unreadable = read.join().expect("the trace reader thread panicked");
        corrupt.or(unreadable)
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use arrow_array::{Int64Array, UInt64Array};
    use arrow_schema::{DataType, Field, Schema};
    use pfnscope_trace::{RecordBatch, SCHEMA_VERSION_KEY, TraceWriter};

    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("replay-run-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join("t.arrows")
    }

    /// What the plain one-thread reader makes of a file.
    fn sequential(p: &Path) -> (Vec<Record>, Option<String>) {
        let mut r = TraceReader::open(p).unwrap();
        let mut records = vec![];
        loop {
            match r.next_batch() {
                Ok(Some(b)) => records.extend(b),
                Ok(None) => return (records, None),
                Err(d) => return (records, Some(d)),
            }
        }
    }

    fn pipelined(p: &Path) -> (Vec<Record>, Option<String>) {
        let mut r = TraceReader::open(p).unwrap();
        let mut records = vec![];
        let d = each_batch(&mut r, |b, _| {
            assert!(b.len() <= CHUNK_ROWS);
            // Cloned, not taken: the piece goes back full, and the decoder must overwrite it.
            records.extend(b.iter().cloned())
        });
        (records, d)
    }

    /// Batches larger than a piece, so pieces are cut from them.
    const PER_BATCH: u64 = CHUNK_ROWS as u64 * 2 + 100;

    fn records(p: &Path, batches: u64) {
        let mut w = TraceWriter::create(p, &TraceMeta::default()).unwrap();
        for b in 0..batches {
            for i in 0..PER_BATCH {
                w.push(&Record {
                    seq: b * PER_BATCH + i,
                    hook: "handle_mm_fault".into(),
                    address: Some(i << 12),
                    ..Default::default()
                });
            }
            w.flush_batch().unwrap();
        }
        w.finish().unwrap();
    }

    /// The bytes handed with each piece (what the progress bars show) only grow, and reach
    /// the last batch's end, a few bytes short of the file's (the end-of-stream marker).
    #[test]
    fn pieces_come_with_the_bytes_read_so_far() {
        let p = tmp("bytes");
        records(&p, 4);
        let len = std::fs::metadata(&p).unwrap().len();
        let mut r = TraceReader::open(&p).unwrap();
        let mut seen = vec![];
        assert!(each_batch(&mut r, |_, bytes| seen.push(bytes)).is_none());
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert!(seen[0] > 0 && seen[0] < len / 2, "{seen:?} of {len}");
        let last = *seen.last().unwrap();
        assert!(last <= len && last + 16 >= len, "{last} of {len}");
    }

    #[test]
    fn the_pipeline_reads_what_the_plain_reader_reads() {
        // Clean, cut short, and a batch whose columns do not decode.
        let clean = tmp("clean");
        records(&clean, 6);
        let cut = tmp("cut");
        let bytes = std::fs::read(&clean).unwrap();
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let bad = tmp("bad");
        let schema = Arc::new(Schema::new_with_metadata(
            vec![
                Field::new("seq", DataType::UInt64, false),
                Field::new("hook", DataType::Int64, false),
            ],
            std::collections::HashMap::from([(SCHEMA_VERSION_KEY.to_string(), "1".to_string())]),
        ));
        let mut w =
            arrow_ipc::writer::StreamWriter::try_new(std::fs::File::create(&bad).unwrap(), &schema)
                .unwrap();
        for _ in 0..3 {
            let b = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(UInt64Array::from(vec![1, 2])),
                    Arc::new(Int64Array::from(vec![3, 4])),
                ],
            )
            .unwrap();
            w.write(&b).unwrap();
        }
        w.finish().unwrap();

        for (p, batches, damaged) in [(&clean, 6, false), (&cut, 1, true), (&bad, 0, true)] {
            let (want, want_d) = sequential(p);
            let (got, got_d) = pipelined(p);
            assert_eq!(got, want, "{}", p.display());
            assert_eq!(got_d, want_d, "{}", p.display());
            assert!(
                got.len() as u64 >= batches * PER_BATCH,
                "{}: {} records",
                p.display(),
                got.len()
            );
            assert_eq!(got_d.is_some(), damaged, "{}: {got_d:?}", p.display());
        }
        let (_, d) = pipelined(&bad);
        assert!(d.unwrap().contains("batch 1 is corrupt"));
        for p in [clean, cut, bad] {
            std::fs::remove_dir_all(p.parent().unwrap()).ok();
        }
    }
}
