//! The PAT memtype reservations as an interval map with the kernel's reserve/free semantics
//! (arch/x86/mm/pat/memtype.c, memtype_interval.c). Entries are never merged: every reserve adds
//! one, every free removes one, exactly as the kernel's interval tree does, and they are kept in
//! the tree's order (by start; an equal start goes after the ones already there), which decides
//! which of several overlaps a lookup or free finds first.

use pfnscope_abi::Cache;

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
    /// Already there when recording started (the trace's start state).
    Before,
    /// Made by a process outside any traced mapping context (a driver's open or mmap calling
    /// memtype_reserve or ioremap); `exited` once the process is gone.
    Process {
        pid: u32,
        exited: bool,
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
    /// Sorted by start, equal starts in insertion order.
    entries: Vec<Entry>,
    /// No entry is longer than this (entries only shrink), so one overlapping a page starts at
    /// most this far below it: lookups binary-search instead of scanning every reservation
    /// (a long trace keeps hundreds, and every PFN insert looks one up).
    longest: u64,
    /// Every reservation is known, those older than the trace included (the start state had
    /// the memtype list): an overlap the map does not show does not exist.
    complete: bool,
}

impl MemtypeMap {
    /// The tree as it was when recording started; from then on it is complete.
    pub fn from_start(entries: impl IntoIterator<Item = Entry>) -> MemtypeMap {
        let mut m = MemtypeMap {
            complete: true,
            ..MemtypeMap::default()
        };
        for e in entries {
            m.insert(e);
        }
        m
    }

    /// Whether reservations older than the trace are known.
    pub fn complete(&self) -> bool {
        self.complete
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Index range of the entries that may overlap or cover something reaching `reach` from a
    /// start below `before`.
    fn candidates(&self, reach: u64, before: u64) -> std::ops::Range<usize> {
        let from = self
            .entries
            .partition_point(|e| e.start.saturating_add(self.longest) < reach);
        let to = self.entries.partition_point(|e| e.start < before);
        from..to.max(from)
    }

    /// Entries overlapping `[start, end)`, lowest start first, with their index.
    fn overlapping_at(&self, start: u64, end: u64) -> impl Iterator<Item = (usize, &Entry)> {
        let r = self.candidates(start.saturating_add(1), end);
        let base = r.start;
        self.entries[r]
            .iter()
            .enumerate()
            .map(move |(i, e)| (base + i, e))
            .filter(move |(_, e)| e.start < end && start < e.end)
    }

    /// Entries overlapping `[start, end)`, lowest start first.
    pub fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Entry> {
        self.overlapping_at(start, end).map(|(_, e)| e)
    }

    /// Entries holding all of `[start, end)`.
    pub fn covering(&self, start: u64, end: u64) -> impl Iterator<Item = &Entry> {
        self.entries[self.candidates(end, start.saturating_add(1))]
            .iter()
            .filter(move |e| e.start <= start && end <= e.end)
    }

    /// Entries of exactly `[start, end)`, in the kernel's order.
    pub fn exact(&self, start: u64, end: u64) -> impl Iterator<Item = (usize, &Entry)> {
        let from = self.entries.partition_point(|e| e.start < start);
        let to = self.entries.partition_point(|e| e.start <= start);
        self.entries[from..to.max(from)]
            .iter()
            .enumerate()
            .map(move |(i, e)| (from + i, e))
            .filter(move |(_, e)| e.end == end)
    }

    /// Who made each reservation; the ranges themselves only change through frees.
    pub fn owners_mut(&mut self) -> impl Iterator<Item = &mut Owner> {
        self.entries.iter_mut().map(|e| &mut e.owner)
    }

    /// The reservation `lookup` answers from.
    pub fn lookup_entry(&self, pfn: u64) -> Option<&Entry> {
        self.overlapping(pfn, pfn.saturating_add(1)).next()
    }

    /// `memtype_lookup`: the lowest-starting reservation overlapping the page.
    pub fn lookup(&self, pfn: u64) -> Option<Cache> {
        self.lookup_entry(pfn).map(|e| e.cache)
    }

    /// Whether the reservations overlapping `[start, end)` cover all of it: then any reservation
    /// older than the trace that overlapped the range would have forced its type on ours, so the
    /// model's answer is the kernel's.
    /// `ov`: the overlapping entries, lowest start first.
    fn covered(ov: &[&Entry], start: u64, end: u64) -> bool {
        let mut at = start;
        for (s, e) in ov.iter().map(|e| (e.start, e.end)) {
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
        let ov: Vec<&Entry> = self.overlapping(start, end).collect();
        if ov.is_empty() {
            return ReservePrediction::Ok(actual);
        }
        if !self.complete && !Self::covered(&ov, start, end) {
            return ReservePrediction::Unknown;
        }
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
        self.longest = self.longest.max(e.end.saturating_sub(e.start));
        let at = self.entries.partition_point(|x| x.start <= e.start);
        self.entries.insert(at, e);
    }

    /// `memtype_match` with MEMTYPE_EXACT_MATCH, then MEMTYPE_END_MATCH.
    pub fn find_free(&self, start: u64, end: u64) -> FreeMatch {
        self.find_free_for(start, end, None)
    }

    /// As [`MemtypeMap::find_free`]; among identical exact matches (the kernel cannot tell them
    /// apart) the one `owner` made is taken, so leak reports blame the right owner.
    pub fn find_free_for(&self, start: u64, end: u64, owner: Option<Owner>) -> FreeMatch {
        if let Some(o) = owner
            && let Some((i, _)) = self.exact(start, end).find(|(_, e)| e.owner == o)
        {
            return FreeMatch::Exact(i);
        }
        if let Some((i, _)) = self.exact(start, end).next() {
            return FreeMatch::Exact(i);
        }
        // An end match below `start` reaches `end`, so it overlaps `[start, end)` unless that is
        // empty (then no search is cheaper than the scan).
        let end_match = |e: &Entry| e.start < start && e.end == end;
        let found = if start < end {
            self.overlapping_at(start, end).find(|(_, e)| end_match(e))
        } else {
            self.entries.iter().enumerate().find(|(_, e)| end_match(e))
        };
        match found {
            Some((i, _)) => FreeMatch::End(i),
            None => FreeMatch::None,
        }
    }

    /// `memtype_erase`: an exact match goes, an end match is shrunk to what is left before `start`.
    pub fn apply_free(&mut self, m: FreeMatch, start: u64) -> Option<Entry> {
        match m {
            FreeMatch::Exact(i) => Some(self.entries.remove(i)),
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

    /// The interval map against the plainest reading of the kernel's rules: every entry in a list
    /// with its insertion number, "first" meaning lowest start, then oldest (the interval tree's
    /// in-order walk). Thousands of random reserves, frees and lookups over a small pfn space,
    /// with long and short ranges mixed so the binary search's bound is exercised.
    #[test]
    fn agrees_with_a_plain_scan_of_the_tree_order() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let mut m = MemtypeMap::default();
        // (start, end, cache, insertion number)
        type Plain = (u64, u64, Cache, u64);
        let mut plain: Vec<Plain> = vec![];
        let first = |v: &[Plain], f: &dyn Fn(&Plain) -> bool| {
            v.iter()
                .filter(|e| f(e))
                .min_by_key(|e| (e.0, e.3))
                .copied()
        };
        for n in 0..20_000u64 {
            let start = next(200);
            let len = if next(10) == 0 {
                1 + next(150)
            } else {
                1 + next(4)
            };
            let end = start + len;
            let cache = [WB, WC, UcMinus, UC][next(4) as usize];
            match next(3) {
                0 => {
                    m.insert(Entry {
                        start,
                        end,
                        cache,
                        owner: Owner::Other,
                        seq: n,
                    });
                    plain.push((start, end, cache, n));
                }
                1 => {
                    let (start, end) = if next(2) == 0 && !plain.is_empty() {
                        let e = plain[next(plain.len() as u64) as usize];
                        (e.0 + next(2), e.1)
                    } else {
                        (start, end)
                    };
                    let want = first(&plain, &|e| e.0 == start && e.1 == end)
                        .map(|e| ("exact", e))
                        .or_else(|| {
                            first(&plain, &|e| e.0 < start && e.1 == end).map(|e| ("end", e))
                        });
                    let fm = m.find_free(start, end);
                    let got = match fm {
                        FreeMatch::Exact(i) => Some(("exact", m.entries()[i].seq)),
                        FreeMatch::End(i) => Some(("end", m.entries()[i].seq)),
                        FreeMatch::None => None,
                    };
                    assert_eq!(
                        got,
                        want.map(|(k, e)| (k, e.3)),
                        "free {start}..{end} at {n}"
                    );
                    m.apply_free(fm, start);
                    if let Some((k, e)) = want {
                        let at = plain.iter().position(|p| p.3 == e.3).unwrap();
                        if k == "exact" {
                            plain.remove(at);
                        } else {
                            plain[at].1 = start;
                        }
                    }
                }
                _ => {
                    let want = first(&plain, &|e| e.0 <= start && start < e.1).map(|e| e.3);
                    assert_eq!(
                        m.lookup_entry(start).map(|e| e.seq),
                        want,
                        "lookup {start} at {n}"
                    );
                    let covered = plain.iter().any(|e| e.0 <= start && end <= e.1);
                    assert_eq!(m.covering(start, end).next().is_some(), covered);
                    let overlaps = plain.iter().filter(|e| e.0 < end && start < e.1).count();
                    assert_eq!(m.overlapping(start, end).count(), overlaps);
                }
            }
            assert_eq!(m.entries().len(), plain.len());
        }
    }
}
