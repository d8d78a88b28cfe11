//! The PAT memtype reservations as an interval list with the kernel's reserve/free semantics
//! (arch/x86/mm/pat/memtype.c, memtype_interval.c). Entries are never merged: every reserve adds
//! one, every free removes one, exactly as the kernel's interval tree does.

use crate::bits::Cache;

/// Who made a reservation, for the leak finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A whole-vma remap of this vma id.
    Vma(u32),
    /// A fork's strict copy for the child of this parent pid; `failed` once the copy failed.
    Fork {
        parent_pid: u32,
        failed: bool,
    },
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Page frame range, end exclusive.
    pub start: u64,
    pub end: u64,
    pub cache: Cache,
    pub owner: Owner,
    /// Trace seq of the memtype_reserve that made it.
    pub seq: u64,
}

/// What the model expects from a `memtype_reserve`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReservePrediction {
    /// Return 0 and one of these types in `*new_type` (more than one: the MTRR may turn WB to UC-).
    Ok(Vec<Cache>),
    /// Return -EBUSY (conflicting reservations).
    Busy,
    /// The model lacks what decides it (reservations older than the trace, RAM page types).
    Unknown,
}

/// How `memtype_free` would match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeMatch {
    Exact(usize),
    End(usize),
    None,
}

#[derive(Clone, Debug, Default)]
pub struct MemtypeMap {
    entries: Vec<Entry>,
}

impl MemtypeMap {
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(move |e| e.start < end && start < e.end)
    }

    /// The reservation `lookup` answers from.
    pub fn lookup_entry(&self, pfn: u64) -> Option<&Entry> {
        self.overlapping(pfn, pfn + 1).min_by_key(|e| e.start)
    }

    /// `memtype_lookup`: the lowest-starting reservation overlapping the page.
    pub fn lookup(&self, pfn: u64) -> Option<Cache> {
        self.overlapping(pfn, pfn + 1)
            .min_by_key(|e| e.start)
            .map(|e| e.cache)
    }

    /// Whether the reservations overlapping `[start, end)` cover all of it: then any reservation
    /// older than the trace that overlapped the range would have forced its type on ours, so the
    /// model's answer is the kernel's.
    fn covered(&self, start: u64, end: u64) -> bool {
        let mut iv: Vec<(u64, u64)> = self
            .overlapping(start, end)
            .map(|e| (e.start, e.end))
            .collect();
        iv.sort_unstable();
        let mut at = start;
        for (s, e) in iv {
            if s > at {
                return false;
            }
            at = at.max(e);
            if at >= end {
                return true;
            }
        }
        at >= end
    }

    /// `memtype_reserve(start, end, req, new_type)` for a non-RAM range outside the ISA hole.
    /// `with_new_type`: the caller passed a `new_type` pointer (then overlaps impose their type;
    /// without one any difference is a conflict).
    pub fn predict_reserve(
        &self,
        start: u64,
        end: u64,
        req: Cache,
        with_new_type: bool,
    ) -> ReservePrediction {
        // pat_x_mtrr_type: a WB request becomes UC- where the MTRRs say so; UC stays UC on
        // non-RAM but becomes UC- on RAM (reserve_ram_pages_type), which the trace cannot tell.
        let actual: Vec<Cache> = match req {
            Cache::WB => vec![Cache::WB, Cache::UcMinus],
            Cache::UC => vec![Cache::UC, Cache::UcMinus],
            c => vec![c],
        };
        let mut ov: Vec<&Entry> = self.overlapping(start, end).collect();
        if ov.is_empty() {
            return ReservePrediction::Ok(actual);
        }
        if !self.covered(start, end) {
            return ReservePrediction::Unknown;
        }
        ov.sort_by_key(|e| e.start);
        let found = ov[0].cache;
        if ov.iter().any(|e| e.cache != found) {
            return ReservePrediction::Busy;
        }
        if with_new_type {
            ReservePrediction::Ok(vec![found])
        } else if actual == [found] {
            ReservePrediction::Ok(actual)
        } else if actual.contains(&found) {
            ReservePrediction::Unknown
        } else {
            ReservePrediction::Busy
        }
    }

    pub fn insert(&mut self, e: Entry) {
        self.entries.push(e);
    }

    /// `memtype_match` with MEMTYPE_EXACT_MATCH, then MEMTYPE_END_MATCH.
    pub fn find_free(&self, start: u64, end: u64) -> FreeMatch {
        self.find_free_for(start, end, None)
    }

    /// As [`MemtypeMap::find_free`]; among identical exact matches (the kernel cannot tell them
    /// apart) the one `owner` made is taken, so leak reports blame the right owner.
    pub fn find_free_for(&self, start: u64, end: u64, owner: Option<Owner>) -> FreeMatch {
        let exact = |e: &Entry| e.start == start && e.end == end;
        if let Some(o) = owner
            && let Some(i) = self.entries.iter().position(|e| exact(e) && e.owner == o)
        {
            return FreeMatch::Exact(i);
        }
        if let Some(i) = self.entries.iter().position(exact) {
            return FreeMatch::Exact(i);
        }
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| e.start < start && e.end == end)
        {
            return FreeMatch::End(i);
        }
        FreeMatch::None
    }

    /// `memtype_erase`: an exact match goes, an end match is shrunk to what is left before `start`.
    pub fn apply_free(&mut self, m: FreeMatch, start: u64) -> Option<Entry> {
        match m {
            FreeMatch::Exact(i) => Some(self.entries.swap_remove(i)),
            FreeMatch::End(i) => {
                self.entries[i].end = start;
                None
            }
            FreeMatch::None => None,
        }
    }

    pub fn owned_by_vma(&self, vma: u32) -> Option<&Entry> {
        self.entries.iter().find(|e| e.owner == Owner::Vma(vma))
    }

    pub fn entries_mut(&mut self) -> &mut [Entry] {
        &mut self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Cache::*;

    type Existing = Vec<(u64, u64, Cache)>;

    fn map(entries: &[(u64, u64, Cache)]) -> MemtypeMap {
        let mut m = MemtypeMap::default();
        for (s, e, c) in entries {
            m.insert(Entry {
                start: *s,
                end: *e,
                cache: *c,
                owner: Owner::Other,
                seq: 0,
            });
        }
        m
    }

    #[test]
    fn reserve_prediction_table() {
        // (existing, start, end, req, with_new_type, expected)
        #[allow(clippy::type_complexity)]
        let rows: Vec<(Existing, u64, u64, Cache, bool, ReservePrediction)> = vec![
            (vec![], 10, 20, WC, true, ReservePrediction::Ok(vec![WC])),
            (
                vec![],
                10,
                20,
                WB,
                true,
                ReservePrediction::Ok(vec![WB, UcMinus]),
            ),
            (
                vec![(10, 20, UcMinus)],
                10,
                20,
                WC,
                true,
                ReservePrediction::Ok(vec![UcMinus]),
            ),
            (
                vec![(10, 20, UcMinus)],
                10,
                20,
                WC,
                false,
                ReservePrediction::Busy,
            ),
            (
                vec![(10, 15, WC), (15, 20, UcMinus)],
                10,
                20,
                WC,
                true,
                ReservePrediction::Busy,
            ),
            (
                vec![(10, 15, WC), (15, 20, WC)],
                12,
                18,
                UcMinus,
                true,
                ReservePrediction::Ok(vec![WC]),
            ),
            // Only part of the range is known: an older reservation may cover the rest.
            (
                vec![(10, 15, WC)],
                10,
                20,
                UcMinus,
                true,
                ReservePrediction::Unknown,
            ),
            (
                vec![(10, 20, WC)],
                10,
                20,
                WC,
                false,
                ReservePrediction::Ok(vec![WC]),
            ),
        ];
        for (i, (ex, s, e, req, nt, want)) in rows.into_iter().enumerate() {
            assert_eq!(map(&ex).predict_reserve(s, e, req, nt), want, "row {i}");
        }
    }

    #[test]
    fn free_matching_table() {
        // (existing, start, end, match kind, entries left, lookup(10) after)
        #[allow(clippy::type_complexity)]
        let rows: Vec<(Existing, u64, u64, &str, usize, Option<Cache>)> = vec![
            (vec![(10, 20, WC)], 10, 20, "exact", 0, None),
            (vec![(10, 20, WC)], 15, 20, "end", 1, Some(WC)),
            (vec![(10, 20, WC)], 10, 15, "none", 1, Some(WC)),
            (
                vec![(10, 20, WC), (10, 20, WC)],
                10,
                20,
                "exact",
                1,
                Some(WC),
            ),
        ];
        for (i, (ex, s, e, kind, left, after)) in rows.into_iter().enumerate() {
            let mut m = map(&ex);
            let fm = m.find_free(s, e);
            let k = match fm {
                FreeMatch::Exact(_) => "exact",
                FreeMatch::End(_) => "end",
                FreeMatch::None => "none",
            };
            assert_eq!(k, kind, "row {i}");
            m.apply_free(fm, s);
            assert_eq!(m.entries().len(), left, "row {i}");
            assert_eq!(m.lookup(10), after, "row {i}");
            if kind == "end" {
                assert_eq!(m.lookup(15), None, "row {i}: the freed tail is gone");
            }
        }
    }
}
