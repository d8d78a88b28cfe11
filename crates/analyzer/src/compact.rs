//! One decoded IPC batch into the analysis columns, in a single pass over its rows.
//!
//! Polars expressions did this before (string -> categorical casts, `when` chains for the vma
//! kind and fault type): about 2.5 s of a 10 M-event load, most of it hashing the same few
//! strings again and converting every string column to views first. Here each string is looked
//! up in a per-column cache that remembers the last few distinct values, and the labels are
//! chosen by a `match` on the raw bits.

use polars::prelude::*;
use polars_arrow::array::{Array, DictionaryArray, PrimitiveArray, Utf8Array};
use polars_arrow::bitmap::{Bitmap, MutableBitmap};
use polars_arrow::datatypes::{ArrowDataType, Field as ArrowField};

use pfnscope_abi::Hook;
use pfnscope_abi::bits::{VmBits, fault_flag, x86_pf};
use pfnscope_abi::hook::Ret;

/// The kinds of vma, in the order they are tested.
pub const VMA_KINDS: [&str; 6] = ["pfnmap", "mixedmap", "io", "file", "anonymous", "special"];

/// anonymous (no vm_ops, no file), file, pfnmap, mixedmap or io; `special` for a vma with
/// vm_ops but neither a file nor a PFN flag (`_install_special_mapping`); `None` without a vma.
/// An index into [`VMA_KINDS`].
pub fn vma_kind(
    bits: VmBits,
    flags: Option<u64>,
    has_file: bool,
    has_driver: bool,
) -> Option<usize> {
    let f = flags?;
    // PFNMAP before IO: remap_pfn_range sets both, and the PFN nature is what matters here.
    Some(if f & bits.pfnmap != 0 {
        0
    } else if f & bits.mixedmap != 0 {
        1
    } else if f & bits.io != 0 {
        2
    } else if has_file {
        3
    } else if !has_driver {
        4
    } else {
        5
    })
}

/// The fault types: what the fault does (exec, unshare, write, read), user before kernel.
pub const FAULT_TYPES: [&str; 8] = [
    "user exec",
    "kernel exec",
    "user unshare",
    "kernel unshare",
    "user write",
    "kernel write",
    "user read",
    "kernel read",
];

/// read / write / exec (and unshare), `user` or `kernel`: from `fault_flags` for
/// handle_mm_fault, from the x86 error code for the fault tracepoints. An index into
/// [`FAULT_TYPES`].
pub fn fault_type(fault_flags: Option<u32>, error_code: Option<u32>) -> Option<usize> {
    let (what, user) = if let Some(ff) = fault_flags {
        let what = if ff & fault_flag::INSTRUCTION != 0 {
            0
        } else if ff & fault_flag::UNSHARE != 0 {
            1
        } else if ff & fault_flag::WRITE != 0 {
            2
        } else {
            3
        };
        (what, ff & fault_flag::USER != 0)
    } else {
        let ec = error_code?;
        let what = if ec & x86_pf::INSTR != 0 {
            0
        } else if ec & x86_pf::WRITE != 0 {
            2
        } else {
            3
        };
        (what, ec & x86_pf::USER != 0)
    };
    Some(2 * what + usize::from(!user))
}

/// A names column of one batch: a dictionary, as the trace crate hands every names column
/// over (older traces' plain strings included); `None` where the batch has no such column.
struct Strings<'a>(Option<(&'a DictionaryArray<i32>, &'a Utf8Array<i32>)>);

impl<'a> Strings<'a> {
    fn of(a: Option<&'a dyn Array>) -> Strings<'a> {
        Strings(a.and_then(|a| {
            let d = a.as_any().downcast_ref::<DictionaryArray<i32>>()?;
            let values = d.values().as_any().downcast_ref::<Utf8Array<i32>>()?;
            Some((d, values))
        }))
    }

    fn get(&self, i: usize) -> Option<&'a str> {
        let (d, values) = self.0?;
        // Keys in range: the trace crate validated the batch.
        d.keys().get(i).map(|k| values.value(k as usize))
    }
}

/// A numeric column of one batch as `Option<T>` per row (`None` where the column is missing).
struct Numbers<'a, T: polars_arrow::types::NativeType>(Option<&'a PrimitiveArray<T>>);

impl<'a, T: polars_arrow::types::NativeType> Numbers<'a, T> {
    fn of(a: Option<&'a dyn Array>) -> Self {
        Numbers(a.and_then(|a| a.as_any().downcast_ref::<PrimitiveArray<T>>()))
    }

    fn get(&self, i: usize) -> Option<T> {
        let a = self.0?;
        a.is_valid(i).then(|| a.value(i))
    }
}

/// Global categorical ids for the strings of one column. The few distinct values (hooks,
/// drivers, commands, cache modes) are kept in a short list searched most recent first.
struct Interner {
    mapping: Arc<CategoricalMapping>,
    seen: Vec<(Box<str>, u32)>,
}

impl Interner {
    fn new(mapping: Arc<CategoricalMapping>) -> Self {
        Interner {
            mapping,
            seen: Vec::new(),
        }
    }

    fn id(&mut self, s: &str) -> PolarsResult<u32> {
        if let Some(pos) = self.seen.iter().position(|(k, _)| &**k == s) {
            let id = self.seen[pos].1;
            // Move to front: consecutive rows mostly repeat a recent value.
            if pos > 0 {
                self.seen[..=pos].rotate_right(1);
            }
            return Ok(id);
        }
        let id = self.mapping.insert_cat(s)?;
        // Many distinct values (one comm per process): keep the list short; the polars
        // mapping remembers them all.
        if self.seen.len() == 64 {
            self.seen.pop();
        }
        self.seen.insert(0, (s.into(), id));
        Ok(id)
    }
}

/// A categorical column under construction (ids, validity).
#[derive(Default)]
struct CatColumn {
    ids: Vec<u32>,
    valid: MutableBitmap,
}

impl CatColumn {
    fn with_capacity(n: usize) -> Self {
        CatColumn {
            ids: Vec::with_capacity(n),
            valid: MutableBitmap::with_capacity(n),
        }
    }

    fn push(&mut self, id: Option<u32>) {
        self.ids.push(id.unwrap_or(0));
        self.valid.push(id.is_some());
    }

    fn finish(self, name: &str) -> Column {
        let validity: Option<Bitmap> = self.valid.into();
        let validity = validity.filter(|v| v.unset_bits() > 0);
        let arr = PrimitiveArray::new(ArrowDataType::UInt32, self.ids.into(), validity);
        let phys = UInt32Chunked::with_chunk(name.into(), arr);
        // SAFETY: every id came from `insert_cat` on the global mapping, which the dtype names.
        let cat =
            unsafe { Categorical32Chunked::from_cats_and_dtype_unchecked(phys, categorical()) };
        cat.into_series().into_column()
    }
}

pub(crate) fn categorical() -> DataType {
    DataType::from_categories(Categories::global())
}

/// Per-hook facts, decided once per distinct hook name.
#[derive(Clone, Copy)]
struct HookKind {
    id: u32,
    fault: bool,
    vm_fault_ret: bool,
}

/// hook, driver, requested and obtained cache mode ids.
type PatKey = (Option<u32>, Option<u32>, Option<u32>, Option<u32>);

/// What one batch became.
pub(crate) struct Parts {
    /// The analysis columns of [`crate::Trace::events`].
    pub events: DataFrame,
    /// Rows with a cache mode, counted per `hook`, `driver`, `cache_req`, `cache_out`
    /// (`count`).
    pub pat: DataFrame,
}

/// Turns batches into [`Parts`]; keeps the string caches from one batch to the next.
pub(crate) struct Compactor {
    bits: VmBits,
    mapping: Arc<CategoricalMapping>,
    hooks: Vec<(Box<str>, HookKind)>,
    drivers: Interner,
    comms: Interner,
    cache_modes: Interner,
    /// Categorical ids of [`VMA_KINDS`] and [`FAULT_TYPES`].
    vma_kinds: [u32; VMA_KINDS.len()],
    fault_types: [u32; FAULT_TYPES.len()],
}

fn ids<const N: usize>(mapping: &CategoricalMapping, names: [&str; N]) -> PolarsResult<[u32; N]> {
    let mut out = [0; N];
    for (id, name) in out.iter_mut().zip(names) {
        *id = mapping.insert_cat(name)?;
    }
    Ok(out)
}

impl Compactor {
    pub fn new(bits: VmBits) -> PolarsResult<Self> {
        let mapping = Categories::global().mapping();
        Ok(Compactor {
            bits,
            vma_kinds: ids(&mapping, VMA_KINDS)?,
            fault_types: ids(&mapping, FAULT_TYPES)?,
            hooks: Vec::new(),
            drivers: Interner::new(mapping.clone()),
            comms: Interner::new(mapping.clone()),
            cache_modes: Interner::new(mapping.clone()),
            mapping,
        })
    }

    fn hook(&mut self, name: &str) -> PolarsResult<HookKind> {
        if let Some((_, k)) = self.hooks.iter().find(|(h, _)| &**h == name) {
            return Ok(*k);
        }
        let k = HookKind {
            id: self.mapping.insert_cat(name)?,
            fault: Hook::parse(name).is_some_and(Hook::is_fault),
            vm_fault_ret: Hook::parse(name).and_then(Hook::ret) == Some(Ret::VmFault),
        };
        self.hooks.push((name.into(), k));
        Ok(k)
    }

    /// The `vma_kind` and `fault_type` of every row, as strings (for the full export).
    pub fn labels(&self, batch: &Batch) -> (Column, Column) {
        let (flags, file, driver) = (
            Numbers::<u64>::of(batch.get("vma_flags")),
            Numbers::<u32>::of(batch.get("file_id")),
            Strings::of(batch.get("driver")),
        );
        let (ff, ec) = (
            Numbers::<u32>::of(batch.get("fault_flags")),
            Numbers::<u32>::of(batch.get("error_code")),
        );
        let n = batch.height;
        let kinds: StringChunked = (0..n)
            .map(|i| {
                vma_kind(
                    self.bits,
                    flags.get(i),
                    file.get(i).is_some(),
                    driver.get(i).is_some(),
                )
                .map(|k| VMA_KINDS[k])
            })
            .collect();
        let types: StringChunked = (0..n)
            .map(|i| fault_type(ff.get(i), ec.get(i)).map(|t| FAULT_TYPES[t]))
            .collect();
        (
            kinds.with_name("vma_kind".into()).into_column(),
            types.with_name("fault_type".into()).into_column(),
        )
    }

    pub fn compact(&mut self, batch: &Batch) -> PolarsResult<Parts> {
        let n = batch.height;
        let hooks = Strings::of(batch.get("hook"));
        let drivers = Strings::of(batch.get("driver"));
        let comms = Strings::of(batch.get("comm"));
        let req = Strings::of(batch.get("cache_req"));
        let out = Strings::of(batch.get("cache_out"));
        let flags = Numbers::<u64>::of(batch.get("vma_flags"));
        let file = Numbers::<u32>::of(batch.get("file_id"));
        let ff = Numbers::<u32>::of(batch.get("fault_flags"));
        let ec = Numbers::<u32>::of(batch.get("error_code"));

        let (mut hook, mut driver, mut comm) = (
            CatColumn::with_capacity(n),
            CatColumn::with_capacity(n),
            CatColumn::with_capacity(n),
        );
        let (mut kind, mut ftype) = (CatColumn::with_capacity(n), CatColumn::with_capacity(n));
        let (mut is_fault, mut vm_ret) = (Vec::with_capacity(n), Vec::with_capacity(n));
        // PAT rows are only ever counted per combination: counting them here keeps the
        // frame a few rows long (grouping millions of rows on four keys took 350 MB).
        let mut pat_counts: Vec<(PatKey, u64)> = Vec::new();
        for i in 0..n {
            let h = match hooks.get(i) {
                Some(name) => Some(self.hook(name)?),
                None => None,
            };
            let d = drivers.get(i);
            let d_id = d.map(|d| self.drivers.id(d)).transpose()?;
            hook.push(h.map(|h| h.id));
            driver.push(d_id);
            comm.push(comms.get(i).map(|c| self.comms.id(c)).transpose()?);
            let k = vma_kind(self.bits, flags.get(i), file.get(i).is_some(), d.is_some());
            kind.push(k.map(|k| self.vma_kinds[k]));
            ftype.push(fault_type(ff.get(i), ec.get(i)).map(|t| self.fault_types[t]));
            is_fault.push(h.is_some_and(|h| h.fault));
            vm_ret.push(h.is_some_and(|h| h.vm_fault_ret));
            let (r, o) = (req.get(i), out.get(i));
            if r.is_some() || o.is_some() {
                let key = (
                    h.map(|h| h.id),
                    d_id,
                    r.map(|r| self.cache_modes.id(r)).transpose()?,
                    o.map(|o| self.cache_modes.id(o)).transpose()?,
                );
                match pat_counts.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, n)) => *n += 1,
                    None => pat_counts.push((key, 1)),
                }
            }
        }

        let numeric = |name: &str, dtype: DataType| -> PolarsResult<Column> {
            Ok(match batch.get(name) {
                Some(a) => Series::from_arrow(name.into(), a.to_boxed())?
                    .cast(&dtype)?
                    .into_column(),
                None => Column::full_null(name.into(), n, &dtype),
            })
        };
        let plain = DataFrame::new_infer_height(vec![
            numeric("ts_ns", DataType::UInt64)?,
            numeric("latency_ns", DataType::UInt64)?,
            numeric("pid", DataType::UInt32)?,
            numeric("ret", DataType::Int64)?,
            numeric("fault_flags", DataType::UInt32)?,
        ])?;
        let [ts, lat, pid, ret, ffl] = plain.into_columns().try_into().expect("five columns");
        let events = DataFrame::new_infer_height(vec![
            ts,
            lat,
            hook.finish("hook"),
            driver.finish("driver"),
            kind.finish("vma_kind"),
            ftype.finish("fault_type"),
            comm.finish("comm"),
            pid,
            ret,
            ffl,
            BooleanChunked::from_slice("is_fault".into(), &is_fault).into_column(),
            BooleanChunked::from_slice("vm_fault_ret".into(), &vm_ret).into_column(),
        ])?;
        let mut pat_cols: [CatColumn; 4] = Default::default();
        let mut pat_n = Vec::with_capacity(pat_counts.len());
        for ((h, d, r, o), n) in pat_counts {
            for (c, id) in pat_cols.iter_mut().zip([h, d, r, o]) {
                c.push(id);
            }
            pat_n.push(n);
        }
        let [ph, pd, pr, po] = pat_cols;
        let pat = DataFrame::new_infer_height(vec![
            ph.finish("hook"),
            pd.finish("driver"),
            pr.finish("cache_req"),
            po.finish("cache_out"),
            UInt64Chunked::from_vec("count".into(), pat_n).into_column(),
        ])?;
        Ok(Parts { events, pat })
    }
}

/// A decoded batch with its columns found by name.
pub(crate) struct Batch<'a> {
    pub height: usize,
    fields: &'a [ArrowField],
    arrays: &'a [Box<dyn Array>],
}

impl<'a> Batch<'a> {
    /// `fields` name the arrays, in order; each has `height` rows.
    pub fn new(fields: &'a [ArrowField], arrays: &'a [Box<dyn Array>], height: usize) -> Self {
        Batch {
            height,
            fields,
            arrays,
        }
    }

    /// A batch without rows or columns: every column reads as null.
    pub fn empty() -> Batch<'static> {
        Batch {
            height: 0,
            fields: &[],
            arrays: &[],
        }
    }

    fn get(&self, name: &str) -> Option<&'a dyn Array> {
        self.fields
            .iter()
            .position(|f| f.name == name)
            .map(|i| &*self.arrays[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pfnmap_wins_over_io() {
        let b = VmBits::X86_DEFAULT;
        let kind = |flags, file, driver| vma_kind(b, flags, file, driver).map(|k| VMA_KINDS[k]);
        assert_eq!(kind(Some(b.pfnmap | b.io), false, true), Some("pfnmap"));
        assert_eq!(kind(Some(b.mixedmap), false, true), Some("mixedmap"));
        assert_eq!(kind(Some(b.io), false, true), Some("io"));
        assert_eq!(kind(Some(0), true, true), Some("file"));
        assert_eq!(kind(Some(0), false, false), Some("anonymous"));
        assert_eq!(kind(Some(0), false, true), Some("special"));
        assert_eq!(kind(None, true, true), None);
    }

    #[test]
    fn fault_type_from_flags_or_error_code() {
        let t = |ff, ec| fault_type(ff, ec).map(|t| FAULT_TYPES[t]);
        let user_write = fault_flag::USER | fault_flag::WRITE;
        assert_eq!(t(Some(user_write), None), Some("user write"));
        assert_eq!(
            t(Some(user_write | fault_flag::INSTRUCTION), Some(0)),
            Some("user exec")
        );
        assert_eq!(t(Some(fault_flag::UNSHARE), None), Some("kernel unshare"));
        assert_eq!(t(Some(0), None), Some("kernel read"));
        assert_eq!(
            t(None, Some(x86_pf::USER | x86_pf::WRITE)),
            Some("user write")
        );
        assert_eq!(t(None, Some(x86_pf::USER)), Some("user read"));
        assert_eq!(t(None, Some(x86_pf::INSTR)), Some("kernel exec"));
        assert_eq!(t(None, None), None);
    }
}
