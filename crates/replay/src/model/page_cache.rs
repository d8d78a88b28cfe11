//! Pages entering and leaving the page cache: what the truncate rule compares PTEs with.

use pfnscope_trace::Rec;

use super::Model;
use crate::report::Sink;
use crate::tree::Tree;

impl<S: Sink> Model<S> {
    /// `mm_filemap_delete_from_page_cache`: the page left its file (truncate, invalidate,
    /// reclaim); from now on no PTE may map it at that index.
    pub(super) fn page_cache_delete(&mut self, t: &Tree, i: usize) {
        let r = t.nodes[i].rec();
        if let (Some(pfn), Some(ix)) = (r.pfn(), r.index()) {
            self.mem.deleted.insert(pfn, (ix, r.seq()));
        }
    }

    /// `mm_filemap_add_to_page_cache`: the pfn is a page-cache page again (the allocator gave
    /// it back out, maybe at the same index of the same file): mapping it is no longer stale.
    pub(super) fn page_cache_add(&mut self, t: &Tree, i: usize) {
        let r: Rec<'_> = t.nodes[i].rec();
        if let Some(pfn) = r.pfn() {
            self.mem.deleted.remove(&pfn);
        }
    }
}
