//! Ring-buffer events to trace records: argument slots get their meaning from the resolved hook
//! table, and kernel pointers become per-trace ids or symbol names (a trace must be safe to share:
//! no KASLR leak).

use std::collections::HashMap;

use pfnscope_abi::{Event, Mode, flags, hook};
use pfnscope_trace::{Interner, Record, Sym};

use crate::{
    hooks::{Ret, Role},
    plan::Resolved,
    system::Kallsyms,
};

/// pfn_t keeps flags in its top bits (PFN_DEV, PFN_MAP, ...); 6.18's plain pfns have none.
const PFN_MASK: u64 = (1 << 52) - 1;
/// x86-64 PTE physical address bits 12..51.
const PTE_PFN_MASK: u64 = 0x000f_ffff_ffff_f000;
pub const PAGE_SHIFT: u32 = 12;

/// Linux's PAT MSR layout since 4.2 (arch/x86/mm/pat/memtype.c `pat_bp_init`), by
/// PWT | PCD << 1 | PAT << 2.
pub const LINUX_PAT_TABLE: [&str; 8] = ["WB", "WC", "UC-", "UC", "WB", "WP", "UC-", "WT"];

pub fn cache_of_prot(prot: u64) -> &'static str {
    let idx = ((prot >> 3) & 1) | (((prot >> 4) & 1) << 1) | (((prot >> 7) & 1) << 2);
    LINUX_PAT_TABLE[idx as usize]
}

/// Small dense ids for kernel pointers, stable within one trace.
#[derive(Default)]
struct Ids(HashMap<u64, u32>);

impl Ids {
    fn get(&mut self, ptr: u64) -> Option<u32> {
        if ptr == 0 {
            return None;
        }
        let next = self.0.len() as u32 + 1;
        Some(*self.0.entry(ptr).or_insert(next))
    }
}

pub struct Decoder {
    hooks: Vec<Option<Resolved>>,
    kallsyms: Kallsyms,
    vmas: Ids,
    files: Ids,
    mms: Ids,
    /// vm_ops pointer to its name, memoised (the lookup is a binary search, the hit rate ~100%).
    drivers: HashMap<u64, Sym>,
    unknown_ops: Ids,
    /// Hook, mode, comm and cache names repeat on every event: one allocation each.
    names: Interner,
}

impl Decoder {
    pub fn new(resolved: Vec<Resolved>, kallsyms: Kallsyms) -> Decoder {
        let mut hooks = vec![None; hook::COUNT];
        for r in resolved {
            let id = r.def.id as usize;
            hooks[id] = Some(r);
        }
        Decoder {
            hooks,
            kallsyms,
            vmas: Ids::default(),
            files: Ids::default(),
            mms: Ids::default(),
            drivers: HashMap::new(),
            unknown_ops: Ids::default(),
            names: Interner::default(),
        }
    }

    fn driver(&mut self, ops: u64) -> Option<Sym> {
        if ops == 0 {
            return None;
        }
        if let Some(d) = self.drivers.get(&ops) {
            return Some(*d);
        }
        let name = match self.kallsyms.data_symbol(ops) {
            Some(n) => n.to_string(),
            // Never the address itself: an id keeps distinct tables apart without leaking it.
            None => format!("vm_ops#{}", self.unknown_ops.get(ops).unwrap_or(0)),
        };
        let name = Sym::from(name);
        self.drivers.insert(ops, name);
        Some(name)
    }

    pub fn decode(&mut self, ev: &Event) -> Record {
        let comm_len = ev
            .comm
            .iter()
            .position(|c| *c == 0)
            .unwrap_or(ev.comm.len());
        let mut r = Record {
            id: ev.id,
            parent: ev.parent,
            ts_ns: ev.ts_entry,
            cpu: ev.cpu,
            pid: ev.pid,
            tid: ev.tid,
            comm: self
                .names
                .get(&String::from_utf8_lossy(&ev.comm[..comm_len])),
            hook: self.names.get(hook::name(ev.hook).unwrap_or("?")),
            mode: self
                .names
                .get(Mode::from_u8(ev.mode).map(Mode::name).unwrap_or("?")),
            ..Default::default()
        };
        if ev.flags & flags::HAS_RET != 0 {
            r.latency_ns = Some(ev.ts_exit.saturating_sub(ev.ts_entry));
        }
        if ev.flags & flags::HAS_VMA != 0 {
            let v = &ev.vma;
            r.vma_id = self.vmas.get(v.ptr);
            r.vma_start = Some(v.start);
            r.vma_end = Some(v.end);
            r.vma_pgoff = Some(v.pgoff);
            r.vma_flags = Some(v.flags);
            r.vma_prot = Some(v.page_prot);
            r.vma_cache = Some(self.names.get(cache_of_prot(v.page_prot)));
            r.driver = self.driver(v.vm_ops);
            r.file_id = self.files.get(v.vm_file);
            r.mm_id = self.mms.get(v.mm);
        }
        match ev.hook {
            hook::PAGE_FAULT_USER | hook::PAGE_FAULT_KERNEL => {
                r.address = Some(ev.args[0]);
                r.error_code = Some(ev.args[2] as u32);
            }
            hook::FILEMAP_DELETE => {
                r.pfn = Some(ev.args[0]);
                r.ino = Some(ev.args[1]);
                r.index = Some(ev.args[2]);
                r.dev = Some(ev.args[3]);
            }
            hook::SCHED_PROCESS_FORK => {
                r.child_pid = Some(ev.args[1] as u32);
            }
            id => self.decode_function(id, ev, &mut r),
        }
        r
    }

    fn decode_function(&mut self, id: u16, ev: &Event, r: &mut Record) {
        let Some(Some(res)) = self.hooks.get(id as usize) else {
            return;
        };
        let has_ptr = ev.flags & flags::HAS_PTR != 0;
        let mut phys_start = None;
        for &(slot, role) in &res.slots {
            let v = ev.args[slot as usize];
            match role {
                Role::Vma => {}
                Role::Vmf | Role::Addr => r.address = Some(v),
                Role::AddrEnd => r.size = r.address.map(|a| v.saturating_sub(a)),
                Role::Pfn => r.pfn = Some(v & PFN_MASK),
                Role::PfnT => {
                    r.pfn = Some(v & PFN_MASK);
                    r.pfn_flags = Some(v & !PFN_MASK);
                }
                Role::Prot => {
                    r.prot = Some(v);
                    r.cache_req = Some(self.names.get(cache_of_prot(v)));
                }
                Role::ProtPtr => {
                    if has_ptr {
                        r.prot = Some(ev.ptr_entry);
                        r.cache_req = Some(self.names.get(cache_of_prot(ev.ptr_entry)));
                        if ev.flags & flags::HAS_RET != 0 {
                            r.prot_out = Some(ev.ptr_exit);
                            r.cache_out = Some(self.names.get(cache_of_prot(ev.ptr_exit)));
                        }
                    }
                }
                Role::Size => r.size = Some(v),
                Role::FaultFlags => r.fault_flags = Some(v as u32),
                Role::Pte => {
                    r.pte = Some(v);
                    r.pfn = Some((v & PTE_PFN_MASK) >> PAGE_SHIFT);
                }
                Role::Write => r.write = Some(v & 0xff != 0),
                Role::PhysStart => {
                    phys_start = Some(v);
                    r.pfn = Some(v >> PAGE_SHIFT);
                }
                Role::PhysEnd => r.size = phys_start.map(|s| v.saturating_sub(s)),
                Role::CacheReq => {
                    r.cache_req = Some(self.names.get(pfnscope_trace::cache_mode_name(v as u32)))
                }
                Role::CacheOutPtr => {
                    if has_ptr && ev.flags & flags::HAS_RET != 0 {
                        r.cache_out = Some(
                            self.names
                                .get(pfnscope_trace::cache_mode_name(ev.ptr_exit as u32)),
                        );
                    }
                }
            }
        }
        // vmf_insert_pfn / vmf_insert_mixed[_mkwrite] use the vma's own protection.
        if matches!(
            id,
            hook::VMF_INSERT_PFN | hook::VMF_INSERT_MIXED | hook::VMF_INSERT_MIXED_MKWRITE
        ) && r.prot.is_none()
        {
            r.prot = r.vma_prot;
            r.cache_req = r.vma_cache;
        }
        if ev.flags & flags::HAS_RET != 0 {
            match res.ret {
                Some(Ret::VmFault) => r.ret = Some(ev.ret as u32 as i64),
                Some(Ret::Errno) => r.ret = Some(ev.ret as u32 as i32 as i64),
                Some(Ret::Page) => r.page = Some(ev.ret != 0),
                Some(Ret::Void) | None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use pfnscope_abi::VmaSnapshot;

    use super::*;
    use crate::hooks::def;

    fn resolved(id: u16, slots: &[(u8, Role)], ret: Ret) -> Resolved {
        Resolved {
            def: def(id),
            symbol: def(id).name().into(),
            slots: slots.to_vec(),
            nargs: slots.len() as u8,
            ret: Some(ret),
        }
    }

    fn event(hook: u16, args: [u64; 6]) -> Event {
        Event {
            ts_entry: 1000,
            ts_exit: 1750,
            id: 7,
            parent: 3,
            args,
            hook,
            mode: Mode::Fentry as u8,
            flags: flags::HAS_RET | flags::HAS_VMA,
            comm: *b"bochs-test\0\0\0\0\0\0",
            vma: VmaSnapshot {
                ptr: 0xffff_8880_1234_5000,
                start: 0x7f00_0000_0000,
                end: 0x7f00_0030_0000,
                flags: 0x0c04_40fb,
                page_prot: 0x8000_0000_0000_0037,
                vm_ops: 0xffff_ffff_c000_1000,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn decoder(r: Vec<Resolved>) -> Decoder {
        Decoder::new(
            r,
            Kallsyms::parse("ffffffffc0001000 d drm_gem_ttm_vm_ops\t[drm_ttm_helper]\n"),
        )
    }

    #[test]
    fn insert_pfn_prot_decodes_wc_request_and_masks_pfn_t_flags() {
        let mut d = decoder(vec![resolved(
            hook::VMF_INSERT_PFN_PROT,
            &[
                (0, Role::Vma),
                (1, Role::Addr),
                (2, Role::Pfn),
                (3, Role::Prot),
            ],
            Ret::VmFault,
        )]);
        // PFN_DEV | PFN_MAP in the top bits; prot 0x2f = PRESENT|RW|USER|PWT|ACCESSED: WC.
        let mut ev = event(
            hook::VMF_INSERT_PFN_PROT,
            [0, 0x7f00_0000_1000, (3 << 60) | 0xfd001, 0x2f, 0, 0],
        );
        ev.ret = 0xffff_ffff_0000_0100; // garbage above vm_fault_t's 32 bits
        let r = d.decode(&ev);
        assert_eq!(r.hook, "vmf_insert_pfn_prot");
        assert_eq!(r.mode, "fentry");
        assert_eq!(r.comm, "bochs-test");
        assert_eq!(r.latency_ns, Some(750));
        assert_eq!(r.address, Some(0x7f00_0000_1000));
        assert_eq!(r.pfn, Some(0xfd001));
        assert_eq!(r.cache_req.as_deref(), Some("WC"));
        assert_eq!(r.ret, Some(0x100)); // VM_FAULT_NOPAGE
        assert_eq!(r.vma_cache.as_deref(), Some("UC-")); // 0x37: PWT|PCD
        assert_eq!(
            r.driver.as_deref(),
            Some("drm_gem_ttm_vm_ops [drm_ttm_helper]")
        );
        assert_eq!(r.vma_id, Some(1));
    }

    #[test]
    fn a_pfn_t_keeps_its_flags() {
        let mut d = decoder(vec![resolved(
            hook::VMF_INSERT_MIXED,
            &[(0, Role::Vma), (1, Role::Addr), (2, Role::PfnT)],
            Ret::VmFault,
        )]);
        // PFN_DEV | PFN_MAP: a devmap pfn (device-dax).
        let ev = event(
            hook::VMF_INSERT_MIXED,
            [0, 0x7f00_0000_1000, (3 << 60) | 0x34203, 0, 0, 0],
        );
        let r = d.decode(&ev);
        assert_eq!(r.pfn, Some(0x34203));
        assert_eq!(r.pfn_flags, Some(3 << 60));
    }

    #[test]
    fn pointers_become_ids_never_addresses() {
        let mut d = decoder(vec![resolved(
            hook::HANDLE_MM_FAULT,
            &[(0, Role::Vma), (1, Role::Addr), (2, Role::FaultFlags)],
            Ret::VmFault,
        )]);
        let mut ev = event(
            hook::HANDLE_MM_FAULT,
            [0xffff_8880_1234_5000, 0x7f00_0000_2000, 0x1255, 0, 0, 0],
        );
        ev.vma.vm_ops = 0xffff_ffff_c000_2000; // not in kallsyms
        ev.vma.vm_file = 0xffff_8880_aaaa_0000;
        let r = d.decode(&ev);
        assert_eq!(r.driver.as_deref(), Some("vm_ops#1"));
        assert_eq!(r.file_id, Some(1));
        assert_eq!(r.fault_flags, Some(0x1255));
        let text = format!("{r:?}");
        assert!(
            !text.contains(&format!("{}", 0xffff_8880_1234_5000u64)),
            "{text}"
        );
        let mut ev2 = ev;
        ev2.vma.ptr = 0xffff_8880_9999_0000;
        assert_eq!(d.decode(&ev2).vma_id, Some(2));
        assert_eq!(d.decode(&ev).vma_id, Some(1));
    }

    #[test]
    fn pat_pointer_in_and_out() {
        let mut d = decoder(vec![resolved(
            hook::TRACK_PFN_INSERT,
            &[(0, Role::Vma), (1, Role::ProtPtr), (2, Role::Pfn)],
            Ret::Void,
        )]);
        let mut ev = event(
            hook::TRACK_PFN_INSERT,
            [0, 0xffff_c900_0000_0000, 0xfd000, 0, 0, 0],
        );
        ev.flags |= flags::HAS_PTR;
        ev.ptr_entry = 0x8000_0000_0000_002f; // WC requested
        ev.ptr_exit = 0x8000_0000_0000_0037; // UC- granted
        let r = d.decode(&ev);
        assert_eq!(
            (r.cache_req.as_deref(), r.cache_out.as_deref()),
            (Some("WC"), Some("UC-"))
        );
        assert_eq!(r.ret, None);
        assert_eq!(r.pfn, Some(0xfd000));
    }

    #[test]
    fn vm_normal_page_and_errno_and_memtype() {
        let mut d = decoder(vec![
            resolved(
                hook::VM_NORMAL_PAGE,
                &[(0, Role::Vma), (1, Role::Addr), (2, Role::Pte)],
                Ret::Page,
            ),
            resolved(
                hook::REMAP_PFN_RANGE,
                &[
                    (0, Role::Vma),
                    (1, Role::Addr),
                    (2, Role::Pfn),
                    (3, Role::Size),
                    (4, Role::Prot),
                ],
                Ret::Errno,
            ),
            resolved(
                hook::MEMTYPE_RESERVE,
                &[
                    (0, Role::PhysStart),
                    (1, Role::PhysEnd),
                    (2, Role::CacheReq),
                    (3, Role::CacheOutPtr),
                ],
                Ret::Errno,
            ),
        ]);
        let mut ev = event(
            hook::VM_NORMAL_PAGE,
            [0, 0x7f00_0000_0000, 0x8000_0000_000a_0237, 0, 0, 0],
        );
        ev.ret = 0;
        let r = d.decode(&ev);
        assert_eq!(
            (r.pfn, r.page, r.pte),
            (Some(0xa0), Some(false), Some(0x8000_0000_000a_0237))
        );

        let mut ev = event(
            hook::REMAP_PFN_RANGE,
            [0, 0x7f00_0000_0000, 0xa0, 0x10000, 0x8000_0000_0000_0027, 0],
        );
        ev.ret = (-22i64) as u64 & 0xffff_ffff;
        let r = d.decode(&ev);
        assert_eq!(
            (r.ret, r.size, r.cache_req.as_deref()),
            (Some(-22), Some(0x10000), Some("WB"))
        );

        let mut ev = event(
            hook::MEMTYPE_RESERVE,
            [0xa0000, 0xb0000, 1, 0xffff_c900_0000_0000, 0, 0],
        );
        ev.flags = flags::HAS_RET | flags::HAS_PTR;
        ev.ptr_exit = 0xdead_beef_0000_0002; // enum is 32 bits: upper half is whatever followed it
        let r = d.decode(&ev);
        assert_eq!((r.pfn, r.size), (Some(0xa0), Some(0x10000)));
        assert_eq!(
            (r.cache_req.as_deref(), r.cache_out.as_deref()),
            (Some("WC"), Some("UC-"))
        );
        assert_eq!(r.vma_id, None);
    }

    #[test]
    fn tracepoint_fault() {
        let mut d = decoder(vec![]);
        let mut ev = event(hook::PAGE_FAULT_USER, [0x5555_0000_1000, 0, 0x6, 0, 0, 0]);
        ev.flags = 0;
        ev.mode = Mode::TpBtf as u8;
        let r = d.decode(&ev);
        assert_eq!(
            (r.address, r.error_code, r.latency_ns),
            (Some(0x5555_0000_1000), Some(6), None)
        );
        assert_eq!(
            (r.hook.as_str(), r.mode.as_str()),
            ("exceptions:page_fault_user", "tp_btf")
        );
    }

    #[test]
    fn pat_table_indices() {
        assert_eq!(cache_of_prot(0x27), "WB");
        assert_eq!(cache_of_prot(0x2f), "WC"); // PWT
        assert_eq!(cache_of_prot(0x37), "UC-"); // PCD
        assert_eq!(cache_of_prot(0x3f), "UC"); // PWT|PCD
        assert_eq!(cache_of_prot(0xa7), "WB"); // PAT bit alone: index 4
    }
}
