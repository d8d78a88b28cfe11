//! One table per rule: each row builds a small trace of a correct kernel with [`TraceBuilder`],
//! optionally breaks one thing, and states what the replay must say.

use pfnscope_trace::Record;

use pfnscope_abi::Cache;
use pfnscope_abi::bits::{PAGE_SIZE, errno, fault_flag as ff, pfn_t, pte, vm_fault as vf};
use pfnscope_abi::kernel::Series;

use crate::kernel::KernelRules;
use crate::report::Report;
use crate::rules::Rule;
use crate::run::check_records;
use crate::synth::TraceBuilder;

#[derive(Clone, Copy, Debug)]
enum Expect {
    /// No divergence at all, and the rule was applied (held or not checkable) at least once.
    Clean(Rule),
    /// This rule diverges (others may too).
    Div(Rule),
    /// No divergence, and this finding is reported.
    Find(Rule),
    /// No divergence; the rule counted as not checkable.
    NotCheckable(Rule),
    /// No divergence, and no finding of this rule.
    Quiet(Rule),
    /// This rule does not diverge; others may (the tweak breaks more than the rule looks at).
    NotDiv(Rule),
    /// Neither a divergence nor a finding of any rule, and this rule applied and held.
    Silent(Rule),
}

type Scenario = fn(&mut TraceBuilder);
type Tweak = fn(&mut Vec<Record>);

struct Row {
    name: &'static str,
    series: Series,
    scenario: Scenario,
    tweak: Tweak,
    expect: Expect,
}

fn none(_: &mut Vec<Record>) {}

fn nth(recs: &[Record], hook: &str, n: usize) -> usize {
    recs.iter()
        .enumerate()
        .filter(|(_, r)| r.hook == hook)
        .nth(n)
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no {hook} #{n}"))
}

fn last(recs: &[Record], hook: &str) -> usize {
    recs.iter()
        .rposition(|r| r.hook == hook)
        .unwrap_or_else(|| panic!("no {hook}"))
}

fn run_row(row: &Row) -> Report {
    let mut b = TraceBuilder::new(row.series);
    (row.scenario)(&mut b);
    let mut recs = b.records();
    (row.tweak)(&mut recs);
    check_records(
        &b.meta(),
        KernelRules::for_series(row.series),
        recs,
        row.name,
    )
}

fn table(rows: &[Row]) {
    for row in rows {
        let rep = run_row(row);
        let divs: Vec<&str> = rep.divergences.iter().map(|d| d.rule.id()).collect();
        let tally = |r: Rule| {
            rep.rule_table
                .iter()
                .find(|x| x.rule.id == r.id())
                .expect("every rule has a row")
                .tally
        };
        match row.expect {
            Expect::Clean(r) => {
                assert!(
                    divs.is_empty(),
                    "{}: unexpected divergences {divs:?}\n{}",
                    row.name,
                    rep.to_human()
                );
                let t = tally(r);
                assert!(
                    t.held + t.not_checkable > 0,
                    "{}: rule {} never applied",
                    row.name,
                    r.id()
                );
            }
            Expect::NotDiv(r) => assert!(
                !divs.contains(&r.id()),
                "{}: unexpected {}\n{}",
                row.name,
                r.id(),
                rep.to_human()
            ),
            Expect::Div(r) => assert!(
                divs.contains(&r.id()),
                "{}: expected {} in {divs:?}\n{}",
                row.name,
                r.id(),
                rep.to_human()
            ),
            Expect::Find(r) => {
                assert!(
                    divs.is_empty(),
                    "{}: unexpected divergences {divs:?}\n{}",
                    row.name,
                    rep.to_human()
                );
                assert!(
                    rep.findings.iter().any(|f| f.rule == r),
                    "{}: expected finding {}\n{}",
                    row.name,
                    r.id(),
                    rep.to_human()
                );
            }
            Expect::Quiet(r) => {
                assert!(
                    divs.is_empty() && rep.findings.iter().all(|f| f.rule != r),
                    "{}: expected neither divergences nor {}\n{}",
                    row.name,
                    r.id(),
                    rep.to_human()
                );
            }
            Expect::Silent(r) => {
                assert!(
                    divs.is_empty() && rep.findings.is_empty(),
                    "{}: expected silence\n{}",
                    row.name,
                    rep.to_human()
                );
                assert!(
                    tally(r).held > 0 && tally(r).not_checkable == 0,
                    "{}: {} held {} times, not checkable {} times",
                    row.name,
                    r.id(),
                    tally(r).held,
                    tally(r).not_checkable
                );
            }
            Expect::NotCheckable(r) => {
                assert!(
                    divs.is_empty(),
                    "{}: unexpected divergences {divs:?}\n{}",
                    row.name,
                    rep.to_human()
                );
                assert!(
                    tally(r).not_checkable > 0,
                    "{}: {} not counted as not checkable",
                    row.name,
                    r.id()
                );
            }
        }
    }
}

// ---- scenarios -------------------------------------------------------------------------------

const TTM: &str = "drm_gem_ttm_vm_ops [ttm]";

fn ttm(b: &mut TraceBuilder) {
    let bits = b.bits;
    let mut v = b.vma(
        0x7f00_2000_0000,
        4,
        true,
        bits.pfnmap | bits.io | bits.dontexpand | bits.dontdump,
        Some(TTM),
    );
    b.fault_insert(&v, v.start, 0xfd000, Cache::WC, false);
    b.fault_insert(&v, v.start + PAGE_SIZE, 0xfd001, Cache::WC, false);
    b.munmap(&mut v);
}

fn bar(b: &mut TraceBuilder) {
    let mut v = b.vma(0x7f00_1000_0000, 4, true, 0, Some("pci_phys_vm_ops"));
    b.remap(&mut v, 0xfe000, Cache::WC);
    b.munmap(&mut v);
}

fn bar_twice(b: &mut TraceBuilder) {
    let mut v = b.vma(0x7f00_1000_0000, 4, true, 0, Some("pci_phys_vm_ops"));
    b.remap(&mut v, 0xfe000, Cache::WC);
    let mut w = b.vma(0x7f00_1100_0000, 4, true, 0, Some("pci_phys_vm_ops"));
    b.remap(&mut w, 0xfe000, Cache::UcMinus);
    b.munmap(&mut v);
    b.munmap(&mut w);
}

/// Device memory with struct pages (device-dax, pmem): memremap_pages reserves it WB with no
/// vma, a driver fault maps one of its pfns, then the mapping and the range go away.
fn memremap(b: &mut TraceBuilder) {
    let mixed = b.bits.mixedmap;
    b.memremap_pages(0x30000, 512);
    let mut v = b.vma(
        0x7f00_5000_0000,
        4,
        true,
        mixed,
        Some("dax_vm_ops [device_dax]"),
    );
    b.fault_insert(&v, v.start, 0x30100, Cache::WB, false);
    b.munmap(&mut v);
    b.memunmap_pages(0x30000, 512);
}

fn isa(b: &mut TraceBuilder) {
    let mut v = b.vma(0x7f00_0000_0000, 4, true, 0, Some("mmap_mem_ops"));
    b.remap(&mut v, 0xa0, Cache::UcMinus);
    b.munmap(&mut v);
}

fn cow(b: &mut TraceBuilder) {
    let mut v = b.vma(0x7f00_4000_0000, 4, false, 0, Some("mmap_mem_ops"));
    b.remap(&mut v, 0xb0, Cache::UcMinus);
    b.cow_write(&v, v.start + PAGE_SIZE);
    b.munmap(&mut v);
}

fn fork(b: &mut TraceBuilder) {
    let mut v = b.vma(0x7f00_1000_0000, 4, true, 0, Some("pci_phys_vm_ops"));
    b.remap(&mut v, 0xfe000, Cache::WC);
    b.fork(&v, 2000);
}

fn fork_cow0(b: &mut TraceBuilder) {
    let mut v = b.vma(0x7f00_5000_0000, 2, false, 0, Some("mmap_mem_ops"));
    b.remap(&mut v, 0xc0, Cache::UcMinus);
    b.cow_write(&v, v.start);
    b.fork(&v, 2002);
}

fn vgem(b: &mut TraceBuilder) {
    let mut v = shmem_buffer(b);
    b.munmap(&mut v);
}

/// A vgem-style buffer of shmem pages (file indices 0 and 1) inserted as raw PFNs.
fn shmem_buffer(b: &mut TraceBuilder) -> crate::synth::Vma {
    let bits = b.bits;
    let v = b.vma(
        0x7f00_3000_0000,
        2,
        true,
        bits.pfnmap | bits.io | bits.dontexpand | bits.dontdump,
        Some("vgem_gem_vm_ops [vgem]"),
    );
    b.set_ram_type(0x1234, 2, Cache::WC);
    b.fault_insert(&v, v.start, 0x1234, Cache::WC, true);
    b.fault_insert(&v, v.start + PAGE_SIZE, 0x1235, Cache::WC, true);
    v
}

fn purged_while_mapped(b: &mut TraceBuilder) {
    let mut v = shmem_buffer(b);
    b.drop_from_page_cache(0x1235, 1);
    b.munmap(&mut v);
}

fn purged_after_unmap(b: &mut TraceBuilder) {
    let mut v = shmem_buffer(b);
    b.munmap(&mut v);
    b.drop_from_page_cache(0x1235, 1);
}

/// The freed page comes back as another buffer's: a new mapping, not a stale one.
fn purged_then_reused(b: &mut TraceBuilder) {
    let mut v = shmem_buffer(b);
    b.munmap(&mut v);
    b.drop_from_page_cache(0x1235, 1);
    let mut w = shmem_buffer(b);
    b.munmap(&mut w);
}

fn truncate(b: &mut TraceBuilder) {
    let v = b.vma(0x7f00_6000_0000, 4, true, 0, Some("ext4_file_vm_ops"));
    b.truncate_page(&v, v.start + PAGE_SIZE, 0x5_0000);
}

fn alias(b: &mut TraceBuilder) {
    let bits = b.bits;
    let v = b.vma(
        0x7f00_2000_0000,
        1,
        true,
        bits.pfnmap | bits.io | bits.dontexpand | bits.dontdump,
        Some(TTM),
    );
    b.fault_insert(&v, v.start, 0xfd000, Cache::WC, false);
    let mut w = b.vma(0x7f00_7000_0000, 1, true, 0, Some("pci_phys_vm_ops"));
    b.remap(&mut w, 0xfd000, Cache::WC);
}

/// The mmap_lock fault of the `n`th TTM page (6.12+: the second handle_mm_fault of each pair).
fn main_fault(recs: &[Record], n: usize) -> usize {
    recs.iter()
        .enumerate()
        .filter(|(_, r)| {
            r.hook == "handle_mm_fault" && r.fault_flags.is_some_and(|f| f & ff::VMA_LOCK == 0)
        })
        .nth(n)
        .map(|(i, _)| i)
        .expect("a mmap_lock fault")
}

// ---- tables ----------------------------------------------------------------------------------

#[test]
fn rule_fault_flags() {
    table(&[
        Row {
            name: "6.12 VMA-lock attempts are legal",
            series: Series::V6_12,
            scenario: ttm,
            tweak: none,
            expect: Expect::Clean(Rule::FaultFlags),
        },
        Row {
            name: "6.1 has no VMA_LOCK flag",
            series: Series::V6_1,
            scenario: ttm,
            tweak: |r| {
                let i = nth(r, "handle_mm_fault", 0);
                r[i].fault_flags = Some(r[i].fault_flags.unwrap() | ff::VMA_LOCK);
            },
            expect: Expect::Div(Rule::FaultFlags),
        },
    ]);
}

#[test]
fn rule_fault_ret() {
    table(&[
        Row {
            name: "clean",
            series: Series::V6_12,
            scenario: ttm,
            tweak: none,
            expect: Expect::Clean(Rule::FaultRet),
        },
        Row {
            name: "VM_FAULT_WRITE is gone after 6.1",
            series: Series::V6_12,
            scenario: ttm,
            tweak: |r| {
                let i = main_fault(r, 0);
                r[i].ret = Some((vf::NOPAGE | 0x8) as i64);
            },
            expect: Expect::Div(Rule::FaultRet),
        },
        Row {
            name: "VM_FAULT_WRITE still exists on 6.1",
            series: Series::V6_1,
            scenario: ttm,
            tweak: |r| {
                let i = main_fault(r, 0);
                r[i].ret = Some((vf::NOPAGE | 0x8) as i64);
            },
            expect: Expect::Clean(Rule::FaultRet),
        },
        Row {
            name: "RETRY without ALLOW_RETRY",
            series: Series::V6_1,
            scenario: ttm,
            tweak: |r| {
                let i = main_fault(r, 0);
                r[i].ret = Some(vf::RETRY as i64);
                r[i].fault_flags = Some(ff::USER | ff::WRITE);
            },
            expect: Expect::Div(Rule::FaultRet),
        },
    ]);
}

#[test]
fn rule_fault_outcome() {
    table(&[
        Row {
            name: "clean",
            series: Series::V6_12,
            scenario: ttm,
            tweak: none,
            expect: Expect::Clean(Rule::FaultOutcome),
        },
        Row {
            name: "a fault reports SIGBUS, yet its page is mapped at unmap",
            series: Series::V6_12,
            scenario: ttm,
            tweak: |r| {
                let i = main_fault(r, 0);
                r[i].ret = Some(vf::SIGBUS as i64);
            },
            expect: Expect::Div(Rule::FaultOutcome),
        },
        Row {
            name: "NOPAGE from an anonymous vma",
            series: Series::V6_1,
            scenario: ttm,
            tweak: |r| {
                let i = main_fault(r, 0);
                r[i].driver = None;
                r[i].file_id = None;
                r[i].vma_flags = Some(0x73); // read|write|mayread|maywrite|mayexec: plain anonymous
            },
            expect: Expect::Div(Rule::FaultOutcome),
        },
    ]);
}

#[test]
fn rule_fault_sanitize() {
    fn no_maywrite(r: &mut [Record]) {
        let i = main_fault(r, 0);
        r[i].vma_flags = Some(r[i].vma_flags.unwrap() & !0x20);
    }
    table(&[
        Row {
            name: "writable shared vma",
            series: Series::V6_12,
            scenario: ttm,
            tweak: none,
            expect: Expect::Clean(Rule::FaultFlags),
        },
        Row {
            name: "write without VM_MAYWRITE reaches the driver",
            series: Series::V6_12,
            scenario: ttm,
            tweak: |r| no_maywrite(r),
            expect: Expect::Div(Rule::FaultSanitize),
        },
        Row {
            name: "write without VM_MAYWRITE gives SIGSEGV",
            series: Series::V6_12,
            scenario: ttm,
            tweak: |r| {
                let i = main_fault(r, 0);
                r[i].vma_flags = Some(r[i].vma_flags.unwrap() & !0x20);
                r[i].ret = Some(vf::SIGSEGV as i64);
                let (id, addr) = (r[i].id, r[i].address);
                remove_below(r, id);
                never_mapped(r, addr);
            },
            expect: Expect::Clean(Rule::FaultSanitize),
        },
        Row {
            name: "6.1 has no such check",
            series: Series::V6_1,
            scenario: ttm,
            tweak: |r| no_maywrite(r),
            expect: Expect::Clean(Rule::FaultFlags),
        },
    ]);
}

/// Removes every call that ran inside call `id`.
/// A failed fault maps nothing: drop the later sightings of its page (fault.outcome).
fn never_mapped(r: &mut Vec<Record>, addr: Option<u64>) {
    let page = addr.map(|a| a >> 12);
    r.retain(|x| !(x.hook == "vm_normal_page" && x.address.map(|a| a >> 12) == page));
}

fn remove_below(r: &mut Vec<Record>, id: u64) {
    let mut gone = vec![id];
    while let Some(p) = gone.pop() {
        let kids: Vec<u64> = r.iter().filter(|x| x.parent == p).map(|x| x.id).collect();
        r.retain(|x| x.parent != p);
        gone.extend(kids);
    }
}

#[test]
fn rule_fault_vma_lock() {
    table(&[
        Row {
            name: "RETRY then mmap_lock",
            series: Series::V6_12,
            scenario: ttm,
            tweak: none,
            expect: Expect::Clean(Rule::FaultVmaLock),
        },
        Row {
            name: "a VMA-lock attempt that did not RETRY is followed by a mmap_lock fault",
            series: Series::V6_12,
            scenario: ttm,
            tweak: |r| {
                let i = nth(r, "handle_mm_fault", 0);
                r[i].ret = Some(vf::NOPAGE as i64);
            },
            expect: Expect::Div(Rule::FaultVmaLock),
        },
        Row {
            name: "the driver is called under the VMA lock after it was seen lacking ->map_pages",
            series: Series::V6_16,
            scenario: ttm,
            tweak: |r| driver_call_under_vma_lock(r, |_, _| {}),
            expect: Expect::Div(Rule::FaultVmaLock),
        },
        Row {
            name: "a huge_fault under the VMA lock calls the driver whatever ->map_pages says",
            series: Series::V6_12,
            scenario: ttm,
            tweak: |r| {
                // As above, but page 2's insert is a PMD insert (device-dax's huge_fault).
                driver_call_under_vma_lock(r, |r, m| {
                    let k = (0..m)
                        .rev()
                        .find(|&k| r[k].hook == "vmf_insert_pfn_prot")
                        .unwrap();
                    r[k].hook = "vmf_insert_pfn_pmd".into();
                })
            },
            expect: Expect::NotDiv(Rule::FaultVmaLock),
        },
    ]);
}

#[test]
fn rule_fault_insert_result() {
    table(&[
        Row {
            name: "clean",
            series: Series::V6_12,
            scenario: ttm,
            tweak: none,
            expect: Expect::Clean(Rule::FaultInsertResult),
        },
        Row {
            name: "SIGBUS after a successful insert",
            series: Series::V6_1,
            scenario: ttm,
            tweak: |r| {
                let i = main_fault(r, 1);
                r[i].ret = Some(vf::SIGBUS as i64);
            },
            expect: Expect::Div(Rule::FaultInsertResult),
        },
    ]);
}

#[test]
fn rule_insert_vma_flags() {
    table(&[
        Row {
            name: "VM_PFNMAP",
            series: Series::V6_12,
            scenario: ttm,
            tweak: none,
            expect: Expect::Clean(Rule::InsertVmaFlags),
        },
        Row {
            name: "no VM_PFNMAP/VM_MIXEDMAP",
            series: Series::V6_12,
            scenario: ttm,
            tweak: |r| {
                let i = nth(r, "vmf_insert_pfn_prot", 0);
                r[i].vma_flags = Some(r[i].vma_flags.unwrap() & !0x400);
            },
            expect: Expect::Div(Rule::InsertVmaFlags),
        },
        Row {
            name: "a PMD insert into a vma with neither flag needs a devmap pfn_t",
            series: Series::V6_12,
            scenario: ttm,
            tweak: |r| {
                let i = nth(r, "vmf_insert_pfn_prot", 0);
                r[i].hook = "vmf_insert_pfn_pmd".into();
                r[i].vma_flags = Some(r[i].vma_flags.unwrap() & !0x400);
                r[i].pfn_flags = Some(pfn_t::DEV);
            },
            expect: Expect::Div(Rule::InsertVmaFlags),
        },
        Row {
            name: "both flags",
            series: Series::V6_1,
            scenario: ttm,
            tweak: |r| {
                let i = nth(r, "vmf_insert_pfn_prot", 1);
                r[i].vma_flags = Some(r[i].vma_flags.unwrap() | 0x1000_0000);
            },
            expect: Expect::Div(Rule::InsertVmaFlags),
        },
        Row {
            name: "COW VM_PFNMAP",
            series: Series::V6_16,
            scenario: ttm,
            tweak: |r| {
                let i = nth(r, "vmf_insert_pfn_prot", 0);
                r[i].vma_flags = Some(r[i].vma_flags.unwrap() & !0x8);
            },
            expect: Expect::Div(Rule::InsertVmaFlags),
        },
    ]);
}

fn as_mixed(r: &mut [Record]) {
    for x in r.iter_mut() {
        if x.hook == "vmf_insert_pfn_prot" {
            x.hook = "vmf_insert_mixed".into();
        }
        if let Some(f) = x.vma_flags
            && x.driver.as_deref() == Some(TTM)
        {
            x.vma_flags = Some((f & !0x400) | 0x1000_0000);
        }
    }
}

/// vmf_insert_mixed of the first fault's pfn, with `flags`, into a vma with neither flag.
fn mixed_into_plain_vma(r: &mut [Record], flags: Option<u64>) {
    as_mixed(r);
    let i = nth(r, "vmf_insert_mixed", 0);
    r[i].vma_flags = Some(r[i].vma_flags.unwrap() & !0x1000_0000);
    r[i].pfn_flags = flags;
}

#[test]
fn rule_insert_mixed() {
    table(&[
        Row {
            name: "VM_MIXEDMAP",
            series: Series::V6_12,
            scenario: ttm,
            tweak: |r| as_mixed(r),
            expect: Expect::Clean(Rule::InsertMixed),
        },
        Row {
            name: "6.12: not VM_MIXEDMAP must be SIGBUS",
            series: Series::V6_12,
            scenario: ttm,
            tweak: |r| {
                as_mixed(r);
                let i = nth(r, "vmf_insert_mixed", 0);
                r[i].vma_flags = Some(r[i].vma_flags.unwrap() & !0x1000_0000);
            },
            expect: Expect::Div(Rule::InsertMixed),
        },
        Row {
            name: "6.12: not VM_MIXEDMAP and SIGBUS",
            series: Series::V6_12,
            scenario: ttm,
            tweak: |r| {
                as_mixed(r);
                let i = nth(r, "vmf_insert_mixed", 0);
                r[i].vma_flags = Some(r[i].vma_flags.unwrap() & !0x1000_0000);
                r[i].ret = Some(vf::SIGBUS as i64);
                let (id, addr) = (r[i].id, r[i].address);
                remove_below(r, id);
                never_mapped(r, addr);
                let f = r
                    .iter()
                    .position(|x| {
                        x.hook == "handle_mm_fault"
                            && x.fault_flags.is_some_and(|f| f & ff::VMA_LOCK == 0)
                    })
                    .unwrap();
                r[f].ret = Some(vf::SIGBUS as i64);
            },
            expect: Expect::Clean(Rule::InsertMixed),
        },
        Row {
            name: "6.12: a devmap pfn_t needs no VM_MIXEDMAP (device-dax)",
            series: Series::V6_12,
            scenario: ttm,
            tweak: |r| {
                mixed_into_plain_vma(r, Some(pfn_t::DEVMAP));
                // insert_pfn maps a devmap pfn_t with a devmap PTE, special as well on x86
                // (pte_mkdevmap): so does the PTE the zap later shows (6.12: bit 57).
                let i = nth(r, "vmf_insert_mixed", 0);
                let a = r[i].address;
                for x in r
                    .iter_mut()
                    .filter(|x| x.hook == "vm_normal_page" && x.address == a)
                {
                    x.pte = x.pte.map(|v| v | pte::SPECIAL | 1 << 57);
                }
            },
            expect: Expect::Clean(Rule::InsertMixed),
        },
        Row {
            name: "6.1: nor does a PFN_SPECIAL one",
            series: Series::V6_1,
            scenario: ttm,
            tweak: |r| mixed_into_plain_vma(r, Some(pfn_t::SPECIAL)),
            expect: Expect::Clean(Rule::InsertMixed),
        },
        Row {
            name: "6.12: PFN_DEV without PFN_MAP is no devmap: SIGBUS expected",
            series: Series::V6_12,
            scenario: |b| {
                // VRAM outside System RAM: surely not the zero pfn.
                b.system_ram = vec![[0x100, 0x8_0000]];
                ttm(b);
            },
            tweak: |r| mixed_into_plain_vma(r, Some(pfn_t::DEV)),
            expect: Expect::Div(Rule::InsertMixed),
        },
        Row {
            name: "6.12: no flags and not the zero pfn: SIGBUS expected",
            series: Series::V6_12,
            scenario: |b| {
                b.zero_pfn = Some(0x7c4b);
                ttm(b);
            },
            tweak: |r| mixed_into_plain_vma(r, Some(0)),
            expect: Expect::Div(Rule::InsertMixed),
        },
        Row {
            name: "6.12: no flags, System RAM unknown: may be the zero pfn (an fs-dax hole)",
            series: Series::V6_12,
            scenario: ttm,
            tweak: |r| mixed_into_plain_vma(r, Some(0)),
            expect: Expect::NotCheckable(Rule::InsertMixed),
        },
        Row {
            name: "6.1: not VM_MIXEDMAP is a BUG",
            series: Series::V6_1,
            scenario: ttm,
            tweak: |r| {
                as_mixed(r);
                let i = nth(r, "vmf_insert_mixed", 0);
                r[i].vma_flags = Some(r[i].vma_flags.unwrap() & !0x1000_0000);
                r[i].ret = Some(vf::SIGBUS as i64);
            },
            expect: Expect::Div(Rule::InsertMixed),
        },
    ]);
}

#[test]
fn rule_insert_ret() {
    table(&[
        Row {
            name: "clean",
            series: Series::V6_1,
            scenario: ttm,
            tweak: none,
            expect: Expect::Clean(Rule::InsertRet),
        },
        Row {
            name: "SIGBUS inside the vma with a present prot",
            series: Series::V6_1,
            scenario: ttm,
            tweak: |r| {
                let i = nth(r, "vmf_insert_pfn_prot", 0);
                r[i].ret = Some(vf::SIGBUS as i64);
            },
            expect: Expect::Div(Rule::InsertRet),
        },
        Row {
            name: "NOPAGE outside the vma",
            series: Series::V6_12,
            scenario: ttm,
            tweak: |r| {
                let i = nth(r, "vmf_insert_pfn_prot", 0);
                r[i].address = Some(0x1000);
            },
            expect: Expect::Div(Rule::InsertRet),
        },
        Row {
            name: "vmf_insert_pfn passes the inner result through",
            series: Series::V6_12,
            scenario: vgem,
            tweak: |r| {
                let i = nth(r, "vmf_insert_pfn", 0);
                r[i].ret = Some(vf::OOM as i64);
            },
            expect: Expect::Div(Rule::InsertRet),
        },
    ]);
}

#[test]
fn rule_insert_pat_lookup() {
    table(&[
        Row {
            name: "clean",
            series: Series::V6_16,
            scenario: ttm,
            tweak: none,
            expect: Expect::Clean(Rule::InsertPatLookup),
        },
        Row {
            name: "lookup lost",
            series: Series::V6_1,
            scenario: ttm,
            tweak: |r| {
                let i = nth(r, "track_pfn_insert", 1);
                r.remove(i);
            },
            expect: Expect::Div(Rule::InsertPatLookup),
        },
        Row {
            name: "6.16 lookup lost",
            series: Series::V6_16,
            scenario: ttm,
            tweak: |r| {
                let i = nth(r, "pfnmap_setup_cachemode", 0);
                r.remove(i);
            },
            expect: Expect::Div(Rule::InsertPatLookup),
        },
    ]);
}

#[test]
fn rule_pat_lookup() {
    table(&[
        Row {
            name: "RAM page made WC, looked up WC",
            series: Series::V6_12,
            scenario: vgem,
            tweak: none,
            expect: Expect::Clean(Rule::PatLookup),
        },
        Row {
            name: "VRAM without a reservation: not checkable",
            series: Series::V6_12,
            scenario: ttm,
            tweak: none,
            expect: Expect::NotCheckable(Rule::PatLookup),
        },
        Row {
            name: "lookup disagrees with the reservation",
            series: Series::V6_12,
            scenario: vgem,
            tweak: |r| {
                let i = nth(r, "track_pfn_insert", 0);
                r[i].cache_out = Some("UC-".into());
                r[i].prot_out = Some((r[i].prot_out.unwrap() & !pte::CACHE_MASK) | pte::PCD);
            },
            expect: Expect::Div(Rule::PatLookup),
        },
        Row {
            name: "lookup changed more than the cache bits",
            series: Series::V6_1,
            scenario: ttm,
            tweak: |r| {
                let i = nth(r, "track_pfn_insert", 0);
                r[i].prot_out = Some(r[i].prot_out.unwrap() & !pte::RW);
            },
            expect: Expect::Div(Rule::PatLookup),
        },
    ]);
}

#[test]
fn rule_pat_reserve() {
    table(&[
        Row {
            name: "second mapping gets the first's type",
            series: Series::V6_12,
            scenario: bar_twice,
            tweak: none,
            expect: Expect::Clean(Rule::PatReserve),
        },
        Row {
            name: "second reservation ignores the overlap",
            series: Series::V6_12,
            scenario: bar_twice,
            tweak: |r| {
                let i = nth(r, "memtype_reserve", 1);
                r[i].cache_out = Some("UC-".into());
            },
            expect: Expect::Div(Rule::PatReserve),
        },
        Row {
            name: "ISA hole is WB",
            series: Series::V6_1,
            scenario: isa,
            tweak: |r| {
                let i = nth(r, "memtype_reserve", 0);
                r[i].cache_out = Some("UC-".into());
            },
            expect: Expect::Div(Rule::PatReserve),
        },
    ]);
}

#[test]
fn rule_pat_free() {
    table(&[
        Row {
            name: "clean",
            series: Series::V6_12,
            scenario: bar,
            tweak: none,
            expect: Expect::Clean(Rule::PatFree),
        },
        Row {
            name: "freeing a held reservation fails",
            series: Series::V6_12,
            scenario: bar,
            tweak: |r| {
                let i = nth(r, "memtype_free", 0);
                r[i].ret = Some(errno::EINVAL);
            },
            expect: Expect::Div(Rule::PatFree),
        },
    ]);
}

#[test]
fn rule_pat_remap() {
    table(&[
        Row {
            name: "clean",
            series: Series::V6_1,
            scenario: bar,
            tweak: none,
            expect: Expect::Clean(Rule::PatRemap),
        },
        Row {
            name: "6.16 clean",
            series: Series::V6_16,
            scenario: bar,
            tweak: none,
            expect: Expect::Clean(Rule::PatRemap),
        },
        Row {
            name: "prot does not take the reservation's type",
            series: Series::V6_12,
            scenario: bar_twice,
            tweak: |r| {
                let i = nth(r, "track_pfn_remap", 1);
                r[i].cache_out = Some("UC-".into());
                r[i].prot_out = Some((r[i].prot_out.unwrap() & !pte::CACHE_MASK) | pte::PCD);
            },
            expect: Expect::Div(Rule::PatRemap),
        },
        Row {
            name: "memremap_pages: no vma reserves the whole range",
            series: Series::V6_12,
            scenario: memremap,
            tweak: none,
            expect: Expect::Clean(Rule::PatRemap),
        },
        Row {
            name: "memremap_pages' reservation decides the lookups in its range",
            series: Series::V6_12,
            scenario: memremap,
            tweak: |r| {
                let i = nth(r, "track_pfn_insert", 0);
                r[i].cache_out = Some("UC-".into());
                r[i].prot_out = Some(r[i].prot_out.unwrap() | pte::PCD);
            },
            expect: Expect::Div(Rule::PatLookup),
        },
        Row {
            name: "6.16 memremap_pages through pfnmap_track",
            series: Series::V6_16,
            scenario: memremap,
            tweak: none,
            expect: Expect::Clean(Rule::PatRemap),
        },
        Row {
            name: "whole remap of the ISA hole without a reservation",
            series: Series::V6_12,
            scenario: |b| {
                bar(b);
                isa(b);
            },
            tweak: |r| {
                let i = nth(r, "memtype_reserve", 1);
                r.remove(i);
            },
            expect: Expect::Div(Rule::PatRemap),
        },
    ]);
}

#[test]
fn rule_pat_untrack() {
    table(&[
        Row {
            name: "clean",
            series: Series::V6_12,
            scenario: bar,
            tweak: none,
            expect: Expect::Clean(Rule::PatUntrack),
        },
        Row {
            name: "free lost",
            series: Series::V6_12,
            scenario: bar,
            tweak: |r| {
                let i = last(r, "memtype_free");
                r.remove(i);
            },
            expect: Expect::Div(Rule::PatUntrack),
        },
        Row {
            name: "6.16 free lost after an untrack showed its free",
            series: Series::V6_16,
            scenario: bar_twice,
            tweak: |r| {
                let i = last(r, "memtype_free");
                r.remove(i);
            },
            expect: Expect::Div(Rule::PatUntrack),
        },
        Row {
            name: "6.16 the only untrack shows no free: may be inlined (Debian 7.2)",
            series: Series::V6_16,
            scenario: bar,
            tweak: |r| {
                let i = last(r, "memtype_free");
                r.remove(i);
            },
            expect: Expect::NotCheckable(Rule::PatUntrack),
        },
        Row {
            name: "memunmap_pages frees its range",
            series: Series::V6_1,
            scenario: memremap,
            tweak: none,
            expect: Expect::Clean(Rule::PatUntrack),
        },
        Row {
            name: "memunmap_pages frees another size",
            series: Series::V6_12,
            scenario: memremap,
            tweak: |r| {
                let i = last(r, "memtype_free");
                r[i].size = Some(PAGE_SIZE);
            },
            expect: Expect::Div(Rule::PatUntrack),
        },
        Row {
            name: "wrong size freed",
            series: Series::V6_1,
            scenario: bar,
            tweak: |r| {
                let i = last(r, "memtype_free");
                r[i].size = Some(PAGE_SIZE);
            },
            expect: Expect::Div(Rule::PatUntrack),
        },
    ]);
}

#[test]
fn rule_remap_ret() {
    table(&[
        Row {
            name: "clean",
            series: Series::V6_12,
            scenario: cow,
            tweak: none,
            expect: Expect::Clean(Rule::RemapRet),
        },
        Row {
            name: "fails although PAT agreed",
            series: Series::V6_12,
            scenario: bar,
            tweak: |r| {
                let i = nth(r, "remap_pfn_range", 0);
                r[i].ret = Some(errno::EINVAL);
            },
            expect: Expect::Div(Rule::RemapRet),
        },
        Row {
            name: "partial remap of a COW vma succeeds",
            series: Series::V6_1,
            scenario: cow,
            tweak: |r| {
                let i = nth(r, "remap_pfn_range", 0);
                r[i].size = Some(PAGE_SIZE);
            },
            expect: Expect::Div(Rule::RemapRet),
        },
        Row {
            name: "no PAT track",
            series: Series::V6_12,
            scenario: bar,
            tweak: |r| {
                let i = nth(r, "track_pfn_remap", 0);
                r.remove(i);
            },
            expect: Expect::Div(Rule::RemapRet),
        },
    ]);
}

#[test]
fn rule_remap_vma() {
    table(&[
        Row {
            name: "clean",
            series: Series::V6_12,
            scenario: bar,
            tweak: none,
            expect: Expect::Clean(Rule::RemapVma),
        },
        Row {
            name: "VM_IO missing afterwards",
            series: Series::V6_12,
            scenario: bar,
            tweak: |r| {
                let i = nth(r, "untrack_pfn", 0);
                r[i].vma_flags = Some(r[i].vma_flags.unwrap() & !0x4000);
            },
            expect: Expect::Div(Rule::RemapVma),
        },
        Row {
            name: "COW vm_pgoff not the pfn",
            series: Series::V6_16,
            scenario: cow,
            tweak: |r| {
                for x in r.iter_mut().filter(|x| x.hook == "handle_mm_fault") {
                    x.vma_pgoff = Some(0);
                }
            },
            expect: Expect::Div(Rule::RemapVma),
        },
    ]);
}

#[test]
fn rule_pte_state() {
    table(&[
        Row {
            name: "clean",
            series: Series::V6_12,
            scenario: ttm,
            tweak: none,
            expect: Expect::Clean(Rule::PteState),
        },
        Row {
            name: "zap sees another cache mode than PAT answered",
            series: Series::V6_12,
            scenario: ttm,
            tweak: |r| {
                let i = nth(r, "vm_normal_page", 0);
                r[i].pte = Some((r[i].pte.unwrap() & !pte::CACHE_MASK) | pte::PWT);
            },
            expect: Expect::Div(Rule::PteState),
        },
        Row {
            name: "zap sees another pfn than remapped",
            series: Series::V6_1,
            scenario: bar,
            tweak: |r| {
                let i = nth(r, "vm_normal_page", 2);
                r[i].pte = Some(r[i].pte.unwrap() + (7 << 12));
            },
            expect: Expect::Div(Rule::PteState),
        },
        Row {
            name: "the COWed page is still special",
            series: Series::V6_12,
            scenario: cow,
            tweak: |r| {
                let i = last(r, "vm_normal_page");
                let j = (0..r.len())
                    .rfind(|&k| r[k].hook == "vm_normal_page" && r[k].page == Some(true))
                    .unwrap_or(i);
                r[j].pte = Some(r[j].pte.unwrap() | pte::SPECIAL);
                r[j].page = Some(false);
            },
            expect: Expect::Div(Rule::PteState),
        },
        Row {
            name: "the zero page of an anonymous vma later holds a real page",
            series: Series::V6_16,
            scenario: zero_page_then_page,
            tweak: none,
            expect: Expect::NotCheckable(Rule::PteState),
        },
        Row {
            name: "a special PTE of a PFN map later reads as a real page",
            series: Series::V6_16,
            scenario: zero_page_then_page,
            tweak: |r| {
                for x in r.iter_mut() {
                    x.vma_flags = Some(x.vma_flags.unwrap() | 0x400);
                }
            },
            expect: Expect::Div(Rule::PteState),
        },
    ]);
}

/// An anonymous private vma whose page first maps the shared zero page (special, no struct
/// page), then a real page, with no traced fault or zap in between: the 7.2 test box recorded
/// this across an exec that reused the old mm's and vma's memory.
fn zero_page_then_page(b: &mut TraceBuilder) {
    let v = b.vma(0x7f00_0000_0000, 4, false, 0, None);
    for (pte_v, page) in [
        (0x8000_0000_1464_8225u64, false),
        (0x8000_0000_05bf_5867, true),
    ] {
        b.leaf("vm_normal_page", |r| {
            TraceBuilder::set_vma(r, &v);
            r.file_id = None;
            r.address = Some(v.start + PAGE_SIZE);
            r.pte = Some(pte_v);
            r.pfn = Some((pte_v & 0x000f_ffff_ffff_f000) >> 12);
            r.page = Some(page);
        });
    }
}

#[test]
fn rule_vnp_special() {
    table(&[
        Row {
            name: "clean",
            series: Series::V6_1,
            scenario: bar,
            tweak: none,
            expect: Expect::Clean(Rule::VnpSpecial),
        },
        Row {
            name: "a page for a special PTE",
            series: Series::V6_12,
            scenario: bar,
            tweak: |r| {
                let i = nth(r, "vm_normal_page", 0);
                r[i].page = Some(true);
            },
            expect: Expect::Div(Rule::VnpSpecial),
        },
    ]);
}

/// The first vm_normal_page's vma without VM_WRITE, its PTE still writable.
#[allow(clippy::ptr_arg)] // a Tweak
fn first_vnp_without_vm_write(r: &mut Vec<Record>) {
    let i = nth(r, "vm_normal_page", 0);
    r[i].vma_flags = r[i].vma_flags.map(|f| f & !0x2);
}

/// In the `cow` scenario, vm_normal_page #0 is the COW fault's and #1 the zap's look at page 0,
/// still the raw PFN: made writable.
#[allow(clippy::ptr_arg)] // a Tweak
fn cow_raw_pfn_writable(r: &mut Vec<Record>) {
    let i = nth(r, "vm_normal_page", 1);
    r[i].pte = r[i].pte.map(|v| v | pte::RW);
}

#[test]
fn rule_pte_writable() {
    table(&[
        Row {
            name: "clean: COW vma, raw PFNs read-only, the copy writable",
            series: Series::V6_1,
            scenario: cow,
            tweak: none,
            expect: Expect::Clean(Rule::PteWritable),
        },
        Row {
            name: "clean: fork copies a shared BAR's writable PTEs",
            series: Series::V6_1,
            scenario: fork,
            tweak: none,
            expect: Expect::Clean(Rule::PteWritable),
        },
        Row {
            name: "fork sees a writable PTE in a vma without VM_WRITE",
            series: Series::V6_12,
            scenario: fork,
            tweak: first_vnp_without_vm_write,
            expect: Expect::Div(Rule::PteWritable),
        },
        Row {
            name: "a zap is not judged on VM_WRITE (mprotect may be half way)",
            series: Series::V6_12,
            scenario: bar,
            tweak: first_vnp_without_vm_write,
            expect: Expect::Quiet(Rule::PteWritable),
        },
        Row {
            name: "writable raw PFN in a COW vma",
            series: Series::V6_16,
            scenario: cow,
            tweak: cow_raw_pfn_writable,
            expect: Expect::Div(Rule::PteWritable),
        },
        Row {
            name: "writable raw PFN in a COW vma, seen outside any traced context",
            series: Series::V6_16,
            scenario: cow,
            tweak: |r| {
                cow_raw_pfn_writable(r);
                let i = nth(r, "vm_normal_page", 1);
                r[i].parent = 0;
            },
            expect: Expect::Div(Rule::PteWritable),
        },
        Row {
            name: "a call outside fault and fork (mprotect's batching) is not judged on VM_WRITE",
            series: Series::V6_16,
            scenario: bar,
            tweak: |r| later_vnp(r, |x| x.vma_flags = x.vma_flags.map(|f| f & !0x2)),
            expect: Expect::Quiet(Rule::PteWritable),
        },
    ]);
}

/// Page 2's VMA-lock attempt turns into the driver call: the attempt is dropped and the
/// mmap_lock fault marked as a VMA-lock one. `edit` gets the records first, with that fault's
/// index.
fn driver_call_under_vma_lock(r: &mut Vec<Record>, edit: impl FnOnce(&mut [Record], usize)) {
    let a = nth(r, "handle_mm_fault", 2);
    let m = nth(r, "handle_mm_fault", 3);
    r[m].fault_flags = Some(r[m].fault_flags.unwrap() | ff::VMA_LOCK);
    edit(r, m);
    r.remove(a);
}

/// The first vm_normal_page asked again after everything else, as a root call, `edit`ed.
fn later_vnp(r: &mut Vec<Record>, edit: impl FnOnce(&mut Record)) {
    let i = nth(r, "vm_normal_page", 0);
    let mut x = r[i];
    x.id = 9_999;
    x.parent = 0;
    x.ts_ns = r.last().unwrap().ts_ns + 10;
    edit(&mut x);
    r.push(x);
}

fn extra_vnp(r: &mut Vec<Record>, pfn: u64) {
    later_vnp(r, |x| {
        x.pte = Some((pfn << 12) | pte::PRESENT);
        x.pfn = Some(pfn);
        x.page = Some(false);
        x.file_id = None;
    });
}

#[test]
fn rule_vnp_normal() {
    table(&[
        Row {
            name: "clean",
            series: Series::V6_12,
            scenario: truncate,
            tweak: none,
            expect: Expect::Clean(Rule::VnpNormal),
        },
        Row {
            name: "no page below a pfn seen with a page",
            series: Series::V6_12,
            scenario: truncate,
            tweak: |r| extra_vnp(r, 0x4_0000),
            expect: Expect::Div(Rule::VnpNormal),
        },
        Row {
            name: "no page above every pfn seen: a bad-pte finding",
            series: Series::V6_12,
            scenario: truncate,
            tweak: |r| extra_vnp(r, 0x9_0000),
            expect: Expect::Find(Rule::FindBadNonSpecial),
        },
    ]);
}

#[test]
fn rule_vnp_linear() {
    table(&[
        Row {
            name: "COW remap is linear, the copy is not",
            series: Series::V6_12,
            scenario: cow,
            tweak: none,
            expect: Expect::Clean(Rule::VnpLinear),
        },
        Row {
            name: "a special PTE off the linear pfn",
            series: Series::V6_1,
            scenario: cow,
            tweak: |r| {
                let i = nth(r, "vm_normal_page", 1);
                r[i].pte = Some(r[i].pte.unwrap() + (0x40 << 12));
            },
            expect: Expect::Div(Rule::VnpLinear),
        },
    ]);
}

#[test]
fn rule_fork_copy() {
    table(&[
        Row {
            name: "clean",
            series: Series::V6_12,
            scenario: fork,
            tweak: none,
            expect: Expect::Clean(Rule::ForkCopy),
        },
        Row {
            name: "COWed first page",
            series: Series::V6_1,
            scenario: fork_cow0,
            tweak: none,
            expect: Expect::Find(Rule::FindForkCow),
        },
        Row {
            name: "fork fails though the strict reservation succeeded",
            series: Series::V6_12,
            scenario: fork,
            tweak: |r| {
                let i = nth(r, "track_pfn_copy", 0);
                r[i].ret = Some(errno::EINVAL);
            },
            expect: Expect::Div(Rule::ForkCopy),
        },
        Row {
            name: "no track_pfn_copy",
            series: Series::V6_12,
            scenario: fork,
            tweak: |r| {
                let i = nth(r, "track_pfn_copy", 0);
                r.remove(i);
            },
            expect: Expect::Div(Rule::ForkCopy),
        },
        Row {
            name: "reservation at another pfn",
            series: Series::V6_1,
            scenario: fork,
            tweak: |r| {
                let i = nth(r, "memtype_reserve", 1);
                r[i].pfn = Some(0xfe001);
            },
            expect: Expect::Div(Rule::ForkCopy),
        },
    ]);
}

#[test]
fn rule_unmap_untrack() {
    table(&[
        Row {
            name: "clean",
            series: Series::V6_12,
            scenario: ttm,
            tweak: none,
            expect: Expect::Clean(Rule::UnmapUntrack),
        },
        Row {
            name: "zap without untrack",
            series: Series::V6_12,
            scenario: ttm,
            tweak: |r| {
                let i = nth(r, "untrack_pfn", 0);
                r.remove(i);
            },
            expect: Expect::Div(Rule::UnmapUntrack),
        },
        Row {
            name: "zap still sees VM_PAT",
            series: Series::V6_1,
            scenario: bar,
            tweak: |r| {
                let i = nth(r, "unmap_page_range", 0);
                r[i].vma_flags = Some(r[i].vma_flags.unwrap() | 0x0100_0000);
            },
            expect: Expect::Div(Rule::UnmapUntrack),
        },
    ]);
}

#[test]
fn rule_truncate_mapped() {
    table(&[
        Row {
            name: "clean",
            series: Series::V6_12,
            scenario: truncate,
            tweak: none,
            expect: Expect::Clean(Rule::VnpNormal),
        },
        Row {
            name: "PTE after the page left the cache",
            series: Series::V6_12,
            scenario: truncate,
            tweak: |r| later_vnp(r, |_| {}),
            expect: Expect::Div(Rule::TruncateMapped),
        },
        Row {
            name: "the pfn came back to the cache at the same index, then was mapped",
            series: Series::V6_12,
            scenario: |b| {
                truncate(b);
                b.add_to_page_cache(0x5_0000, 1);
            },
            tweak: |r| later_vnp(r, |_| {}),
            expect: Expect::Clean(Rule::VnpNormal),
        },
    ]);
}

#[test]
fn rule_find_pfn_after_truncate() {
    table(&[
        Row {
            name: "purged while a driver still maps it",
            series: Series::V6_12,
            scenario: purged_while_mapped,
            tweak: none,
            expect: Expect::Find(Rule::FindPfnAfterTruncate),
        },
        Row {
            name: "purged while mapped, 6.16+",
            series: Series::V6_16,
            scenario: purged_while_mapped,
            tweak: none,
            expect: Expect::Find(Rule::FindPfnAfterTruncate),
        },
        Row {
            name: "purged after the mapping went",
            series: Series::V6_12,
            scenario: purged_after_unmap,
            tweak: none,
            expect: Expect::Quiet(Rule::FindPfnAfterTruncate),
        },
        Row {
            name: "the pfn reused by a later mapping",
            series: Series::V6_1,
            scenario: purged_then_reused,
            tweak: none,
            expect: Expect::Quiet(Rule::FindPfnAfterTruncate),
        },
    ]);
}

#[test]
fn rule_trace_fault_vma() {
    table(&[
        Row {
            name: "tracepoint vma holds the address",
            series: Series::V6_12,
            scenario: ttm,
            tweak: none,
            expect: Expect::Clean(Rule::TraceFaultVma),
        },
        Row {
            name: "tracepoint vma below the address (a stale cache entry)",
            series: Series::V6_1,
            scenario: ttm,
            tweak: |r| {
                let i = nth(r, "exceptions:page_fault_user", 0);
                let a = r[i].address.unwrap();
                r[i].vma_start = Some(a - 2 * PAGE_SIZE);
                r[i].vma_end = Some(a & !(PAGE_SIZE - 1));
            },
            expect: Expect::Div(Rule::TraceFaultVma),
        },
        Row {
            name: "a fault outside every vma has none",
            series: Series::V6_16,
            scenario: ttm,
            tweak: |r| {
                let i = nth(r, "exceptions:page_fault_user", 0);
                r[i].vma_start = None;
                r[i].vma_end = None;
            },
            expect: Expect::NotCheckable(Rule::TraceFaultVma),
        },
    ]);
}

#[test]
fn rule_trace_parent() {
    fn drop_fault(r: &mut Vec<Record>) {
        let i = main_fault(r, 0);
        r.remove(i);
    }
    table(&[Row {
        name: "lost parent, no loss counted",
        series: Series::V6_12,
        scenario: ttm,
        tweak: drop_fault,
        expect: Expect::Div(Rule::TraceParent),
    }]);
    // The tracer's counters come with the trace, not as records: the engine is told them.
    let mut b = TraceBuilder::new(Series::V6_12);
    ttm(&mut b);
    let mut recs = b.records();
    drop_fault(&mut recs);
    let mut counters = pfnscope_trace::LossCounters::default();
    counters.update(pfnscope_trace::CpuCounters {
        dropped: 1,
        ..Default::default()
    });
    let mut e = crate::Engine::new(
        &b.meta(),
        KernelRules::for_series(Series::V6_12),
        crate::Results::new(),
    );
    e.push_all(recs);
    e.set_losses(&counters);
    let (res, _, _) = e.finish();
    let t = res.tallies[Rule::TraceParent as usize];
    assert!(
        t.failed == 0 && t.not_checkable > 0,
        "lost parent, tracer counted a drop: {t:?}"
    );
}

#[test]
fn finding_tables() {
    table(&[
        Row {
            name: "WC downgraded",
            series: Series::V6_12,
            scenario: ttm,
            tweak: none,
            expect: Expect::Find(Rule::FindWcDowngrade),
        },
        Row {
            name: "RAM pages WC",
            series: Series::V6_1,
            scenario: vgem,
            tweak: |r| {
                // Without the set_pages_array_wc reservation in the trace the WC answer is unexplained.
                let i = nth(r, "memtype_reserve", 0);
                r.remove(i);
            },
            expect: Expect::Find(Rule::FindRamMemtype),
        },
        Row {
            name: "insert UC- and remap WC of one pfn",
            series: Series::V6_12,
            scenario: alias,
            tweak: none,
            expect: Expect::Find(Rule::FindAlias),
        },
        Row {
            name: "fork copy fails after the strict reservation: leaked",
            series: Series::V6_12,
            scenario: fork,
            tweak: |r| {
                let i = nth(r, "copy_page_range", 0);
                r[i].ret = Some(errno::ENOMEM);
            },
            expect: Expect::Find(Rule::FindLeak),
        },
        Row {
            name: "special PTE in a plain driver vma",
            series: Series::V6_12,
            scenario: bar,
            tweak: |r| special_in_plain_vma(r, 0),
            expect: Expect::Find(Rule::FindBadSpecial),
        },
        Row {
            name: "6.12 devmap PTE (bit 57) in a plain vma: device-dax",
            series: Series::V6_12,
            scenario: bar,
            tweak: |r| special_in_plain_vma(r, 1 << 57),
            expect: Expect::Quiet(Rule::FindBadSpecial),
        },
        Row {
            name: "6.12 bit 58 is not devmap",
            series: Series::V6_12,
            scenario: bar,
            tweak: |r| special_in_plain_vma(r, 1 << 58),
            expect: Expect::Find(Rule::FindBadSpecial),
        },
        Row {
            name: "the zero pfn in a plain driver vma: an fs-dax hole",
            series: Series::V6_12,
            scenario: |b| {
                b.zero_pfn = Some(0xfe000);
                bar(b);
            },
            tweak: |r| special_in_plain_vma(r, 0),
            expect: Expect::Quiet(Rule::FindBadSpecial),
        },
        Row {
            name: "6.1 devmap is bit 58",
            series: Series::V6_1,
            scenario: bar,
            tweak: |r| special_in_plain_vma(r, 1 << 58),
            expect: Expect::Quiet(Rule::FindBadSpecial),
        },
    ]);
}

/// The first vm_normal_page of the trace moved into a driver vma that is neither VM_PFNMAP nor
/// VM_MIXEDMAP, its PTE given `bits` more.
fn special_in_plain_vma(r: &mut [Record], bits: u64) {
    let i = nth(r, "vm_normal_page", 0);
    r[i].vma_flags = Some(r[i].vma_flags.unwrap() & !0x400);
    r[i].vma_id = Some(77);
    r[i].pte = Some(r[i].pte.unwrap() | bits);
}

#[test]
fn no_finding_without_cause() {
    // A WC reservation honoured: no downgrade, no leak, no alias.
    let rep = run_row(&Row {
        name: "bar",
        series: Series::V6_12,
        scenario: bar,
        tweak: none,
        expect: Expect::Clean(Rule::PatRemap),
    });
    assert!(rep.findings.is_empty(), "{}", rep.to_human());
}

// ---- the classic bug classes, with the kernel's state at start known --------------------------

/// The test box guest's RAM (1 GiB): device memory above it.
const GUEST_RAM: [u64; 2] = [0x100, 0x40000];
/// An ivshmem-style BAR of device memory.
const BAR: u64 = 0xfd000;

fn dev_vma(b: &mut TraceBuilder, start: u64, pages: u64, driver: &str) -> crate::synth::Vma {
    let bits = b.bits;
    b.vma(
        start,
        pages,
        true,
        bits.pfnmap | bits.io | bits.dontexpand | bits.dontdump,
        Some(driver),
    )
}

/// A correct GPU-style driver: its aperture reserved WC at probe time, before the trace, then
/// WC inserts per page.
fn wc_aperture(b: &mut TraceBuilder) {
    b.started_with(&[GUEST_RAM], &[(BAR, BAR + 256, Cache::WC)], &[]);
    let mut v = dev_vma(b, 0x7f00_2000_0000, 4, "bugzoo_vm_ops [bugzoo]");
    for j in 0..4 {
        b.fault_insert(&v, v.start + j * PAGE_SIZE, BAR + j, Cache::WC, false);
    }
    b.munmap(&mut v);
}

/// The same driver, traced without the start state.
fn wc_aperture_unknown_start(b: &mut TraceBuilder) {
    wc_aperture(b);
    b.start_state = None;
}

/// RAM pages inserted WC into a VM_PFNMAP vma, nothing having set them WC.
fn ram_wc(b: &mut TraceBuilder) {
    b.started_with(&[GUEST_RAM], &[], &[]);
    let mut v = dev_vma(b, 0x7f00_2000_0000, 2, "bugzoo_vm_ops [bugzoo]");
    b.fault_insert(&v, v.start, 0x2_0000, Cache::WC, false);
    b.fault_insert(&v, v.start + PAGE_SIZE, 0x2_0001, Cache::WC, false);
    b.munmap(&mut v);
}

/// A TTM-style pool: RAM pages set WC before the trace, inserted WC.
fn wc_pool(b: &mut TraceBuilder) {
    b.started_with(&[GUEST_RAM], &[], &[(0x2_0000, 0x2_0010, Cache::WC)]);
    let mut v = dev_vma(b, 0x7f00_2000_0000, 2, TTM);
    b.fault_insert(&v, v.start, 0x2_0000, Cache::WC, false);
    b.fault_insert(&v, v.start + PAGE_SIZE, 0x2_0001, Cache::WC, false);
    b.munmap(&mut v);
}

/// `n` pages of device memory no reservation covers, inserted one fault each.
fn unreserved(b: &mut TraceBuilder, n: u64) {
    b.started_with(&[GUEST_RAM], &[], &[]);
    let mut v = dev_vma(b, 0x7f00_4000_0000, n, "bugzoo_vm_ops [bugzoo]");
    for j in 0..n {
        b.fault_insert(&v, v.start + j * PAGE_SIZE, BAR + j, Cache::UcMinus, false);
    }
    b.munmap(&mut v);
}

fn double_insert(b: &mut TraceBuilder, second: u64) {
    b.started_with(&[GUEST_RAM], &[(BAR, BAR + 16, Cache::WC)], &[]);
    let mut v = dev_vma(b, 0x7f00_2000_0000, 2, "bugzoo_vm_ops [bugzoo]");
    b.fault_inserts_at(&v, v.start, &[BAR, second], Cache::WC);
    b.munmap(&mut v);
}

fn nopage_faults(b: &mut TraceBuilder, n: usize) {
    b.started_with(&[GUEST_RAM], &[], &[]);
    let v = dev_vma(b, 0x7f00_2000_0000, 2, "bugzoo_vm_ops [bugzoo]");
    for _ in 0..n {
        b.fault_nopage(&v, v.start);
    }
}

/// A remap of device memory over a whole vma, then munmap of its first page, then the rest.
fn partial_untrack(b: &mut TraceBuilder) {
    b.started_with(&[GUEST_RAM], &[], &[]);
    let mut v = b.vma(0x7f00_1000_0000, 4, true, 0, Some("bugzoo_vm_ops [bugzoo]"));
    b.remap(&mut v, BAR, Cache::UcMinus);
    b.munmap_head(&mut v, 1);
    b.munmap(&mut v);
}

/// /dev/mem opened O_SYNC: the vma's protection is UC-, and so is a private copy of a page.
fn cow_uc_minus(b: &mut TraceBuilder) {
    // The builder's anonymous copies come from RAM at 4 GiB.
    b.started_with(&[GUEST_RAM, [0x10_0000, 0x14_0000]], &[], &[]);
    let mut v = b.vma(0x7f00_4000_0000, 4, false, 0, Some("mmap_mem_ops"));
    v.prot |= pte::PCD;
    b.remap(&mut v, 0xb0, Cache::UcMinus);
    b.cow_write(&v, v.start + PAGE_SIZE);
    b.munmap(&mut v);
}

#[test]
fn start_state_decides_pat_lookups() {
    let mut rows = vec![];
    for series in Series::ALL {
        rows.extend([
            Row {
                name: "WC aperture reserved before the trace: silent",
                series,
                scenario: wc_aperture,
                tweak: none,
                expect: Expect::Silent(Rule::PatLookup),
            },
            Row {
                name: "the same without the start state: never guessed",
                series,
                scenario: wc_aperture_unknown_start,
                tweak: none,
                expect: Expect::NotCheckable(Rule::PatLookup),
            },
            Row {
                name: "TTM pool pages set WC before the trace: silent",
                series,
                scenario: wc_pool,
                tweak: none,
                expect: Expect::Silent(Rule::PatLookup),
            },
            Row {
                name: "lookup answers UC- where the start state has WC",
                series,
                scenario: wc_aperture,
                tweak: |r| {
                    let lookup = r
                        .iter()
                        .position(|x| {
                            matches!(
                                x.hook.as_str(),
                                "track_pfn_insert" | "pfnmap_setup_cachemode"
                            )
                        })
                        .expect("a lookup");
                    r[lookup].cache_out = Some("UC-".into());
                    r[lookup].prot_out =
                        Some((r[lookup].prot_out.unwrap() & !pte::CACHE_MASK) | pte::PCD);
                },
                expect: Expect::Div(Rule::PatLookup),
            },
        ]);
    }
    table(&rows);
}

#[test]
fn correct_drivers_seen_on_real_kernels_replay_clean() {
    let mut rows = vec![];
    for series in [Series::V6_1, Series::V6_12] {
        rows.push(Row {
            name: "a RAM buffer remapped whole (VM_PAT), then fork: nothing reserved",
            series,
            scenario: |b| {
                b.started_with(&[GUEST_RAM], &[], &[]);
                let mut v = b.vma(0x7f00_1000_0000, 4, true, 0, Some("dma_buf_vm_ops"));
                b.remap(&mut v, 0x2_0000, Cache::WB);
                b.fork(&v, 2000);
                b.munmap(&mut v);
            },
            tweak: none,
            expect: Expect::Silent(Rule::ForkCopy),
        });
    }
    table(&rows);
}

/// A vma whose protection asks for `c` (pgprot_writecombine and friends at mmap).
fn vma_in(b: &mut TraceBuilder, c: Cache, driver: &str) -> crate::synth::Vma {
    let mut v = b.vma(0x7f00_6000_0000, 2, true, 0, Some(driver));
    v.prot = (v.prot & !pte::CACHE_MASK) | b.pat.prot_of(c).unwrap();
    v
}

#[test]
fn real_pages_and_untracked_mappings() {
    let mut rows = vec![];
    for series in Series::ALL {
        rows.extend([
            Row {
                name: "vm_insert_page of a WB RAM page into a WC vma: a second cache mode",
                series,
                scenario: |b| {
                    b.started_with(&[GUEST_RAM], &[], &[]);
                    let mut v = vma_in(b, Cache::WC, "drm_gem_dma_vm_ops");
                    b.insert_page(&v, v.start, 0x2_0000);
                    b.munmap(&mut v);
                },
                tweak: none,
                expect: Expect::Find(Rule::FindLinearAlias),
            },
            Row {
                name: "vm_insert_page of a RAM page set WC, into a WC vma: right",
                series,
                scenario: |b| {
                    b.started_with(&[GUEST_RAM], &[], &[(0x2_0000, 0x2_0001, Cache::WC)]);
                    let mut v = vma_in(b, Cache::WC, "drm_gem_dma_vm_ops");
                    b.insert_page(&v, v.start, 0x2_0000);
                    b.munmap(&mut v);
                },
                tweak: none,
                expect: Expect::Quiet(Rule::FindLinearAlias),
            },
            Row {
                name: "->fault hands back a struct page of an MMIO pfn (the 2004 thread)",
                series,
                scenario: |b| {
                    b.started_with(&[GUEST_RAM], &[], &[]);
                    let mut v = vma_in(b, Cache::WB, "bugzoo_vm_ops [bugzoo]");
                    b.fault_maps_page(&v, v.start, BAR);
                    b.munmap(&mut v);
                },
                tweak: none,
                expect: Expect::Find(Rule::FindPageForDevice),
            },
            Row {
                name: "->fault hands back a RAM page: nothing to say",
                series,
                scenario: |b| {
                    b.started_with(&[GUEST_RAM], &[], &[]);
                    let mut v = vma_in(b, Cache::WB, "shmem_vm_ops");
                    b.fault_maps_page(&v, v.start, 0x2_0000);
                    b.munmap(&mut v);
                },
                tweak: none,
                expect: Expect::Silent(Rule::FindPageForDevice),
            },
            Row {
                name: "a driver's remap_pfn_range_notrack of WB RAM as WC",
                series,
                scenario: |b| {
                    b.started_with(&[GUEST_RAM], &[], &[]);
                    let mut v = b.vma(0x7f00_1000_0000, 2, true, 0, Some("i915_gem_vm_ops"));
                    b.remap_notrack(&mut v, 0x2_0000, Cache::WC);
                    b.munmap(&mut v);
                },
                tweak: none,
                expect: Expect::Find(Rule::FindLinearAlias),
            },
            Row {
                name: "arch_io_reserve_memtype_wc of a free BAR: WC, silent",
                series,
                scenario: |b| {
                    b.started_with(&[GUEST_RAM], &[], &[]);
                    b.arch_io_reserve_wc(BAR, 16);
                },
                tweak: none,
                expect: Expect::Silent(Rule::PatReserve),
            },
            Row {
                name: "arch_io_reserve_memtype_wc over a WB reservation: freed, -EBUSY",
                series,
                scenario: |b| {
                    b.started_with(&[GUEST_RAM], &[(BAR, BAR + 16, Cache::WB)], &[]);
                    b.arch_io_reserve_wc(BAR, 16);
                },
                tweak: none,
                expect: Expect::Clean(Rule::PatReserve),
            },
            Row {
                name: "the same, but the kernel kept the WB reservation and said 0",
                series,
                scenario: |b| {
                    b.started_with(&[GUEST_RAM], &[(BAR, BAR + 16, Cache::WB)], &[]);
                    b.arch_io_reserve_wc(BAR, 16);
                },
                tweak: |r| {
                    let i = last(r, "arch_io_reserve_memtype_wc");
                    r[i].ret = Some(0);
                },
                expect: Expect::Div(Rule::PatReserve),
            },
            Row {
                name: "arch_io_reserve_memtype_wc in open, never freed, process gone",
                series,
                scenario: |b| {
                    b.started_with(&[GUEST_RAM], &[], &[]);
                    b.arch_io_reserve_wc(BAR, 16);
                    b.exit();
                },
                tweak: none,
                expect: Expect::Find(Rule::FindLeak),
            },
        ]);
    }
    table(&rows);
}

#[test]
fn bug_classes_are_reported() {
    let mut rows = vec![];
    for series in Series::ALL {
        rows.extend([
            Row {
                name: "RAM inserted WC into a PFN mapping: mapped WB",
                series,
                scenario: ram_wc,
                tweak: none,
                expect: Expect::Find(Rule::FindWcToWb),
            },
            Row {
                name: "16 MiB of device memory page by page, no reservation",
                series,
                scenario: |b| unreserved(b, 4096),
                tweak: none,
                expect: Expect::Find(Rule::FindPerPagePat),
            },
            Row {
                name: "a few unreserved registers: no per-page cost worth a finding",
                series,
                scenario: |b| unreserved(b, 16),
                tweak: none,
                expect: Expect::Quiet(Rule::FindPerPagePat),
            },
            Row {
                name: "a second pfn inserted where the fault mapped one",
                series,
                scenario: |b| double_insert(b, BAR + 8),
                tweak: none,
                expect: Expect::Find(Rule::FindInsertOverPresent),
            },
            Row {
                name: "the same pfn inserted twice (a prefault loop): harmless",
                series,
                scenario: |b| double_insert(b, BAR),
                tweak: none,
                expect: Expect::Quiet(Rule::FindInsertOverPresent),
            },
            Row {
                name: "NOPAGE with nothing mapped, eight times over",
                series,
                scenario: |b| nopage_faults(b, 8),
                tweak: none,
                expect: Expect::Find(Rule::FindNopageLoop),
            },
            Row {
                name: "NOPAGE with nothing mapped twice: a race, no loop",
                series,
                scenario: |b| nopage_faults(b, 2),
                tweak: none,
                expect: Expect::Quiet(Rule::FindNopageLoop),
            },
            Row {
                name: "a private copy of an O_SYNC /dev/mem page is UC-",
                series,
                scenario: cow_uc_minus,
                tweak: none,
                expect: Expect::Find(Rule::FindLinearAlias),
            },
        ]);
    }
    for series in Series::ALL {
        rows.extend([
            Row {
                name: "a process reserves WC device memory in mmap and exits without freeing it",
                series,
                scenario: |b| {
                    b.started_with(&[GUEST_RAM], &[], &[]);
                    b.reserve_io(BAR, 16, Cache::WC);
                    b.exit();
                },
                tweak: none,
                expect: Expect::Find(Rule::FindLeak),
            },
            Row {
                name: "the same, still running when the trace ends",
                series,
                scenario: |b| {
                    b.started_with(&[GUEST_RAM], &[], &[]);
                    b.reserve_io(BAR, 16, Cache::WC);
                },
                tweak: none,
                expect: Expect::Quiet(Rule::FindLeak),
            },
            Row {
                name: "the same made by insmod (a driver's probe): the device keeps it",
                series,
                scenario: |b| {
                    b.started_with(&[GUEST_RAM], &[], &[]);
                    b.reserve_io(BAR, 16, Cache::WC);
                    b.exit();
                },
                tweak: |r| {
                    for x in r.iter_mut() {
                        x.comm = "insmod".into();
                    }
                },
                expect: Expect::Quiet(Rule::FindLeak),
            },
        ]);
    }
    for series in [Series::V6_1, Series::V6_12] {
        rows.push(Row {
            name: "munmap of a remap's head: PAT refuses the piece",
            series,
            scenario: partial_untrack,
            tweak: none,
            expect: Expect::Find(Rule::FindPartialUntrack),
        });
    }
    rows.push(Row {
        name: "6.16+ keeps the tracking context: nothing refused",
        series: Series::V6_16,
        scenario: partial_untrack,
        tweak: none,
        expect: Expect::Quiet(Rule::FindPartialUntrack),
    });
    table(&rows);
}
