//! Mutation testing: derive wrong traces from a correct one and check the replay flags them.
//!
//! Each mutant changes one thing the way a kernel or driver bug would: a return code, a cache
//! mode, a lost or reordered PAT event, a PTE that maps a truncated page, a PFN insert into a vma
//! that cannot take one, a page-fault tracepoint reported with a vma that does not hold its
//! address (what a stale per-process vma cache in the eBPF side would produce), a raw PFN of a
//! COW vma made writable. A mutant is *flagged* when its replay has a divergence the original's
//! has not.

use std::collections::BTreeSet;

use pfnscope_trace::{Record, TraceMeta};
use serde::Serialize;

use crate::kernel::KernelRules;
use crate::run::check_records;
use pfnscope_abi::bits::{errno, pfn_t, pte, vm_fault as vf};
use pfnscope_abi::hook::Ret;
use pfnscope_abi::{Cache, Hook};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum MutationKind {
    ReturnCode,
    CacheMode,
    DropPat,
    ReorderPat,
    PteAfterTruncate,
    InsertIntoPlainVma,
    StaleFaultVma,
    WritableCowPfn,
    // The honest ones (`honest.rs`): what a real kernel or driver bug looks like.
    ChangedPfn,
    ChangedAddress,
    RamDevicePfn,
    WcToWb,
    MissingPatCall,
}

#[derive(Clone, Debug)]
pub struct Mutant {
    pub kind: MutationKind,
    pub what: String,
    pub records: Vec<Record>,
}

/// At most this many mutants of one kind are made, spread evenly over the trace.
pub const MAX_PER_KIND: usize = 150;

pub(crate) fn spread<T: Clone>(v: Vec<T>) -> Vec<T> {
    if v.len() <= MAX_PER_KIND {
        return v;
    }
    let step = v.len() as f64 / MAX_PER_KIND as f64;
    (0..MAX_PER_KIND)
        .map(|i| v[(i as f64 * step) as usize].clone())
        .collect()
}

fn other_ret(h: Option<Hook>, ret: i64) -> i64 {
    if h.and_then(Hook::ret) == Some(Ret::VmFault) {
        // Successes become failures: one success code for another (LOCKED for NOPAGE on a
        // file vma, where fault-around may or may not have mapped the page) is an equivalent
        // mutant no trace of these hooks can tell apart.
        match ret as u32 {
            vf::RETRY => vf::NOPAGE as i64,
            v if v & (vf::ERROR | vf::RETRY) == 0 => vf::SIGBUS as i64,
            _ => vf::NOPAGE as i64,
        }
    } else if ret == 0 {
        if h == Some(Hook::MemtypeReserve) {
            errno::EBUSY
        } else {
            errno::EINVAL
        }
    } else {
        0
    }
}

fn other_cache(c: Cache) -> Cache {
    match c {
        Cache::UcMinus => Cache::WC,
        Cache::WC => Cache::UcMinus,
        Cache::WB => Cache::UcMinus,
        _ => Cache::WB,
    }
}

/// Every mutant of `records` (at most [`MAX_PER_KIND`] per kind).
pub fn mutants(records: &[Record], meta: &TraceMeta) -> Vec<Mutant> {
    let pat = meta.pat();
    let hooks: Vec<Option<Hook>> = records.iter().map(|r| Hook::parse(&r.hook)).collect();
    let is = |i: usize, pred: fn(Hook) -> bool| hooks[i].is_some_and(pred);
    let mut out = Vec::new();

    let rets: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].ret.is_some())
        .collect();
    for i in spread(rets) {
        let mut recs = records.to_vec();
        let old = recs[i].ret.expect("filtered");
        let new = other_ret(hooks[i], old);
        recs[i].ret = Some(new);
        out.push(Mutant {
            kind: MutationKind::ReturnCode,
            what: format!("seq {} {} ret {old} -> {new}", recs[i].seq, recs[i].hook),
            records: recs,
        });
    }

    let caches: Vec<usize> = (0..records.len())
        .filter(|&i| {
            matches!(
                hooks[i],
                Some(
                    Hook::TrackPfnInsert
                        | Hook::PfnmapSetupCachemode
                        | Hook::TrackPfnRemap
                        | Hook::PfnmapTrack
                        | Hook::MemtypeReserve
                )
            )
        })
        .filter(|&i| {
            records[i]
                .cache_out
                .as_deref()
                .and_then(Cache::parse)
                .is_some()
        })
        .collect();
    for i in spread(caches) {
        let mut recs = records.to_vec();
        let old = Cache::parse(recs[i].cache_out.as_deref().expect("filtered")).expect("filtered");
        let new = other_cache(old);
        recs[i].cache_out = Some(new.name().into());
        if let (Some(po), Some(bits)) = (recs[i].prot_out, pat.prot_of(new)) {
            recs[i].prot_out = Some((po & !pte::CACHE_MASK) | bits);
        }
        out.push(Mutant {
            kind: MutationKind::CacheMode,
            what: format!(
                "seq {} {} {} -> {}",
                recs[i].seq,
                recs[i].hook,
                old.name(),
                new.name()
            ),
            records: recs,
        });
    }

    // A memtype_reserve/free that a driver made outside any fault-path context (set_pages_*,
    // ioremap) is invisible to the fault path: dropping it, or swapping two of them on different
    // pages, gives an equivalent trace, not a wrong one. Such mutants would only measure noise.
    let hook_of_id: std::collections::HashMap<u64, Hook> = records
        .iter()
        .zip(&hooks)
        .filter_map(|(r, h)| Some((r.id, (*h)?)))
        .collect();
    let standalone = |i: usize| {
        matches!(hooks[i], Some(Hook::MemtypeReserve | Hook::MemtypeFree))
            && hook_of_id.get(&records[i].parent).is_none_or(|h| {
                !(h.is_pat()
                    || matches!(
                        h,
                        Hook::RemapPfnRange | Hook::CopyPageRange | Hook::UnmapPageRange
                    ))
            })
    };
    let pats: Vec<usize> = (0..records.len())
        .filter(|&i| is(i, Hook::is_pat) && !standalone(i))
        .collect();
    let all_pats: Vec<usize> = (0..records.len())
        .filter(|&i| is(i, Hook::is_pat))
        .collect();
    for &i in &spread(pats.clone()) {
        let mut recs = records.to_vec();
        let gone = recs.remove(i);
        out.push(Mutant {
            kind: MutationKind::DropPat,
            what: format!("dropped seq {} {}", gone.seq, gone.hook),
            records: recs,
        });
    }

    // Swap what two neighbouring, different PAT calls did, keeping when and where they ran.
    let pairs: Vec<(usize, usize)> = all_pats
        .windows(2)
        .map(|w| (w[0], w[1]))
        .filter(|&(a, b)| !(standalone(a) && standalone(b)))
        .filter(|&(a, b)| {
            let (x, y) = (&records[a], &records[b]);
            (x.hook.as_str(), x.pfn, x.size, x.ret, &x.cache_out)
                != (y.hook.as_str(), y.pfn, y.size, y.ret, &y.cache_out)
        })
        .collect();
    for (a, b) in spread(pairs) {
        let mut recs = records.to_vec();
        let (x, y) = (recs[a], recs[b]);
        let keep = |dst: &mut Record, src: &Record, place: &Record| {
            *dst = *src;
            dst.seq = place.seq;
            dst.id = place.id;
            dst.parent = place.parent;
            dst.ts_ns = place.ts_ns;
            dst.latency_ns = place.latency_ns;
        };
        keep(&mut recs[a], &y, &x);
        keep(&mut recs[b], &x, &y);
        out.push(Mutant {
            kind: MutationKind::ReorderPat,
            what: format!(
                "swapped seq {} {} and seq {} {}",
                x.seq, x.hook, y.seq, y.hook
            ),
            records: recs,
        });
    }

    // A PTE for a page after it left the page cache: replay the last mapping of it after the delete.
    let deletes: Vec<usize> = (0..records.len())
        .filter(|&i| hooks[i] == Some(Hook::FilemapDelete) && records[i].pfn.is_some())
        .collect();
    for i in spread(deletes) {
        let pfn = records[i].pfn.expect("filtered");
        let Some(seen) = records[..i].iter().rev().find(|r| {
            r.hook == Hook::VmNormalPage.name() && r.pfn == Some(pfn) && r.page == Some(true)
        }) else {
            continue;
        };
        let mut recs = records.to_vec();
        let mut extra = *seen;
        extra.id = records.iter().map(|r| r.id).max().unwrap_or(0) + 1;
        extra.parent = 0;
        extra.ts_ns = records[i].ts_ns + 1;
        extra.latency_ns = Some(1);
        recs.insert(i + 1, extra);
        out.push(Mutant {
            kind: MutationKind::PteAfterTruncate,
            what: format!("PTE for pfn {pfn:#x} after seq {}", records[i].seq),
            records: recs,
        });
    }

    let vm_bits = meta.vm_bits(true);
    let (pfnmap, mixed) = (vm_bits.pfnmap, vm_bits.mixedmap);
    // A vma that has neither flag already (device-dax) is mapped into through its pfn_t's
    // devmap or special flags: those are what the mutant takes away. Without them (older
    // traces) the mutant would be equivalent, and is not made.
    let lets_in = |r: &Record| {
        r.pfn_flags
            .is_some_and(|f| pfn_t::is_devmap(f) || f & pfn_t::SPECIAL != 0)
    };
    let inserts: Vec<usize> = (0..records.len())
        .filter(|&i| {
            is(i, Hook::is_insert)
                && records[i]
                    .vma_flags
                    .is_some_and(|f| f & (pfnmap | mixed) != 0 || lets_in(&records[i]))
        })
        .collect();
    for i in spread(inserts) {
        let mut recs = records.to_vec();
        let f = recs[i].vma_flags.expect("filtered");
        let how = if f & (pfnmap | mixed) != 0 {
            recs[i].vma_flags = Some(f & !(pfnmap | mixed));
            ""
        } else {
            recs[i].pfn_flags = Some(0);
            ", its pfn_t neither devmap nor special"
        };
        out.push(Mutant {
            kind: MutationKind::InsertIntoPlainVma,
            what: format!(
                "seq {} {} on a vma without VM_PFNMAP/VM_MIXEDMAP{how}",
                recs[i].seq, recs[i].hook
            ),
            records: recs,
        });
    }

    // The vma a tracepoint fault came with, moved to just above the address.
    let tp_faults: Vec<usize> = (0..records.len())
        .filter(|&i| matches!(hooks[i], Some(Hook::PageFaultUser | Hook::PageFaultKernel)))
        .filter(|&i| records[i].address.is_some() && records[i].vma_start.is_some())
        .collect();
    for i in spread(tp_faults) {
        let mut recs = records.to_vec();
        let r = &mut recs[i];
        let (a, s, e) = (
            r.address.expect("filtered"),
            r.vma_start.expect("filtered"),
            r.vma_end.unwrap_or(0),
        );
        let start = (a & !0xfff) + 0x1000;
        r.vma_start = Some(start);
        r.vma_end = Some(start + e.saturating_sub(s).max(0x1000));
        out.push(Mutant {
            kind: MutationKind::StaleFaultVma,
            what: format!("seq {} {} {a:#x} with vma {start:#x}..", r.seq, r.hook),
            records: recs,
        });
    }

    // A raw PFN of a COW vma shown writable: writes would reach the device, not a private copy.
    let cow_raw: Vec<usize> = (0..records.len())
        .filter(|&i| hooks[i] == Some(Hook::VmNormalPage))
        .filter(|&i| match (records[i].pte, records[i].vma_flags) {
            (Some(v), Some(f)) => v & pte::SPECIAL != 0 && v & pte::RW == 0 && vm_bits.is_cow(f),
            _ => false,
        })
        .collect();
    for i in spread(cow_raw) {
        let mut recs = records.to_vec();
        let r = &mut recs[i];
        let v = r.pte.expect("filtered");
        r.pte = Some(v | pte::RW);
        out.push(Mutant {
            kind: MutationKind::WritableCowPfn,
            what: format!(
                "seq {} vm_normal_page: PTE {v:#x} of a COW vma made writable",
                r.seq
            ),
            records: recs,
        });
    }
    out
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct MutationScore {
    pub total: usize,
    pub flagged: usize,
    pub missed: Vec<String>,
    pub per_kind: std::collections::BTreeMap<String, (usize, usize)>,
}

impl MutationScore {
    pub fn ratio(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.flagged as f64 / self.total as f64
        }
    }
}

/// What the replay reports of `recs`: its divergences, and its findings too where a mutant
/// counts as flagged when it draws a new finding (a driver bug is a finding, not a divergence).
fn signature(
    meta: &TraceMeta,
    rules: &KernelRules,
    recs: Vec<Record>,
    with_findings: bool,
) -> BTreeSet<(String, Vec<u64>)> {
    let rep = check_records(meta, rules.clone(), recs, "mutant");
    let findings = rep
        .findings
        .iter()
        .filter(|_| with_findings)
        .map(|f| (f.rule.id().to_string(), f.seqs.clone()));
    rep.divergences
        .iter()
        .map(|d| (d.rule.id().to_string(), d.seqs.clone()))
        .chain(findings)
        .collect()
}

/// Replays the original and every mutant; a mutant whose replay panics fails the caller's test
/// through the panic itself.
pub fn score(records: &[Record], meta: &TraceMeta, rules: &KernelRules) -> MutationScore {
    score_of(records, meta, rules, mutants(records, meta), false)
}

/// Replays `records` and each of `mutants`; with `with_findings` a new finding flags a mutant
/// too.
pub(crate) fn score_of(
    records: &[Record],
    meta: &TraceMeta,
    rules: &KernelRules,
    mutants: Vec<Mutant>,
    with_findings: bool,
) -> MutationScore {
    let base = signature(meta, rules, records.to_vec(), with_findings);
    let mut s = MutationScore::default();
    for m in mutants {
        let sig = signature(meta, rules, m.records, with_findings);
        let flagged = !sig.is_subset(&base);
        s.total += 1;
        let e = s.per_kind.entry(format!("{:?}", m.kind)).or_default();
        e.0 += 1;
        if flagged {
            s.flagged += 1;
            e.1 += 1;
        } else {
            s.missed.push(format!("{:?}: {}", m.kind, m.what));
        }
    }
    s
}
