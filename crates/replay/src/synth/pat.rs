//! The builder's kernel, part one: vmas, PAT memtype reservations and lookups, `remap_pfn_range`.

use super::*;

impl TraceBuilder {
    /// A new vma. `shared`: MAP_SHARED (else private, writable: a COW mapping).
    pub fn vma(
        &mut self,
        start: u64,
        pages: u64,
        shared: bool,
        extra: u64,
        driver: Option<&str>,
    ) -> Vma {
        let b = self.bits;
        let id = self.next_vma;
        self.next_vma += 1;
        let flags = b.write | b.maywrite | 0x1 | 0x10 | if shared { b.shared } else { 0 } | extra;
        Vma {
            id,
            mm: 1,
            start,
            end: start + pages * PAGE_SIZE,
            pgoff: 0,
            flags,
            prot: BASE_PROT,
            driver: driver.map(Sym::from),
            file: Some(id),
        }
    }

    /// A PAT hook's name in this series: `track_pfn_*` up to 6.15, `pfnmap_*` after.
    pub(super) fn pat_hook(&self, track: &'static str, pfnmap: &'static str) -> &'static str {
        if self.series == Series::V6_16 {
            pfnmap
        } else {
            track
        }
    }

    pub(super) fn prot_with(&self, prot: u64, c: Cache) -> u64 {
        (prot & !pte::CACHE_MASK) | self.pat.prot_of(c).expect("every mode has an index")
    }

    pub(super) fn lookup_memtype(&self, pfn: u64) -> Cache {
        if is_isa_range(pfn, 1) {
            return Cache::WB;
        }
        if let Some(c) = self
            .reservations
            .iter()
            .filter(|(s, e, _)| *s <= pfn && pfn < *e)
            .min_by_key(|(s, _, _)| *s)
            .map(|(_, _, c)| *c)
        {
            return c;
        }
        match self.ram_types.get(&pfn) {
            Some(c) => *c,
            // RAM nobody set another memtype on is WB; anything else unreserved is UC-.
            None if self.is_ram(pfn) => Cache::WB,
            None => Cache::UcMinus,
        }
    }

    /// `memtype_reserve` as a call of its own or inside the open call. Returns (ret, new type).
    pub(super) fn memtype_reserve(&mut self, pfn: u64, pages: u64, req: Cache) -> (i64, Cache) {
        let (ret, got) = if is_isa_range(pfn, pages) {
            (0, Cache::WB)
        } else {
            let ov: Vec<Cache> = self
                .reservations
                .iter()
                .filter(|(s, e, _)| *s < pfn + pages && pfn < *e)
                .map(|r| r.2)
                .collect();
            match ov.first() {
                None => (0, req),
                Some(&c) if ov.iter().all(|x| *x == c) => (0, c),
                Some(_) => (errno::EBUSY, req),
            }
        };
        if ret == 0 && !is_isa_range(pfn, pages) {
            self.reservations.push((pfn, pfn + pages, got));
        }
        self.leaf("memtype_reserve", |r| {
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
            r.cache_req = Some(req.name().into());
            r.cache_out = Some(got.name().into());
            r.ret = Some(ret);
        });
        (ret, got)
    }

    pub(super) fn memtype_free(&mut self, pfn: u64, pages: u64) {
        // memtype_erase: an exact match goes, an end match shrinks, anything else is refused.
        let end = pfn + pages;
        let ret = if is_isa_range(pfn, pages) {
            0
        } else if let Some(i) = self
            .reservations
            .iter()
            .position(|(s, e, _)| *s == pfn && *e == end)
        {
            self.reservations.remove(i);
            0
        } else if let Some(r) = self
            .reservations
            .iter_mut()
            .find(|(s, e, _)| *s < pfn && *e == end)
        {
            r.1 = pfn;
            0
        } else {
            errno::EINVAL
        };
        self.leaf("memtype_free", |r| {
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
            r.ret = Some(ret);
        });
    }

    /// `memremap_pages` (device-dax, pmem, PCI P2P): PAT tracking with no vma, which reserves
    /// the whole range (mm/memremap.c:pagemap_range; arch/x86/mm/pat/memtype.c:track_pfn_remap's
    /// `!vma` case, pfnmap_track on 6.16+).
    pub fn memremap_pages(&mut self, pfn: u64, pages: u64) {
        let hook = self.pat_hook("track_pfn_remap", "pfnmap_track");
        let prot = self.prot_with(BASE_PROT, Cache::WB);
        self.open(hook, |r| {
            if hook == "track_pfn_remap" {
                r.address = Some(0);
            }
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
            r.prot = Some(prot);
            r.cache_req = Some(Cache::WB.name().into());
        });
        let (ret, got) = self.memtype_reserve(pfn, pages, Cache::WB);
        let prot_out = self.prot_with(prot, got);
        self.close(|r| {
            r.prot_out = Some(prot_out);
            r.cache_out = Some(got.name().into());
            r.ret = Some(ret);
        });
    }

    /// `memunmap_pages`: the untrack with no vma frees exactly the range.
    pub fn memunmap_pages(&mut self, pfn: u64, pages: u64) {
        let hook = self.pat_hook("untrack_pfn", "pfnmap_untrack");
        self.open(hook, |r| {
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
        });
        self.memtype_free(pfn, pages);
        self.close(|_| {});
    }

    /// `set_pages_array_wc` and friends on RAM pages: a reservation outside any vma.
    pub fn set_ram_type(&mut self, pfn: u64, pages: u64, c: Cache) {
        for p in pfn..pfn + pages {
            self.ram_types.insert(p, c);
        }
        self.leaf("memtype_reserve", |r| {
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
            r.cache_req = Some(c.name().into());
            r.ret = Some(0);
        });
    }

    /// `remap_pfn_range` of the whole vma (mmap of /dev/mem, a PCI BAR, fbdev).
    pub fn remap(&mut self, v: &mut Vma, pfn: u64, want: Cache) -> i64 {
        let pages = v.pages();
        let prot = self.prot_with(v.prot, want);
        let snapshot = v.clone();
        self.open("remap_pfn_range", |r| {
            Self::set_vma(r, &snapshot);
            r.address = Some(snapshot.start);
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
            r.prot = Some(prot);
            r.cache_req = Some(want.name().into());
        });
        let track_hook = self.pat_hook("track_pfn_remap", "pfnmap_track");
        self.open(track_hook, |r| {
            if track_hook == "track_pfn_remap" {
                Self::set_vma(r, &snapshot);
                r.address = Some(snapshot.start);
            }
            r.pfn = Some(pfn);
            r.size = Some(pages * PAGE_SIZE);
            r.prot = Some(prot);
            r.cache_req = Some(want.name().into());
        });
        // reserve_pfn_range: RAM takes its pages' memtype and reserves nothing.
        let (rr, got) = if self.is_ram(pfn) {
            (0, self.lookup_memtype(pfn))
        } else {
            self.memtype_reserve(pfn, pages, want)
        };
        let tr = if rr != 0 {
            rr
        } else if got != want && !is_isa_range(pfn, pages) && !want.may_become(got) {
            self.memtype_free(pfn, pages);
            errno::EINVAL
        } else {
            0
        };
        let prot_out = if tr == 0 {
            self.prot_with(prot, got)
        } else {
            prot
        };
        let pat = self.pat;
        self.close(|r| {
            r.prot_out = Some(prot_out);
            r.cache_out = Some(pat.of_prot(prot_out).name().into());
            r.ret = Some(tr);
        });
        let ret = if tr == 0 {
            0
        } else if self.series == Series::V6_16 {
            tr
        } else {
            errno::EINVAL
        };
        self.close(|r| r.ret = Some(ret));
        if ret == 0 {
            v.flags |= self.bits.remap_flags();
            if self.series != Series::V6_16 {
                v.flags |= self.bits.pat;
            }
            if self.bits.is_cow(v.flags) {
                v.pgoff = pfn;
            }
            let c = self.pat.of_prot(prot_out);
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
        ret
    }
}
