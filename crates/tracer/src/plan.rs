//! Resolving the hook table against the running kernel: which symbol serves each hook, which
//! argument slot holds what (from BTF parameter names), and the struct offsets the programs need.

use std::{collections::BTreeMap, path::Path};

use pfnscope_abi::{
    HookSpec, NO_SLOT, Offsets,
    hook::{HOOKS, HookDef, Kind, Ret, Role},
};

use crate::{
    btf::KernelBtf,
    system::{Kallsyms, tracepoint_fields},
};

/// A hook as this kernel has it.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub def: &'static HookDef,
    pub symbol: String,
    /// Argument slot of each role the hook table names.
    pub slots: Vec<(u8, Role)>,
    pub nargs: u8,
    pub ret: Option<Ret>,
}

impl Resolved {
    pub fn slot(&self, role: Role) -> Option<u8> {
        self.slots.iter().find(|(_, r)| *r == role).map(|(s, _)| *s)
    }

    pub fn spec(&self) -> HookSpec {
        let s = |r| self.slot(r).unwrap_or(NO_SLOT);
        let ptr = self
            .slot(Role::ProtPtr)
            .or(self.slot(Role::CacheOutPtr))
            .unwrap_or(NO_SLOT);
        HookSpec {
            nargs: self.nargs,
            vma_slot: s(Role::Vma),
            vmf_slot: s(Role::Vmf),
            addr_slot: s(Role::Addr),
            ptr_slot: ptr,
            enabled: 1,
            page_slot: s(Role::Page),
            _pad: [0; 1],
        }
    }
}

/// Finds the hook in this kernel, or says why it is not there.
pub fn resolve(
    def: &'static HookDef,
    btf: &KernelBtf,
    kallsyms: &Kallsyms,
    tracefs: Option<&Path>,
) -> Result<Resolved, String> {
    match def.kind {
        Kind::Function { args, ret } => {
            let name = def.name;
            let Some(sig) = btf.func(name) else {
                return Err(if kallsyms.has_function(name) {
                    format!(
                        "`{name}` is in kallsyms but has no BTF prototype, so its arguments cannot be decoded"
                    )
                } else {
                    format!(
                        "`{name}` is not in this kernel (expected on {})",
                        def.kernels
                    )
                });
            };
            let mut slots = vec![];
            for arg in args {
                let slot = arg
                    .names
                    .iter()
                    .find_map(|n| sig.params.iter().position(|p| p == n));
                match slot {
                    Some(i) if i < pfnscope_abi::MAX_ARGS => {
                        let role = match arg.role {
                            Role::Pfn if sig.param_types.get(i).is_some_and(|t| t == "pfn_t") => {
                                Role::PfnT
                            }
                            r => r,
                        };
                        slots.push((i as u8, role))
                    }
                    Some(i) => {
                        return Err(format!(
                            "`{name}`: parameter `{}` is slot {i}, beyond what the programs record",
                            arg.names[0]
                        ));
                    }
                    None => {
                        return Err(format!(
                            "`{name}` changed signature: no parameter named {} (has: {})",
                            arg.names.join(" or "),
                            sig.params.join(", ")
                        ));
                    }
                }
            }
            let ret = if sig.returns_void { Ret::Void } else { ret };
            Ok(Resolved {
                def,
                symbol: name.to_string(),
                slots,
                nargs: sig.params.len() as u8,
                ret: Some(ret),
            })
        }
        Kind::Tracepoint {
            group,
            event,
            fields,
            ..
        } => {
            let Some(tracefs) = tracefs else {
                return Err("tracefs is not mounted and could not be mounted".into());
            };
            if !tracefs.join("events").join(group).join(event).is_dir() {
                return Err(format!("no tracepoint {group}:{event} in this kernel"));
            }
            Ok(Resolved {
                def,
                symbol: format!("{group}:{event}"),
                slots: (0u8..).zip(fields.iter().copied()).collect(),
                nargs: 0,
                ret: None,
            })
        }
    }
}

pub fn resolve_all(
    btf: &KernelBtf,
    kallsyms: &Kallsyms,
    tracefs: Option<&Path>,
) -> Vec<(&'static HookDef, Result<Resolved, String>)> {
    HOOKS
        .iter()
        .map(|d| (d, resolve(d, btf, kallsyms, tracefs)))
        .collect()
}

/// Offsets for the programs, and the same as names for the trace metadata. `kallsyms` places
/// `vmemmap_base` (page pointers become pfns only where it does).
pub fn offsets(
    btf: &KernelBtf,
    kallsyms: &Kallsyms,
    tracefs: Option<&Path>,
) -> Result<(Offsets, BTreeMap<String, u32>), String> {
    let mut o = Offsets::NONE;
    let mut named = BTreeMap::new();
    let mut field =
        |strukt: &str, candidates: &[&str], slot: &mut u32, required: bool| -> Result<(), String> {
            for c in candidates {
                if let Some(off) = btf.field_offset(strukt, c).map_err(|e| e.to_string())? {
                    *slot = off;
                    named.insert(format!("{strukt}.{c}"), off);
                    return Ok(());
                }
            }
            if required {
                Err(format!(
                    "kernel BTF: struct {strukt} has no field {}",
                    candidates.join(" or ")
                ))
            } else {
                Ok(())
            }
        };
    field("vm_area_struct", &["vm_start"], &mut o.vma_start, true)?;
    field("vm_area_struct", &["vm_end"], &mut o.vma_end, true)?;
    field("vm_area_struct", &["vm_pgoff"], &mut o.vma_pgoff, true)?;
    field(
        "vm_area_struct",
        &["vm_flags", "__vm_flags"],
        &mut o.vma_flags,
        true,
    )?;
    field(
        "vm_area_struct",
        &["vm_page_prot"],
        &mut o.vma_page_prot,
        true,
    )?;
    field("vm_area_struct", &["vm_ops"], &mut o.vma_ops, true)?;
    field("vm_area_struct", &["vm_file"], &mut o.vma_file, false)?;
    field("vm_area_struct", &["vm_mm"], &mut o.vma_mm, false)?;
    field("vm_fault", &["vma"], &mut o.vmf_vma, true)?;
    field("file", &["f_op"], &mut o.file_f_op, false)?;
    for (slot, addr) in o.dummy_vm_ops.iter_mut().zip(kallsyms.dummy_vm_ops()) {
        *slot = addr;
    }
    field("vm_fault", &["address"], &mut o.vmf_address, true)?;
    // Off-CPU episodes: the tasks `sched_switch` and `sched_waking` are handed.
    field("task_struct", &["pid"], &mut o.task_pid, false)?;
    field("task_struct", &["tgid"], &mut o.task_tgid, false)?;
    // struct page is 64 bytes on x86-64; a power of two is what the programs can shift by.
    if let Ok(size) = btf.struct_size("page")
        && size.is_power_of_two()
        && let Some(base) = kallsyms.data_address("vmemmap_base")
    {
        o.page_shift = size.trailing_zeros();
        o.vmemmap_base = base;
        named.insert("page.size".into(), size as u32);
    }

    if let Some(tracefs) = tracefs {
        let mut tp = |group: &str, event: &str, fields: &mut [(&str, &mut u32)]| {
            let Some(found) = tracepoint_fields(tracefs, group, event) else {
                return;
            };
            for (name, slot) in fields.iter_mut() {
                if let Some((_, off)) = found.iter().find(|(n, _)| n == name) {
                    **slot = *off;
                    named.insert(format!("{group}:{event}.{name}"), *off);
                }
            }
        };
        tp(
            "exceptions",
            "page_fault_user",
            &mut [
                ("address", &mut o.tp_fault_address),
                ("ip", &mut o.tp_fault_ip),
                ("error_code", &mut o.tp_fault_error_code),
            ],
        );
        tp(
            "filemap",
            "mm_filemap_delete_from_page_cache",
            &mut [
                ("pfn", &mut o.tp_filemap_pfn),
                ("i_ino", &mut o.tp_filemap_ino),
                ("index", &mut o.tp_filemap_index),
                ("s_dev", &mut o.tp_filemap_dev),
            ],
        );
        tp(
            "sched",
            "sched_process_fork",
            &mut [
                ("parent_pid", &mut o.tp_fork_parent_pid),
                ("child_pid", &mut o.tp_fork_child_pid),
            ],
        );
    }
    Ok((o, named))
}

/// x86 vm_flags bits that decoding and the replay need. Newer kernels describe them as enum
/// constants in BTF (`VMA_*_BIT`); older ones only as macros, for which these long-stable
/// values are used (include/linux/mm.h).
pub fn vm_flag_bits(btf: &KernelBtf) -> BTreeMap<String, u64> {
    const DEFAULTS: &[(&str, u64)] = &[
        ("VM_READ", 0x1),
        ("VM_WRITE", 0x2),
        ("VM_EXEC", 0x4),
        ("VM_SHARED", 0x8),
        ("VM_MAYREAD", 0x10),
        ("VM_MAYWRITE", 0x20),
        ("VM_MAYEXEC", 0x40),
        ("VM_MAYSHARE", 0x80),
        ("VM_PFNMAP", 0x400),
        ("VM_IO", 0x4000),
        ("VM_DONTCOPY", 0x20000),
        ("VM_DONTEXPAND", 0x40000),
        ("VM_PAT", 0x0100_0000),
        ("VM_DONTDUMP", 0x0400_0000),
        ("VM_MIXEDMAP", 0x1000_0000),
        ("VM_HUGEPAGE", 0x2000_0000),
        ("VM_NOHUGEPAGE", 0x4000_0000),
    ];
    let enums = btf.enumerators(|n| n.starts_with("VM") && n.ends_with("_BIT"));
    let mut out = BTreeMap::new();
    for (name, default) in DEFAULTS {
        let stem = &name[3..];
        let from_btf = [format!("VMA_{stem}_BIT"), format!("VM_{stem}_BIT")]
            .iter()
            .find_map(|e| enums.get(e).copied())
            .filter(|b| *b < 64)
            .map(|b| 1u64 << b);
        out.insert(name.to_string(), from_btf.unwrap_or(*default));
    }
    out
}
