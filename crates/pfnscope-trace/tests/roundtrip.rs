use std::{
    fs,
    path::{Path, PathBuf},
};

use pfnscope_trace::{
    DamageKind, PlanEntry, Record, Trace, TraceError, TraceMeta, TraceReader, TraceWriter,
};

/// The trace at `path` as [`pfnscope_trace::read_trace`] reads it, checked against reading it
/// a row at a time through [`pfnscope_trace::Rows`] (what the replay does): the same records,
/// and the same damage at the same place; and again with columns left unread, which read as
/// absent and change nothing else.
fn read_trace(path: &Path) -> Result<Trace, TraceError> {
    let t = pfnscope_trace::read_trace(path);
    // Every report of damage is one line (an Arrow message of several once made it more).
    if let Ok(Trace {
        damage: Some(d), ..
    }) = &t
    {
        assert!(!d.to_string().contains('\n'), "{d}");
    }
    for unread in [&[][..], UNREAD] {
        let rows = read_rows(path, unread);
        let t = match (&t, rows) {
            (Ok(t), Ok(rows)) => (t, rows),
            (Err(a), Err(b)) => {
                assert_eq!(a.to_string(), b.to_string(), "{}", path.display());
                continue;
            }
            (a, b) => panic!("{}: {a:?} but rows {b:?}", path.display()),
        };
        let want: Vec<Record> = t.0.records.iter().map(|r| without(r, unread)).collect();
        assert_eq!(
            t.1.0,
            want,
            "{}: rows and records differ (unread {unread:?})",
            path.display()
        );
        assert_eq!(t.1.1, t.0.damage, "{} (unread {unread:?})", path.display());
    }
    t
}

/// Columns of each kind (names, optional names, numbers, optional numbers, flags) that no
/// test damages.
const UNREAD: &[&str] = &["comm", "cache_out", "cpu", "vma_prot", "write"];

fn read_rows(
    path: &Path,
    unread: &'static [&'static str],
) -> Result<(Vec<Record>, Option<pfnscope_trace::Damage>), TraceError> {
    let mut r = TraceReader::open_without(path, unread)?;
    let (mut records, mut damage) = (vec![], None);
    loop {
        match r.next_rows() {
            Ok(Some(rows)) => records.extend((0..rows.len()).map(|i| rows.record(i))),
            Ok(None) => break,
            Err(d) => {
                damage = Some(d);
                break;
            }
        }
    }
    Ok((records, damage))
}

/// `r` as a reader that leaves `unread` undecoded sees it.
fn without(r: &Record, unread: &[&str]) -> Record {
    let mut r = *r;
    for c in unread {
        match *c {
            "comm" => r.comm = Default::default(),
            "cache_out" => r.cache_out = None,
            "cpu" => r.cpu = 0,
            "vma_prot" => r.vma_prot = None,
            "write" => r.write = None,
            _ => unreachable!("{c}"),
        }
    }
    r
}

#[test]
#[should_panic(expected = "column `vma_prot` was left unread")]
#[cfg(debug_assertions)]
fn an_unread_column_is_refused_in_a_debug_build() {
    let p = tmp("unread");
    write(&p, 1, 10);
    let rows = TraceReader::open_without(&p, &["vma_prot"])
        .unwrap()
        .next_rows()
        .unwrap()
        .unwrap();
    assert_eq!(rows.pfn(0), sample(0).pfn);
    rows.vma_prot(0);
}

#[test]
#[should_panic(expected = "no trace column is named `vma_prots`")]
fn a_misspelt_unread_column_is_refused() {
    let p = tmp("misspelt");
    write(&p, 1, 10);
    let _ = TraceReader::open_without(&p, &["vma_prots"]);
}

fn tmp(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("pfnscope-trace-test-{}-{name}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    dir.join("t.arrows")
}

fn sample(i: u64) -> Record {
    Record {
        id: 1000 + i,
        parent: if i.is_multiple_of(2) { 0 } else { 999 + i },
        ts_ns: 1_000_000 + i * 10,
        latency_ns: (!i.is_multiple_of(3)).then_some(i * 7),
        cpu: (i % 2) as u32,
        pid: 42,
        tid: 43,
        comm: "workload".into(),
        hook: if i.is_multiple_of(2) {
            "handle_mm_fault"
        } else {
            "vmf_insert_pfn_prot"
        }
        .into(),
        mode: "fentry".into(),
        address: Some(0x7f00_0000_0000 + i * 4096),
        fault_flags: Some(0x1255),
        vma_id: Some(3),
        vma_flags: Some(0x0c04_44fb),
        vma_prot: Some(0x8000_0000_0000_0027),
        vma_cache: Some("UC-".into()),
        driver: Some("drm_gem_ttm_vm_ops [ttm]".into()),
        page: Some(i.is_multiple_of(5)),
        pfn: Some(0xfd000 + i),
        cache_req: Some("WC".into()),
        cache_out: Some("UC-".into()),
        ret: Some(-22),
        write: Some(i.is_multiple_of(4)),
        ..Default::default()
    }
}

fn meta() -> TraceMeta {
    TraceMeta {
        kernel_release: "6.12.0-test".into(),
        hook_plan: vec![PlanEntry {
            hook: "handle_mm_fault".into(),
            symbol: Some("handle_mm_fault".into()),
            mode: Some("fentry".into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn write(path: &Path, batches: u64, per: u64) -> Vec<Record> {
    let mut w = TraceWriter::create(path, &meta()).unwrap();
    let mut all = vec![];
    for b in 0..batches {
        for i in 0..per {
            let mut r = sample(b * per + i);
            r.seq = b * per + i;
            w.push(&r);
            all.push(r);
        }
        w.flush_batch().unwrap();
    }
    w.finish().unwrap();
    all
}

#[test]
fn round_trip_keeps_every_field_and_the_metadata() {
    let p = tmp("rt");
    let all = write(&p, 3, 100);
    let t = read_trace(&p).unwrap();
    assert_eq!(t.damage, None);
    assert_eq!(t.records, all);
    assert_eq!(t.meta.kernel_release, "6.12.0-test");
    assert_eq!(t.meta.schema_version, 5);
    assert_eq!(t.meta.hook_plan[0].mode.as_deref(), Some("fentry"));
}

#[test]
fn truncated_file_keeps_complete_batches() {
    let p = tmp("trunc");
    let all = write(&p, 4, 50);
    let bytes = fs::read(&p).unwrap();
    // Cut in the middle of the last batch (and drop the end-of-stream marker).
    fs::write(&p, &bytes[..bytes.len() - 300]).unwrap();
    let t = read_trace(&p).unwrap();
    assert_eq!(t.records, all[..150].to_vec());
    let d = t.damage.expect("truncation is reported");
    assert_eq!(
        (d.kind, d.batch, d.batches_kept),
        (DamageKind::Truncated, 4, 3)
    );
    let m = d.to_string();
    assert!(
        m.contains("is truncated") && m.contains("150 records") && m.contains("3 complete batches"),
        "{m}"
    );
    assert!(!m.contains("killed"), "{m}");
}

/// What SIGKILL leaves: complete batches, no end-of-stream marker. Every batch reads, and the
/// trace is reported as cut short: the events after its last flush are missing (issue 21).
#[test]
fn file_without_end_marker_reads_fully_and_is_cut_short() {
    let p = tmp("nomarker");
    let all = write(&p, 2, 10);
    let bytes = fs::read(&p).unwrap();
    fs::write(&p, &bytes[..bytes.len() - 8]).unwrap();
    let t = read_trace(&p).unwrap();
    assert_eq!(t.records, all);
    let d = t
        .damage
        .expect("a trace without its end marker is reported");
    assert_eq!(d.kind, DamageKind::CutShort);
    assert_eq!((d.records_kept, d.batches_kept), (20, 2));
    let m = d.to_string();
    assert!(
        m.contains("cut short") && m.contains("all 20 records"),
        "{m}"
    );
    // The schema alone, as a recording stopped before its first flush leaves it.
    let schema_len = 8 + u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    fs::write(&p, &bytes[..schema_len]).unwrap();
    let t = read_trace(&p).unwrap();
    assert!(t.records.is_empty());
    assert_eq!(t.damage.map(|d| d.kind), Some(DamageKind::CutShort));
}

#[test]
fn corrupted_batch_is_reported_and_earlier_batches_kept() {
    let p = tmp("corrupt");
    let mut w = TraceWriter::create(&p, &meta()).unwrap();
    let mut all = vec![];
    let mut good_len = 0;
    for b in 0..3u64 {
        for i in 0..40 {
            let mut r = sample(b * 40 + i);
            r.seq = b * 40 + i;
            w.push(&r);
            all.push(r);
        }
        if b == 2 {
            good_len = fs::metadata(&p).unwrap().len() as usize;
        }
        w.flush_batch().unwrap();
    }
    w.finish().unwrap();
    // Scribble over the third batch's message header (Arrow IPC has no checksums over values, so
    // this is the corruption a reader can see).
    let mut bytes = fs::read(&p).unwrap();
    for b in &mut bytes[good_len + 4..good_len + 40] {
        *b = 0x5a;
    }
    fs::write(&p, &bytes).unwrap();
    let t = read_trace(&p).unwrap();
    let d = t.damage.expect("corruption is reported");
    assert_eq!((d.kind, d.batch), (DamageKind::Corrupt, 3), "{d}");
    assert!(!d.to_string().contains("killed"), "{d}");
    assert_eq!(t.records, all[..80].to_vec());
}

/// Issue 21: one flipped bit inside a compressed column, which may decompress into other
/// values without an error, is found by the checksum. Every flip inside the third batch's
/// messages (metadata, padding and body) is reported as damage to that batch, never as a
/// cut-short recording; and a reader that leaves columns compressed finds the same (see
/// `read_trace` above).
#[test]
fn a_flipped_bit_anywhere_in_a_batch_is_damage_for_every_reader() {
    let p = tmp("flip");
    let all = write(&p, 3, 10);
    let clean = fs::read(&p).unwrap();
    // Where the third batch starts: the same records written again, two batches of them.
    let mut w = TraceWriter::create(&tmp("flip-len"), &meta()).unwrap();
    for b in 0..2 {
        for i in 0..10 {
            w.push(&sample(b * 10 + i));
        }
        w.flush_batch().unwrap();
    }
    let (start, end) = (w.bytes_on_disk() as usize, clean.len() - 8);
    // Every fifth byte: each part of every message is hit, in a debug build's time.
    for byte in (start..end).step_by(5) {
        let mut bytes = clean.clone();
        bytes[byte] ^= 1 << (byte % 8);
        fs::write(&p, &bytes).unwrap();
        let t = read_trace(&p).unwrap();
        let d = t
            .damage
            .unwrap_or_else(|| panic!("a flip at byte {byte} went unseen"));
        assert_ne!(d.kind, DamageKind::CutShort, "byte {byte}: {d}");
        assert_eq!(d.batch, 3, "byte {byte}: {d}");
        assert_eq!(t.records, all[..20].to_vec(), "byte {byte}");
    }
}

#[test]
fn empty_and_foreign_files_are_refused_clearly() {
    let p = tmp("empty");
    fs::write(&p, b"").unwrap();
    assert!(matches!(read_trace(&p), Err(TraceError::Empty { .. })));
    fs::write(&p, b"PK\x03\x04 this is a zip").unwrap();
    let e = read_trace(&p).unwrap_err();
    assert!(matches!(e, TraceError::NotATrace { .. }), "{e}");
    assert!(e.to_string().contains("tracer record"));
}

#[test]
fn newer_schema_is_refused() {
    use arrow_ipc::writer::StreamWriter;
    use arrow_schema::{DataType, Field, Schema};
    let p = tmp("newer");
    let schema = Schema::new_with_metadata(
        vec![Field::new("seq", DataType::UInt64, false)],
        std::collections::HashMap::from([(
            "pfnscope.schema_version".to_string(),
            "99".to_string(),
        )]),
    );
    let mut w = StreamWriter::try_new(fs::File::create(&p).unwrap(), &schema).unwrap();
    w.finish().unwrap();
    let e = read_trace(&p).unwrap_err();
    assert!(
        matches!(e, TraceError::NewerSchema { found: 99, .. }),
        "{e}"
    );
}

/// Rewrites a trace with LZ4 frames, the codec traces were written with before Zstandard.
fn rewrite_lz4(p: &Path) {
    use arrow_ipc::{
        CompressionType,
        reader::StreamReader,
        writer::{IpcWriteOptions, StreamWriter},
    };
    let r = StreamReader::try_new(fs::File::open(p).unwrap(), None).unwrap();
    let batches: Vec<_> = r.map(|b| b.unwrap()).collect();
    // Those traces had no checksums either.
    let mut md = batches[0].schema().metadata().clone();
    md.remove(pfnscope_trace::CHECKSUMS_KEY);
    let schema = std::sync::Arc::new(batches[0].schema().as_ref().clone().with_metadata(md));
    let batches: Vec<_> = batches
        .into_iter()
        .map(|b| {
            pfnscope_trace::RecordBatch::try_new(schema.clone(), b.columns().to_vec()).unwrap()
        })
        .collect();
    let opts = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::LZ4_FRAME))
        .unwrap();
    let mut w =
        StreamWriter::try_new_with_options(fs::File::create(p).unwrap(), &schema, opts).unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
}

/// A batch as large as the tracer writes, where most columns are all null: Zstandard shrinks
/// those buffers far beyond LZ4's ratio, and the damage checks must still let them through.
#[test]
fn full_batches_of_null_columns_are_not_damage() {
    let p = tmp("full");
    let written = write(&p, 1, 1 << 16);
    let t = read_trace(&p).unwrap();
    assert_eq!(t.damage, None);
    assert_eq!(t.records.len(), written.len());
}

#[test]
fn traces_written_with_lz4_still_read() {
    let p = tmp("lz4");
    let written = write(&p, 3, 200);
    rewrite_lz4(&p);
    let t = read_trace(&p).unwrap();
    assert_eq!(t.damage, None);
    assert_eq!(t.records, written);
    assert_eq!(t.meta.kernel_release, meta().kernel_release);
    assert_eq!(t.meta.hook_plan, meta().hook_plan);
}

/// Found by the fuzz target: scribbled metadata of a batch in a trace without checksums made
/// flatbuffers' verifier explain itself over several lines, and the damage message with it.
#[test]
fn damage_from_scribbled_metadata_is_one_line() {
    let p = tmp("scribble");
    write(&p, 3, 50);
    rewrite_lz4(&p);
    let mut bytes = fs::read(&p).unwrap();
    // The first message after the schema: its flatbuffer, after the 8-byte prefix.
    let at = 8 + i32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    for b in &mut bytes[at + 12..at + 40] {
        *b = 0xff;
    }
    fs::write(&p, &bytes).unwrap();
    let d = read_trace(&p).unwrap().damage.expect("reported as damage");
    assert_eq!(d.kind, DamageKind::Corrupt, "{d}");
}

/// Regression (found by the fuzz target): a damaged length prefix of a compressed buffer made
/// arrow allocate what it claimed (petabytes) and abort. The reader must refuse it as damage
/// instead, whichever codec wrote the trace, in a record batch or in a dictionary (the names).
#[test]
fn absurd_compressed_length_is_damage_not_an_abort() {
    for lz4 in [false, true] {
        for dictionary in [false, true] {
            let p = tmp(&format!("len-{lz4}-{dictionary}"));
            write(&p, 1, 500);
            if lz4 {
                rewrite_lz4(&p);
            }
            absurd_first_length(&p, dictionary, lz4);
        }
    }
}

/// Sets the first compressed length prefix of the first dictionary or record batch to 2^50.
fn absurd_first_length(p: &Path, dictionary: bool, lz4: bool) {
    let mut bytes = fs::read(p).unwrap();
    let msg_len =
        |at: usize| i32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    let mut at = 8 + msg_len(0);
    let (body_at, target) = loop {
        let meta_len = msg_len(at);
        let body_at = at + 8 + meta_len;
        let meta = arrow_ipc::root_as_message(&bytes[at + 8..body_at]).unwrap();
        let rb = if dictionary {
            meta.header_as_dictionary_batch().and_then(|d| d.data())
        } else {
            meta.header_as_record_batch()
        };
        if let Some(rb) = rb {
            let b = rb.buffers().unwrap().iter().find(|b| b.length() >= 8);
            break (body_at, b.unwrap().offset() as usize);
        }
        at = body_at + meta.bodyLength() as usize;
    };
    let at = body_at + target;
    bytes[at..at + 8].copy_from_slice(&(1i64 << 50).to_le_bytes());
    fs::write(p, &bytes).unwrap();
    let t = read_trace(p).unwrap();
    let d = t.damage.expect("reported as damage").to_string();
    // The checksum sees it first; a trace without checksums (the LZ4 ones) needs the check
    // of the length itself.
    let checksummed = !lz4;
    let why = if checksummed { "checksum" } else { "claims" };
    assert!(d.contains(why), "{d}");
    assert!(t.records.is_empty());
}

/// Every row of a full batch with its own names (a workload forking a process per name, or a
/// driver symbol per row): each batch's dictionaries hold more than 2^16 entries, names reach
/// later batches as replacement dictionaries, and nulls sit between them.
#[test]
fn a_distinct_name_per_row_round_trips() {
    let p = tmp("distinct");
    let mut w = TraceWriter::create(&p, &meta()).unwrap();
    let mut all = vec![];
    for b in 0..2u64 {
        for i in 0..70_000u64 {
            let n = b * 70_000 + i;
            let mut r = sample(n);
            r.seq = n;
            r.comm = format!("w{}", n % 90_000).into();
            r.driver = (!n.is_multiple_of(7)).then(|| format!("ops_{n} [mod]").into());
            w.push(&r);
            all.push(r);
        }
        w.flush_batch().unwrap();
    }
    w.finish().unwrap();
    let t = read_trace(&p).unwrap();
    assert_eq!(t.damage, None);
    assert_eq!(t.records.len(), all.len());
    assert!(t.records == all, "records differ after a round trip");
}

/// Found by `cargo fuzz` (minimised): a dictionary batch whose offsets buffer is not a whole
/// number of offsets, on which arrow 60 asserted while validating (arrow's validation is now
/// left out, and the file's truncated tail is what ends it). That is a corrupt batch, reported
/// as damage, not a panic; and nothing of a panic reaches stderr (checked by the replay's CLI
/// test on the same file).
#[test]
fn a_batch_arrow_panics_on_is_damage() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz-dict-offsets-panic.arrows");
    let t = read_trace(&p).unwrap();
    let d = t.damage.expect("reported as damage");
    assert_eq!(d.batch, 1, "{d}");
    assert!(t.records.is_empty());
    let bytes = fs::read(&p).unwrap();
    let t = pfnscope_trace::read_trace_bytes(&bytes).unwrap();
    assert!(t.damage.is_some());
}

/// Writes one batch of `rows` rows with these columns under the current schema version, as a
/// damaged or crafted file could hold it: arrow's reader leaves validation to the decoder,
/// which must refuse what it cannot read instead of panicking or reading out of bounds.
fn crafted(name: &str, cols: Vec<(&str, arrow_array::ArrayRef)>, rows: usize) -> PathBuf {
    use arrow_ipc::writer::StreamWriter;
    use arrow_schema::{Field, Schema};
    let p = tmp(name);
    let fields: Vec<Field> = cols
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    let schema = std::sync::Arc::new(Schema::new_with_metadata(
        fields,
        std::collections::HashMap::from([(
            "pfnscope.schema_version".to_string(),
            pfnscope_trace::CURRENT_SCHEMA_VERSION.to_string(),
        )]),
    ));
    // SAFETY: deliberately inconsistent, written only to be read back as a corrupt batch.
    let batch = unsafe {
        pfnscope_trace::RecordBatch::new_unchecked(
            schema.clone(),
            cols.into_iter().map(|(_, a)| a).collect(),
            rows,
        )
    };
    let mut w = StreamWriter::try_new(fs::File::create(&p).unwrap(), &schema).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    p
}

#[test]
fn a_column_shorter_than_its_batch_is_damage() {
    use arrow_array::{ArrayRef, UInt64Array};
    use std::sync::Arc;
    let ids: ArrayRef = Arc::new(UInt64Array::from(vec![1u64, 2, 3, 4]));
    let ts: ArrayRef = Arc::new(UInt64Array::from(vec![10u64, 20]));
    // A short `seq` too (schema 1 and 2 wrote it): both readers name the same column first.
    let seq: ArrayRef = Arc::new(UInt64Array::from(vec![0u64]));
    let p = crafted("short", vec![("seq", seq), ("id", ids), ("ts_ns", ts)], 4);
    let t = read_trace(&p).unwrap();
    let d = t.damage.expect("reported as damage");
    assert_eq!((d.kind, d.batch), (DamageKind::Corrupt, 1));
    assert!(
        d.to_string()
            .contains("column `ts_ns` has 2 rows, the batch 4"),
        "{d}"
    );
    assert!(t.records.is_empty());
}

#[test]
fn ids_are_stored_as_differences_and_absolute_ids_still_read() {
    use arrow_array::{Array, ArrayRef, Int64Array, UInt64Array};
    use std::sync::Arc;
    // Schema 4 writes each id as the difference from the row before it in the batch.
    let p = tmp("id-deltas");
    let mut w = TraceWriter::create(&p, &meta()).unwrap();
    let ids = [7u64, 9, 8, u64::MAX, 0, 1 << 40 | 3];
    for (i, &id) in ids.iter().enumerate() {
        w.push(&Record {
            id,
            seq: i as u64,
            ..sample(i as u64)
        });
        if i == 2 {
            w.flush_batch().unwrap();
        }
    }
    w.finish().unwrap();
    let t = read_trace(&p).unwrap();
    assert_eq!(t.records.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
    let stored = arrow_ipc::reader::StreamReader::try_new(fs::File::open(&p).unwrap(), None)
        .unwrap()
        .map(|b| {
            let b = b.unwrap();
            let c = b.column_by_name("id").unwrap();
            let d = c
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("Int64 deltas");
            d.values().to_vec()
        })
        .collect::<Vec<_>>();
    assert_eq!(stored, [vec![7, 2, -1], vec![-1, 1, 1 << 40 | 3]]);
    // Schema 1 to 3: absolute UInt64 ids.
    let abs: ArrayRef = Arc::new(UInt64Array::from(vec![5u64, 3, 9]));
    let ts: ArrayRef = Arc::new(UInt64Array::from(vec![10u64, 20, 30]));
    let p = crafted("id-absolute", vec![("id", abs), ("ts_ns", ts)], 3);
    let t = read_trace(&p).unwrap();
    assert_eq!(t.damage, None);
    assert_eq!(
        t.records.iter().map(|r| r.id).collect::<Vec<_>>(),
        [5, 3, 9]
    );
    assert_eq!(
        t.records.iter().map(|r| r.ts_ns).collect::<Vec<_>>(),
        [10, 20, 30]
    );
}

#[test]
fn a_name_that_is_not_utf8_is_damage() {
    use arrow_array::{ArrayRef, DictionaryArray, Int32Array, StringArray, UInt64Array};
    use arrow_buffer::{Buffer, OffsetBuffer};
    use std::sync::Arc;
    // SAFETY: deliberately invalid UTF-8, as a damaged file could hold.
    let values = unsafe {
        StringArray::new_unchecked(
            OffsetBuffer::new(vec![0, 3].into()),
            Buffer::from(vec![0xffu8, 0xfe, 0x41]),
            None,
        )
    };
    let hooks: ArrayRef =
        Arc::new(DictionaryArray::try_new(Int32Array::from(vec![0, 0]), Arc::new(values)).unwrap());
    let ids: ArrayRef = Arc::new(UInt64Array::from(vec![1u64, 2]));
    let p = crafted("utf8", vec![("id", ids), ("hook", hooks)], 2);
    let t = read_trace(&p).unwrap();
    let d = t.damage.expect("reported as damage");
    assert_eq!((d.kind, d.batch), (DamageKind::Corrupt, 1));
    assert!(d.to_string().contains("`hook`"), "{d}");
    assert!(t.records.is_empty());
}

/// The loss counters' rows are taken out of every batch and handed out apart, as the last
/// values per CPU; the other rows keep their positions in the file and their ids, whether the
/// counters end the batch (as the tracer writes them) or stand in its middle (a hand-made file),
/// through every reader: records, rows read in place, and the Arrow batches the analyzer takes.
#[test]
fn counters_are_handed_out_apart_wherever_they_stand() {
    use pfnscope_trace::{CpuCounters, LossCounters};
    let p = tmp("counters");
    let mut w = TraceWriter::create(&p, &TraceMeta::default()).unwrap();
    let counters = |dropped| {
        [0, 1].map(|cpu| CpuCounters {
            cpu,
            dropped: dropped * u64::from(cpu),
            unpaired: 1,
            read_failed: 2,
        })
    };
    // Batch 1: rows 0-2, counters at 3-4, rows 5-6; batch 2: rows 7-8, counters at 9-10.
    let mut want = vec![];
    for (seq, counters_next) in [(0, false), (1, false), (2, true), (5, false), (6, false)] {
        let r = Record { seq, ..sample(seq) };
        w.push(&r);
        want.push(r);
        if counters_next {
            w.push_counters(&counters(5), 42);
        }
    }
    w.flush_batch().unwrap();
    for seq in [7, 8] {
        let r = Record { seq, ..sample(seq) };
        w.push(&r);
        want.push(r);
    }
    w.push_counters(&counters(9), 43);
    w.finish().unwrap();

    let mut last = LossCounters::default();
    counters(9).into_iter().for_each(|c| last.update(c));
    let t = read_trace(&p).unwrap();
    assert_eq!(t.records, want);
    assert_eq!(t.counters, last);
    assert_eq!(t.counters.total().dropped, 9);

    let mut r = TraceReader::open(&p).unwrap();
    let mut seqs_ids = vec![];
    while let Some(b) = r.next_arrow().unwrap() {
        let col = |name: &str| {
            b.column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<arrow_array::UInt64Array>()
                .unwrap()
                .values()
                .to_vec()
        };
        seqs_ids.extend(col("seq").into_iter().zip(col("id")));
    }
    let want_seqs_ids: Vec<(u64, u64)> = want.iter().map(|r| (r.seq, r.id)).collect();
    assert_eq!(seqs_ids, want_seqs_ids);
    assert_eq!(r.counters(), &last);
    assert_eq!(r.rows_read(), 11);
}
