//! Ring-buffer events to trace records: argument slots get their meaning from the resolved hook
//! table, and kernel pointers become per-trace ids or symbol names (a trace must be safe to share:
//! no KASLR leak).

use std::collections::HashMap;

use pfnscope_abi::{
    COMM_LEN, Cache, Event, Hook, Mode, PatTable,
    bits::{PAGE_SHIFT, PAGE_SIZE, pfn_t, pte},
    flags,
    hook::{Ret, Role},
};
use pfnscope_trace::{Interner, Record, Sym};

use crate::{
    plan::Resolved,
    stacks::{self, Stacks},
    system::Kallsyms,
};

/// The PAT table protections are decoded with: Linux's own (see README, Limits).
pub const PAT_TABLE: PatTable = PatTable::LINUX;

fn cache_of_prot(prot: u64) -> &'static str {
    PAT_TABLE.of_prot(prot).name()
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
    /// The stack map, where stacks are recorded.
    stacks: Option<Stacks>,
}

impl Decoder {
    pub fn new(resolved: Vec<Resolved>, kallsyms: Kallsyms) -> Decoder {
        let mut hooks = vec![None; Hook::COUNT];
        for r in resolved {
            let id = r.def.hook as usize;
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
            stacks: None,
        }
    }

    /// Names the frames of the stacks events record (`Event::kstack`, `ustack`).
    pub fn set_stacks(&mut self, stacks: Stacks) {
        self.stacks = Some(stacks);
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

    /// The event as a trace row; None for an off-CPU episode that turned out not to be inside
    /// a fault ([`pfnscope_abi::flags::IN_CALL_UNSURE`]).
    pub fn decode(&mut self, ev: &Event) -> Option<Record> {
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
            hook: self
                .names
                .get(Hook::from_u16(ev.hook).map(Hook::name).unwrap_or("?")),
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
        if let Some(h) = Hook::from_u16(ev.hook) {
            self.decode_args(h, ev, &mut r);
        }
        if let Some(st) = self.stacks.as_mut() {
            st.saw(ev.pid, r.comm);
            r.kstack = st.kernel(ev.kstack);
            r.ustack = st.user(ev.pid, ev.ustack);
        }
        if ev.hook == Hook::SchedSwitch as u16 {
            self.episode(ev, &mut r)?;
        } else if ev.offcpu_ns != 0 || self.offcpu_traced(ev) {
            r.offcpu_ns = Some(ev.offcpu_ns);
        }
        Some(r)
    }

    /// Whether the call's off-CPU time was measured: it returned while `sched_switch` was
    /// attached.
    fn offcpu_traced(&self, ev: &Event) -> bool {
        ev.flags & flags::HAS_RET != 0 && self.hooks[Hook::SchedSwitch as usize].is_some()
    }

    /// An off-CPU episode's own columns. None: not inside a fault after all.
    fn episode(&mut self, ev: &Event, r: &mut Record) -> Option<()> {
        use pfnscope_abi::episode as e;
        r.offcpu_ns = Some(ev.offcpu_ns);
        if ev.flags & flags::IN_CALL_UNSURE != 0 && !r.kstack.is_some_and(|k| stacks::in_fault(&k))
        {
            return None;
        }
        let preempted = ev.args[e::PREEMPTED] != 0;
        r.preempted = Some(preempted);
        r.block_site = if preempted {
            Some(self.names.get("(preempted)"))
        } else {
            r.kstack
                .and_then(|k| stacks::blocking_site(k.as_str()).map(|s| self.names.get(s)))
        };
        if ev.args[e::WAKER_TID] != 0 {
            r.waker_tid = Some(ev.args[e::WAKER_TID] as u32);
            r.waker_pid = Some(ev.args[e::WAKER_PID] as u32);
            let mut comm = [0u8; COMM_LEN];
            comm[..8].copy_from_slice(&ev.args[e::WAKER_COMM].to_le_bytes());
            comm[8..].copy_from_slice(&ev.args[e::WAKER_COMM + 1].to_le_bytes());
            let len = comm.iter().position(|c| *c == 0).unwrap_or(COMM_LEN);
            r.waker_comm = Some(self.names.get(&String::from_utf8_lossy(&comm[..len])));
        }
        Some(())
    }

    /// Argument slots (a function's parameters, a tracepoint's fields) by their role.
    fn decode_args(&mut self, hook: Hook, ev: &Event, r: &mut Record) {
        let Some(Some(res)) = self.hooks.get(hook as usize) else {
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
                Role::Pfn => r.pfn = Some(v & pfn_t::PFN_MASK),
                Role::PfnT => {
                    r.pfn = Some(v & pfn_t::PFN_MASK);
                    r.pfn_flags = Some(v & !pfn_t::PFN_MASK);
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
                // The programs turned the page pointer into its pfn; all ones: unknown.
                Role::Page => r.pfn = (v != u64::MAX).then_some(v),
                Role::Pages => r.size = Some(v.saturating_mul(PAGE_SIZE)),
                Role::Pte => {
                    r.pte = Some(v);
                    r.pfn = Some(pte::pfn(v));
                }
                Role::Write => r.write = Some(v & 0xff != 0),
                Role::PhysStart => {
                    phys_start = Some(v);
                    r.pfn = Some(v >> PAGE_SHIFT);
                }
                Role::PhysEnd => r.size = phys_start.map(|s| v.saturating_sub(s)),
                Role::CacheReq => r.cache_req = Some(pcm_name(&mut self.names, v)),
                Role::CacheOutPtr => {
                    if has_ptr && ev.flags & flags::HAS_RET != 0 {
                        // The enum is 32 bits: the upper half is whatever followed it.
                        r.cache_out = Some(pcm_name(&mut self.names, ev.ptr_exit));
                    }
                }
                Role::ErrorCode => r.error_code = Some(v as u32),
                Role::Ino => r.ino = Some(v),
                Role::Index => r.index = Some(v),
                Role::Dev => r.dev = Some(v),
                Role::ChildPid => r.child_pid = Some(v as u32),
                Role::Ip | Role::ParentPid | Role::Episode => {}
            }
        }
        // A PTE-level insert without a protection argument (vmf_insert_pfn,
        // vmf_insert_mixed[_mkwrite]) maps with the vma's own: `vma->vm_page_prot`.
        if hook.insert_pages() == Some(1) && res.slot(Role::Prot).is_none() && r.prot.is_none() {
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

/// An `enum page_cache_mode` value's name ("?" for one the kernel does not define).
fn pcm_name(names: &mut Interner, v: u64) -> Sym {
    names.get(Cache::from_pcm(v as u32).map(Cache::name).unwrap_or("?"))
}

#[cfg(test)]
mod tests {
    use pfnscope_abi::VmaSnapshot;

    use super::*;

    fn resolved(hook: Hook, slots: &[(u8, Role)], ret: Ret) -> Resolved {
        Resolved {
            def: hook.def(),
            symbol: hook.name().into(),
            slots: slots.to_vec(),
            nargs: slots.len() as u8,
            ret: hook.is_function().then_some(ret),
        }
    }

    fn event(hook: Hook, args: [u64; 6]) -> Event {
        Event {
            ts_entry: 1000,
            ts_exit: 1750,
            id: 7,
            parent: 3,
            args,
            hook: hook as u16,
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
            Hook::VmfInsertPfnProt,
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
            Hook::VmfInsertPfnProt,
            [0, 0x7f00_0000_1000, (3 << 60) | 0xfd001, 0x2f, 0, 0],
        );
        ev.ret = 0xffff_ffff_0000_0100; // garbage above vm_fault_t's 32 bits
        let r = d.decode(&ev).unwrap();
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
            Hook::VmfInsertMixed,
            &[(0, Role::Vma), (1, Role::Addr), (2, Role::PfnT)],
            Ret::VmFault,
        )]);
        // PFN_DEV | PFN_MAP: a devmap pfn (device-dax).
        let ev = event(
            Hook::VmfInsertMixed,
            [0, 0x7f00_0000_1000, (3 << 60) | 0x34203, 0, 0, 0],
        );
        let r = d.decode(&ev).unwrap();
        assert_eq!(r.pfn, Some(0x34203));
        assert_eq!(r.pfn_flags, Some(3 << 60));
    }

    #[test]
    fn pointers_become_ids_never_addresses() {
        let mut d = decoder(vec![resolved(
            Hook::HandleMmFault,
            &[(0, Role::Vma), (1, Role::Addr), (2, Role::FaultFlags)],
            Ret::VmFault,
        )]);
        let mut ev = event(
            Hook::HandleMmFault,
            [0xffff_8880_1234_5000, 0x7f00_0000_2000, 0x1255, 0, 0, 0],
        );
        ev.vma.vm_ops = 0xffff_ffff_c000_2000; // not in kallsyms
        ev.vma.vm_file = 0xffff_8880_aaaa_0000;
        let r = d.decode(&ev).unwrap();
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
        assert_eq!(d.decode(&ev2).unwrap().vma_id, Some(2));
        assert_eq!(d.decode(&ev).unwrap().vma_id, Some(1));
    }

    #[test]
    fn pat_pointer_in_and_out() {
        let mut d = decoder(vec![resolved(
            Hook::TrackPfnInsert,
            &[(0, Role::Vma), (1, Role::ProtPtr), (2, Role::Pfn)],
            Ret::Void,
        )]);
        let mut ev = event(
            Hook::TrackPfnInsert,
            [0, 0xffff_c900_0000_0000, 0xfd000, 0, 0, 0],
        );
        ev.flags |= flags::HAS_PTR;
        ev.ptr_entry = 0x8000_0000_0000_002f; // WC requested
        ev.ptr_exit = 0x8000_0000_0000_0037; // UC- granted
        let r = d.decode(&ev).unwrap();
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
                Hook::VmNormalPage,
                &[(0, Role::Vma), (1, Role::Addr), (2, Role::Pte)],
                Ret::Page,
            ),
            resolved(
                Hook::RemapPfnRange,
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
                Hook::MemtypeReserve,
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
            Hook::VmNormalPage,
            [0, 0x7f00_0000_0000, 0x8000_0000_000a_0237, 0, 0, 0],
        );
        ev.ret = 0;
        let r = d.decode(&ev).unwrap();
        assert_eq!(
            (r.pfn, r.page, r.pte),
            (Some(0xa0), Some(false), Some(0x8000_0000_000a_0237))
        );

        let mut ev = event(
            Hook::RemapPfnRange,
            [0, 0x7f00_0000_0000, 0xa0, 0x10000, 0x8000_0000_0000_0027, 0],
        );
        ev.ret = (-22i64) as u64 & 0xffff_ffff;
        let r = d.decode(&ev).unwrap();
        assert_eq!(
            (r.ret, r.size, r.cache_req.as_deref()),
            (Some(-22), Some(0x10000), Some("WB"))
        );

        let mut ev = event(
            Hook::MemtypeReserve,
            [0xa0000, 0xb0000, 1, 0xffff_c900_0000_0000, 0, 0],
        );
        ev.flags = flags::HAS_RET | flags::HAS_PTR;
        ev.ptr_exit = 0xdead_beef_0000_0002; // enum is 32 bits: upper half is whatever followed it
        let r = d.decode(&ev).unwrap();
        assert_eq!((r.pfn, r.size), (Some(0xa0), Some(0x10000)));
        assert_eq!(
            (r.cache_req.as_deref(), r.cache_out.as_deref()),
            (Some("WC"), Some("UC-"))
        );
        assert_eq!(r.vma_id, None);
    }

    #[test]
    fn tracepoint_fault() {
        let mut d = decoder(vec![resolved(
            Hook::PageFaultUser,
            &[(0, Role::Addr), (1, Role::Ip), (2, Role::ErrorCode)],
            Ret::Void,
        )]);
        let mut ev = event(Hook::PageFaultUser, [0x5555_0000_1000, 0, 0x6, 0, 0, 0]);
        ev.flags = 0;
        ev.mode = Mode::TpBtf as u8;
        let r = d.decode(&ev).unwrap();
        assert_eq!(
            (r.address, r.error_code, r.latency_ns),
            (Some(0x5555_0000_1000), Some(6), None)
        );
        assert_eq!(
            (r.hook.as_str(), r.mode.as_str()),
            ("exceptions:page_fault_user", "tp_btf")
        );
    }
}
