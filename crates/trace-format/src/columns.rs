//! The column list, in one place: schema, builders and decoding are all generated from it.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
    builder::{BooleanBuilder, Int64Builder, StringBuilder, UInt32Builder, UInt64Builder},
};
use arrow_schema::{ArrowError, DataType, Field, SchemaRef};

use crate::{
    record::Record,
    sym::{Interner, Sym},
};

/// How one Rust field maps to one Arrow column.
trait Column {
    type Value;
    type Builder: Default;
    type Array: Array + 'static;
    /// What decoding one column of a batch keeps between rows (the string interner).
    type State: Default;
    const TYPE: DataType;
    const NULLABLE: bool;
    fn append(b: &mut Self::Builder, v: &Self::Value);
    fn finish(b: &mut Self::Builder) -> ArrayRef;
    fn get(a: &Self::Array, i: usize, st: &mut Self::State) -> Self::Value;
}

macro_rules! column_kind {
    ($kind:ident, $value:ty, $builder:ty, $array:ty, $dt:expr, $state:ty, $conv:expr, opt) => {
        struct $kind;
        impl Column for $kind {
            type Value = Option<$value>;
            type Builder = $builder;
            type Array = $array;
            type State = $state;
            const TYPE: DataType = $dt;
            const NULLABLE: bool = true;
            fn append(b: &mut Self::Builder, v: &Self::Value) {
                b.append_option(v.as_ref().map(|v| v.as_arrow()));
            }
            fn finish(b: &mut Self::Builder) -> ArrayRef {
                Arc::new(b.finish())
            }
            #[inline(always)]
            fn get(a: &Self::Array, i: usize, st: &mut Self::State) -> Self::Value {
                if a.is_null(i) {
                    None
                } else {
                    Some($conv(a.value(i), st))
                }
            }
        }
    };
    ($kind:ident, $value:ty, $builder:ty, $array:ty, $dt:expr, $state:ty, $conv:expr) => {
        struct $kind;
        impl Column for $kind {
            type Value = $value;
            type Builder = $builder;
            type Array = $array;
            type State = $state;
            const TYPE: DataType = $dt;
            const NULLABLE: bool = false;
            fn append(b: &mut Self::Builder, v: &Self::Value) {
                b.append_value(v.as_arrow());
            }
            fn finish(b: &mut Self::Builder) -> ArrayRef {
                Arc::new(b.finish())
            }
            #[inline(always)]
            fn get(a: &Self::Array, i: usize, st: &mut Self::State) -> Self::Value {
                $conv(a.value(i), st)
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

impl AsArrow for Sym {
    type Out<'a> = &'a str;
    fn as_arrow(&self) -> &str {
        self.as_str()
    }
}

#[inline(always)]
fn plain<T>(v: T, _: &mut ()) -> T {
    v
}

#[inline(always)]
fn interned(v: &str, st: &mut Interner) -> Sym {
    st.get(v)
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
    Str,
    Sym,
    StringBuilder,
    StringArray,
    DataType::Utf8,
    Interner,
    interned
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
    OptStr,
    Sym,
    StringBuilder,
    StringArray,
    DataType::Utf8,
    Interner,
    interned,
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

macro_rules! columns {
    ($($field:ident: $kind:ident),* $(,)?) => {
        pub fn fields() -> Vec<Field> {
            vec![$(Field::new(stringify!($field), <$kind as Column>::TYPE, <$kind as Column>::NULLABLE)),*]
        }

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

        /// Decodes a batch, one whole record at a time, and hands the records to `f` in pieces
        /// of at most `piece` (`f` returns false to stop); returns whether `f` took them all.
        /// The whole batch is checked before the first piece, so a corrupt batch hands nothing
        /// over. Columns are found by name so a reader keeps working when a later writer of the
        /// same schema version appends columns; a missing column reads as default.
        pub fn decode(batch: &RecordBatch, piece: usize, mut f: impl FnMut(Vec<Record>) -> bool) -> Result<bool, String> {
            #[derive(Default)]
            #[allow(non_snake_case)]
            struct States {
                $($field: <$kind as Column>::State,)*
            }
            #[allow(non_snake_case)]
            struct Arrays<'a> {
                $($field: Option<&'a <$kind as Column>::Array>,)*
            }
            let arrays = Arrays {
                $($field: match batch.column_by_name(stringify!($field)) {
                    Some(col) => {
                        let a = col
                            .as_any()
                            .downcast_ref::<<$kind as Column>::Array>()
                            .ok_or_else(|| format!("column `{}` has type {}, expected {}", stringify!($field), col.data_type(), <$kind as Column>::TYPE))?;
                        if !<$kind as Column>::NULLABLE && a.null_count() > 0 {
                            return Err(format!("column `{}` has nulls", stringify!($field)));
                        }
                        // Most columns belong to a few hooks and are null in whole batches.
                        if a.null_count() == a.len() { None } else { Some(a) }
                    }
                    None => None,
                },)*
            };
            let mut st = States::default();
            let n = batch.num_rows();
            let piece = piece.clamp(1, n.max(1));
            let mut start = 0;
            loop {
                let end = n.min(start + piece);
                let mut out = Vec::with_capacity(end - start);
                for i in start..end {
                    out.push(Record {
                        $($field: match arrays.$field {
                            Some(a) => <$kind as Column>::get(a, i, &mut st.$field),
                            None => Default::default(),
                        },)*
                    });
                }
                if !f(out) {
                    return Ok(false);
                }
                start = end;
                if start >= n {
                    return Ok(true);
                }
            }
        }
    };
}

columns! {
    seq: U64,
    id: U64,
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
}
