//! What older traces wrote differently, and how each difference reads today: the one place a
//! reader learns about schema versions. A rule here reads the old form into the current one, so
//! nothing past [`crate::Rows`] knows there was an older form.
//!
//! | schema | difference | read by |
//! |---|---|---|
//! | 1 | names as plain `Utf8` strings, not dictionaries | [`plain_names`], [`normalize`] |
//! | 1-2 | each row's position in a `seq` column, not the row number | [`seq_column`], [`normalize`] |
//! | 1-3 | `id` as absolute `UInt64`, not differences | [`Id`], [`normalize`] |
//! | 1-4 | no off-CPU, stack or waker columns, no `sched:sched_switch` rows | absent columns read as None ([`owned_column`]); `TraceMeta::stacks` is None |
//! | all | loss counters as rows of a reserved hook | `crate::counters` (the reader takes them out) |
//! | until 2026-11 | LZ4 batches | arrow (the codec is recorded per batch); [`crate::CheckedStream`] bounds its ratio |
//! | until 2026-12 | no checksums | the schema says so ([`crate::CHECKSUMS_KEY`]); readers then decode every column |
//! | until 2026-12 | no `start_state` in the metadata | `TraceMeta`'s serde defaults |

use std::sync::Arc;

use arrow_array::builder::Int64Builder;
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Int64Array, RecordBatch, StringArray, UInt64Array,
    types::Int32Type,
};
use arrow_buffer::ScalarBuffer;
use arrow_schema::{DataType, Field, Schema};

use super::kinds::{
    Bits, Column, RawOwned, U64, bytes, check_strings, covers, downcast, owned_column,
};
use crate::sym::{Interner, Sym};

/// Each row's position in the file. Since schema 3 it is not written: it is the row number,
/// and an incrementing u64 was a fifth of a compressed trace and of what its reader
/// decompressed. Schema 1 and 2 traces carry it as a column, which is read as it is.
pub(crate) const SEQ: &str = "seq";

/// The `seq` column of a schema 1 or 2 batch, checked; empty for later ones (the row number is
/// the position).
pub(crate) fn seq_column(batch: &RecordBatch) -> Result<ScalarBuffer<u64>, String> {
    owned_column::<U64>(batch, SEQ, &mut Interner::default())
}

/// A schema 1 names column, plain strings: each row interned.
pub(crate) fn plain_names(
    s: &StringArray,
    names: &mut Interner,
) -> Result<Vec<Option<Sym>>, String> {
    check_strings(s)?;
    Ok((0..s.len())
        .map(|i| Bits::valid_in(s, i).then(|| names.get_bytes(bytes(s, i))))
        .collect())
}

/// Call ids. Since schema 4 written as the difference from the previous row's id in the batch
/// (the first row's from 0), wrapping, as Int64: ids count up per CPU, so the differences are
/// small and repeat, and decompressing the column fell from a fifth of reading a trace to
/// almost nothing. Absolute UInt64 ids (schema 1 to 3) still read.
pub(crate) struct Id;

/// Schema 4's ids from a batch's stored differences: each row's id is the previous row's plus
/// its difference, wrapping, from 0 before the first row.
pub fn ids_from_deltas(deltas: impl IntoIterator<Item = i64>) -> Vec<u64> {
    // `map`, not `scan`: it keeps the length known, so the vector is sized once.
    let mut at = 0u64;
    deltas
        .into_iter()
        .map(|d| {
            at = at.wrapping_add(d as u64);
            at
        })
        .collect()
}

#[derive(Default)]
pub(crate) struct IdBuilder {
    deltas: Int64Builder,
    /// The last id appended to this batch.
    last: u64,
}

impl Column for Id {
    type Value = u64;
    type Builder = IdBuilder;
    type Owned = ScalarBuffer<u64>;
    const NULLABLE: bool = false;
    fn data_type() -> DataType {
        DataType::Int64
    }
    fn append(b: &mut IdBuilder, v: &u64) {
        b.deltas.append_value(v.wrapping_sub(b.last) as i64);
        b.last = *v;
    }
    fn finish(b: &mut IdBuilder) -> ArrayRef {
        b.last = 0;
        Arc::new(b.deltas.finish())
    }
    fn own(a: &dyn Array, _: &mut Interner) -> Result<ScalarBuffer<u64>, String> {
        if a.data_type() == &DataType::UInt64 {
            return downcast::<UInt64Array>(a, DataType::UInt64)?.owned();
        }
        let d = downcast::<Int64Array>(a, DataType::Int64)?.values();
        covers(d.len(), a.len(), "values")?;
        // Added up once per batch on the reader thread, so that reading a row's id is a load.
        Ok(ScalarBuffer::from(ids_from_deltas(
            d[..a.len()].iter().copied(),
        )))
    }
    #[inline(always)]
    fn at(o: &ScalarBuffer<u64>, i: usize) -> u64 {
        o.get(i).copied().unwrap_or_default()
    }
}

/// `batch` in the current form with each row's position and id written out, for readers that
/// take Arrow batches as they are (the analyzer, through Arrow's C data interface) and for
/// taking rows out of the middle of a batch (after which neither could be derived from the row
/// number): a `seq` column first (unless the batch has one, schemas 1 and 2) counting from
/// `first_seq`, absolute `UInt64` ids in place of schema 4's differences, names as dictionaries
/// where schema 1 wrote plain strings. Every column is validated first: arrow's reader left it
/// to us (see `TraceReader::from_reader`), and a reader of these batches trusts them.
pub(crate) fn normalize(batch: &RecordBatch, first_seq: u64) -> Result<RecordBatch, String> {
    let n = batch.num_rows() as u64;
    let schema = batch.schema();
    let mut fields: Vec<Field> = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    if batch.column_by_name(SEQ).is_none() {
        fields.push(Field::new(SEQ, DataType::UInt64, false));
        columns.push(Arc::new(UInt64Array::from_iter_values(
            first_seq..first_seq + n,
        )));
    }
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        let name = f.name();
        c.to_data()
            .validate_full()
            .map_err(|e| format!("column `{name}` {e}"))?;
        if name == "id" && c.data_type() == &DataType::Int64 {
            let ids = Id::own(c.as_ref(), &mut Interner::default())
                .map_err(|e| format!("column `id` {e}"))?;
            fields.push(Field::new("id", DataType::UInt64, false));
            columns.push(Arc::new(UInt64Array::new(ids, None)));
        } else if let Some(s) = c.as_any().downcast_ref::<StringArray>() {
            let names: DictionaryArray<Int32Type> = s.iter().collect();
            fields.push(Field::new(name, names.data_type().clone(), f.is_nullable()));
            columns.push(Arc::new(names));
        } else {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
        }
    }
    let schema = Schema::new_with_metadata(fields, schema.metadata().clone());
    RecordBatch::try_new(Arc::new(schema), columns).map_err(|e| e.to_string())
}
