//! Names (hook, mode, comm, driver, cache modes): a handful of distinct values repeated on every
//! row, written as dictionaries (as plain strings they were two thirds of a compressed trace and
//! most of what the reader decompressed). Kept as [`Sym`]s, each dictionary entry interned once.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, DictionaryArray, StringArray, builder::StringDictionaryBuilder,
    types::Int32Type,
};
use arrow_buffer::ScalarBuffer;
use arrow_schema::DataType;

use super::compat;
use super::kinds::{Bits, Column, RawOwned, bytes, check_strings, checked_nulls, downcast};
use crate::sym::{Interner, Sym};

fn dict_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// A names column as [`super::Rows`] keeps it.
pub(crate) enum OwnedNames {
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

/// Dictionary entries interned up front, at most (the tracer's batches hold up to 64 Ki rows);
/// past that, each row's name is interned (a crafted dictionary can be 2^28 entries long).
const CACHED: usize = 1 << 16;

impl OwnedNames {
    fn new(a: &dyn Array, names: &mut Interner) -> Result<OwnedNames, String> {
        if let Some(s) = a.as_any().downcast_ref::<StringArray>() {
            return compat::plain_names(s, names).map(OwnedNames::PerRow);
        }
        let d = downcast::<DictionaryArray<Int32Type>>(a, dict_type())?;
        let values = downcast::<StringArray>(d.values().as_ref(), DataType::Utf8)
            .map_err(|e| format!("dictionary {e}"))?;
        check_strings(values).map_err(|e| format!("dictionary {e}"))?;
        if values.null_count() > 0 {
            return Err("dictionary has null values".into());
        }
        check_keys(d, values.len())?;
        if values.len() <= CACHED {
            let syms = (0..values.len())
                .map(|k| names.get_bytes(bytes(values, k)))
                .collect();
            return Ok(OwnedNames::Dict {
                keys: d.keys().owned()?,
                nulls: checked_nulls(d.keys())?,
                syms,
            });
        }
        let keys = d.keys().values();
        Ok(OwnedNames::PerRow(
            (0..d.len())
                .map(|i| {
                    Bits::valid_in(d, i).then(|| names.get_bytes(bytes(values, keys[i] as usize)))
                })
                .collect(),
        ))
    }

    #[inline(always)]
    fn at(&self, i: usize) -> Option<Sym> {
        match self {
            OwnedNames::Dict { keys, nulls, syms } => {
                let k = *keys.get(i)?;
                // In bounds: `check_keys` checked every valid row's key.
                nulls.get(i).then(|| syms[k as usize])
            }
            OwnedNames::PerRow(v) => v.get(i).copied().flatten(),
        }
    }
}

/// Every valid row's key below `n`, so that a row's lookup cannot go out of bounds. Null rows'
/// keys are whatever the writer left there (arrow-rs writes 0): the plain scan, an "any key out
/// of range" flag or-ed together, which vectorizes with SSE2 alone (a short-circuiting `all`
/// did not: 7 instructions a key; a running maximum wants SSE4.1's `pmaxud`: 3), and only when
/// it is set are the nulls told apart. A column null in the whole batch (most of them, often
/// with an empty dictionary) is never kept (see [`super::owned_column`]).
fn check_keys(d: &DictionaryArray<Int32Type>, n: usize) -> Result<(), String> {
    let keys = d.keys().values();
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    if keys
        .iter()
        .fold(0u32, |bad, &k| bad | (k as u32 >= n32) as u32)
        != 0
        && let Some(i) =
            (0..keys.len()).find(|&i| Bits::valid_in(d.keys(), i) && keys[i] as u32 as usize >= n)
    {
        return Err(format!("dictionary key {} out of range (row {i})", keys[i]));
    }
    Ok(())
}

/// A name every row has (`hook`, `mode`, `comm`).
pub(crate) struct Str;
impl Column for Str {
    type Value = Sym;
    type Builder = StringDictionaryBuilder<Int32Type>;
    type Owned = OwnedNames;
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
    fn own(a: &dyn Array, names: &mut Interner) -> Result<OwnedNames, String> {
        OwnedNames::new(a, names)
    }
    #[inline(always)]
    fn at(o: &OwnedNames, i: usize) -> Sym {
        o.at(i).unwrap_or_default()
    }
}

/// A name some rows have (`driver`, the cache modes).
pub(crate) struct OptStr;
impl Column for OptStr {
    type Value = Option<Sym>;
    type Builder = StringDictionaryBuilder<Int32Type>;
    type Owned = OwnedNames;
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
    fn own(a: &dyn Array, names: &mut Interner) -> Result<OwnedNames, String> {
        OwnedNames::new(a, names)
    }
    #[inline(always)]
    fn at(o: &OwnedNames, i: usize) -> Option<Sym> {
        o.at(i)
    }
}
