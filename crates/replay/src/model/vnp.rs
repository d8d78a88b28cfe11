//! `vm_normal_page`: the special bit, the memmap bound, the linear rule, and every PTE it is
//! shown checked against what the model installed.

use pfnscope_abi::bits::{PAGE_SHIFT, pte};
use pfnscope_abi::{Cache, Hook};
use pfnscope_trace::{Rec, Record};

use super::state::{Pte, RamKind};
use super::{Model, hex, space};
use crate::report::{Outcome, Sink};
use crate::rules::Rule;
use crate::tree::Tree;

impl<S: Sink> Model<S> {
    /// A PTE of a RAM page whose cache mode is not the page's memtype: the kernel's linear
    /// map of the page uses the memtype, so the page has two mappings that disagree.
    /// `bits` are the PTE's own (`vm_normal_page`) or the protection it is made from (an
    /// insert or remap), named by `what`.
    pub(super) fn linear_alias(
        &mut self,
        r: Rec<'_>,
        pfn: u64,
        cache: Cache,
        (what, bits): (&str, u64),
    ) {
        if !self.pats.on || self.mem.ram_kind(pfn, 1) != RamKind::Ram {
            return;
        }
        match self.mem.ram_type(pfn) {
            Some((memtype, _)) if memtype != cache => {
                self.find(Rule::FindLinearAlias, &[r], r.driver(), || {
                    format!(
                        "RAM pfn {pfn:#x} mapped {} at {} ({what} {bits:#x}) while its memtype, and the kernel's linear map, is {}",
                        cache.name(),
                        hex(r.address()),
                        memtype.name()
                    )
                })
            }
            Some(_) => self.sink.tally(Rule::FindLinearAlias, Outcome::Held),
            None => self.nc(Rule::FindLinearAlias),
        }
    }

    pub(super) fn vnp(&mut self, t: &Tree, i: usize) {
        let r = t.nodes[i].rec();
        self.vma_due(r);
        let (Some(v), Some(page)) = (r.pte(), r.page()) else {
            self.nc(Rule::VnpSpecial);
            return;
        };
        // Each field once: a read is a few bounds-checked loads, and the rules below ask often.
        let (vm_flags, address, vma_start) = (r.vma_flags(), r.address(), r.vma_start());
        // vm_normal_page is only asked about present PTEs (zap, fork copy, wp fault).
        if let (Some(vma), Some(start), Some(a)) = (r.vma_id(), vma_start, address) {
            match self.faults.take_failed((vma, start, a >> PAGE_SHIFT)) {
                Some((seq, ret)) => self.diverge(
                    Rule::FaultOutcome,
                    &[r],
                    format!(
                        "no PTE at {a:#x}: the fault there at seq [{seq}] failed with {ret:#x}"
                    ),
                    format!("PTE {v:#x} present"),
                ),
                None => self.sink.tally(Rule::FaultOutcome, Outcome::Held),
            }
        }
        let b = self.bits;
        let pfn = (v & pte::PFN_MASK) >> PAGE_SHIFT;
        let special = v & pte::SPECIAL != 0;
        let devmap = v & self.f.devmap_pte_bit != 0;
        let cache = self.pat.of_prot(v);
        let plain_vma = vm_flags.is_some_and(|vm| b.pfn_or_mixed(vm) == 0);
        let anon_vma = plain_vma && r.driver().is_none() && r.file_id().is_none();
        if special && !devmap && anon_vma {
            if self.mem.zero_pfn_known {
                let z = self.mem.zero_pfn;
                self.check(Rule::PteZeroPage, z == Some(pfn), &[r], || {
                    (
                        format!("the zero page, pfn {z:#x?}"),
                        format!("special PTE {v:#x} of pfn {pfn:#x} in an anonymous vma"),
                    )
                });
            } else {
                self.mem.zero_pfn.get_or_insert(pfn);
            }
        }
        let zero = self.mem.zero_pfn == Some(pfn);
        // A PTE the trace saw installed was judged there, with the same cache mode: asking
        // again at its zap counted each alias twice.
        let judged = address.is_some_and(|a| {
            self.ptes
                .map
                .get(&(space(r), a >> PAGE_SHIFT))
                .is_some_and(|m| m.judged && m.cache == Some(cache))
        });
        if !judged {
            self.linear_alias(r, pfn, cache, ("PTE", v));
        }
        if special {
            self.check(Rule::VnpSpecial, !page, &[r], || {
                (
                    "no page (special PTE)".into(),
                    format!("a page for PTE {v:#x}"),
                )
            });
            if !page && r.driver().is_some() && plain_vma && !devmap && !zero {
                self.find(Rule::FindBadSpecial, &[r], r.driver(), || {
                    format!(
                        "special PTE in a vma without VM_PFNMAP/VM_MIXEDMAP: PTE {v:#x} at {}",
                        hex(r.address())
                    )
                });
            }
        } else if page {
            self.sink.tally(Rule::VnpNormal, Outcome::Held);
            self.page_for_device(r, pfn);
            self.mem.max_page_pfn = Some(self.mem.max_page_pfn.map_or(pfn, |m| m.max(pfn)));
        } else if self.mem.max_page_pfn.is_some_and(|m| m >= pfn) {
            self.diverge(
                Rule::VnpNormal,
                &[r],
                format!(
                    "the page of pfn {pfn:#x} (within the memmap: pages up to {:#x} seen)",
                    self.mem.max_page_pfn.unwrap_or(0)
                ),
                "no page".into(),
            );
        } else {
            self.nc(Rule::VnpNormal);
            self.find(Rule::FindBadNonSpecial, &[r], r.driver(), || {
                format!(
                    "no page for a non-special PTE: PTE {v:#x} at {}",
                    hex(r.address())
                )
            });
        }

        // A raw PFN of a COW vma is never writable, whoever asks. VM_WRITE is compared only
        // where the mm's lock keeps mprotect out, a fault or a fork: mprotect clears VM_WRITE
        // before it write-protects the PTEs, and a driver's unmap_mapping_range zaps holding
        // only the file's i_mmap lock; since 6.17 mprotect's PTE batching itself asks about
        // the old, still writable PTE (mm/mprotect.c:change_pte_range, cac1db8c3aad).
        let locked = i > 0
            && matches!(
                t.nodes[0].hook,
                Some(Hook::HandleMmFault | Hook::CopyPageRange)
            );
        let cow_raw = special && vm_flags.is_some_and(|vm| b.is_cow(vm));
        match vm_flags {
            Some(vm) if locked || cow_raw => {
                let ok = v & pte::RW == 0 || (vm & b.write != 0 && !cow_raw);
                self.check(Rule::PteWritable, ok, &[r], || {
                    (
                        if cow_raw {
                            "a read-only PTE: a raw PFN in a COW vma".into()
                        } else {
                            format!("a read-only PTE: vma flags {vm:#x} lack VM_WRITE")
                        },
                        format!("writable PTE {v:#x}"),
                    )
                });
            }
            None if locked => self.nc(Rule::PteWritable),
            _ => {}
        }

        if let (Some(vm), Some(a), Some(s)) = (vm_flags, address, vma_start)
            && vm & b.pfnmap != 0
            && b.is_cow(vm)
            && a >= s
            && let Some(pg) = r.vma_pgoff()
        {
            let linear = pg.checked_add((a - s) >> PAGE_SHIFT) == Some(pfn);
            self.check(Rule::VnpLinear, special == linear, &[r], || {
                (
                    format!(
                        "special bit {} (the linear rule says {})",
                        linear,
                        if linear { "raw PFN" } else { "COWed page" }
                    ),
                    format!("special bit {special} in PTE {v:#x}"),
                )
            });
        }

        if let Some(a) = address {
            let key = (space(r), a >> PAGE_SHIFT);
            let known = self.ptes.map.get(&key).copied();
            let observed = Pte {
                pfn: special.then_some(pfn),
                special: Some(special),
                cache: Some(cache),
                known: true,
                anon: !special
                    && page
                    && vm_flags.is_some_and(|vm| b.is_cow(vm))
                    && known.is_some_and(|p| p.anon),
                since: r.seq(),
                judged: false,
            };
            // Special PTEs have no rmap: truncating or purging the page cannot unmap them, so
            // a driver that frees pages it still maps leaves user space a freed page.
            if special
                && let Some(&(ix, dseq)) = self.mem.deleted.get(&pfn)
                && known.is_some_and(|m| m.pfn == Some(pfn) && m.since < dseq)
            {
                let d = Record {
                    seq: dseq,
                    ..Default::default()
                };
                self.find(Rule::FindPfnAfterTruncate, &[r, Rec::Record(&d)], r.driver(), || {
                    format!(
                        "pfn {pfn:#x} left the page cache (index {ix}) at seq {dseq} while this special PTE at {a:#x} still mapped it"
                    )
                });
            }
            // A special PTE in a vma that is neither VM_PFNMAP nor VM_MIXEDMAP is the shared
            // zero page, and core MM replaces it with a real page in ways the trace need not
            // show: a write fault's copy, MADV_POPULATE, fault-around, or an exec whose new
            // mm and vma reuse the old ones' memory (and so their ids) after an untraced
            // teardown (7.2 cannot probe unmap_page_range). Only PFN and mixed maps hold
            // their special PTEs until a traced zap or COW.
            // Where teardowns are not traced at all (7.2), a later mapping's read fault of a
            // hole or of anonymous memory also maps the zero page over a page the model still
            // remembers.
            match known {
                Some(m) => {
                    // The model keeps a pfn only for PTEs it saw mapped as one (special or
                    // devmap): normal pages may migrate without a traced event.
                    let mism = m.pfn.is_some_and(|p| p != pfn)
                        || m.special.is_some_and(|s| s != special)
                        || m.cache.is_some_and(|c| c != cache);
                    let zero_page_replaced = plain_vma
                        && ((m.special == Some(true) && !special)
                            || (zero
                                && m.special == Some(false)
                                && !self.attached(Hook::UnmapPageRange)));
                    if m.known && !zero_page_replaced {
                        self.check(Rule::PteState, !mism, &[r], || {
                            (
                                format!(
                                    "pfn {} special {:?} cache {:?}{}",
                                    hex(m.pfn),
                                    m.special,
                                    m.cache.map(Cache::name),
                                    if m.anon { " (COW copy)" } else { "" }
                                ),
                                format!(
                                    "pfn {pfn:#x} special {special} cache {} (PTE {v:#x})",
                                    cache.name()
                                ),
                            )
                        });
                    } else if mism {
                        self.nc(Rule::PteState);
                    }
                    if mism || !m.known {
                        self.install(
                            key.0,
                            key.1,
                            Pte {
                                anon: m.anon && !special,
                                ..observed
                            },
                            r,
                        );
                    }
                }
                None => self.install(key.0, key.1, observed, r),
            }
        }

        if !special
            && page
            && let Some(&(ix, dseq)) = self.mem.deleted.get(&pfn)
            && r.file_id().is_some()
            && let (Some(a), Some(s), Some(pg)) = (address, vma_start, r.vma_pgoff())
            && a >= s
            && pg.checked_add((a - s) >> PAGE_SHIFT) == Some(ix)
        {
            let d = Record {
                seq: dseq,
                ..Default::default()
            };
            self.diverge(
                Rule::TruncateMapped,
                &[r, Rec::Record(&d)],
                format!(
                    "no PTE for pfn {pfn:#x} (file index {ix} left the page cache at seq {dseq})"
                ),
                format!("PTE {v:#x} maps it at {a:#x}"),
            );
        }
    }
}
