//! What the tracer needs from the running kernel's BTF: struct field offsets (Rust eBPF has no
//! CO-RE), function prototypes (argument slots by name) and enum values.

use std::{collections::BTreeMap, path::Path};

use btf_rs::{Btf, BtfType, Type};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "no kernel BTF at {0}: this kernel was built without CONFIG_DEBUG_INFO_BTF; boot a kernel with BTF (Debian's have it)"
    )]
    Missing(String),
    #[error("cannot parse kernel BTF at {path}: {why}")]
    Parse { path: String, why: String },
    #[error("kernel BTF has no `{0}`; this kernel's layout is not supported")]
    NoType(String),
}

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

pub struct KernelBtf {
    btf: Btf,
}

/// A function's parameters in order, as BTF names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncSig {
    pub params: Vec<String>,
    /// Each parameter's type as written (a typedef's name such as `pfn_t`, else the type's own
    /// name; empty for pointers and anonymous types).
    pub param_types: Vec<String>,
    pub returns_void: bool,
}

impl KernelBtf {
    pub fn load(path: &Path) -> Result<KernelBtf, BtfError> {
        if !path.exists() {
            return Err(BtfError::Missing(path.display().to_string()));
        }
        let btf = Btf::from_file(path).map_err(|e| BtfError::Parse {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        Ok(KernelBtf { btf })
    }

    pub fn from_sys() -> Result<KernelBtf, BtfError> {
        Self::load(Path::new(VMLINUX))
    }

    fn name_of(&self, t: &dyn BtfType) -> String {
        self.btf.resolve_name(t).unwrap_or_default()
    }

    fn struct_named(&self, name: &str) -> Result<btf_rs::Struct, BtfError> {
        for t in self.btf.resolve_types_by_name(name).unwrap_or_default() {
            if let Type::Struct(s) = t
                && !s.members.is_empty()
            {
                return Ok(s);
            }
        }
        Err(BtfError::NoType(format!("struct {name}")))
    }

    /// Size in bytes of `struct name`.
    pub fn struct_size(&self, name: &str) -> Result<usize, BtfError> {
        Ok(self.struct_named(name)?.size())
    }

    /// Byte offset of `field` in `struct strukt`, looking through anonymous structs and unions
    /// (`vm_flags` sits in an anonymous union since 6.3, `vm_fault.vma` in an anonymous struct).
    pub fn field_offset(&self, strukt: &str, field: &str) -> Result<Option<u32>, BtfError> {
        let s = self.struct_named(strukt)?;
        Ok(self.find_member(&s, field, 0, 0))
    }

    fn find_member(
        &self,
        s: &btf_rs::Struct,
        field: &str,
        base_bits: u32,
        depth: u32,
    ) -> Option<u32> {
        if depth > 4 {
            return None;
        }
        for m in &s.members {
            let name = self.name_of(m);
            let bits = base_bits + m.bit_offset();
            if name == field {
                return Some(bits / 8);
            }
            if name.is_empty() {
                let mut t = self.btf.resolve_chained_type(m).ok()?;
                // Skip typedef/const/volatile to the aggregate.
                for _ in 0..8 {
                    match &t {
                        Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) => {
                            t = self.btf.resolve_chained_type(t.as_btf_type()?).ok()?;
                        }
                        _ => break,
                    }
                }
                if let Type::Struct(inner) | Type::Union(inner) = t
                    && let Some(off) = self.find_member(&inner, field, bits, depth + 1)
                {
                    return Some(off);
                }
            }
        }
        None
    }

    /// The signature of a kernel function, or None when BTF has no such function.
    pub fn func(&self, name: &str) -> Option<FuncSig> {
        for t in self.btf.resolve_types_by_name(name).ok()? {
            if let Type::Func(f) = t {
                let Ok(Type::FuncProto(proto)) = self.btf.resolve_chained_type(&f) else {
                    continue;
                };
                let params = proto.parameters.iter().map(|p| self.name_of(p)).collect();
                let param_types = proto
                    .parameters
                    .iter()
                    .map(|p| match self.btf.resolve_chained_type(p) {
                        Ok(t) => t.as_btf_type().map(|t| self.name_of(t)).unwrap_or_default(),
                        Err(_) => String::new(),
                    })
                    .collect();
                return Some(FuncSig {
                    params,
                    param_types,
                    returns_void: proto.return_type_id() == 0,
                });
            }
        }
        None
    }

    /// Enumerators of `enum name` (plain or 64-bit), empty when the enum is absent.
    pub fn enum_values(&self, name: &str) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for t in self.btf.resolve_types_by_name(name).unwrap_or_default() {
            match t {
                Type::Enum(e) => {
                    for m in &e.members {
                        out.insert(self.name_of(m), m.val() as u64);
                    }
                }
                Type::Enum64(e) => {
                    for m in &e.members {
                        out.insert(self.name_of(m), m.val());
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// All enumerators (of any enum, anonymous ones included) whose name passes `keep`, in one
    /// pass over the types: the kernel has ~150k of them.
    pub fn enumerators(&self, keep: impl Fn(&str) -> bool) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let mut it = self.btf.type_iter();
        // A parse error mid-way ends the scan: what was read so far is still right.
        while let Ok(Some(t)) = fallible_iterator::FallibleIterator::next(&mut it) {
            match t {
                Type::Enum(e) => {
                    for m in &e.members {
                        let n = self.name_of(m);
                        if keep(&n) {
                            out.insert(n, m.val() as u64);
                        }
                    }
                }
                Type::Enum64(e) => {
                    for m in &e.members {
                        let n = self.name_of(m);
                        if keep(&n) {
                            out.insert(n, m.val());
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
}
