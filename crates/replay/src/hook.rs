//! Trace `hook` names decoded once per record into a small enum.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    Fault,
    Vnp,
    InsertPfnProt,
    InsertPfn,
    InsertMixed,
    InsertPmd,
    InsertPmdProt,
    InsertPud,
    InsertPudProt,
    Remap,
    TrackInsert,
    TrackRemap,
    TrackCopy,
    Untrack,
    SetupCachemode,
    PfnmapTrack,
    PfnmapUntrack,
    MemReserve,
    MemFree,
    CopyPageRange,
    UnmapPageRange,
    PageFaultUser,
    PageFaultKernel,
    FilemapDelete,
    ProcessFork,
    Counters,
    Other,
}

pub const HOOK_COUNT: usize = Hook::Other as usize + 1;

impl Hook {
    pub fn from_name(name: &str) -> Hook {
        match name {
            "handle_mm_fault" => Hook::Fault,
            "vm_normal_page" => Hook::Vnp,
            "vmf_insert_pfn_prot" => Hook::InsertPfnProt,
            "vmf_insert_pfn" => Hook::InsertPfn,
            // The mkwrite variant makes a present PTE of the same pfn writable instead of
            // leaving it: nothing the model's PTE state tells apart.
            "vmf_insert_mixed" | "vmf_insert_mixed_mkwrite" => Hook::InsertMixed,
            "vmf_insert_pfn_pmd" => Hook::InsertPmd,
            "vmf_insert_pfn_pmd_prot" => Hook::InsertPmdProt,
            "vmf_insert_pfn_pud" => Hook::InsertPud,
            "vmf_insert_pfn_pud_prot" => Hook::InsertPudProt,
            "remap_pfn_range" => Hook::Remap,
            "track_pfn_insert" => Hook::TrackInsert,
            "track_pfn_remap" => Hook::TrackRemap,
            "track_pfn_copy" => Hook::TrackCopy,
            "untrack_pfn" => Hook::Untrack,
            "pfnmap_setup_cachemode" => Hook::SetupCachemode,
            "pfnmap_track" => Hook::PfnmapTrack,
            "pfnmap_untrack" => Hook::PfnmapUntrack,
            "memtype_reserve" => Hook::MemReserve,
            "memtype_free" => Hook::MemFree,
            "copy_page_range" => Hook::CopyPageRange,
            "unmap_page_range" => Hook::UnmapPageRange,
            "exceptions:page_fault_user" | "page_fault_user" => Hook::PageFaultUser,
            "exceptions:page_fault_kernel" | "page_fault_kernel" => Hook::PageFaultKernel,
            "filemap:mm_filemap_delete_from_page_cache" | "mm_filemap_delete_from_page_cache" => {
                Hook::FilemapDelete
            }
            "sched:sched_process_fork" | "sched_process_fork" => Hook::ProcessFork,
            pfnscope_trace::COUNTERS_HOOK => Hook::Counters,
            _ => Hook::Other,
        }
    }

    pub fn is_insert(self) -> bool {
        matches!(
            self,
            Hook::InsertPfnProt
                | Hook::InsertPfn
                | Hook::InsertMixed
                | Hook::InsertPmd
                | Hook::InsertPmdProt
                | Hook::InsertPud
                | Hook::InsertPudProt
        )
    }

    /// PAT's cache-mode lookup on insert.
    pub fn is_insert_lookup(self) -> bool {
        matches!(self, Hook::TrackInsert | Hook::SetupCachemode)
    }

    pub fn is_pat(self) -> bool {
        matches!(
            self,
            Hook::TrackInsert
                | Hook::TrackRemap
                | Hook::TrackCopy
                | Hook::Untrack
                | Hook::SetupCachemode
                | Hook::PfnmapTrack
                | Hook::PfnmapUntrack
                | Hook::MemReserve
                | Hook::MemFree
        )
    }
}

/// Hooks of the names met last. Names are interned, so a name's storage identifies it: one
/// pointer compare instead of matching the string against every hook name on every record. A
/// direct-mapped table by that address: a trace has a dozen hooks, and scanning a list of the
/// recent ones was 50 instructions a record.
pub struct HookCache {
    slots: Box<[Option<(pfnscope_trace::Sym, Hook)>]>,
}

impl Default for HookCache {
    fn default() -> HookCache {
        HookCache {
            slots: vec![None; Self::SLOTS].into_boxed_slice(),
        }
    }
}

impl HookCache {
    const SLOTS: usize = 64;
    /// A 64-bit hash shifted right by this leaves an index below [`Self::SLOTS`].
    const SHIFT: u32 = u64::BITS - Self::SLOTS.trailing_zeros();

    #[inline]
    pub fn get(&mut self, name: &pfnscope_trace::Sym) -> Hook {
        // Fibonacci hashing of the address (cells are word-aligned: the low bits carry nothing).
        let i = (((name.addr() as u64) >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> Self::SHIFT)
            as usize;
        let slot = &mut self.slots[i % Self::SLOTS];
        if let Some((n, h)) = slot
            && n.same(name)
        {
            return *h;
        }
        let h = Hook::from_name(name);
        *slot = Some((*name, h));
        h
    }
}

#[cfg(test)]
mod tests {
    use pfnscope_trace::Sym;

    use super::*;

    #[test]
    fn every_abi_hook_name_decodes() {
        // The tracer writes pfnscope_abi::hook::NAMES; none of them may fall through to Other.
        for n in pfnscope_abi::hook::NAMES {
            assert_ne!(Hook::from_name(n), Hook::Other, "{n}");
        }
        assert_eq!(Hook::from_name("do_something_else"), Hook::Other);
    }

    #[test]
    fn the_cache_answers_like_the_names() {
        let mut c = HookCache::default();
        let mut names: Vec<pfnscope_trace::Sym> = pfnscope_abi::hook::NAMES
            .iter()
            .map(|&n| n.into())
            .collect();
        names.push("do_something_else".into());
        // More names than the cache has slots, twice over, so hits and evictions both happen.
        names.extend((0..2 * HookCache::SLOTS).map(|i| Sym::from(format!("other_{i}"))));
        for _ in 0..2 {
            for n in &names {
                assert_eq!(c.get(n), Hook::from_name(n), "{n}");
            }
        }
    }
}
