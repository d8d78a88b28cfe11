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

mod fault;
mod pat;
mod teardown;
mod workload;

pub use workload::workload;

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
}
