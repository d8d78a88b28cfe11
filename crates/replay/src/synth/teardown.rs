//! The builder's kernel, part three: fork, munmap, truncate, exit and the page cache.

use super::*;

impl TraceBuilder {
    /// fork(): `copy_page_range` of one vma, then the fork tracepoint. Returns copy's result.
    pub fn fork(&mut self, v: &Vma, child_pid: u32) -> i64 {
        let snap = v.clone();
        self.open("copy_page_range", |r| Self::set_vma(r, &snap));
        let mut ret = 0;
        if self.series != Series::V6_16 && v.flags & self.bits.pfnmap != 0 {
            self.open("track_pfn_copy", |r| Self::set_vma(r, &snap));
            let mut tr = 0;
            if v.flags & self.bits.pat != 0 {
                match self.ptes.get(&(v.mm, v.start >> PAGE_SHIFT)).copied() {
                    // RAM: no reservation, strict or not (reserve_pfn_range).
                    Some(k) if k.special && self.is_ram(k.pfn) => {}
                    Some(k) if k.special => {
                        let (rr, got) = self.memtype_reserve(k.pfn, v.pages(), k.cache);
                        tr = if rr != 0 {
                            rr
                        } else if got != k.cache {
                            self.memtype_free(k.pfn, v.pages());
                            errno::EINVAL
                        } else {
                            0
                        };
                    }
                    _ => tr = errno::EINVAL,
                }
            }
            self.close(|r| r.ret = Some(tr));
            ret = tr;
        }
        if ret == 0 {
            self.vnp_range(v);
        }
        self.close(|r| r.ret = Some(ret));
        if ret == 0 {
            self.tracepoint("sched:sched_process_fork", |r| {
                r.child_pid = Some(child_pid)
            });
        }
        ret
    }

    /// munmap() of the whole vma.
    pub fn munmap(&mut self, v: &mut Vma) {
        let first = self.ptes.get(&(v.mm, v.start >> PAGE_SHIFT)).copied();
        if self.series != Series::V6_16 && v.flags & self.bits.pfnmap != 0 {
            let snap = v.clone();
            self.open("untrack_pfn", |r| {
                Self::set_vma(r, &snap);
                r.pfn = Some(0);
                r.size = Some(0);
            });
            // untrack_pfn frees the vma's range from its first PTE (free_pfn_range), whatever
            // the reservation was: RAM has none.
            if v.flags & self.bits.pat != 0
                && let Some(k) = first
                && k.special
                && !self.is_ram(k.pfn)
            {
                self.memtype_free(k.pfn, v.pages());
            }
            self.close(|_| {});
            v.flags &= !self.bits.pat;
        }
        let snap = v.clone();
        self.open("unmap_page_range", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(snap.start);
            r.size = Some(snap.end - snap.start);
        });
        self.vnp_range(v);
        self.close(|_| {});
        if self.series == Series::V6_16
            && let Some(k) = first.filter(|k| k.special)
            && self
                .reservations
                .iter()
                .any(|(s, e, _)| *s == k.pfn && *e == k.pfn + v.pages())
        {
            let n = v.pages();
            self.open("pfnmap_untrack", |r| {
                r.pfn = Some(k.pfn);
                r.size = Some(n * PAGE_SIZE);
            });
            self.memtype_free(k.pfn, n);
            self.close(|_| {});
        }
        for pg in v.start >> PAGE_SHIFT..v.end >> PAGE_SHIFT {
            self.ptes.remove(&(v.mm, pg));
        }
    }

    /// A file page mapped at `addr` is truncated: zapped, then dropped from the page cache.
    pub fn truncate_page(&mut self, v: &Vma, addr: u64, pfn: u64) {
        let snap = v.clone();
        let index = v.pgoff + ((addr - v.start) >> PAGE_SHIFT);
        self.open("unmap_page_range", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.size = Some(PAGE_SIZE);
        });
        let k = KPte {
            pfn,
            special: false,
            cache: Cache::WB,
        };
        let pte_v = self.pte_value(k, false);
        self.leaf("vm_normal_page", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.pte = Some(pte_v);
            r.pfn = Some(pfn);
            r.page = Some(true);
        });
        self.close(|_| {});
        self.drop_from_page_cache(pfn, index);
    }

    /// The current process exits (its thread-group leader: `sched_process_exit`).
    pub fn exit(&mut self) {
        self.tracepoint("sched:sched_process_exit", |_| {});
    }

    /// The page at `pfn` enters the page cache at file index `index` (a read, a fault).
    pub fn add_to_page_cache(&mut self, pfn: u64, index: u64) {
        self.tracepoint("filemap:mm_filemap_add_to_page_cache", |r| {
            r.pfn = Some(pfn);
            r.ino = Some(42);
            r.index = Some(index);
            r.dev = Some(8);
        });
    }

    /// The page at `pfn` leaves the page cache (file index `index`) without any zap: what
    /// truncation or a shmem purge does to pages only special PTEs map.
    pub fn drop_from_page_cache(&mut self, pfn: u64, index: u64) {
        self.tracepoint("filemap:mm_filemap_delete_from_page_cache", |r| {
            r.pfn = Some(pfn);
            r.ino = Some(42);
            r.index = Some(index);
            r.dev = Some(8);
        });
    }
}
