//! How one Rust field maps to one Arrow column: the number and flag kinds, and what every kind
//! shares (the validity bitmap, the checks a batch gets before a row of it is read).

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
    builder::{BooleanBuilder, Int64Builder, UInt32Builder, UInt64Builder},
};
use arrow_buffer::{Buffer, ScalarBuffer};
use arrow_schema::DataType;

use crate::sym::Interner;

/// How one Rust field maps to one Arrow column.
pub(crate) trait Column {
    type Value;
    type Builder: Default;
    /// The column as [`super::Rows`] keeps it: the batch's buffers shared, not copied, and
    /// names interned once per dictionary entry. Empty (the default) for a column the batch
    /// lacks or has only nulls in, which then reads as default: one bounds check on a row's
    /// value tells both whether the column is there and whether the row is in it.
    type Owned: Send + Sync + Default;
    const NULLABLE: bool;
    /// The type written.
    fn data_type() -> DataType;
    fn append(b: &mut Self::Builder, v: &Self::Value);
    fn finish(b: &mut Self::Builder) -> ArrayRef;
    /// `a` (as long as its batch, nulls only where allowed: [`super::owned_column`] checked),
    /// checked for what reading its rows relies on, and kept for reading row by row. Arrow's
    /// reader validates nothing (see `TraceReader::from_reader`).
    fn own(a: &dyn Array, names: &mut Interner) -> Result<Self::Owned, String>;
    /// Row `i`, or default past the column's end.
    fn at(o: &Self::Owned, i: usize) -> Self::Value;
}

/// `a` as the array type `T`, or an error naming both types.
pub(crate) fn downcast<T: Array + 'static>(a: &dyn Array, want: DataType) -> Result<&T, String> {
    a.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| format!("has type {}, expected {want}", a.data_type()))
}

pub(crate) fn covers(have: usize, rows: usize, what: &str) -> Result<(), String> {
    if have < rows {
        return Err(format!("has {have} {what} for {rows} rows"));
    }
    Ok(())
}

/// Column `name` of `batch`, checked and kept for [`Rows`]; empty where the batch has no such
/// column or it is null throughout (most columns belong to a few hooks and are null in whole
/// batches).
pub(crate) fn owned_column<K: Column>(
    batch: &RecordBatch,
    name: &str,
    names: &mut Interner,
) -> Result<K::Owned, String> {
    let Some(a) = batch.column_by_name(name) else {
        return Ok(K::Owned::default());
    };
    // Arrow's reader does not validate (see `TraceReader::from_reader`): every row index a
    // reader uses must be in bounds of every column.
    if a.len() != batch.num_rows() {
        return Err(format!(
            "column `{name}` has {} rows, the batch {}",
            a.len(),
            batch.num_rows()
        ));
    }
    if !K::NULLABLE && a.null_count() > 0 {
        return Err(format!("column `{name}` has nulls"));
    }
    let owned = K::own(a.as_ref(), names).map_err(|e| format!("column `{name}` {e}"))?;
    Ok(if a.null_count() < a.len() {
        owned
    } else {
        K::Owned::default()
    })
}

/// Offsets in bounds and in order, UTF-8 between them: arrow's reader leaves this to us (see
/// `TraceReader::from_reader`). Cheap for a dictionary's few names.
pub(crate) fn check_strings(s: &StringArray) -> Result<(), String> {
    s.to_data().validate_full().map_err(|e| e.to_string())
}

/// String `i` of `s` (checked by [`check_strings`]), as bytes: the interner matches bytes and
/// checks UTF-8 only for a new name.
#[inline(always)]
pub(crate) fn bytes(s: &StringArray, i: usize) -> &[u8] {
    let (offsets, data) = (s.value_offsets(), s.value_data());
    &data[offsets[i] as usize..offsets[i + 1] as usize]
}

/// A validity bitmap as [`super::Rows`] keeps it, starting at bit 0: a row's bit is one
/// bounds-checked byte load, where `NullBuffer::is_valid` asserted, added its offset and shifted
/// through two more calls (a tenth of `replay check`'s instructions went to reading fields).
/// Empty where the column has no nulls.
#[derive(Default)]
pub(crate) struct Bits(Buffer);

impl Bits {
    #[inline(always)]
    pub(crate) fn get(&self, i: usize) -> bool {
        self.0
            .as_slice()
            .get(i >> 3)
            .is_none_or(|b| b >> (i & 7) & 1 != 0)
    }

    /// Whether row `i` is valid, on a bitmap of any offset (for the few checks that run before
    /// a column is kept).
    pub(crate) fn valid_in(a: &dyn Array, i: usize) -> bool {
        a.nulls().is_none_or(|n| n.is_valid(i))
    }
}

/// `a`'s validity bitmap, checked to cover every row: a short one would read as valid past
/// its end.
pub(crate) fn checked_nulls(a: &dyn Array) -> Result<Bits, String> {
    let Some(n) = a.nulls() else {
        return Ok(Bits::default());
    };
    // Shared where the bitmap starts on a byte, copied where it does not (a sliced batch).
    let bits = n.inner().sliced();
    covers(n.len().min(bits.len() * 8), a.len(), "validity bits")?;
    Ok(Bits(bits))
}

/// Arrays whose buffers [`super::Rows`] keeps as they are (shared, not copied).
pub(crate) trait RawOwned: Array + Sized + 'static {
    type Owned: Send + Sync + Default;
    type Item: Default;
    /// The values, checked to cover every row: arrow's reader does not validate them.
    fn owned(&self) -> Result<Self::Owned, String>;
    /// Row `i`, None past the end.
    fn owned_item(o: &Self::Owned, i: usize) -> Option<Self::Item>;
}

impl<T: arrow_array::types::ArrowPrimitiveType> RawOwned for arrow_array::PrimitiveArray<T> {
    type Owned = ScalarBuffer<T::Native>;
    type Item = T::Native;
    fn owned(&self) -> Result<Self::Owned, String> {
        covers(self.values().len(), self.len(), "values")?;
        Ok(self.values().clone())
    }
    #[inline(always)]
    fn owned_item(o: &Self::Owned, i: usize) -> Option<T::Native> {
        o.get(i).copied()
    }
}

impl RawOwned for BooleanArray {
    type Owned = BoolValues;
    type Item = bool;
    fn owned(&self) -> Result<Self::Owned, String> {
        covers(self.values().len(), self.len(), "values")?;
        let bits = self.values().sliced();
        covers(bits.len() * 8, self.len(), "value bits")?;
        Ok(BoolValues {
            bits,
            len: self.len(),
        })
    }
    #[inline(always)]
    fn owned_item(o: &Self::Owned, i: usize) -> Option<bool> {
        (i < o.len).then(|| o.bits.as_slice()[i >> 3] >> (i & 7) & 1 != 0)
    }
}

/// A boolean column's values, starting at bit 0.
#[derive(Default)]
pub(crate) struct BoolValues {
    bits: Buffer,
    len: usize,
}

/// A column kind over one Arrow array type: `opt` for a nullable one.
macro_rules! column_kind {
    ($kind:ident, $value:ty, $builder:ty, $array:ty, $dt:expr, opt) => {
        pub(crate) struct $kind;
        impl Column for $kind {
            type Value = Option<$value>;
            type Builder = $builder;
            type Owned = (<$array as RawOwned>::Owned, Bits);
            const NULLABLE: bool = true;
            fn data_type() -> DataType {
                $dt
            }
            fn append(b: &mut Self::Builder, v: &Self::Value) {
                b.append_option(*v);
            }
            fn finish(b: &mut Self::Builder) -> ArrayRef {
                Arc::new(b.finish())
            }
            fn own(a: &dyn Array, _: &mut Interner) -> Result<Self::Owned, String> {
                let a = downcast::<$array>(a, $dt)?;
                Ok((a.owned()?, checked_nulls(a)?))
            }
            #[inline(always)]
            fn at((v, nulls): &Self::Owned, i: usize) -> Self::Value {
                let x = <$array as RawOwned>::owned_item(v, i)?;
                nulls.get(i).then_some(x)
            }
        }
    };
    ($kind:ident, $value:ty, $builder:ty, $array:ty, $dt:expr) => {
        pub(crate) struct $kind;
        impl Column for $kind {
            type Value = $value;
            type Builder = $builder;
            type Owned = <$array as RawOwned>::Owned;
            const NULLABLE: bool = false;
            fn data_type() -> DataType {
                $dt
            }
            fn append(b: &mut Self::Builder, v: &Self::Value) {
                b.append_value(*v);
            }
            fn finish(b: &mut Self::Builder) -> ArrayRef {
                Arc::new(b.finish())
            }
            fn own(a: &dyn Array, _: &mut Interner) -> Result<Self::Owned, String> {
                downcast::<$array>(a, $dt)?.owned()
            }
            #[inline(always)]
            fn at(v: &Self::Owned, i: usize) -> Self::Value {
                <$array as RawOwned>::owned_item(v, i).unwrap_or_default()
            }
        }
    };
}

column_kind!(U64, u64, UInt64Builder, UInt64Array, DataType::UInt64);
column_kind!(U32, u32, UInt32Builder, UInt32Array, DataType::UInt32);
column_kind!(
    OptU64,
    u64,
    UInt64Builder,
    UInt64Array,
    DataType::UInt64,
    opt
);
column_kind!(
    OptU32,
    u32,
    UInt32Builder,
    UInt32Array,
    DataType::UInt32,
    opt
);
column_kind!(OptI64, i64, Int64Builder, Int64Array, DataType::Int64, opt);
column_kind!(
    OptBool,
    bool,
    BooleanBuilder,
    BooleanArray,
    DataType::Boolean,
    opt
);
