//! The table's reader against the records written: sliced batches, and what older schemas wrote.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, DictionaryArray, RecordBatch, StringArray, UInt64Array, types::Int32Type,
};
use arrow_schema::{DataType, Field, Schema};

use super::compat::SEQ;
use super::*;

fn row(i: u64) -> Record {
    let some = |v: u64| (i % 3 != 1).then_some(v);
    Record {
        seq: i,
        id: 100 + i,
        parent: i / 2,
        ts_ns: 7 * i,
        latency_ns: some(11 * i),
        cpu: (i % 2) as u32,
        pid: 5,
        tid: 6 + i as u32,
        comm: if i.is_multiple_of(2) { "a" } else { "b\u{e9}" }.into(),
        hook: "handle_mm_fault".into(),
        mode: "fentry".into(),
        address: some(0x1000 * i),
        fault_flags: some(i).map(|v| v as u32),
        vma_cache: i.is_multiple_of(4).then(|| "UC-".into()),
        page: some(i).map(|v| v.is_multiple_of(5)),
        write: i.is_multiple_of(3).then_some(i.is_multiple_of(2)),
        ret: some(i).map(|v| -(v as i64)),
        ..Default::default()
    }
}

/// Arrays read from a file start at bit 0; a sliced batch does not, and decoding must
/// honour the validity and boolean bitmaps' offsets and the string offsets.
#[test]
fn decoding_a_sliced_batch_honours_bitmap_offsets() {
    // Ids are differences within the batch as written: a slice of it lacks the ids before
    // its first row (no reader slices; files hold whole batches).
    let rows: Vec<Record> = (0..40).map(|i| Record { id: 0, ..row(i) }).collect();
    let mut b = Builders::default();
    rows.iter().for_each(|r| b.push(r));
    let batch = b.finish(Arc::new(Schema::new(fields()))).unwrap();
    for start in [0, 3, 9] {
        let got = decode_from(&batch.slice(start, 40 - start), start as u64).unwrap();
        assert_eq!(got, rows[start..], "slice at {start}");
    }
}

fn batch_of(rows: &[Record]) -> RecordBatch {
    let mut b = Builders::default();
    rows.iter().for_each(|r| b.push(r));
    b.finish(Arc::new(Schema::new(fields()))).unwrap()
}

/// `batch` read a row at a time, each row also through [`Rec::Row`].
fn decode_all(batch: &RecordBatch) -> Result<Vec<Record>, String> {
    decode_from(batch, 0)
}

fn decode_from(batch: &RecordBatch, first_seq: u64) -> Result<Vec<Record>, String> {
    let rows = Rows::new(batch, first_seq)?;
    let got: Vec<Record> = (0..rows.len()).map(|i| rows.record(i)).collect();
    let recs: Vec<Record> = (0..rows.len())
        .map(|i| Rec::Row(&rows, i).to_record())
        .collect();
    assert_eq!(recs, got, "Rec::Row and records differ");
    Ok(got)
}

/// Schema 1 wrote names as plain strings: those traces must still read.
#[test]
fn plain_string_names_still_read() {
    let rows: Vec<Record> = (0..40).map(row).collect();
    let batch = batch_of(&rows);
    let (mut fields, mut cols) = (vec![], vec![]);
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        match c.as_any().downcast_ref::<DictionaryArray<Int32Type>>() {
            Some(d) => {
                let values = d.values().as_any().downcast_ref::<StringArray>().unwrap();
                let plain: StringArray = d
                    .keys()
                    .iter()
                    .map(|k| k.map(|k| values.value(k as usize)))
                    .collect();
                fields.push(Field::new(f.name(), DataType::Utf8, f.is_nullable()));
                cols.push(Arc::new(plain) as ArrayRef);
            }
            None => {
                fields.push(f.as_ref().clone());
                cols.push(c.clone());
            }
        }
    }
    let plain = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    assert_eq!(
        plain.schema().field_with_name("hook").unwrap().data_type(),
        &DataType::Utf8
    );
    assert_eq!(decode_all(&plain).unwrap(), rows);
}

/// Schema 3 leaves `seq` out (each row's position, counted from `first_seq`); schema 1
/// and 2 wrote it as a column, whose values are taken as they are.
#[test]
fn seq_is_the_row_position_unless_a_column_says_otherwise() {
    let rows: Vec<Record> = (0..40).map(row).collect();
    let batch = batch_of(&rows);
    assert!(
        batch.column_by_name(SEQ).is_none(),
        "schema 3 writes no seq"
    );
    let seqs = |batch: &RecordBatch, first: u64| -> Vec<u64> {
        decode_from(batch, first)
            .unwrap()
            .into_iter()
            .map(|r| r.seq)
            .collect()
    };
    assert_eq!(seqs(&batch, 1000), (1000..1040).collect::<Vec<u64>>());

    let old: Vec<u64> = (0..40).map(|i| 7 * i + 3).collect();
    let mut fields = vec![Field::new(SEQ, DataType::UInt64, false)];
    fields.extend(batch.schema().fields().iter().map(|f| f.as_ref().clone()));
    let mut cols: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from(old.clone()))];
    cols.extend(batch.columns().iter().cloned());
    let v2 = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    assert_eq!(seqs(&v2, 1000), old);
}

/// A key past the end of its dictionary is a corrupt batch, not a panic.
#[test]
fn dictionary_key_out_of_range_is_an_error() {
    let rows: Vec<Record> = (0..4).map(row).collect();
    let batch = batch_of(&rows);
    let i = batch.schema().index_of("comm").unwrap();
    let keys = arrow_array::Int32Array::from(vec![0, 0, 9, 0]);
    let values = Arc::new(StringArray::from(vec!["a"]));
    // SAFETY: deliberately invalid, as a damaged file could be; decoding must refuse it.
    let bad = unsafe { DictionaryArray::<Int32Type>::new_unchecked(keys, values) };
    let mut cols = batch.columns().to_vec();
    cols[i] = Arc::new(bad);
    let bad = RecordBatch::try_new(batch.schema(), cols).unwrap();
    let e = decode_all(&bad).unwrap_err();
    assert!(
        e.contains("column `comm` dictionary key 9 out of range (row 2)"),
        "{e}"
    );
}
