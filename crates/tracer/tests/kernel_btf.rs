//! The hook table and BTF resolution checked against this machine's own kernel: the table's
//! claims about which kernels have which hook are tested, not trusted (as cilium does with its
//! feature table). The test box repeats this on the Debian 6.1, 6.12 and 7.2 kernels.

use std::{io::Write, path::Path};

use pfnscope_abi::{
    Hook,
    hook::{HOOKS, Kind, Role},
};
use tracer::{
    btf::{KernelBtf, VMLINUX},
    plan,
    system::{self, Kallsyms},
};

fn skip(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

fn btf() -> Option<KernelBtf> {
    if !Path::new(VMLINUX).exists() {
        skip("this kernel has no BTF at /sys/kernel/btf/vmlinux");
        return None;
    }
    Some(KernelBtf::from_sys().expect("vmlinux BTF parses"))
}

#[test]
fn struct_offsets_resolve_and_are_plausible() {
    let Some(b) = btf() else { return };
    let (o, named) =
        plan::offsets(&b, &Kallsyms::load(), None).expect("vm_area_struct and vm_fault resolve");
    // vm_start and vm_end open vm_area_struct in every kernel since 2.6 (in 6.x inside an
    // anonymous struct of a union): 0 and 8.
    assert_eq!((o.vma_start, o.vma_end), (0, 8), "{named:?}");
    for (name, off) in [
        ("pgoff", o.vma_pgoff),
        ("flags", o.vma_flags),
        ("prot", o.vma_page_prot),
        ("ops", o.vma_ops),
    ] {
        assert!(
            off > 8 && off < 256 && off % 8 == 0,
            "vm_area_struct {name} at {off}"
        );
    }
    assert_ne!(o.vmf_vma, o.vmf_address);
    assert!(o.vmf_vma < 64 && o.vmf_address < 64, "{named:?}");
    // struct page is 64 bytes on every x86-64 kernel built without debug options that grow it;
    // page pointers are turned into pfns only where kallsyms places vmemmap_base.
    if o.vmemmap_base != 0 {
        assert_eq!(o.page_shift, 6, "{named:?}");
    }
}

#[test]
fn table_matches_this_kernel() {
    let Some(b) = btf() else { return };
    let rel = system::uname().release;
    let (major, minor) = pfnscope_abi::kernel::parse_release(&rel).expect("release has a version");
    let tracefs = system::tracefs();
    let k = Kallsyms::load();
    for h in HOOKS.iter().filter(|h| h.hook.is_function()) {
        let res = plan::resolve(h, &b, &k, tracefs.as_deref());
        if h.kernels.includes(major, minor) {
            let r = res.unwrap_or_else(|e| panic!("{} should exist on {rel}: {e}", h.name));
            // Every role the table names found a slot.
            if let Kind::Function { args, .. } = h.kind {
                assert_eq!(r.slots.len(), args.len(), "{}", h.name);
            }
        } else {
            assert!(
                res.is_err(),
                "{} should not exist on {rel} (table says {})",
                h.name,
                h.kernels
            );
        }
    }
}

#[test]
fn vm_normal_page_pte_is_the_third_slot() {
    // fault-path.md: pte_t by value is fentry slot 2; the decoder relies on BTF saying so.
    let Some(b) = btf() else { return };
    let h = Hook::VmNormalPage.def();
    let r = plan::resolve(h, &b, &Kallsyms::default(), None).unwrap();
    assert_eq!(r.slot(Role::Pte), Some(2));
    assert_eq!(r.slot(Role::Vma), Some(0));
}

#[test]
fn vm_flag_bits_are_the_known_ones() {
    let Some(b) = btf() else { return };
    let bits = plan::vm_flag_bits(&b);
    assert_eq!(bits["VM_PFNMAP"], 0x400);
    assert_eq!(bits["VM_MIXEDMAP"], 0x1000_0000);
    assert_eq!(bits["VM_IO"], 0x4000);
    assert_eq!(bits["VM_SHARED"], 0x8);
}

#[test]
fn pfn_t_flags_are_kept_only_where_btf_types_the_argument_pfn_t() {
    let Some(b) = btf() else { return };
    let k = Kallsyms::load();
    for h in HOOKS.iter().filter(|h| h.hook.is_function()) {
        let Ok(r) = plan::resolve(h, &b, &k, None) else {
            continue;
        };
        let sig = b.func(h.name).expect("resolved hooks have BTF");
        for &(slot, role) in &r.slots {
            let ty = &sig.param_types[slot as usize];
            match role {
                Role::PfnT => assert_eq!(ty, "pfn_t", "{}", h.name),
                Role::Pfn => assert_ne!(ty, "pfn_t", "{}", h.name),
                _ => {}
            }
        }
    }
}
