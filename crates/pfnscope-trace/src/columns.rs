//! The column list, in one place: schema, builders and decoding are all generated from it.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, Int64Array, RecordBatch, StringArray,
    UInt32Array, UInt64Array,
    builder::{
        BooleanBuilder, Int64Builder, StringDictionaryBuilder, UInt32Builder, UInt64Builder,
    },
    types::Int32Type,
};
use arrow_buffer::{Buffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType, Field, SchemaRef};

use crate::{
    record::Record,
    sym::{Interner, Sym},
};

/// How one Rust field maps to one Arrow column.
trait Column {
    type Value;
    type Builder: Default;
    /// What decoding one column of a batch keeps between rows (the string interner).
    type State: Default;
    /// The array's raw buffers, taken apart once per batch: arrow's per-row `value(i)` and
    /// `is_null(i)` were out-of-line calls and a third of the decoder's time.
    type View<'a>: Copy;
    const NULLABLE: bool;
    /// The type written.
    fn data_type() -> DataType;
    fn append(b: &mut Self::Builder, v: &Self::Value);
    fn finish(b: &mut Self::Builder) -> ArrayRef;
    /// The raw buffers of `a`, or why they cannot be read as this column.
    fn view(a: &dyn Array) -> Result<Self::View<'_>, String>;
    /// The validity bitmap (no bitmap for a column that cannot be null).
    fn valid<'a>(v: Self::View<'a>) -> Valid<'a>;
    /// Row `i`; `ok` is its validity bit, taken from [`Valid::words`].
    fn get(v: Self::View<'_>, i: usize, ok: bool, st: &mut Self::State) -> Self::Value;
    /// The column as [`Rows`] keeps it: the batch's buffers shared, not copied, and names
    /// interned once per dictionary entry. Empty (the default) for a column the batch lacks
    /// or has only nulls in, which then reads as default: one bounds check on a row's value
    /// tells both whether the column is there and whether the row is in it.
    type Owned: Send + Sync + Default;
    /// `a`, whose [`Column::view`] (and its checks) is `v`, kept for reading row by row.
    fn own(a: &dyn Array, v: Self::View<'_>, st: &mut Self::State) -> Result<Self::Owned, String>;
    /// Row `i`, or default past the column's end.
    fn at(o: &Self::Owned, i: usize) -> Self::Value;
}

/// `a` as the array type `T`, or an error naming both types.
fn downcast<T: Array + 'static>(a: &dyn Array, want: DataType) -> Result<&T, String> {
    a.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| format!("has type {}, expected {want}", a.data_type()))
}

/// A column's validity bitmap (None: no nulls).
#[derive(Clone, Copy)]
struct Valid<'a>(Option<(&'a [u8], usize)>);

impl<'a> Valid<'a> {
    fn of(a: &'a dyn Array) -> Valid<'a> {
        Valid(a.nulls().map(|n| (n.validity(), n.offset())))
    }

    #[inline(always)]
    fn is_valid(self, i: usize) -> bool {
        match self.0 {
            None => true,
            Some((bits, off)) => bit(bits, off + i),
        }
    }

    /// The validity bits of rows `first..first + BLOCK`, 64 to a word (bits past the array's
    /// end are unspecified). Taken a word at a time: testing each row's bit in the bitmap,
    /// bounds check included, was a quarter of the decoder's instructions.
    #[inline(always)]
    fn words(self, first: usize) -> [u64; WORDS] {
        let mut out = [u64::MAX; WORDS];
        if let Some((bits, off)) = self.0 {
            let start = off + first;
            for (w, o) in out.iter_mut().enumerate() {
                let b = start + w * 64;
                let (byte, shift) = (b / 8, b % 8);
                let mut x = 0u128;
                for j in 0..9 {
                    if let Some(&v) = bits.get(byte + j) {
                        x |= (v as u128) << (8 * j);
                    }
                }
                *o = (x >> shift) as u64;
            }
        }
        out
    }
}

#[inline(always)]
fn bit(bits: &[u8], i: usize) -> bool {
    bits[i >> 3] & (1 << (i & 7)) != 0
}

/// Raw buffers of the three array kinds the schema uses.
trait Raw: Array + Sized + 'static {
    type View<'a>: Copy;
    type Item<'a>;
    fn view(&self) -> Self::View<'_>;
    fn item<'a>(v: Self::View<'a>, i: usize) -> Self::Item<'a>;
    fn valid(&self) -> Valid<'_> {
        Valid::of(self)
    }
}

impl<T: arrow_array::types::ArrowPrimitiveType> Raw for arrow_array::PrimitiveArray<T> {
    type View<'a> = &'a [T::Native];
    type Item<'a> = T::Native;
    fn view(&self) -> &[T::Native] {
        self.values()
    }
    #[inline(always)]
    fn item<'a>(v: Self::View<'a>, i: usize) -> Self::Item<'a> {
        v[i]
    }
}

impl Raw for StringArray {
    type View<'a> = (&'a [i32], &'a [u8]);
    /// Bytes, not `&str`: the interner matches bytes and checks UTF-8 only for a new name.
    type Item<'a> = &'a [u8];
    fn view(&self) -> (&[i32], &[u8]) {
        (self.value_offsets(), self.value_data())
    }
    #[inline(always)]
    fn item<'a>((offsets, data): Self::View<'a>, i: usize) -> Self::Item<'a> {
        // In bounds: arrow validated the offsets (the IPC reader and `RecordBatch::try_new`).
        &data[offsets[i] as usize..offsets[i + 1] as usize]
    }
}

impl Raw for BooleanArray {
    type View<'a> = (&'a [u8], usize);
    type Item<'a> = bool;
    fn view(&self) -> (&[u8], usize) {
        (self.values().values(), self.values().offset())
    }
    #[inline(always)]
    fn item<'a>((bits, off): Self::View<'a>, i: usize) -> Self::Item<'a> {
        bit(bits, off + i)
    }
}

/// Arrays whose buffers [`Rows`] keeps as they are (shared, not copied).
trait RawOwned: Array + Sized + 'static {
    type Owned: Send + Sync + Default;
    type Item;
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
struct BoolValues {
    bits: Buffer,
    len: usize,
}

fn covers(have: usize, rows: usize, what: &str) -> Result<(), String> {
    if have < rows {
        return Err(format!("has {have} {what} for {rows} rows"));
    }
    Ok(())
}

/// A validity bitmap as [`Rows`] keeps it, starting at bit 0: a row's bit is one bounds-checked
/// byte load, where `NullBuffer::is_valid` asserted, added its offset and shifted through two
/// more calls (a tenth of `replay check`'s instructions went to reading fields).
/// Empty where the column has no nulls.
#[derive(Default)]
struct Bits(Buffer);

impl Bits {
    #[inline(always)]
    fn get(&self, i: usize) -> bool {
        self.0
            .as_slice()
            .get(i >> 3)
            .is_none_or(|b| b >> (i & 7) & 1 != 0)
    }
}

/// `a`'s validity bitmap, checked to cover every row: a short one would read as valid past
/// its end.
fn checked_nulls(a: &dyn Array) -> Result<Bits, String> {
    let Some(n) = a.nulls() else {
        return Ok(Bits::default());
    };
    // Shared where the bitmap starts on a byte, copied where it does not (a sliced batch).
    let bits = n.inner().sliced();
    covers(n.len().min(bits.len() * 8), a.len(), "validity bits")?;
    Ok(Bits(bits))
}

macro_rules! column_kind {
    ($kind:ident, $value:ty, $builder:ty, $array:ty, $dt:expr, $state:ty, $conv:expr, opt) => {
        struct $kind;
        impl Column for $kind {
            type Value = Option<$value>;
            type Builder = $builder;
            type State = $state;
            type View<'a> = (<$array as Raw>::View<'a>, Valid<'a>);
            const NULLABLE: bool = true;
            fn data_type() -> DataType {
                $dt
            }
            fn append(b: &mut Self::Builder, v: &Self::Value) {
                b.append_option(v.as_ref().map(|v| v.as_arrow()));
            }
            fn finish(b: &mut Self::Builder) -> ArrayRef {
                Arc::new(b.finish())
            }
            fn view(a: &dyn Array) -> Result<Self::View<'_>, String> {
                let a = downcast::<$array>(a, $dt)?;
                Ok((a.view(), a.valid()))
            }
            #[inline(always)]
            fn valid<'a>((_, valid): Self::View<'a>) -> Valid<'a> {
                valid
            }
            #[inline(always)]
            fn get(
                (v, _): Self::View<'_>,
                i: usize,
                ok: bool,
                st: &mut Self::State,
            ) -> Self::Value {
                if ok {
                    Some($conv(<$array as Raw>::item(v, i), st))
                } else {
                    None
                }
            }
            type Owned = (<$array as RawOwned>::Owned, Bits);
            fn own(
                a: &dyn Array,
                _: Self::View<'_>,
                _: &mut Self::State,
            ) -> Result<Self::Owned, String> {
                let a = downcast::<$array>(a, $dt)?;
                Ok((a.owned()?, checked_nulls(a)?))
            }
            #[inline(always)]
            fn at((v, nulls): &Self::Owned, i: usize) -> Self::Value {
                let x = <$array as RawOwned>::owned_item(v, i)?;
                nulls.get(i).then(|| $conv(x, &mut Default::default()))
            }
        }
    };
    ($kind:ident, $value:ty, $builder:ty, $array:ty, $dt:expr, $state:ty, $conv:expr) => {
        struct $kind;
        impl Column for $kind {
            type Value = $value;
            type Builder = $builder;
            type State = $state;
            type View<'a> = <$array as Raw>::View<'a>;
            const NULLABLE: bool = false;
            fn data_type() -> DataType {
                $dt
            }
            fn append(b: &mut Self::Builder, v: &Self::Value) {
                b.append_value(v.as_arrow());
            }
            fn finish(b: &mut Self::Builder) -> ArrayRef {
                Arc::new(b.finish())
            }
            fn view(a: &dyn Array) -> Result<Self::View<'_>, String> {
                Ok(downcast::<$array>(a, $dt)?.view())
            }
            #[inline(always)]
            fn valid<'a>(_: Self::View<'a>) -> Valid<'a> {
                Valid(None)
            }
            #[inline(always)]
            fn get(v: Self::View<'_>, i: usize, _: bool, st: &mut Self::State) -> Self::Value {
                $conv(<$array as Raw>::item(v, i), st)
            }
            type Owned = <$array as RawOwned>::Owned;
            fn own(
                a: &dyn Array,
                _: Self::View<'_>,
                _: &mut Self::State,
            ) -> Result<Self::Owned, String> {
                downcast::<$array>(a, $dt)?.owned()
            }
            #[inline(always)]
            fn at(v: &Self::Owned, i: usize) -> Self::Value {
                $conv(
                    <$array as RawOwned>::owned_item(v, i).unwrap_or_default(),
                    &mut Default::default(),
                )
            }
        }
    };
}

/// The value an Arrow builder takes for a Rust field value.
trait AsArrow {
    type Out<'a>
    where
        Self: 'a;
    fn as_arrow(&self) -> Self::Out<'_>;
}

macro_rules! as_arrow_copy {
    ($($t:ty),*) => {$(
        impl AsArrow for $t {
            type Out<'a> = $t;
            fn as_arrow(&self) -> $t {
                *self
            }
        }
    )*};
}
as_arrow_copy!(u64, u32, i64, bool);

#[inline(always)]
fn plain<T>(v: T, _: &mut ()) -> T {
    v
}

column_kind!(
    U64,
    u64,
    UInt64Builder,
    UInt64Array,
    DataType::UInt64,
    (),
    plain
);
column_kind!(
    U32,
    u32,
    UInt32Builder,
    UInt32Array,
    DataType::UInt32,
    (),
    plain
);
column_kind!(
    OptU64,
    u64,
    UInt64Builder,
    UInt64Array,
    DataType::UInt64,
    (),
    plain,
    opt
);
column_kind!(
    OptU32,
    u32,
    UInt32Builder,
    UInt32Array,
    DataType::UInt32,
    (),
    plain,
    opt
);
column_kind!(
    OptI64,
    i64,
    Int64Builder,
    Int64Array,
    DataType::Int64,
    (),
    plain,
    opt
);
column_kind!(
    OptBool,
    bool,
    BooleanBuilder,
    BooleanArray,
    DataType::Boolean,
    (),
    plain,
    opt
);

/// Call ids. Since schema 4 written as the difference from the previous row's id in the batch
/// (the first row's from 0), wrapping, as Int64: ids count up per CPU, so the differences are
/// small and repeat, and decompressing the column fell from a fifth of reading a trace to
/// almost nothing. Absolute UInt64 ids (schema 1 to 3) still read.
struct Id;

/// Schema 4's ids from a batch's stored differences: each row's id is the previous row's plus
/// its difference, wrapping, from 0 before the first row. The one place every reader (the
/// replay's, `decode`, the analyzer's export) takes the rule from.
pub fn ids_from_deltas(deltas: impl IntoIterator<Item = i64>) -> Vec<u64> {
    // `map`, not `scan`: it keeps the length known, so the vector is sized once.
    let mut at = 0u64;
    deltas
        .into_iter()
        .map(|d| {
            at = next_id(at, d);
            at
        })
        .collect()
}

#[inline(always)]
fn next_id(prev: u64, delta: i64) -> u64 {
    prev.wrapping_add(delta as u64)
}

/// The id column of a batch as written.
#[derive(Clone, Copy)]
enum IdView<'a> {
    Absolute(&'a [u64]),
    Deltas(&'a [i64]),
}

#[derive(Default)]
struct IdBuilder {
    deltas: Int64Builder,
    /// The last id appended to this batch.
    last: u64,
}

impl Column for Id {
    type Value = u64;
    type Builder = IdBuilder;
    /// Decoding's running id: rows are decoded in order.
    type State = u64;
    type View<'a> = IdView<'a>;
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
    fn view(a: &dyn Array) -> Result<IdView<'_>, String> {
        match a.data_type() {
            DataType::UInt64 => Ok(IdView::Absolute(
                downcast::<UInt64Array>(a, DataType::UInt64)?.values(),
            )),
            _ => Ok(IdView::Deltas(
                downcast::<Int64Array>(a, DataType::Int64)?.values(),
            )),
        }
    }
    #[inline(always)]
    fn valid<'a>(_: Self::View<'a>) -> Valid<'a> {
        Valid(None)
    }
    #[inline(always)]
    fn get(v: IdView<'_>, i: usize, _: bool, st: &mut u64) -> u64 {
        match v {
            IdView::Absolute(ids) => ids[i],
            IdView::Deltas(d) => {
                *st = next_id(*st, d[i]);
                *st
            }
        }
    }
    type Owned = ScalarBuffer<u64>;
    fn own(a: &dyn Array, v: IdView<'_>, _: &mut u64) -> Result<ScalarBuffer<u64>, String> {
        match v {
            IdView::Absolute(_) => downcast::<UInt64Array>(a, DataType::UInt64)?.owned(),
            IdView::Deltas(d) => {
                covers(d.len(), a.len(), "values")?;
                Ok(ScalarBuffer::from(ids_from_deltas(
                    d[..a.len()].iter().copied(),
                )))
            }
        }
    }
    #[inline(always)]
    fn at(o: &ScalarBuffer<u64>, i: usize) -> u64 {
        o.get(i).copied().unwrap_or_default()
    }
}

/// Names (hook, mode, comm, driver, cache modes): a handful of distinct values repeated on every
/// row. Written as dictionaries since schema 2: as plain strings they were two thirds of a
/// compressed trace and most of what the reader decompressed. Plain `Utf8` columns (schema 1)
/// still read.
#[derive(Clone, Copy)]
enum Names<'a> {
    Plain(<StringArray as Raw>::View<'a>, Valid<'a>),
    Dict {
        keys: &'a [i32],
        valid: Valid<'a>,
        values: <StringArray as Raw>::View<'a>,
    },
}

/// Decoding state of a names column: the interner, and per batch the interned value of each
/// dictionary entry met so far.
#[derive(Default)]
struct NameState {
    interner: Interner,
    dict: Vec<Option<Sym>>,
}

impl NameState {
    /// Dictionary entries cached per batch, at most (the tracer's batches hold up to 64 Ki rows).
    const CACHED: usize = 1 << 16;
}

fn dict_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// Offsets in bounds and in order, UTF-8 between them: arrow's reader leaves this to us (see
/// `TraceReader::from_reader`). Cheap for a dictionary's few names; plain string columns are
/// only in schema 1 traces.
fn check_strings(s: &StringArray) -> Result<(), String> {
    s.to_data().validate_full().map_err(|e| e.to_string())
}

fn names_view(a: &dyn Array) -> Result<Names<'_>, String> {
    if let Some(s) = a.as_any().downcast_ref::<StringArray>() {
        check_strings(s)?;
        return Ok(Names::Plain(s.view(), s.valid()));
    }
    let d = downcast::<DictionaryArray<Int32Type>>(a, dict_type())?;
    let values = downcast::<StringArray>(d.values().as_ref(), DataType::Utf8)
        .map_err(|e| format!("dictionary {e}"))?;
    check_strings(values).map_err(|e| format!("dictionary {e}"))?;
    if values.null_count() > 0 {
        return Err("dictionary has null values".into());
    }
    let (keys, valid) = (d.keys().values().as_ref(), Valid::of(d.keys()));
    // Checked here once so that a row's lookup cannot go out of bounds. Null rows' keys are
    // whatever the writer left there (arrow-rs writes 0): the plain scan, an "any key out of
    // range" flag or-ed together, which vectorizes with SSE2 alone (a short-circuiting `all`
    // did not: 7 instructions a key; a running maximum wants SSE4.1's `pmaxud`: 3), and only
    // when it is set are the nulls told apart. A column null in the whole batch (most of them,
    // often with an empty dictionary) has no key to check, and is never read.
    let n = values.len();
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    if d.null_count() < d.len()
        && keys
            .iter()
            .fold(0u32, |bad, &k| bad | (k as u32 >= n32) as u32)
            != 0
        && let Some(i) =
            (0..keys.len()).find(|&i| valid.is_valid(i) && keys[i] as u32 as usize >= n)
    {
        return Err(format!("dictionary key {} out of range (row {i})", keys[i]));
    }
    Ok(Names::Dict {
        keys,
        valid,
        values: values.view(),
    })
}

impl<'a> Names<'a> {
    #[inline(always)]
    fn valid(self) -> Valid<'a> {
        match self {
            Names::Plain(_, valid) | Names::Dict { valid, .. } => valid,
        }
    }

    #[inline(always)]
    fn get(self, i: usize, ok: bool, st: &mut NameState) -> Option<Sym> {
        if !ok {
            return None;
        }
        match self {
            Names::Plain(v, _) => Some(st.interner.get_bytes(StringArray::item(v, i))),
            Names::Dict { keys, values, .. } => {
                let k = keys[i] as usize;
                if let Some(Some(s)) = st.dict.get(k) {
                    return Some(*s);
                }
                let s = st.interner.get_bytes(StringArray::item(values, k));
                // A crafted dictionary can be 2^28 entries long: past a batch's worth of rows
                // the entries are interned each time instead of cached.
                if k < NameState::CACHED {
                    if st.dict.len() <= k {
                        st.dict.resize(k + 1, None);
                    }
                    st.dict[k] = Some(s);
                }
                Some(s)
            }
        }
    }
}

/// A names column as [`Rows`] keeps it.
enum OwnedNames {
    /// Each dictionary entry interned once.
    Dict {
        keys: ScalarBuffer<i32>,
        nulls: Bits,
        syms: Vec<Sym>,
    },
    /// Plain strings (schema 1), or a dictionary longer than a batch has rows (only a crafted
    /// file has one): each row interned.
    PerRow(Vec<Option<Sym>>),
}

impl Default for OwnedNames {
    fn default() -> Self {
        OwnedNames::PerRow(Vec::new())
    }
}

impl OwnedNames {
    /// `view`: `a`'s [`names_view`], which checked its keys and strings.
    fn new(a: &dyn Array, view: Names<'_>, st: &mut NameState) -> Result<OwnedNames, String> {
        let valid = view.valid();
        if let Some(d) = a.as_any().downcast_ref::<DictionaryArray<Int32Type>>()
            && d.values().len() <= NameState::CACHED
        {
            let Names::Dict { values, .. } = view else {
                unreachable!("a dictionary array has a dictionary view")
            };
            let keys = d.keys().owned()?;
            let syms = (0..d.values().len())
                .map(|k| st.interner.get_bytes(StringArray::item(values, k)))
                .collect();
            return Ok(OwnedNames::Dict {
                keys,
                nulls: checked_nulls(d.keys())?,
                syms,
            });
        }
        Ok(OwnedNames::PerRow(
            (0..a.len())
                .map(|i| view.get(i, valid.is_valid(i), st))
                .collect(),
        ))
    }

    #[inline(always)]
    fn at(&self, i: usize) -> Option<Sym> {
        match self {
            OwnedNames::Dict { keys, nulls, syms } => {
                let k = *keys.get(i)?;
                // In bounds: `names_view` checked every valid row's key.
                nulls.get(i).then(|| syms[k as usize])
            }
            OwnedNames::PerRow(v) => v.get(i).copied().flatten(),
        }
    }
}

struct Str;
impl Column for Str {
    type Value = Sym;
    type Builder = StringDictionaryBuilder<Int32Type>;
    type State = NameState;
    type View<'a> = Names<'a>;
    const NULLABLE: bool = false;
    fn data_type() -> DataType {
        dict_type()
    }
    fn append(b: &mut Self::Builder, v: &Sym) {
        b.append_value(v.as_str());
    }
    fn finish(b: &mut Self::Builder) -> ArrayRef {
        Arc::new(b.finish())
    }
    fn view(a: &dyn Array) -> Result<Names<'_>, String> {
        names_view(a)
    }
    #[inline(always)]
    fn valid<'a>(v: Self::View<'a>) -> Valid<'a> {
        v.valid()
    }
    #[inline(always)]
    fn get(v: Names<'_>, i: usize, ok: bool, st: &mut NameState) -> Sym {
        // Not nullable: checked before the first row.
        v.get(i, ok, st).unwrap_or_default()
    }
    type Owned = OwnedNames;
    fn own(a: &dyn Array, v: Names<'_>, st: &mut NameState) -> Result<OwnedNames, String> {
        OwnedNames::new(a, v, st)
    }
    #[inline(always)]
    fn at(o: &OwnedNames, i: usize) -> Sym {
        o.at(i).unwrap_or_default()
    }
}

struct OptStr;
impl Column for OptStr {
    type Value = Option<Sym>;
    type Builder = StringDictionaryBuilder<Int32Type>;
    type State = NameState;
    type View<'a> = Names<'a>;
    const NULLABLE: bool = true;
    fn data_type() -> DataType {
        dict_type()
    }
    fn append(b: &mut Self::Builder, v: &Option<Sym>) {
        b.append_option(v.as_ref().map(|v| v.as_str()));
    }
    fn finish(b: &mut Self::Builder) -> ArrayRef {
        Arc::new(b.finish())
    }
    fn view(a: &dyn Array) -> Result<Names<'_>, String> {
        names_view(a)
    }
    #[inline(always)]
    fn valid<'a>(v: Self::View<'a>) -> Valid<'a> {
        v.valid()
    }
    #[inline(always)]
    fn get(v: Names<'_>, i: usize, ok: bool, st: &mut NameState) -> Option<Sym> {
        v.get(i, ok, st)
    }
    type Owned = OwnedNames;
    fn own(a: &dyn Array, v: Names<'_>, st: &mut NameState) -> Result<OwnedNames, String> {
        OwnedNames::new(a, v, st)
    }
    #[inline(always)]
    fn at(o: &OwnedNames, i: usize) -> Option<Sym> {
        o.at(i)
    }
}

/// Rows decoded one column at a time: a block of records (~290 KB) stays in cache while each
/// column streams through it. Row by row, the 41 column streams defeated the prefetcher;
/// column by column over a whole 4096-row batch, the records fell out of cache. On the 10M
/// bench trace, alternating binaries: 4.8 CPU-s row by row, 4.4 with blocks of 512 or 1024,
/// 4.45 with 4096, 5.1 with 16.
const BLOCK: usize = 512;
/// Validity words per block.
const WORDS: usize = BLOCK / 64;

macro_rules! columns {
    ($($field:ident: $kind:ident),* $(,)?) => {
        pub fn fields() -> Vec<Field> {
            vec![$(Field::new(stringify!($field), <$kind as Column>::data_type(), <$kind as Column>::NULLABLE)),*]
        }

        /// Every column's name, in schema order.
        pub const COLUMNS: &[&str] = &[$(stringify!($field)),*];

        #[derive(Default)]
        #[allow(non_snake_case)]
        pub struct Builders {
            rows: usize,
            $($field: <$kind as Column>::Builder,)*
        }

        impl Builders {
            pub fn push(&mut self, r: &Record) {
                self.rows += 1;
                $(<$kind as Column>::append(&mut self.$field, &r.$field);)*
            }

            pub fn len(&self) -> usize {
                self.rows
            }

            pub fn finish(&mut self, schema: SchemaRef) -> Result<RecordBatch, ArrowError> {
                self.rows = 0;
                RecordBatch::try_new(schema, vec![$(<$kind as Column>::finish(&mut self.$field)),*])
            }
        }

        /// What decoding one batch keeps between rows, per column.
        #[derive(Default)]
        struct States {
            $($field: <$kind as Column>::State,)*
        }

        /// A checked batch read a row at a time, for a consumer that reads a few fields of
        /// each row instead of all of them (the replay): [`decode`] writes every field of
        /// every row into a ~0.5 KB [`Record`], and that was a third of `replay check`'s time.
        /// The batch's buffers are shared, not copied; names are interned once per dictionary
        /// entry.
        pub struct Rows {
            len: usize,
            first_seq: u64,
            /// Empty since schema 3.
            seq: ScalarBuffer<u64>,
            $($field: <$kind as Column>::Owned,)*
            /// Columns the reader left undecoded ([`crate::TraceReader::open_without`]): they
            /// read as absent, and a debug build refuses to read them, so that a consumer that
            /// starts to need one finds out in its tests.
            pub(crate) unread: &'static [&'static str],
        }

        impl Rows {
            /// `batch`, checked as [`decode`] checks it, its rows numbered from `first_seq`
            /// (see [`SEQ`]).
            pub fn new(batch: &RecordBatch, first_seq: u64) -> Result<Rows, String> {
                let mut st = States::default();
                // In `decode`'s order, so that both name the same first damage.
                $(let $field = owned_column::<$kind>(batch, stringify!($field), &mut st.$field)?;)*
                Ok(Rows {
                    len: batch.num_rows(),
                    first_seq,
                    seq: owned_column::<U64>(batch, SEQ, &mut ())?,
                    $($field,)*
                    unread: &[],
                })
            }

            /// Marks the columns named in `unread` unread ([`Rows::unread`]), dropping them
            /// where the reader decoded them anyway (a trace without checksums): they were
            /// checked, and read as absent, as columns projected away do.
            pub(crate) fn leave_unread(&mut self, unread: &'static [&'static str]) {
                $(
                    if unread.contains(&stringify!($field)) {
                        self.$field = Default::default();
                    }
                )*
                self.unread = unread;
            }

            pub fn len(&self) -> usize {
                self.len
            }

            pub fn is_empty(&self) -> bool {
                self.len == 0
            }

            /// Row `i`'s position in the file.
            #[inline]
            pub fn seq(&self, i: usize) -> u64 {
                match self.seq.get(i) {
                    Some(&s) => s,
                    None => self.first_seq + i as u64,
                }
            }

            $(
                #[doc = concat!("Row `i`'s `", stringify!($field), "`: default in a column the batch lacks, and past the last row.")]
                #[inline]
                pub fn $field(&self, i: usize) -> value_of!($kind) {
                    debug_assert!(
                        !self.unread.contains(&stringify!($field)),
                        concat!("column `", stringify!($field), "` was left unread: take it off the reader's skip list"),
                    );
                    <$kind as Column>::at(&self.$field, i)
                }
            )*

            /// Row `i` as a record, as [`decode`] makes it (unread columns as absent).
            pub fn record(&self, i: usize) -> Record {
                Record {
                    seq: self.seq(i),
                    $($field: <$kind as Column>::at(&self.$field, i),)*
                }
            }
        }

        impl std::fmt::Debug for Rows {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Rows")
                    .field("len", &self.len)
                    .field("first_seq", &self.first_seq)
                    .finish_non_exhaustive()
            }
        }

        /// One call: a row of a [`Rows`] or a record. The replay's model reads calls through
        /// this, so that a trace file's rows are read in place and a record built by hand (a
        /// test, a mutant) goes through the same rules.
        #[derive(Clone, Copy, Debug)]
        pub enum Rec<'a> {
            Row(&'a Rows, usize),
            Record(&'a Record),
        }

        impl<'a> Rec<'a> {
            #[inline]
            pub fn seq(self) -> u64 {
                match self {
                    Rec::Row(r, i) => r.seq(i),
                    Rec::Record(r) => r.seq,
                }
            }

            $(
                #[inline]
                pub fn $field(self) -> value_of!($kind) {
                    match self {
                        Rec::Row(r, i) => r.$field(i),
                        Rec::Record(r) => r.$field,
                    }
                }
            )*

            pub fn to_record(self) -> Record {
                match self {
                    Rec::Row(r, i) => r.record(i),
                    Rec::Record(r) => *r,
                }
            }
        }

        /// Decodes a batch into records, a block of rows at a time. The whole batch is
        /// checked first. Columns are found by name so a reader keeps working when a later
        /// writer of the same schema version appends columns; a missing column reads as
        /// default. `seq` is the row's position, counted from `first_seq` (see [`SEQ`]).
        pub fn decode(batch: &RecordBatch, first_seq: u64) -> Result<Vec<Record>, String> {
            #[allow(non_snake_case)]
            struct Arrays<'a> {
                $($field: Option<<$kind as Column>::View<'a>>,)*
            }
            let arrays = Arrays {
                $($field: column::<$kind>(batch, stringify!($field))?,)*
            };
            let seq = column::<U64>(batch, SEQ)?;
            let n = batch.num_rows();
            let mut st = States::default();
            let mut out = vec![Record::default(); n];
            for (block, rows) in out.chunks_mut(BLOCK).enumerate() {
                let first = block * BLOCK;
                match seq {
                    Some(a) => for (k, r) in rows.iter_mut().enumerate() {
                        r.seq = <U64 as Column>::get(a, first + k, true, &mut ());
                    },
                    None => for (k, r) in rows.iter_mut().enumerate() {
                        r.seq = first_seq + (first + k) as u64;
                    },
                }
                $(if let Some(a) = arrays.$field {
                    let ok = <$kind as Column>::valid(a).words(first);
                    for (c, (rows, &word)) in rows.chunks_mut(64).zip(&ok).enumerate() {
                        let mut w = word;
                        for (k, r) in rows.iter_mut().enumerate() {
                            r.$field = <$kind as Column>::get(
                                a, first + c * 64 + k, w & 1 != 0, &mut st.$field,
                            );
                            w >>= 1;
                        }
                    }
                })*
            }
            Ok(out)
        }
    };
}

/// Column `name` of `batch`, checked; None where the batch has no such column or it is null
/// throughout (most columns belong to a few hooks and are null in whole batches).
fn column<'a, K: Column>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<Option<K::View<'a>>, String> {
    let Some(a) = batch.column_by_name(name) else {
        return Ok(None);
    };
    // Arrow's reader does not validate (see `TraceReader::from_reader`): every row index the
    // decoder uses must be in bounds of every column.
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
    let v = K::view(a.as_ref()).map_err(|e| format!("column `{name}` {e}"))?;
    Ok((a.null_count() < a.len()).then_some(v))
}

/// Column `name` of `batch` kept for [`Rows`], checked by [`column`].
fn owned_column<K: Column>(
    batch: &RecordBatch,
    name: &str,
    st: &mut K::State,
) -> Result<K::Owned, String> {
    let Some(v) = column::<K>(batch, name)? else {
        return Ok(K::Owned::default());
    };
    let a = batch.column_by_name(name).expect("column() found it");
    K::own(a.as_ref(), v, st).map_err(|e| format!("column `{name}` {e}"))
}

/// The Rust type of a column kind's values.
macro_rules! value_of {
    (Id) => { u64 };
    (U64) => { u64 };
    (U32) => { u32 };
    (OptU64) => { Option<u64> };
    (OptU32) => { Option<u32> };
    (OptI64) => { Option<i64> };
    (OptBool) => { Option<bool> };
    (Str) => { Sym };
    (OptStr) => { Option<Sym> };
}

/// Each row's position in the file. Since schema 3 it is not written: it is the row number,
/// and an incrementing u64 was a fifth of a compressed trace and of what its reader
/// decompressed. Schema 1 and 2 traces carry it as a column, which is read as it is.
const SEQ: &str = "seq";

columns! {
    id: Id,
    parent: U64,
    ts_ns: U64,
    latency_ns: OptU64,
    cpu: U32,
    pid: U32,
    tid: U32,
    comm: Str,
    hook: Str,
    mode: Str,
    address: OptU64,
    fault_flags: OptU32,
    error_code: OptU32,
    vma_id: OptU32,
    vma_start: OptU64,
    vma_end: OptU64,
    vma_pgoff: OptU64,
    vma_flags: OptU64,
    vma_prot: OptU64,
    vma_cache: OptStr,
    driver: OptStr,
    file_id: OptU32,
    mm_id: OptU32,
    pte: OptU64,
    page: OptBool,
    pfn: OptU64,
    size: OptU64,
    prot: OptU64,
    cache_req: OptStr,
    prot_out: OptU64,
    cache_out: OptStr,
    write: OptBool,
    ret: OptI64,
    ino: OptU64,
    index: OptU64,
    dev: OptU64,
    child_pid: OptU32,
    dropped: OptU64,
    unpaired: OptU64,
    read_failed: OptU64,
    pfn_flags: OptU64,
}

#[cfg(test)]
mod tests {
    use arrow_schema::Schema;

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

    /// `batch` decoded, checked against reading it through [`Rows`]: the same records, or
    /// both refuse it.
    fn decode_all(batch: &RecordBatch) -> Result<Vec<Record>, String> {
        decode_from(batch, 0)
    }

    fn decode_from(batch: &RecordBatch, first_seq: u64) -> Result<Vec<Record>, String> {
        let decoded = decode(batch, first_seq);
        match (Rows::new(batch, first_seq), &decoded) {
            (Ok(rows), Ok(got)) => {
                let by_row: Vec<Record> = (0..rows.len()).map(|i| rows.record(i)).collect();
                assert_eq!(&by_row, got, "rows and records differ");
                let recs: Vec<Record> = (0..rows.len())
                    .map(|i| Rec::Row(&rows, i).to_record())
                    .collect();
                assert_eq!(&recs, got, "Rec::Row and records differ");
            }
            (Err(_), Err(_)) => {}
            (r, d) => panic!("rows {:?}, decode {:?}", r.map(|r| r.len()), d),
        }
        decoded
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
}
