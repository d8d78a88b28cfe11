//! The column list, in one place: schema, builders and decoding are all generated from it.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
    builder::{BooleanBuilder, Int64Builder, StringBuilder, UInt32Builder, UInt64Builder},
};
use arrow_schema::{ArrowError, DataType, Field, SchemaRef};

use crate::record::Record;

/// How one Rust field maps to one Arrow column.
trait Column {
    type Value;
    type Builder: Default;
    type Array: Array + 'static;
    const TYPE: DataType;
    const NULLABLE: bool;
    fn append(b: &mut Self::Builder, v: &Self::Value);
    fn finish(b: &mut Self::Builder) -> ArrayRef;
    fn get(a: &Self::Array, i: usize) -> Self::Value;
}

macro_rules! column_kind {
    ($kind:ident, $value:ty, $builder:ty, $array:ty, $dt:expr, opt) => {
        struct $kind;
        impl Column for $kind {
            type Value = Option<$value>;
            type Builder = $builder;
            type Array = $array;
            const TYPE: DataType = $dt;
            const NULLABLE: bool = true;
            fn append(b: &mut Self::Builder, v: &Self::Value) {
                b.append_option(v.clone());
            }
            fn finish(b: &mut Self::Builder) -> ArrayRef {
                Arc::new(b.finish())
            }
            fn get(a: &Self::Array, i: usize) -> Self::Value {
                if a.is_null(i) {
                    None
                } else {
                    Some(a.value(i).into())
                }
            }
        }
    };
    ($kind:ident, $value:ty, $builder:ty, $array:ty, $dt:expr) => {
        struct $kind;
        impl Column for $kind {
            type Value = $value;
            type Builder = $builder;
            type Array = $array;
            const TYPE: DataType = $dt;
            const NULLABLE: bool = false;
            fn append(b: &mut Self::Builder, v: &Self::Value) {
                b.append_value(v.clone());
            }
            fn finish(b: &mut Self::Builder) -> ArrayRef {
                Arc::new(b.finish())
            }
            fn get(a: &Self::Array, i: usize) -> Self::Value {
                a.value(i).into()
            }
        }
    };
}

column_kind!(U64, u64, UInt64Builder, UInt64Array, DataType::UInt64);
column_kind!(U32, u32, UInt32Builder, UInt32Array, DataType::UInt32);
column_kind!(Str, String, StringBuilder, StringArray, DataType::Utf8);
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
    OptStr,
    String,
    StringBuilder,
    StringArray,
    DataType::Utf8,
    opt
);
column_kind!(
    OptBool,
    bool,
    BooleanBuilder,
    BooleanArray,
    DataType::Boolean,
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

        /// Decodes a batch. Columns are found by name so a reader keeps working when a later
        /// writer of the same schema version appends columns; a missing column reads as default.
        pub fn decode(batch: &RecordBatch, out: &mut Vec<Record>) -> Result<(), String> {
            let n = batch.num_rows();
            let base = out.len();
            out.resize_with(base + n, Record::default);
            $(
                if let Some(col) = batch.column_by_name(stringify!($field)) {
                    let a = col
                        .as_any()
                        .downcast_ref::<<$kind as Column>::Array>()
                        .ok_or_else(|| format!("column `{}` has type {}, expected {}", stringify!($field), col.data_type(), <$kind as Column>::TYPE))?;
                    if !<$kind as Column>::NULLABLE && a.null_count() > 0 {
                        return Err(format!("column `{}` has nulls", stringify!($field)));
                    }
                    for i in 0..n {
                        out[base + i].$field = <$kind as Column>::get(a, i);
                    }
                }
            )*
            Ok(())
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
