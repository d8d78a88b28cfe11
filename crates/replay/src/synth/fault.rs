//! The builder's kernel, part two: faults, PFN and page inserts, COW, `vm_normal_page`.

use super::*;

impl TraceBuilder {
    pub(super) fn fault_flags(&self, write: bool) -> u32 {
        DEFAULT_FLAGS | if write { ff::WRITE } else { 0 }
    }

    /// 6.12+: the VMA-lock attempt that the driver's missing `->map_pages` turns into RETRY.
    pub(super) fn vma_lock_attempt(&mut self, v: &Vma, addr: u64, write: bool) {
        if self.series == Series::V6_1 {
            return;
        }
        let fl = self.fault_flags(write) | ff::VMA_LOCK;
        let snap = v.clone();
        self.leaf("handle_mm_fault", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.fault_flags = Some(fl);
            r.ret = Some(vf::RETRY as i64);
        });
    }

    /// A driver fault that maps one pfn: `vmf_insert_pfn_prot` asking for `req` (TTM, bochs).
    /// `nested`: through `vmf_insert_pfn` (vgem, vvar). Returns the cache mode mapped.
    pub fn fault_insert(
        &mut self,
        v: &Vma,
        addr: u64,
        pfn: u64,
        req: Cache,
        nested: bool,
    ) -> Cache {
        let snap = v.clone();
        // tp_btf carries the vma bpf_find_vma found for the address.
        self.tracepoint("exceptions:page_fault_user", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.error_code = Some(0x6);
        });
        self.vma_lock_attempt(v, addr, true);
        let fl = self.fault_flags(true);
        self.open("handle_mm_fault", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.fault_flags = Some(fl);
        });
        let prot = self.prot_with(v.prot, req);
        let page_addr = addr & !(PAGE_SIZE - 1);
        if nested {
            self.open("vmf_insert_pfn", |r| {
                Self::set_vma(r, &snap);
                r.address = Some(page_addr);
                r.pfn = Some(pfn);
                r.prot = Some(snap.prot);
            });
        }
        self.open("vmf_insert_pfn_prot", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(page_addr);
            r.pfn = Some(pfn);
            r.prot = Some(prot);
            r.cache_req = Some(req.name().into());
        });
        let got = self.lookup_memtype(pfn);
        let prot_out = self.prot_with(prot, got);
        let (lookup_hook, sized) = if self.series == Series::V6_16 {
            ("pfnmap_setup_cachemode", true)
        } else {
            ("track_pfn_insert", false)
        };
        let track_vma = (!sized).then(|| snap.clone());
        self.leaf(lookup_hook, |r| {
            if let Some(tv) = &track_vma {
                Self::set_vma(r, tv);
            }
            r.pfn = Some(pfn);
            if sized {
                r.size = Some(PAGE_SIZE);
                r.ret = Some(0);
            }
            r.prot = Some(prot);
            r.cache_req = Some(req.name().into());
            r.prot_out = Some(prot_out);
            r.cache_out = Some(got.name().into());
        });
        self.close(|r| r.ret = Some(vf::NOPAGE as i64));
        if nested {
            self.close(|r| r.ret = Some(vf::NOPAGE as i64));
        }
        self.close(|r| r.ret = Some(vf::NOPAGE as i64));
        self.ptes.insert(
            (v.mm, addr >> PAGE_SHIFT),
            KPte {
                pfn,
                special: true,
                cache: got,
            },
        );
        got
    }

    /// One driver fault that inserts each of `pfns` at the same page, asking for `req`: the
    /// first maps it, the kernel keeps that PTE for the others and returns NOPAGE.
    pub fn fault_inserts_at(&mut self, v: &Vma, addr: u64, pfns: &[u64], req: Cache) {
        let snap = v.clone();
        self.vma_lock_attempt(v, addr, true);
        let fl = self.fault_flags(true);
        self.open("handle_mm_fault", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.fault_flags = Some(fl);
        });
        let prot = self.prot_with(v.prot, req);
        let page_addr = addr & !(PAGE_SIZE - 1);
        let lookup_hook = self.pat_hook("track_pfn_insert", "pfnmap_setup_cachemode");
        for &pfn in pfns {
            self.open("vmf_insert_pfn_prot", |r| {
                Self::set_vma(r, &snap);
                r.address = Some(page_addr);
                r.pfn = Some(pfn);
                r.prot = Some(prot);
                r.cache_req = Some(req.name().into());
            });
            let got = self.lookup_memtype(pfn);
            let prot_out = self.prot_with(prot, got);
            let sized = lookup_hook == "pfnmap_setup_cachemode";
            self.leaf(lookup_hook, |r| {
                if !sized {
                    Self::set_vma(r, &snap);
                } else {
                    r.size = Some(PAGE_SIZE);
                    r.ret = Some(0);
                }
                r.pfn = Some(pfn);
                r.prot = Some(prot);
                r.cache_req = Some(req.name().into());
                r.prot_out = Some(prot_out);
                r.cache_out = Some(got.name().into());
            });
            self.close(|r| r.ret = Some(vf::NOPAGE as i64));
            self.ptes.entry((v.mm, addr >> PAGE_SHIFT)).or_insert(KPte {
                pfn,
                special: true,
                cache: got,
            });
        }
        self.close(|r| r.ret = Some(vf::NOPAGE as i64));
    }

    /// A driver fault whose `->fault` returns VM_FAULT_NOPAGE without mapping anything.
    pub fn fault_nopage(&mut self, v: &Vma, addr: u64) {
        let snap = v.clone();
        self.vma_lock_attempt(v, addr, false);
        let fl = self.fault_flags(false);
        self.leaf("handle_mm_fault", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.fault_flags = Some(fl);
            r.ret = Some(vf::NOPAGE as i64);
        });
    }

    /// `memtype_reserve` called by a driver outside any mapping (ioremap and friends).
    pub fn reserve_io(&mut self, pfn: u64, pages: u64, c: Cache) -> (i64, Cache) {
        self.memtype_reserve(pfn, pages, c)
    }

    /// `arch_io_reserve_memtype_wc`: a WC reservation, given back (-EBUSY) when the type it
    /// gets may not be WC's (memtype_reserve_io).
    pub fn arch_io_reserve_wc(&mut self, pfn: u64, pages: u64) -> i64 {
        self.open("arch_io_reserve_memtype_wc", |r| {
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
        });
        let (rr, got) = self.memtype_reserve(pfn, pages, Cache::WC);
        let ret = if rr != 0 {
            rr
        } else if !Cache::WC.may_become(got) {
            self.memtype_free(pfn, pages);
            errno::EBUSY
        } else {
            0
        };
        self.close(|r| r.ret = Some(ret));
        ret
    }

    /// `vm_insert_page` of the page at `pfn`: a normal PTE with the vma's protection.
    pub fn insert_page(&mut self, v: &Vma, addr: u64, pfn: u64) {
        let snap = v.clone();
        self.leaf("vm_insert_page", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.pfn = Some(pfn);
            r.ret = Some(0);
        });
        let cache = self.pat.of_prot(v.prot);
        self.ptes.insert(
            (v.mm, addr >> PAGE_SHIFT),
            KPte {
                pfn,
                special: false,
                cache,
            },
        );
    }

    /// A driver fault whose `->fault` hands back the page at `pfn` (`vmf->page`): the core maps
    /// it with the vma's protection (finish_fault -> set_pte_range, do_set_pte on 6.1).
    pub fn fault_maps_page(&mut self, v: &Vma, addr: u64, pfn: u64) {
        let snap = v.clone();
        self.vma_lock_attempt(v, addr, false);
        let fl = self.fault_flags(false);
        self.open("handle_mm_fault", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.fault_flags = Some(fl);
        });
        let hook = if self.series == Series::V6_1 {
            "do_set_pte"
        } else {
            "set_pte_range"
        };
        let page_addr = addr & !(PAGE_SIZE - 1);
        self.leaf(hook, |r| {
            Self::set_vma(r, &snap);
            r.address = Some(page_addr);
            r.pfn = Some(pfn);
            r.size = Some(PAGE_SIZE);
        });
        self.close(|r| r.ret = Some(0));
        let cache = self.pat.of_prot(v.prot);
        self.ptes.insert(
            (v.mm, addr >> PAGE_SHIFT),
            KPte {
                pfn,
                special: false,
                cache,
            },
        );
    }

    /// `remap_pfn_range_notrack` called by a driver: special PTEs in the cache mode `c` it
    /// asks for, no PAT.
    pub fn remap_notrack(&mut self, v: &mut Vma, pfn: u64, c: Cache) {
        let pages = v.pages();
        let prot = self.prot_with(v.prot, c);
        let snap = v.clone();
        self.leaf("remap_pfn_range_notrack", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(snap.start);
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
            r.prot = Some(prot);
            r.cache_req = Some(c.name().into());
            r.ret = Some(0);
        });
        v.flags |= self.bits.remap_flags();
        for j in 0..pages {
            self.ptes.insert(
                (v.mm, (v.start >> PAGE_SHIFT) + j),
                KPte {
                    pfn: pfn + j,
                    special: true,
                    cache: c,
                },
            );
        }
    }

    /// munmap() of the first `pages` of `v`: the vma is split, and the unmapped head (a vma of
    /// its own) is untracked and zapped. 6.1/6.12 untrack it with its own range, which no
    /// reservation starts and ends at; 6.16+ keep the tracking context until the last vma goes.
    pub fn munmap_head(&mut self, v: &mut Vma, pages: u64) {
        let mut head = v.clone();
        head.id = self.next_vma;
        self.next_vma += 1;
        head.end = head.start + pages * PAGE_SIZE;
        let first = self.ptes.get(&(head.mm, head.start >> PAGE_SHIFT)).copied();
        if self.series != Series::V6_16 && head.flags & self.bits.pfnmap != 0 {
            let snap = head.clone();
            self.open("untrack_pfn", |r| {
                Self::set_vma(r, &snap);
                r.pfn = Some(0);
                r.size = Some(0);
            });
            if head.flags & self.bits.pat != 0
                && let Some(k) = first.filter(|k| k.special)
            {
                self.memtype_free(k.pfn, pages);
            }
            self.close(|_| {});
            head.flags &= !self.bits.pat;
        }
        let snap = head.clone();
        self.open("unmap_page_range", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(snap.start);
            r.size = Some(snap.end - snap.start);
        });
        self.vnp_range(&head);
        self.close(|_| {});
        for pg in head.start >> PAGE_SHIFT..head.end >> PAGE_SHIFT {
            self.ptes.remove(&(head.mm, pg));
        }
        v.start = head.end;
        v.pgoff += pages;
    }

    /// A write to a private PFN mapping: `do_wp_page` finds no page and copies.
    pub fn cow_write(&mut self, v: &Vma, addr: u64) {
        let Some(k) = self.ptes.get(&(v.mm, addr >> PAGE_SHIFT)).copied() else {
            return;
        };
        self.vma_lock_attempt(v, addr, true);
        let snap = v.clone();
        let fl = self.fault_flags(true);
        self.open("handle_mm_fault", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr);
            r.fault_flags = Some(fl);
        });
        let pte_v = self.pte_value(k, false);
        self.leaf("vm_normal_page", |r| {
            Self::set_vma(r, &snap);
            r.address = Some(addr & !(PAGE_SIZE - 1));
            r.pte = Some(pte_v);
            r.pfn = Some(k.pfn);
            r.page = Some(false);
        });
        self.close(|r| r.ret = Some(0));
        // A fresh anonymous page far above the device pfns, mapped with the vma's protection
        // (wp_page_copy: mk_pte(new_page, vma->vm_page_prot)).
        let anon = 0x10_0000 + (addr >> PAGE_SHIFT & 0xffff);
        let cache = self.pat.of_prot(v.prot);
        self.ptes.insert(
            (v.mm, addr >> PAGE_SHIFT),
            KPte {
                pfn: anon,
                special: false,
                cache,
            },
        );
    }

    pub(super) fn pte_value(&self, k: KPte, writable: bool) -> u64 {
        let mut v = (k.pfn << PAGE_SHIFT)
            | pte::PRESENT
            | 0x4
            | 0x20
            | self.pat.prot_of(k.cache).expect("mode has an index");
        if k.special {
            v |= pte::SPECIAL;
        }
        if writable {
            v |= pte::RW;
        }
        v
    }

    pub(super) fn vnp_range(&mut self, v: &Vma) {
        let snap = v.clone();
        for pg in v.start >> PAGE_SHIFT..v.end >> PAGE_SHIFT {
            if let Some(k) = self.ptes.get(&(v.mm, pg)).copied() {
                // A private vm_page_prot has no write bit: raw PFNs of a COW vma stay
                // read-only, only their anonymous copies are writable.
                let writable =
                    v.flags & self.bits.write != 0 && !(k.special && self.bits.is_cow(v.flags));
                let pte_v = self.pte_value(k, writable);
                self.leaf("vm_normal_page", |r| {
                    Self::set_vma(r, &snap);
                    r.address = Some(pg << PAGE_SHIFT);
                    r.pte = Some(pte_v);
                    r.pfn = Some(k.pfn);
                    r.page = Some(!k.special);
                });
            }
        }
    }
}
