//! The trace crate's Arrow batches (arrow-rs) handed to polars (polars-arrow) through Arrow's C
//! data interface: the same buffers, not a copy, and no second IPC reader to keep in step with
//! the trace format.

use polars::prelude::{PolarsError, PolarsResult};
use polars_arrow::array::Array;
use polars_arrow::datatypes::Field;
use polars_arrow::ffi::{ArrowArray, ArrowSchema, import_array_from_c, import_field_from_c};

/// A batch's columns in polars' terms: the fields, and the arrays in the same order.
pub type Columns = (Vec<Field>, Vec<Box<dyn Array>>);

/// Every column of `batch`, as polars arrays with their fields, in the batch's order.
pub fn import(batch: &arrow_array::RecordBatch) -> PolarsResult<Columns> {
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut arrays = Vec::with_capacity(batch.num_columns());
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        let (array, schema) = arrow_array::ffi::to_ffi(&c.to_data())
            .map_err(|e| PolarsError::ComputeError(e.to_string().into()))?;
        // SAFETY: both are the C data interface's `ArrowArray` and `ArrowSchema`, `#[repr(C)]`
        // structs of the same fields; the values move (their release callbacks go with them),
        // so each is released once, by polars.
        let (array, schema) = unsafe {
            (
                std::mem::transmute::<arrow_array::ffi::FFI_ArrowArray, ArrowArray>(array),
                std::mem::transmute::<arrow_array::ffi::FFI_ArrowSchema, ArrowSchema>(schema),
            )
        };
        // SAFETY: arrow-rs exported them just now, from arrays the trace crate validated
        // (`TraceReader::next_arrow`).
        let field = unsafe { import_field_from_c(&schema) }?;
        let array = unsafe { import_array_from_c(array, field.dtype().clone()) }?;
        fields.push(Field::new(
            f.name().as_str().into(),
            field.dtype().clone(),
            f.is_nullable(),
        ));
        arrays.push(array);
    }
    Ok((fields, arrays))
}
