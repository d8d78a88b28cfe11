//! Zapping: `unmap_page_range`, and the untrack that must precede it on 6.1/6.12.

use pfnscope_abi::Hook;
use pfnscope_abi::bits::PAGE_SHIFT;

use super::{Model, pages, space};
use crate::report::Sink;
use crate::rules::Rule;
use crate::tree::Tree;

impl<S: Sink> Model<S> {
    pub(super) fn unmap(&mut self, t: &Tree, i: usize) {
        let r = t.nodes[i].rec();
        let b = self.bits;
        if self.f.untrack_before_zap
            && let (Some(vm), Some(vid)) = (r.vma_flags(), r.vma_id())
            && vm & b.pfnmap != 0
        {
            if b.pat != 0 {
                self.check(Rule::UnmapUntrack, vm & b.pat == 0, &[r], || {
                    (
                        "VM_PAT already cleared by untrack_pfn".into(),
                        format!("vm_flags {vm:#x} with VM_PAT"),
                    )
                });
            }
            if self.attached(Hook::UntrackPfn) {
                let last = self.vmas.last_untrack.remove(&r.tid());
                self.check(Rule::UnmapUntrack, last == Some(vid), &[r], || {
                    (
                        format!("untrack_pfn on vma {vid} just before"),
                        format!("last untrack on this task: {last:?}"),
                    )
                });
            } else {
                self.nc(Rule::UnmapUntrack);
            }
        }
        self.vma_due(r);
        self.visit_kids(t, i, None, |_| true);
        if let (Some(a), Some(s)) = (r.address(), r.size()) {
            self.ptes.zap(space(r), a >> PAGE_SHIFT, pages(Some(s)));
        }
    }
}
