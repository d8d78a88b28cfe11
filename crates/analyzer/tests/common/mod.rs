//! Trace builders and a command runner shared by the integration tests.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use pfnscope_trace::{CpuCounters, PlanEntry, Record, RungFailure, TraceMeta, TraceWriter};

pub const TTM: &str = "drm_gem_ttm_vm_ops [drm_ttm_helper]";
pub const SHMEM: &str = "drm_gem_shmem_vm_ops [drm_shmem_helper]";
pub const EXT4: &str = "ext4_file_vm_ops";

pub const VM_IO: u64 = 0x4000;
pub const VM_PFNMAP: u64 = 0x400;
pub const VM_MIXEDMAP: u64 = 0x1000_0000;
/// VM_READ | VM_WRITE | VM_SHARED | VM_MAYREAD | VM_MAYWRITE | VM_MAYSHARE
pub const RW_SHARED: u64 = 0xfb;

/// A fresh directory under the target dir (kept after the test for inspection).
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("analyzer-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Deterministic pseudo-random numbers for test data.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// Roughly log-normal latency around `median` ns.
    pub fn latency(&mut self, median: u64) -> u64 {
        let u = (self.next() % 1000) as f64 / 1000.0;
        let v = (self.next() % 1000) as f64 / 1000.0;
        (median as f64 * (0.6 + u * 0.8) * if v > 0.97 { 8.0 } else { 1.0 }) as u64
    }
}

pub fn fentry_meta(kernel: &str) -> TraceMeta {
    let plan = |hook: &str, mode: &str| PlanEntry {
        hook: hook.into(),
        symbol: Some(hook.into()),
        mode: Some(mode.into()),
        failures: vec![],
        served_by: vec![],
    };
    TraceMeta {
        kernel_release: kernel.into(),
        kernel_version: "#1 SMP PREEMPT_DYNAMIC Debian".into(),
        host: "testbox".into(),
        command_line: vec![
            "tracer".into(),
            "record".into(),
            "-o".into(),
            "t.arrows".into(),
        ],
        clock: "CLOCK_MONOTONIC".into(),
        hook_plan: vec![
            plan("handle_mm_fault", "fentry"),
            plan("vmf_insert_pfn_prot", "fentry"),
            plan("track_pfn_insert", "fentry"),
        ],
        vm_flag_bits: BTreeMap::from([
            ("VM_PFNMAP".to_string(), VM_PFNMAP),
            ("VM_MIXEDMAP".to_string(), VM_MIXEDMAP),
            ("VM_IO".to_string(), VM_IO),
        ]),
        pat_table: ["WB", "WC", "UC-", "UC", "WB", "WP", "UC-", "WT"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    }
}

/// Options for [`fault_trace`].
#[derive(Clone)]
pub struct Shape {
    pub faults: usize,
    /// Added to every handle_mm_fault latency of the TTM driver (for diff tests).
    pub ttm_extra_ns: u64,
    pub seed: u64,
    pub batches: usize,
    pub dropped: u64,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            faults: 2000,
            ttm_extra_ns: 0,
            seed: 7,
            batches: 4,
            dropped: 0,
        }
    }
}

/// A 6.12-style fentry trace: TTM (bochs VRAM, WC asked, UC- given, VMA-lock retries), shmem
/// (vgem, WC kept), anonymous and ext4 file faults, with nested inserts and PAT lookups, and
/// counter rows after every batch.
pub fn fault_trace(path: &Path, shape: &Shape) -> u64 {
    let mut w = TraceWriter::create(path, &fentry_meta("6.12.48+deb13-amd64")).unwrap();
    let mut rng = Lcg(shape.seed);
    let mut id = 0u64;
    let mut ts = 5_000_000_000u64;
    let per_batch = shape.faults.div_ceil(shape.batches.max(1));
    let mut rows = 0u64;
    for i in 0..shape.faults {
        let cpu = (i % 2) as u32;
        ts += 20_000 + rng.next() % 30_000;
        let kind = i % 10;
        let (driver, flags, file, median, pid, comm) = match kind {
            0..=3 => (
                Some(TTM),
                RW_SHARED | VM_IO | VM_PFNMAP,
                Some(3),
                9_000 + shape.ttm_extra_ns,
                301,
                "bochs-touch",
            ),
            4..=5 => (
                Some(SHMEM),
                RW_SHARED | VM_PFNMAP,
                Some(4),
                6_000,
                302,
                "vgem-touch",
            ),
            6..=8 => (None, 0x73, None, 1_500, 303, "anon-touch"),
            _ => (Some(EXT4), 0x75, Some(9), 3_000, 303, "anon-touch"),
        };
        let addr = 0x7f00_0000_0000 + (i as u64) * 4096;
        let base = Record {
            cpu,
            pid,
            tid: pid,
            comm: comm.into(),
            mode: "fentry".into(),
            address: Some(addr),
            vma_id: Some(kind as u32),
            vma_start: Some(0x7f00_0000_0000),
            vma_end: Some(0x7f00_1000_0000),
            vma_pgoff: Some(0),
            vma_flags: Some(flags),
            vma_prot: Some(0x8000_0000_0000_0027),
            vma_cache: Some("WB".into()),
            driver: driver.map(Into::into),
            file_id: file,
            mm_id: Some(1),
            ..Default::default()
        };
        if kind <= 3 {
            // 6.12: the VMA-lock attempt returns RETRY, then the fault runs under mmap_lock.
            id += 1;
            w.push(&Record {
                id,
                ts_ns: ts,
                latency_ns: Some(rng.latency(2_000)),
                hook: "handle_mm_fault".into(),
                fault_flags: Some(0x1255),
                ret: Some(0x400),
                ..base
            });
            rows += 1;
            ts += 3_000;
        }
        id += 1;
        let fault_id = id;
        let lat = rng.latency(median);
        w.push(&Record {
            id,
            ts_ns: ts,
            latency_ns: Some(lat),
            hook: "handle_mm_fault".into(),
            fault_flags: Some(if kind <= 5 { 0x255 } else { 0x254 }),
            ret: Some(if kind <= 5 { 0x100 } else { 0 }),
            ..base
        });
        rows += 1;
        if kind <= 5 {
            id += 1;
            let pfn = if kind <= 3 {
                0x000e_0000 + i as u64
            } else {
                0x12_3400 + i as u64
            };
            w.push(&Record {
                id,
                parent: fault_id,
                ts_ns: ts + 500,
                latency_ns: Some(lat / 2),
                hook: "vmf_insert_pfn_prot".into(),
                pfn: Some(pfn),
                prot: Some(0x8000_0000_0000_002f),
                cache_req: Some("WC".into()),
                ret: Some(0x100),
                ..base
            });
            id += 1;
            w.push(&Record {
                id,
                parent: id - 1,
                ts_ns: ts + 700,
                latency_ns: Some(lat / 5),
                hook: "track_pfn_insert".into(),
                pfn: Some(pfn),
                prot: Some(0x8000_0000_0000_002f),
                cache_req: Some("WC".into()),
                prot_out: Some(if kind <= 3 {
                    0x8000_0000_0000_0037
                } else {
                    0x8000_0000_0000_002f
                }),
                cache_out: Some(if kind <= 3 { "UC-" } else { "WC" }.into()),
                ..base
            });
            rows += 2;
        }
        if (i + 1) % per_batch == 0 || i + 1 == shape.faults {
            let counters = [0, 1].map(|cpu| CpuCounters {
                cpu,
                dropped: if cpu == 1 {
                    shape.dropped * (i as u64 + 1) / shape.faults as u64
                } else {
                    0
                },
                ..Default::default()
            });
            w.push_counters(&counters, ts);
            rows += 2;
            w.flush_batch().unwrap();
        }
    }
    w.finish().unwrap();
    rows
}

/// A host (6.18) trace in tracepoint mode: page-fault tracepoints with vma info from
/// bpf_find_vma, no returns and so no latency.
pub fn tracepoint_trace(path: &Path, faults: usize) {
    let mut meta = fentry_meta("6.18.0");
    meta.hook_plan = vec![
        PlanEntry {
            hook: "handle_mm_fault".into(),
            symbol: Some("handle_mm_fault".into()),
            mode: None,
            failures: vec![
                RungFailure {
                    mode: "fentry".into(),
                    error: "EPERM".into(),
                },
                RungFailure {
                    mode: "kprobe".into(),
                    error: "no kprobe PMU".into(),
                },
            ],
            served_by: vec!["exceptions:page_fault_user".into()],
        },
        PlanEntry {
            hook: "exceptions:page_fault_user".into(),
            symbol: Some("page_fault_user".into()),
            mode: Some("tp_btf".into()),
            failures: vec![],
            served_by: vec![],
        },
    ];
    let mut w = TraceWriter::create(path, &meta).unwrap();
    for i in 0..faults {
        let vvar = i % 7 == 0;
        w.push(&Record {
            id: i as u64 + 1,
            ts_ns: 1_000_000_000 + i as u64 * 10_000,
            cpu: (i % 2) as u32,
            pid: 40 + (i % 3) as u32,
            tid: 40,
            comm: "stress".into(),
            hook: "exceptions:page_fault_user".into(),
            mode: "tp_btf".into(),
            address: Some(0x7ffd_0000_0000 + i as u64 * 4096),
            error_code: Some(if i % 2 == 0 { 0x6 } else { 0x4 }),
            vma_flags: Some(if vvar {
                0x0400_0411 | VM_PFNMAP | VM_IO
            } else {
                0x100073
            }),
            driver: if vvar {
                Some("special_mapping_vmops".into())
            } else {
                None
            },
            ..Default::default()
        });
    }
    w.finish().unwrap();
}

pub fn analyzer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_analyzer"))
        .args(args)
        .output()
        .expect("run analyzer")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Straight to fd 2: the test harness captures `eprintln!`, and a skip must be seen.
pub fn skip(why: &str) {
    let _ = std::io::stderr().write_all(format!("SKIPPED: {why}\n").as_bytes());
}
