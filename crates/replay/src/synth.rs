//! Hand-built traces of a correct kernel, for tests, the benchmark and examples.
//!
//! [`TraceBuilder`] plays the kernel: it keeps its own page tables and PAT reservations and
//! emits the calls the tracer would record, in the tracer's order (a call is written when it
//! returns, with `parent` links to the call it ran inside). It is deliberately written apart
//! from the model so that the two can disagree.

use std::collections::HashMap;

use pfnscope_trace::{MemtypeSpan, PlanEntry, Record, StartState, Sym, TraceMeta};

use pfnscope_abi::bits::{
    PAGE_SHIFT, PAGE_SIZE, VmBits, errno, fault_flag as ff, is_isa_range, pte, vm_fault as vf,
};
use pfnscope_abi::kernel::Series;
use pfnscope_abi::{Cache, PatTable};

/// A vma as the builder's kernel knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vma {
    pub id: u32,
    pub mm: u32,
    pub start: u64,
    pub end: u64,
    pub pgoff: u64,
    pub flags: u64,
    /// `vm_page_prot`.
    pub prot: u64,
    pub driver: Option<Sym>,
    pub file: Option<u32>,
}

impl Vma {
    pub fn pages(&self) -> u64 {
        (self.end - self.start) >> PAGE_SHIFT
    }
}

#[derive(Clone, Copy, Debug)]
struct KPte {
    pfn: u64,
    special: bool,
    cache: Cache,
}

const BASE_PROT: u64 = pte::PRESENT | pte::RW | 0x4 | 0x20; // present, RW, user, accessed
const DEFAULT_FLAGS: u32 = ff::ALLOW_RETRY | 0x10 | ff::USER | 0x200; // ALLOW_RETRY|KILLABLE|USER|INTERRUPTIBLE

pub struct TraceBuilder {
    pub series: Series,
    pub bits: VmBits,
    pub pat: PatTable,
    pub pid: u32,
    pub tid: u32,
    pub ts: u64,
    recs: Vec<Record>,
    stack: Vec<Record>,
    next_id: u64,
    next_vma: u32,
    ptes: HashMap<(u32, u64), KPte>,
    reservations: Vec<(u64, u64, Cache)>,
    ram_types: HashMap<u64, Cache>,
    /// The metadata's "System RAM" pfn ranges and zero pfn (none unless a scenario sets them).
    pub system_ram: Vec<[u64; 2]>,
    pub zero_pfn: Option<u64>,
    /// The kernel's state when recording started (none unless a scenario sets it).
    pub start_state: Option<StartState>,
}

impl TraceBuilder {
    pub fn new(series: Series) -> TraceBuilder {
        let bits = if series == Series::V6_16 {
            VmBits {
                pat: 0,
                ..VmBits::X86_DEFAULT
            }
        } else {
            VmBits::X86_DEFAULT
        };
        TraceBuilder {
            series,
            bits,
            pat: PatTable::default(),
            pid: 1000,
            tid: 1000,
            ts: 1_000_000,
            recs: Vec::new(),
            stack: Vec::new(),
            next_id: 1,
            next_vma: 1,
            ptes: HashMap::new(),
            reservations: Vec::new(),
            ram_types: HashMap::new(),
            system_ram: Vec::new(),
            zero_pfn: None,
            start_state: None,
        }
    }

    /// The kernel as recording starts: where RAM is, the reservations made before (a GPU
    /// driver's aperture at probe time), and RAM pages already set to another memtype (a
    /// TTM pool's WC pages). They are the kernel's state, and the trace's start state; no
    /// call of them is emitted.
    pub fn started_with(
        &mut self,
        ram: &[[u64; 2]],
        reserved: &[(u64, u64, Cache)],
        ram_types: &[(u64, u64, Cache)],
    ) {
        self.system_ram = ram.to_vec();
        let span = |&(s, e, c): &(u64, u64, Cache)| MemtypeSpan {
            start_pfn: s,
            end_pfn: e,
            cache: c,
        };
        self.reservations.extend_from_slice(reserved);
        for &(s, e, c) in ram_types {
            for p in s..e {
                self.ram_types.insert(p, c);
            }
        }
        self.start_state = Some(StartState {
            memtypes: Some(reserved.iter().map(span).collect()),
            ram_memtypes: Some(ram_types.iter().map(span).collect()),
            iomem: vec![],
            notes: vec![],
        });
    }

    fn is_ram(&self, pfn: u64) -> bool {
        pfn >= 0x100 && self.system_ram.iter().any(|r| r[0] <= pfn && pfn < r[1])
    }

    pub fn release(series: Series) -> &'static str {
        match series {
            Series::V6_1 => "6.1.0-28-amd64",
            Series::V6_12 => "6.12.117+deb13-amd64",
            Series::V6_16 => "7.2.13-amd64",
        }
    }

    /// Metadata as the tracer writes it, with every hook of the series attached.
    pub fn meta(&self) -> TraceMeta {
        let track = self.series != Series::V6_16;
        let mut hooks = vec![
            "handle_mm_fault",
            "vm_normal_page",
            "vmf_insert_pfn_prot",
            "vmf_insert_pfn",
            "vmf_insert_mixed",
            "remap_pfn_range",
            "memtype_reserve",
            "memtype_free",
            "copy_page_range",
            "unmap_page_range",
            "exceptions:page_fault_user",
            "filemap:mm_filemap_delete_from_page_cache",
            "filemap:mm_filemap_add_to_page_cache",
            "sched:sched_process_fork",
            "sched:sched_process_exit",
            "vm_insert_page",
            "remap_pfn_range_notrack",
            "vm_iomap_memory",
            "arch_io_reserve_memtype_wc",
            "arch_io_free_memtype_wc",
            if self.series == Series::V6_1 {
                "do_set_pte"
            } else {
                "set_pte_range"
            },
        ];
        if track {
            hooks.extend([
                "track_pfn_insert",
                "track_pfn_remap",
                "track_pfn_copy",
                "untrack_pfn",
            ]);
        } else {
            hooks.extend(["pfnmap_setup_cachemode", "pfnmap_track", "pfnmap_untrack"]);
        }
        let mut vm_flag_bits = std::collections::BTreeMap::new();
        for (n, v) in [
            ("VM_WRITE", self.bits.write),
            ("VM_SHARED", self.bits.shared),
            ("VM_MAYWRITE", self.bits.maywrite),
            ("VM_PFNMAP", self.bits.pfnmap),
            ("VM_IO", self.bits.io),
            ("VM_DONTEXPAND", self.bits.dontexpand),
            ("VM_MIXEDMAP", self.bits.mixedmap),
            ("VM_DONTDUMP", self.bits.dontdump),
        ] {
            vm_flag_bits.insert(n.to_string(), v);
        }
        if track {
            vm_flag_bits.insert("VM_PAT".into(), self.bits.pat);
        }
        TraceMeta {
            tool: "replay::synth".into(),
            kernel_release: Self::release(self.series).into(),
            clock: "CLOCK_MONOTONIC".into(),
            hook_plan: hooks
                .into_iter()
                .map(|h| PlanEntry {
                    hook: h.into(),
                    symbol: Some(h.into()),
                    mode: Some("fentry".into()),
                    ..Default::default()
                })
                .collect(),
            vm_flag_bits,
            pat_table: self.pat.0.iter().map(|c| c.name().to_string()).collect(),
            system_ram: self.system_ram.clone(),
            zero_pfn: self.zero_pfn,
            start_state: self.start_state.clone(),
            ..Default::default()
        }
    }

    /// The records so far, `seq` numbered in file order.
    pub fn records(&self) -> Vec<Record> {
        assert!(self.stack.is_empty(), "calls still open");
        self.recs
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, mut r)| {
                r.seq = i as u64;
                r
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.recs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// Moves the records out (for streaming large synthetic traces); seq continues from `base`.
    pub fn drain(&mut self, base: u64) -> Vec<Record> {
        assert!(self.stack.is_empty(), "calls still open");
        let mut v = std::mem::take(&mut self.recs);
        for (i, r) in v.iter_mut().enumerate() {
            r.seq = base + i as u64;
        }
        v
    }

    // ---- raw calls -------------------------------------------------------------------------

    fn base(&mut self, hook: &str) -> Record {
        self.ts += 40;
        let id = self.next_id;
        self.next_id += 1;
        Record {
            id,
            parent: self.stack.last().map_or(0, |p| p.id),
            ts_ns: self.ts,
            cpu: 0,
            pid: self.pid,
            tid: self.tid,
            comm: "workload".into(),
            hook: hook.into(),
            mode: "fentry".into(),
            ..Default::default()
        }
    }

    pub fn open(&mut self, hook: &str, fill: impl FnOnce(&mut Record)) {
        let mut r = self.base(hook);
        fill(&mut r);
        self.stack.push(r);
    }

    pub fn close(&mut self, fill: impl FnOnce(&mut Record)) -> &Record {
        let mut r = self.stack.pop().expect("a call is open");
        self.ts += 150;
        r.latency_ns = Some(self.ts - r.ts_ns);
        fill(&mut r);
        self.recs.push(r);
        self.recs.last().expect("just pushed")
    }

    pub fn leaf(&mut self, hook: &str, fill: impl FnOnce(&mut Record)) {
        self.open(hook, fill);
        self.close(|_| {});
    }

    pub fn tracepoint(&mut self, hook: &str, fill: impl FnOnce(&mut Record)) {
        let mut r = self.base(hook);
        r.mode = "tp_btf".into();
        fill(&mut r);
        self.next_id += 0;
        self.recs.push(r);
    }

    pub fn set_vma(r: &mut Record, v: &Vma) {
        r.vma_id = Some(v.id);
        r.vma_start = Some(v.start);
        r.vma_end = Some(v.end);
        r.vma_pgoff = Some(v.pgoff);
        r.vma_flags = Some(v.flags);
        r.vma_prot = Some(v.prot);
        r.driver = v.driver;
        r.file_id = v.file;
        r.mm_id = Some(v.mm);
    }

    // ---- the kernel's behaviour ------------------------------------------------------------

    /// A new vma. `shared`: MAP_SHARED (else private, writable: a COW mapping).
    pub fn vma(
        &mut self,
        start: u64,
        pages: u64,
        shared: bool,
        extra: u64,
        driver: Option<&str>,
    ) -> Vma {
        let b = self.bits;
        let id = self.next_vma;
        self.next_vma += 1;
        let flags = b.write | b.maywrite | 0x1 | 0x10 | if shared { b.shared } else { 0 } | extra;
        Vma {
            id,
            mm: 1,
            start,
            end: start + pages * PAGE_SIZE,
            pgoff: 0,
            flags,
            prot: BASE_PROT,
            driver: driver.map(Sym::from),
            file: Some(id),
        }
    }

    /// A PAT hook's name in this series: `track_pfn_*` up to 6.15, `pfnmap_*` after.
    fn pat_hook(&self, track: &'static str, pfnmap: &'static str) -> &'static str {
        if self.series == Series::V6_16 {
            pfnmap
        } else {
            track
        }
    }

    fn prot_with(&self, prot: u64, c: Cache) -> u64 {
        (prot & !pte::CACHE_MASK) | self.pat.prot_of(c).expect("every mode has an index")
    }

    fn lookup_memtype(&self, pfn: u64) -> Cache {
        if is_isa_range(pfn, 1) {
            return Cache::WB;
        }
        if let Some(c) = self
            .reservations
            .iter()
            .filter(|(s, e, _)| *s <= pfn && pfn < *e)
            .min_by_key(|(s, _, _)| *s)
            .map(|(_, _, c)| *c)
        {
            return c;
        }
        match self.ram_types.get(&pfn) {
            Some(c) => *c,
            // RAM nobody set another memtype on is WB; anything else unreserved is UC-.
            None if self.is_ram(pfn) => Cache::WB,
            None => Cache::UcMinus,
        }
    }

    /// `memtype_reserve` as a call of its own or inside the open call. Returns (ret, new type).
    fn memtype_reserve(&mut self, pfn: u64, pages: u64, req: Cache) -> (i64, Cache) {
        let (ret, got) = if is_isa_range(pfn, pages) {
            (0, Cache::WB)
        } else {
            let ov: Vec<Cache> = self
                .reservations
                .iter()
                .filter(|(s, e, _)| *s < pfn + pages && pfn < *e)
                .map(|r| r.2)
                .collect();
            match ov.first() {
                None => (0, req),
                Some(&c) if ov.iter().all(|x| *x == c) => (0, c),
                Some(_) => (errno::EBUSY, req),
            }
        };
        if ret == 0 && !is_isa_range(pfn, pages) {
            self.reservations.push((pfn, pfn + pages, got));
        }
        self.leaf("memtype_reserve", |r| {
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
            r.cache_req = Some(req.name().into());
            r.cache_out = Some(got.name().into());
            r.ret = Some(ret);
        });
        (ret, got)
    }

    fn memtype_free(&mut self, pfn: u64, pages: u64) {
        // memtype_erase: an exact match goes, an end match shrinks, anything else is refused.
        let end = pfn + pages;
        let ret = if is_isa_range(pfn, pages) {
            0
        } else if let Some(i) = self
            .reservations
            .iter()
            .position(|(s, e, _)| *s == pfn && *e == end)
        {
            self.reservations.remove(i);
            0
        } else if let Some(r) = self
            .reservations
            .iter_mut()
            .find(|(s, e, _)| *s < pfn && *e == end)
        {
            r.1 = pfn;
            0
        } else {
            errno::EINVAL
        };
        self.leaf("memtype_free", |r| {
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
            r.ret = Some(ret);
        });
    }

    /// `memremap_pages` (device-dax, pmem, PCI P2P): PAT tracking with no vma, which reserves
    /// the whole range (mm/memremap.c:pagemap_range; arch/x86/mm/pat/memtype.c:track_pfn_remap's
    /// `!vma` case, pfnmap_track on 6.16+).
    pub fn memremap_pages(&mut self, pfn: u64, pages: u64) {
        let hook = self.pat_hook("track_pfn_remap", "pfnmap_track");
        let prot = self.prot_with(BASE_PROT, Cache::WB);
        self.open(hook, |r| {
            if hook == "track_pfn_remap" {
                r.address = Some(0);
            }
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
            r.prot = Some(prot);
            r.cache_req = Some(Cache::WB.name().into());
        });
        let (ret, got) = self.memtype_reserve(pfn, pages, Cache::WB);
        let prot_out = self.prot_with(prot, got);
        self.close(|r| {
            r.prot_out = Some(prot_out);
            r.cache_out = Some(got.name().into());
            r.ret = Some(ret);
        });
    }

    /// `memunmap_pages`: the untrack with no vma frees exactly the range.
    pub fn memunmap_pages(&mut self, pfn: u64, pages: u64) {
        let hook = self.pat_hook("untrack_pfn", "pfnmap_untrack");
        self.open(hook, |r| {
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
        });
        self.memtype_free(pfn, pages);
        self.close(|_| {});
    }

    /// `set_pages_array_wc` and friends on RAM pages: a reservation outside any vma.
    pub fn set_ram_type(&mut self, pfn: u64, pages: u64, c: Cache) {
        for p in pfn..pfn + pages {
            self.ram_types.insert(p, c);
        }
        self.leaf("memtype_reserve", |r| {
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
            r.cache_req = Some(c.name().into());
            r.ret = Some(0);
        });
    }

    /// `remap_pfn_range` of the whole vma (mmap of /dev/mem, a PCI BAR, fbdev).
    pub fn remap(&mut self, v: &mut Vma, pfn: u64, want: Cache) -> i64 {
        let pages = v.pages();
        let prot = self.prot_with(v.prot, want);
        let snapshot = v.clone();
        self.open("remap_pfn_range", |r| {
            Self::set_vma(r, &snapshot);
            r.address = Some(snapshot.start);
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
            r.prot = Some(prot);
            r.cache_req = Some(want.name().into());
        });
        let track_hook = self.pat_hook("track_pfn_remap", "pfnmap_track");
        self.open(track_hook, |r| {
            if track_hook == "track_pfn_remap" {
                Self::set_vma(r, &snapshot);
                r.address = Some(snapshot.start);
            }
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
            r.prot = Some(prot);
            r.cache_req = Some(want.name().into());
        });
        // reserve_pfn_range: RAM takes its pages' memtype and reserves nothing.
        let (rr, got) = if self.is_ram(pfn) {
            (0, self.lookup_memtype(pfn))
        } else {
            self.memtype_reserve(pfn, pages, want)
        };
        let tr = if rr != 0 {
            rr
        } else if got != want && !is_isa_range(pfn, pages) && !want.may_become(got) {
            self.memtype_free(pfn, pages);
            errno::EINVAL
        } else {
            0
        };
        let prot_out = if tr == 0 {
            self.prot_with(prot, got)
        } else {
            prot
        };
        let pat = self.pat;
        self.close(|r| {
            r.prot_out = Some(prot_out);
            r.cache_out = Some(pat.of_prot(prot_out).name().into());
            r.ret = Some(tr);
        });
        let ret = if tr == 0 {
            0
        } else if self.series == Series::V6_16 {
            tr
        } else {
            errno::EINVAL
        };
        self.close(|r| r.ret = Some(ret));
        if ret == 0 {
            v.flags |= self.bits.remap_flags();
            if self.series != Series::V6_16 {
                v.flags |= self.bits.pat;
            }
            if self.bits.is_cow(v.flags) {
                v.pgoff = pfn;
            }
            let c = self.pat.of_prot(prot_out);
            for j in 0..pages {
                self.ptes.insert(
                    (v.mm, (v.start >> PAGE_SHIFT) + j),
                    KPte {
                        pfn: pfn + j,
                        special: true,
                        cache: c,
                    },
                );
            }
        }
        ret
    }

    fn fault_flags(&self, write: bool) -> u32 {
        DEFAULT_FLAGS | if write { ff::WRITE } else { 0 }
    }

    /// 6.12+: the VMA-lock attempt that the driver's missing `->map_pages` turns into RETRY.
    fn vma_lock_attempt(&mut self, v: &Vma, addr: u64, write: bool) {
        if self.series == Series::V6_1 {
            return;
        }
        let fl = self.fault_flags(write) | ff::VMA_LOCK;
        let snap = v.clone();
        self.leaf("handle_mm_fault", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.fault_flags = Some(fl);
            r.ret = Some(vf::RETRY as i64);
        });
    }

    /// A driver fault that maps one pfn: `vmf_insert_pfn_prot` asking for `req` (TTM, bochs).
    /// `nested`: through `vmf_insert_pfn` (vgem, vvar). Returns the cache mode mapped.
    pub fn fault_insert(
        &mut self,
        v: &Vma,
        addr: u64,
        pfn: u64,
        req: Cache,
        nested: bool,
    ) -> Cache {
        let snap = v.clone();
        // tp_btf carries the vma bpf_find_vma found for the address.
        self.tracepoint("exceptions:page_fault_user", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.error_code = Some(0x6);
        });
        self.vma_lock_attempt(v, addr, true);
        let fl = self.fault_flags(true);
        self.open("handle_mm_fault", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.fault_flags = Some(fl);
        });
        let prot = self.prot_with(v.prot, req);
        let page_addr = addr & !(PAGE_SIZE - 1);
        if nested {
            self.open("vmf_insert_pfn", |r| {
                Self::set_vma(r, &snap);
                r.address = Some(page_addr);
                r.pfn = Some(pfn);
                r.prot = Some(snap.prot);
            });
        }
        self.open("vmf_insert_pfn_prot", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(page_addr);
            r.pfn = Some(pfn);
            r.prot = Some(prot);
            r.cache_req = Some(req.name().into());
        });
        let got = self.lookup_memtype(pfn);
        let prot_out = self.prot_with(prot, got);
        let (lookup_hook, sized) = if self.series == Series::V6_16 {
            ("pfnmap_setup_cachemode", true)
        } else {
            ("track_pfn_insert", false)
        };
        let track_vma = (!sized).then(|| snap.clone());
        self.leaf(lookup_hook, |r| {
            if let Some(tv) = &track_vma {
                Self::set_vma(r, tv);
            }
            r.pfn = Some(pfn);
            if sized {
                r.size = Some(PAGE_SIZE);
                r.ret = Some(0);
            }
            r.prot = Some(prot);
            r.cache_req = Some(req.name().into());
            r.prot_out = Some(prot_out);
            r.cache_out = Some(got.name().into());
        });
        self.close(|r| r.ret = Some(vf::NOPAGE as i64));
        if nested {
            self.close(|r| r.ret = Some(vf::NOPAGE as i64));
        }
        self.close(|r| r.ret = Some(vf::NOPAGE as i64));
        self.ptes.insert(
            (v.mm, addr >> PAGE_SHIFT),
            KPte {
                pfn,
                special: true,
                cache: got,
            },
        );
        got
    }

    /// One driver fault that inserts each of `pfns` at the same page, asking for `req`: the
    /// first maps it, the kernel keeps that PTE for the others and returns NOPAGE.
    pub fn fault_inserts_at(&mut self, v: &Vma, addr: u64, pfns: &[u64], req: Cache) {
        let snap = v.clone();
        self.vma_lock_attempt(v, addr, true);
        let fl = self.fault_flags(true);
        self.open("handle_mm_fault", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.fault_flags = Some(fl);
        });
        let prot = self.prot_with(v.prot, req);
        let page_addr = addr & !(PAGE_SIZE - 1);
        let lookup_hook = self.pat_hook("track_pfn_insert", "pfnmap_setup_cachemode");
        for &pfn in pfns {
            self.open("vmf_insert_pfn_prot", |r| {
                Self::set_vma(r, &snap);
                r.address = Some(page_addr);
                r.pfn = Some(pfn);
                r.prot = Some(prot);
                r.cache_req = Some(req.name().into());
            });
            let got = self.lookup_memtype(pfn);
            let prot_out = self.prot_with(prot, got);
            let sized = lookup_hook == "pfnmap_setup_cachemode";
            self.leaf(lookup_hook, |r| {
                if !sized {
                    Self::set_vma(r, &snap);
                } else {
                    r.size = Some(PAGE_SIZE);
                    r.ret = Some(0);
                }
                r.pfn = Some(pfn);
                r.prot = Some(prot);
                r.cache_req = Some(req.name().into());
                r.prot_out = Some(prot_out);
                r.cache_out = Some(got.name().into());
            });
            self.close(|r| r.ret = Some(vf::NOPAGE as i64));
            self.ptes.entry((v.mm, addr >> PAGE_SHIFT)).or_insert(KPte {
                pfn,
                special: true,
                cache: got,
            });
        }
        self.close(|r| r.ret = Some(vf::NOPAGE as i64));
    }

    /// A driver fault whose `->fault` returns VM_FAULT_NOPAGE without mapping anything.
    pub fn fault_nopage(&mut self, v: &Vma, addr: u64) {
        let snap = v.clone();
        self.vma_lock_attempt(v, addr, false);
        let fl = self.fault_flags(false);
        self.leaf("handle_mm_fault", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.fault_flags = Some(fl);
            r.ret = Some(vf::NOPAGE as i64);
        });
    }

    /// `memtype_reserve` called by a driver outside any mapping (ioremap and friends).
    pub fn reserve_io(&mut self, pfn: u64, pages: u64, c: Cache) -> (i64, Cache) {
        self.memtype_reserve(pfn, pages, c)
    }

    /// `arch_io_reserve_memtype_wc`: a WC reservation, given back (-EBUSY) when the type it
    /// gets may not be WC's (memtype_reserve_io).
    pub fn arch_io_reserve_wc(&mut self, pfn: u64, pages: u64) -> i64 {
        self.open("arch_io_reserve_memtype_wc", |r| {
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
        });
        let (rr, got) = self.memtype_reserve(pfn, pages, Cache::WC);
        let ret = if rr != 0 {
            rr
        } else if !Cache::WC.may_become(got) {
            self.memtype_free(pfn, pages);
            errno::EBUSY
        } else {
            0
        };
        self.close(|r| r.ret = Some(ret));
        ret
    }

    /// `vm_insert_page` of the page at `pfn`: a normal PTE with the vma's protection.
    pub fn insert_page(&mut self, v: &Vma, addr: u64, pfn: u64) {
        let snap = v.clone();
        self.leaf("vm_insert_page", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.pfn = Some(pfn);
            r.ret = Some(0);
        });
        let cache = self.pat.of_prot(v.prot);
        self.ptes.insert(
            (v.mm, addr >> PAGE_SHIFT),
            KPte {
                pfn,
                special: false,
                cache,
            },
        );
    }

    /// A driver fault whose `->fault` hands back the page at `pfn` (`vmf->page`): the core maps
    /// it with the vma's protection (finish_fault -> set_pte_range, do_set_pte on 6.1).
    pub fn fault_maps_page(&mut self, v: &Vma, addr: u64, pfn: u64) {
        let snap = v.clone();
        self.vma_lock_attempt(v, addr, false);
        let fl = self.fault_flags(false);
        self.open("handle_mm_fault", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.fault_flags = Some(fl);
        });
        let hook = if self.series == Series::V6_1 {
            "do_set_pte"
        } else {
            "set_pte_range"
        };
        let page_addr = addr & !(PAGE_SIZE - 1);
        self.leaf(hook, |r| {
            Self::set_vma(r, &snap);
            r.address = Some(page_addr);
            r.pfn = Some(pfn);
            r.size = Some(PAGE_SIZE);
        });
        self.close(|r| r.ret = Some(0));
        let cache = self.pat.of_prot(v.prot);
        self.ptes.insert(
            (v.mm, addr >> PAGE_SHIFT),
            KPte {
                pfn,
                special: false,
                cache,
            },
        );
    }

    /// `remap_pfn_range_notrack` called by a driver: special PTEs in the cache mode `c` it
    /// asks for, no PAT.
    pub fn remap_notrack(&mut self, v: &mut Vma, pfn: u64, c: Cache) {
        let pages = v.pages();
        let prot = self.prot_with(v.prot, c);
        let snap = v.clone();
        self.leaf("remap_pfn_range_notrack", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(snap.start);
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
            r.prot = Some(prot);
            r.cache_req = Some(c.name().into());
            r.ret = Some(0);
        });
        v.flags |= self.bits.remap_flags();
        for j in 0..pages {
            self.ptes.insert(
                (v.mm, (v.start >> PAGE_SHIFT) + j),
                KPte {
                    pfn: pfn + j,
                    special: true,
                    cache: c,
                },
            );
        }
    }

    /// munmap() of the first `pages` of `v`: the vma is split, and the unmapped head (a vma of
    /// its own) is untracked and zapped. 6.1/6.12 untrack it with its own range, which no
    /// reservation starts and ends at; 6.16+ keep the tracking context until the last vma goes.
    pub fn munmap_head(&mut self, v: &mut Vma, pages: u64) {
        let mut head = v.clone();
        head.id = self.next_vma;
        self.next_vma += 1;
        head.end = head.start + pages * PAGE_SIZE;
        let first = self.ptes.get(&(head.mm, head.start >> PAGE_SHIFT)).copied();
        if self.series != Series::V6_16 && head.flags & self.bits.pfnmap != 0 {
            let snap = head.clone();
            self.open("untrack_pfn", |r| {
                Self::set_vma(r, &snap);
                r.pfn = Some(0);
                r.size = Some(0);
            });
            if head.flags & self.bits.pat != 0
                && let Some(k) = first.filter(|k| k.special)
            {
                self.memtype_free(k.pfn, pages);
            }
            self.close(|_| {});
            head.flags &= !self.bits.pat;
        }
        let snap = head.clone();
        self.open("unmap_page_range", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(snap.start);
            r.size = Some(snap.end - snap.start);
        });
        self.vnp_range(&head);
        self.close(|_| {});
        for pg in head.start >> PAGE_SHIFT..head.end >> PAGE_SHIFT {
            self.ptes.remove(&(head.mm, pg));
        }
        v.start = head.end;
        v.pgoff += pages;
    }

    /// A write to a private PFN mapping: `do_wp_page` finds no page and copies.
    pub fn cow_write(&mut self, v: &Vma, addr: u64) {
        let Some(k) = self.ptes.get(&(v.mm, addr >> PAGE_SHIFT)).copied() else {
            return;
        };
        self.vma_lock_attempt(v, addr, true);
        let snap = v.clone();
        let fl = self.fault_flags(true);
        self.open("handle_mm_fault", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.fault_flags = Some(fl);
        });
        let pte_v = self.pte_value(k, false);
        self.leaf("vm_normal_page", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr & !(PAGE_SIZE - 1));
            r.pte = Some(pte_v);
            r.pfn = Some(k.pfn);
            r.page = Some(false);
        });
        self.close(|r| r.ret = Some(0));
        // A fresh anonymous page far above the device pfns, mapped with the vma's protection
        // (wp_page_copy: mk_pte(new_page, vma->vm_page_prot)).
        let anon = 0x10_0000 + (addr >> PAGE_SHIFT & 0xffff);
        let cache = self.pat.of_prot(v.prot);
        self.ptes.insert(
            (v.mm, addr >> PAGE_SHIFT),
            KPte {
                pfn: anon,
                special: false,
                cache,
            },
        );
    }

    fn pte_value(&self, k: KPte, writable: bool) -> u64 {
        let mut v = (k.pfn << PAGE_SHIFT)
            | pte::PRESENT
            | 0x4
            | 0x20
            | self.pat.prot_of(k.cache).expect("mode has an index");
        if k.special {
            v |= pte::SPECIAL;
        }
        if writable {
            v |= pte::RW;
        }
        v
    }

    fn vnp_range(&mut self, v: &Vma) {
        let snap = v.clone();
        for pg in v.start >> PAGE_SHIFT..v.end >> PAGE_SHIFT {
            if let Some(k) = self.ptes.get(&(v.mm, pg)).copied() {
                // A private vm_page_prot has no write bit: raw PFNs of a COW vma stay
                // read-only, only their anonymous copies are writable.
                let writable =
                    v.flags & self.bits.write != 0 && !(k.special && self.bits.is_cow(v.flags));
                let pte_v = self.pte_value(k, writable);
                self.leaf("vm_normal_page", |r| {
                    Self::set_vma(r, &snap);
                    r.address = Some(pg << PAGE_SHIFT);
                    r.pte = Some(pte_v);
                    r.pfn = Some(k.pfn);
                    r.page = Some(!k.special);
                });
            }
        }
    }

    /// fork(): `copy_page_range` of one vma, then the fork tracepoint. Returns copy's result.
    pub fn fork(&mut self, v: &Vma, child_pid: u32) -> i64 {
        let snap = v.clone();
        self.open("copy_page_range", |r| Self::set_vma(r, &snap));
        let mut ret = 0;
        if self.series != Series::V6_16 && v.flags & self.bits.pfnmap != 0 {
            self.open("track_pfn_copy", |r| Self::set_vma(r, &snap));
            let mut tr = 0;
            if v.flags & self.bits.pat != 0 {
                match self.ptes.get(&(v.mm, v.start >> PAGE_SHIFT)).copied() {
                    // RAM: no reservation, strict or not (reserve_pfn_range).
                    Some(k) if k.special && self.is_ram(k.pfn) => {}
                    Some(k) if k.special => {
                        let (rr, got) = self.memtype_reserve(k.pfn, v.pages(), k.cache);
                        tr = if rr != 0 {
                            rr
                        } else if got != k.cache {
                            self.memtype_free(k.pfn, v.pages());
                            errno::EINVAL
                        } else {
                            0
                        };
                    }
                    _ => tr = errno::EINVAL,
                }
            }
            self.close(|r| r.ret = Some(tr));
            ret = tr;
        }
        if ret == 0 {
            self.vnp_range(v);
        }
        self.close(|r| r.ret = Some(ret));
        if ret == 0 {
            self.tracepoint("sched:sched_process_fork", |r| {
                r.child_pid = Some(child_pid)
            });
        }
        ret
    }

    /// munmap() of the whole vma.
    pub fn munmap(&mut self, v: &mut Vma) {
        let first = self.ptes.get(&(v.mm, v.start >> PAGE_SHIFT)).copied();
        if self.series != Series::V6_16 && v.flags & self.bits.pfnmap != 0 {
            let snap = v.clone();
            self.open("untrack_pfn", |r| {
                Self::set_vma(r, &snap);
                r.pfn = Some(0);
                r.size = Some(0);
            });
            // untrack_pfn frees the vma's range from its first PTE (free_pfn_range), whatever
            // the reservation was: RAM has none.
            if v.flags & self.bits.pat != 0
                && let Some(k) = first
                && k.special
                && !self.is_ram(k.pfn)
            {
                self.memtype_free(k.pfn, v.pages());
            }
            self.close(|_| {});
            v.flags &= !self.bits.pat;
        }
        let snap = v.clone();
        self.open("unmap_page_range", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(snap.start);
            r.size = Some(snap.end - snap.start);
        });
        self.vnp_range(v);
        self.close(|_| {});
        if self.series == Series::V6_16
            && let Some(k) = first.filter(|k| k.special)
            && self
                .reservations
                .iter()
                .any(|(s, e, _)| *s == k.pfn && *e == k.pfn + v.pages())
        {
            let n = v.pages();
            self.open("pfnmap_untrack", |r| {
                r.pfn = Some(k.pfn);
                r.size = Some(n * PAGE_SIZE);
            });
            self.memtype_free(k.pfn, n);
            self.close(|_| {});
        }
        for pg in v.start >> PAGE_SHIFT..v.end >> PAGE_SHIFT {
            self.ptes.remove(&(v.mm, pg));
        }
    }

    /// A file page mapped at `addr` is truncated: zapped, then dropped from the page cache.
    pub fn truncate_page(&mut self, v: &Vma, addr: u64, pfn: u64) {
        let snap = v.clone();
        let index = v.pgoff + ((addr - v.start) >> PAGE_SHIFT);
        self.open("unmap_page_range", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.size = Some(PAGE_SIZE);
        });
        let k = KPte {
            pfn,
            special: false,
            cache: Cache::WB,
        };
        let pte_v = self.pte_value(k, false);
        self.leaf("vm_normal_page", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.pte = Some(pte_v);
            r.pfn = Some(pfn);
            r.page = Some(true);
        });
        self.close(|_| {});
        self.drop_from_page_cache(pfn, index);
    }

    /// The current process exits (its thread-group leader: `sched_process_exit`).
    pub fn exit(&mut self) {
        self.tracepoint("sched:sched_process_exit", |_| {});
    }

    /// The page at `pfn` enters the page cache at file index `index` (a read, a fault).
    pub fn add_to_page_cache(&mut self, pfn: u64, index: u64) {
        self.tracepoint("filemap:mm_filemap_add_to_page_cache", |r| {
            r.pfn = Some(pfn);
            r.ino = Some(42);
            r.index = Some(index);
            r.dev = Some(8);
        });
    }

    /// The page at `pfn` leaves the page cache (file index `index`) without any zap: what
    /// truncation or a shmem purge does to pages only special PTEs map.
    pub fn drop_from_page_cache(&mut self, pfn: u64, index: u64) {
        self.tracepoint("filemap:mm_filemap_delete_from_page_cache", |r| {
            r.pfn = Some(pfn);
            r.ino = Some(42);
            r.index = Some(index);
            r.dev = Some(8);
        });
    }
}

/// A mixed workload of a correct kernel: /dev/mem-style remaps (ISA hole and a BAR), a TTM-style
/// driver inserting pfns with a WC request PAT downgrades, a vgem-style driver on WC RAM pages,
/// a COW write, a fork and munmaps. Used by tests and as the mutation harness's base.
pub fn workload(series: Series) -> TraceBuilder {
    let mut b = TraceBuilder::new(series);
    let bits = b.bits;
    // /dev/mem of the VGA hole, shared.
    let mut devmem = b.vma(0x7f00_0000_0000, 16, true, 0, Some("mmap_mem_ops"));
    b.remap(&mut devmem, 0xa0, Cache::UcMinus);
    // A PCI BAR through sysfs, shared, asked WC: reserved WC.
    let mut bar = b.vma(0x7f00_1000_0000, 8, true, 0, Some("pci_phys_vm_ops"));
    b.remap(&mut bar, 0xfe000, Cache::WC);
    // A second mapping of the same BAR asking UC- gets the WC reservation's type.
    let mut bar2 = b.vma(0x7f00_1100_0000, 8, true, 0, Some("pci_phys_vm_ops"));
    b.remap(&mut bar2, 0xfe000, Cache::UcMinus);
    // TTM/bochs VRAM: WC requested, no reservation: UC-.
    let ttm = b.vma(
        0x7f00_2000_0000,
        8,
        true,
        bits.pfnmap | bits.io | bits.dontexpand | bits.dontdump,
        Some("drm_gem_ttm_vm_ops [ttm]"),
    );
    for j in 0..8 {
        b.fault_insert(
            &ttm,
            ttm.start + j * PAGE_SIZE + 0x10,
            0xfd000 + j,
            Cache::WC,
            false,
        );
    }
    // vgem: shmem pages made WC, inserted through vmf_insert_pfn.
    let vgem = b.vma(
        0x7f00_3000_0000,
        4,
        true,
        bits.pfnmap | bits.io | bits.dontexpand | bits.dontdump,
        Some("vgem_gem_vm_ops [vgem]"),
    );
    b.set_ram_type(0x1234, 4, Cache::WC);
    for j in 0..4 {
        b.fault_insert(
            &vgem,
            vgem.start + j * PAGE_SIZE,
            0x1234 + j,
            Cache::WC,
            true,
        );
    }
    // /dev/mem private (COW) of the VGA hole: write page 2, then fork (succeeds: page 0 intact).
    let mut cow = b.vma(0x7f00_4000_0000, 4, false, 0, Some("mmap_mem_ops"));
    b.remap(&mut cow, 0xb0, Cache::UcMinus);
    b.cow_write(&cow, cow.start + 2 * PAGE_SIZE);
    b.fork(&bar, 2000);
    b.fork(&cow, 2001);
    // Writing page 0 then forking fails: PAT cannot recover the first page.
    let mut cow0 = b.vma(0x7f00_5000_0000, 2, false, 0, Some("mmap_mem_ops"));
    b.remap(&mut cow0, 0xc0, Cache::UcMinus);
    b.cow_write(&cow0, cow0.start);
    b.fork(&cow0, 2002);
    // A file page truncated.
    let file = b.vma(0x7f00_6000_0000, 4, true, 0, Some("ext4_file_vm_ops"));
    b.truncate_page(&file, file.start + PAGE_SIZE, 0x5_0000);
    // Tear down.
    b.munmap(&mut devmem);
    b.munmap(&mut bar);
    b.munmap(&mut bar2);
    b.munmap(&mut cow);
    b.munmap(&mut cow0);
    let mut ttm = ttm;
    b.munmap(&mut ttm);
    let mut vgem = vgem;
    b.munmap(&mut vgem);
    b
}
