//! The hook table against the kernel facts table and itself.

use super::*;
use crate::kernel::Series;

#[test]
fn the_table_is_indexed_by_hook() {
    assert_eq!(HOOKS.len(), Hook::COUNT);
    for (i, d) in HOOKS.iter().enumerate() {
        assert_eq!(d.hook as usize, i, "{}", d.name);
        assert_eq!(Hook::from_u16(i as u16), Some(d.hook));
        assert_eq!(Hook::parse(d.name), Some(d.hook));
    }
    assert_eq!(Hook::from_u16(Hook::COUNT as u16), None);
}

#[test]
fn tracepoints_follow_functions_and_are_named_group_event() {
    for d in &HOOKS {
        assert_eq!(
            d.hook.is_function(),
            d.hook < Hook::FIRST_TRACEPOINT,
            "{}",
            d.name
        );
        if let Kind::Tracepoint {
            group,
            event,
            rungs,
            fields,
        } = d.kind
        {
            assert_eq!(d.name.split_once(':'), Some((group, event)));
            assert!(rungs.iter().all(|m| m.is_tracepoint()), "{}", d.name);
            assert!(fields.len() <= crate::MAX_ARGS, "{}", d.name);
        }
        for fb in d.fallback {
            assert!(!fb.is_function(), "{} falls back to a function", d.name);
        }
    }
}

/// The hook table's `kernels` column and the per-kernel facts agree on the 6.16 rename.
#[test]
fn pat_hooks_are_renamed_exactly_where_the_kernel_table_says() {
    for s in Series::ALL {
        let (major, minor) = s.version();
        let old = s.features().track_pfn_hooks;
        for h in Hook::all() {
            if h.is_track_pfn_family() {
                assert_eq!(h.def().kernels.includes(major, minor), old, "{h} on {s}");
            }
            if h.is_pfnmap_family() {
                assert_eq!(h.def().kernels.includes(major, minor), !old, "{h} on {s}");
            }
        }
    }
}

#[test]
fn lookups_by_name() {
    assert_eq!(Hook::parse("handle_mm_fault"), Some(Hook::HandleMmFault));
    assert_eq!(Hook::parse("page_fault_user"), Some(Hook::PageFaultUser));
    assert_eq!(
        Hook::parse("exceptions:page_fault_user"),
        Some(Hook::PageFaultUser)
    );
    assert_eq!(Hook::parse("handle_mm_faults"), None);
    assert_eq!(Hook::parse("pfnscope:counters"), None);
}

#[test]
fn function_args_have_unique_roles() {
    for d in &HOOKS {
        if let Kind::Function { args, .. } = d.kind {
            for (i, x) in args.iter().enumerate() {
                for y in &args[i + 1..] {
                    assert_ne!(x.role, y.role, "{}", d.name);
                }
            }
        }
    }
}

#[test]
fn classes() {
    assert_eq!(Hook::VmfInsertPfnPmd.insert_pages(), Some(512));
    assert!(Hook::VmfInsertMixedMkwrite.is_mixed_insert());
    assert!(!Hook::RemapPfnRange.is_insert());
    assert!(Hook::PageFaultKernel.is_fault() && !Hook::VmNormalPage.is_fault());
    assert_eq!(Hook::VmfInsertPfn.ret(), Some(Ret::VmFault));
    assert_eq!(Hook::FilemapDelete.ret(), None);
}
