//! Honest mutants: a correct trace changed the way a kernel or a driver could really have got
//! the fault path wrong, and nothing else, so the rest of the trace stays consistent with it.
//! Where [`crate::mutate`] checks that the trace's own story hangs together (one mutant per rule),
//! these ask whether a real bug would be seen:
//!
//! - `ChangedPfn`: a PTE maps a pfn one page off the one the kernel was asked to insert or remap;
//! - `ChangedAddress`: a driver inserts at the page above the one that faulted (its call and the
//!   inner ones it makes alike);
//! - `RamDevicePfn`: an insert of a RAM pfn made an insert of a device pfn no reservation
//!   covers (or the reverse), PAT's answer left as it was;
//! - `WcToWb`: PAT answers WB where the driver asked WC and the model knows the pfn is WC;
//! - `MissingPatCall`: a PFN insert maps without PAT's lookup (its record removed; the insert
//!   keeps its place in the tree).

use pfnscope_abi::bits::{PAGE_SIZE, pte};
use pfnscope_abi::{Cache, Hook};
use pfnscope_trace::{Record, TraceMeta};

use crate::kernel::KernelRules;
use crate::mutate::{Mutant, MutationKind, MutationScore, score_of, spread};

fn hook(r: &Record) -> Option<Hook> {
    Hook::parse(&r.hook)
}

fn is_ram(meta: &TraceMeta, pfn: u64) -> bool {
    meta.system_ram.iter().any(|r| r[0] <= pfn && pfn < r[1])
}

/// A pfn no RAM range holds and no reservation at start covers, far from the trace's own: what
/// a driver would map by mistake for a RAM page.
fn unreserved_device_pfn(meta: &TraceMeta) -> u64 {
    let top = meta
        .system_ram
        .iter()
        .map(|r| r[1])
        .max()
        .unwrap_or(0x10_0000);
    let mut pfn = top + 0x10_0000;
    let reserved = |p: u64| {
        meta.start_state
            .as_ref()
            .and_then(|s| s.memtypes.as_ref())
            .is_some_and(|m| m.iter().any(|s| s.start_pfn <= p && p < s.end_pfn))
    };
    while reserved(pfn) {
        pfn += 0x10_0000;
    }
    pfn
}

/// The index of `records[i]`'s PAT lookup child, if it has one.
fn lookup_of(records: &[Record], i: usize) -> Option<usize> {
    let id = records[i].id;
    records
        .iter()
        .position(|r| r.parent == id && hook(r).is_some_and(Hook::is_insert_lookup))
}

/// PTE-level inserts that did map (NOPAGE) and asked PAT: the calls every mutant below changes.
fn mapping_inserts(records: &[Record]) -> Vec<usize> {
    (0..records.len())
        .filter(|&i| hook(&records[i]).and_then(Hook::insert_pages) == Some(1))
        .filter(|&i| records[i].ret == Some(0x100) && records[i].pfn.is_some())
        .filter(|&i| lookup_of(records, i).is_some())
        .collect()
}

/// [`crate::mutate::score`] for the honest mutants: a new divergence or a new finding flags
/// one.
pub fn score(records: &[Record], meta: &TraceMeta, rules: &KernelRules) -> MutationScore {
    score_of(records, meta, rules, mutants(records, meta), true)
}

pub fn mutants(records: &[Record], meta: &TraceMeta) -> Vec<Mutant> {
    let pat = meta.pat();
    let mut out = Vec::new();

    // A special PTE shown to vm_normal_page with the pfn next to the one mapped there.
    let special_ptes: Vec<usize> = (0..records.len())
        .filter(|&i| hook(&records[i]) == Some(Hook::VmNormalPage))
        .filter(|&i| records[i].pte.is_some_and(|v| v & pte::SPECIAL != 0))
        .collect();
    for i in spread(special_ptes) {
        let mut recs = records.to_vec();
        let v = recs[i].pte.expect("filtered");
        let pfn = pte::pfn(v) + 1;
        recs[i].pte = Some((v & !pte::PFN_MASK) | (pfn << 12));
        recs[i].pfn = Some(pfn);
        out.push(Mutant {
            kind: MutationKind::ChangedPfn,
            what: format!("seq {} vm_normal_page: PTE maps pfn {pfn:#x}", recs[i].seq),
            records: recs,
        });
    }

    let inserts = mapping_inserts(records);

    // The driver inserts at the page above the faulting one (still inside the vma).
    let movable: Vec<usize> = inserts
        .iter()
        .copied()
        .filter(|&i| {
            let r = &records[i];
            matches!((r.address, r.vma_end), (Some(a), Some(e)) if a + PAGE_SIZE < e)
        })
        .collect();
    for i in spread(movable) {
        let mut recs = records.to_vec();
        let a = recs[i].address.expect("filtered") + PAGE_SIZE;
        // The driver's call and the inner calls it made: vmf_insert_pfn passes its address on.
        let mut at = Some(i);
        while let Some(k) = at {
            recs[k].address = Some(a);
            let parent = recs[k].parent;
            at = recs
                .iter()
                .position(|x| x.id == parent && hook(x).is_some_and(Hook::is_insert));
        }
        out.push(Mutant {
            kind: MutationKind::ChangedAddress,
            what: format!("seq {} {} at {a:#x}", recs[i].seq, recs[i].hook),
            records: recs,
        });
    }

    // RAM <-> device: the insert and its lookup name the other kind of pfn.
    let device = unreserved_device_pfn(meta);
    let ram = meta.system_ram.first().map(|r| r[0].max(0x1000));
    for i in spread(inserts.clone()) {
        let Some(pfn) = records[i].pfn else { continue };
        let Some(k) = lookup_of(records, i) else {
            continue;
        };
        let other = if is_ram(meta, pfn) {
            device
        } else if let Some(r) = ram {
            r
        } else {
            continue;
        };
        let mut recs = records.to_vec();
        recs[i].pfn = Some(other);
        recs[k].pfn = Some(other);
        out.push(Mutant {
            kind: MutationKind::RamDevicePfn,
            what: format!(
                "seq {} {} of pfn {other:#x} for {pfn:#x}",
                recs[i].seq, recs[i].hook
            ),
            records: recs,
        });
    }

    // PAT answers WB to a WC request.
    let wc: Vec<usize> = (0..records.len())
        .filter(|&i| hook(&records[i]).is_some_and(Hook::is_insert_lookup))
        .filter(|&i| records[i].cache_out.as_deref() == Some(Cache::WC.name()))
        .collect();
    for i in spread(wc) {
        let mut recs = records.to_vec();
        recs[i].cache_out = Some(Cache::WB.name().into());
        if let (Some(po), Some(bits)) = (recs[i].prot_out, pat.prot_of(Cache::WB)) {
            recs[i].prot_out = Some((po & !pte::CACHE_MASK) | bits);
        }
        out.push(Mutant {
            kind: MutationKind::WcToWb,
            what: format!("seq {} {} WC -> WB", recs[i].seq, recs[i].hook),
            records: recs,
        });
    }

    // An insert that maps without asking PAT: its lookup, a leaf, is gone.
    for i in spread(inserts) {
        let Some(k) = lookup_of(records, i) else {
            continue;
        };
        let mut recs = records.to_vec();
        let gone = recs.remove(k);
        out.push(Mutant {
            kind: MutationKind::MissingPatCall,
            what: format!(
                "seq {} {} without its {}",
                records[i].seq, records[i].hook, gone.hook
            ),
            records: recs,
        });
    }
    out
}
