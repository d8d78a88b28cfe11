//! Real pages mapped into user space without PAT: `vm_insert_page`, and a fault installing the
//! page its `->fault` handed back (`set_pte_range`, `do_set_pte` up to 6.5). Both map with the
//! vma's own protection and a normal PTE.

use pfnscope_abi::bits::PAGE_SHIFT;
use pfnscope_trace::Rec;

use super::state::{Pte, RamKind};
use super::{MAX_WALK, Model, hex, pages, space};
use crate::report::Sink;
use crate::rules::Rule;
use crate::tree::Tree;

impl<S: Sink> Model<S> {
    /// `vm_insert_page(vma, addr, page)`: refuses a present PTE (-EBUSY), so on success the
    /// page is known to be there.
    pub(super) fn insert_page(&mut self, t: &Tree, i: usize) {
        let r = t.nodes[i].rec();
        self.vma_due(r);
        if r.ret() == Some(0) {
            self.map_pages(r, 1);
        }
        self.visit_kids(t, i, None, |_| true);
    }

    /// `set_pte_range(vmf, folio, page, nr, addr)` / `do_set_pte(vmf, page, addr)`: the
    /// fault found the PTEs none and maps `nr` pages of a folio.
    pub(super) fn set_pte(&mut self, t: &Tree, i: usize) {
        let r = t.nodes[i].rec();
        self.map_pages(r, pages(r.size()));
    }

    /// `n` normal pages from `r`'s pfn at `r`'s address, with the vma's protection.
    fn map_pages(&mut self, r: Rec<'_>, n: u64) {
        let (Some(addr), Some(pfn), Some(prot)) = (r.address(), r.pfn(), r.vma_prot()) else {
            return;
        };
        let cache = self.pat.of_prot(prot);
        let sp = space(r);
        for j in 0..n.min(MAX_WALK) {
            let p = pfn.saturating_add(j);
            self.page_for_device(r, p);
            self.linear_alias(r, p, cache, ("vm_page_prot", prot));
            self.install(
                sp,
                (addr >> PAGE_SHIFT) + j,
                Pte {
                    pfn: None,
                    special: Some(false),
                    cache: Some(cache),
                    known: true,
                    anon: false,
                    since: r.seq(),
                    judged: true,
                },
                r,
            );
        }
    }

    /// A normal PTE for a pfn that is neither RAM nor device memory the kernel gave struct
    /// pages (pmem, device-dax): the driver made up a page.
    pub(super) fn page_for_device(&mut self, r: Rec<'_>, pfn: u64) {
        match self.mem.ram_kind(pfn, 1) {
            RamKind::Unknown => self.nc(Rule::FindPageForDevice),
            RamKind::Ram => self.sink.tally(Rule::FindPageForDevice, crate::report::Outcome::Held),
            _ if self.mem.has_memmap(pfn) => {
                self.sink.tally(Rule::FindPageForDevice, crate::report::Outcome::Held)
            }
            _ => self.find(Rule::FindPageForDevice, &[r], r.driver(), || {
                format!(
                    "a normal PTE at {} maps pfn {pfn:#x}, which is not System RAM nor device memory with struct pages",
                    hex(r.address())
                )
            }),
        }
    }
}
