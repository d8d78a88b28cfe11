//! Interned strings for the few distinct names a trace repeats on every row (hook, mode, comm,
//! driver, cache modes). A trace of millions of rows holds a handful of distinct values: each
//! is stored once for the life of the process and rows carry a `&'static str` to it. No
//! reference count in the common case: records are decoded on one thread and dropped on
//! another, and a shared count would bounce between the two CPUs on every row.
//!
//! The process-wide set is bounded ([`STATIC_BYTES`]): a corrupt or hostile file full of
//! distinct strings gets reference-counted copies beyond it, freed with their records.

use std::{
    borrow::Borrow,
    cmp::Ordering,
    collections::HashMap,
    fmt,
    hash::{Hash, Hasher},
    ops::Deref,
    ptr::NonNull,
    sync::{Arc, Mutex, OnceLock},
};

/// How many bytes of distinct names are kept for the life of the process.
pub const STATIC_BYTES: usize = 16 << 20;

/// One pointer wide (a `Record` carries seven; as two-word `&str`s behind an enum tag they were
/// 168 of its bytes, copied on every decode and every move). The pointer's low bit tells the
/// two kinds apart: clear, it points at a kept `&'static str`; set, it is an `Arc<Box<str>>`'s,
/// a counted copy made past [`STATIC_BYTES`].
pub struct Sym(NonNull<()>);

// Both kinds are immutable and shared: a `&'static str` and an `Arc`.
unsafe impl Send for Sym {}
unsafe impl Sync for Sym {}

const SHARED: usize = 1;

#[derive(Default)]
struct Names {
    /// Each kept name and its cell, which a `Sym` points at.
    cells: HashMap<&'static str, &'static &'static str>,
    bytes: usize,
}

impl Names {
    /// The kept cell of `s`, or None once `cap` bytes are taken.
    fn get(&mut self, s: &str, cap: usize) -> Option<&'static &'static str> {
        if let Some(&c) = self.cells.get(s) {
            return Some(c);
        }
        if self.bytes + s.len() > cap {
            return None;
        }
        let v: &'static str = Box::leak(s.into());
        let cell: &'static &'static str = Box::leak(Box::new(v));
        self.bytes += s.len();
        self.cells.insert(v, cell);
        Some(cell)
    }
}

fn global(s: &str) -> Option<&'static &'static str> {
    static ALL: OnceLock<Mutex<Names>> = OnceLock::new();
    ALL.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(s, STATIC_BYTES)
}

impl Sym {
    fn kept(cell: &'static &'static str) -> Sym {
        Sym(NonNull::from(cell).cast())
    }

    fn shared(s: &str) -> Sym {
        let p = Arc::into_raw(Arc::new(Box::<str>::from(s)));
        // An Arc's allocation is word-aligned: the low bit is free for the tag.
        Sym(NonNull::new(p.cast_mut().map_addr(|a| a | SHARED).cast()).expect("Arc is not null"))
    }

    #[inline(always)]
    fn counted(&self) -> Option<*const Box<str>> {
        let p = self.0.as_ptr();
        (p.addr() & SHARED != 0).then(|| p.map_addr(|a| a & !SHARED).cast_const().cast())
    }

    #[inline]
    pub fn as_str(&self) -> &str {
        match self.counted() {
            // SAFETY: a counted Sym holds one strong count of this Arc.
            Some(p) => unsafe { &*p },
            // SAFETY: an untagged Sym points at a leaked, never freed `&'static str`.
            None => unsafe { *self.0.cast::<&'static str>().as_ptr() },
        }
    }

    /// The storage's address: equal for Syms that are [`Sym::same`], to hash them by. Only
    /// while a Sym holds it: a counted copy's address can be reused once every holder is gone.
    #[inline]
    pub fn addr(&self) -> usize {
        self.0.as_ptr().addr()
    }

    /// Whether `self` and `o` share storage (interning worked).
    #[inline]
    pub fn same(&self, o: &Sym) -> bool {
        // Each kept name has one cell, and each counted copy its own Arc.
        self.0 == o.0
    }
}

impl Clone for Sym {
    #[inline]
    fn clone(&self) -> Sym {
        if let Some(p) = self.counted() {
            // SAFETY: `p` came from `Arc::into_raw` and `self` keeps it alive.
            unsafe { Arc::increment_strong_count(p) };
        }
        Sym(self.0)
    }
}

impl Drop for Sym {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(p) = self.counted() {
            // SAFETY: the strong count this Sym held.
            unsafe { Arc::decrement_strong_count(p) };
        }
    }
}

impl Default for Sym {
    #[inline]
    fn default() -> Sym {
        static EMPTY: &str = "";
        Sym::kept(&EMPTY)
    }
}

impl PartialEq for Sym {
    #[inline]
    fn eq(&self, o: &Sym) -> bool {
        self.same(o) || self.as_str() == o.as_str()
    }
}

impl Eq for Sym {}

impl PartialOrd for Sym {
    fn partial_cmp(&self, o: &Sym) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Sym {
    fn cmp(&self, o: &Sym) -> Ordering {
        self.as_str().cmp(o.as_str())
    }
}

impl Hash for Sym {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl Deref for Sym {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Sym {
    #[inline]
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Sym {
    #[inline]
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<&str> for Sym {
    fn from(s: &str) -> Sym {
        match global(s) {
            Some(cell) => Sym::kept(cell),
            None => Sym::shared(s),
        }
    }
}

impl From<String> for Sym {
    fn from(s: String) -> Sym {
        Sym::from(s.as_str())
    }
}

impl From<&String> for Sym {
    fn from(s: &String) -> Sym {
        Sym::from(s.as_str())
    }
}

impl From<Sym> for String {
    fn from(s: Sym) -> String {
        s.as_str().to_string()
    }
}

impl PartialEq<str> for Sym {
    #[inline]
    fn eq(&self, o: &str) -> bool {
        self.as_str() == o
    }
}

impl PartialEq<&str> for Sym {
    #[inline]
    fn eq(&self, o: &&str) -> bool {
        self.as_str() == *o
    }
}

impl PartialEq<String> for Sym {
    #[inline]
    fn eq(&self, o: &String) -> bool {
        self.as_str() == o.as_str()
    }
}

impl PartialEq<Sym> for &str {
    #[inline]
    fn eq(&self, o: &Sym) -> bool {
        *self == o.as_str()
    }
}

impl PartialEq<Sym> for str {
    #[inline]
    fn eq(&self, o: &Sym) -> bool {
        self == o.as_str()
    }
}

/// Byte equality for names (almost all under 32 bytes) in a few word compares, where `==` calls
/// libc's memcmp: a decoder compares every row's hook, mode and name against its recent ones.
#[inline(always)]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4 bytes"));
    match n {
        0 => true,
        1..=3 => a == b,
        4..=8 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        9..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        17..=32 => {
            word(a, 0) == word(b, 0)
                && word(a, 8) == word(b, 8)
                && word(a, n - 16) == word(b, n - 16)
                && word(a, n - 8) == word(b, n - 8)
        }
        _ => a == b,
    }
}

/// A lock-free front for the global set, per decoding pass: the latest string first, since a
/// column repeats a few values in runs. Past `CAP` distinct values it stops remembering new
/// ones (they still come from the global set).
#[derive(Default)]
pub struct Interner {
    seen: Vec<Sym>,
}

impl Interner {
    const CAP: usize = 64;

    pub fn get(&mut self, s: &str) -> Sym {
        self.get_bytes(s.as_bytes())
    }

    /// `get` for a string column's raw bytes: UTF-8 is checked only for a name not seen
    /// recently (Arrow's reader has checked it already; invalid bytes are replaced, not trusted).
    #[inline]
    pub fn get_bytes(&mut self, s: &[u8]) -> Sym {
        if let Some(i) = self
            .seen
            .iter()
            .position(|v| short_eq(v.as_str().as_bytes(), s))
        {
            // Swapped to the front, not rotated: a rotation was a memmove per row whenever
            // hooks alternate, and the hit still costs one compare next time.
            self.seen.swap(0, i);
            return self.seen[0].clone();
        }
        let v = Sym::from(String::from_utf8_lossy(s).as_ref());
        if self.seen.len() < Self::CAP {
            self.seen.insert(0, v.clone());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interner_shares_and_keeps_order() {
        let mut i = Interner::default();
        let a = i.get("handle_mm_fault");
        let b = i.get("track_pfn_insert");
        let a2 = i.get("handle_mm_fault");
        assert!(a.same(&a2));
        assert!(!a.same(&b));
        // Another pass (another interner) gets the same storage.
        assert!(Interner::default().get("handle_mm_fault").same(&a));
        assert_eq!(i.seen[0], "handle_mm_fault");
        for n in 0..100 {
            let s = format!("name{n}");
            assert_eq!(i.get(&s), s.as_str());
        }
        assert_eq!(i.seen.len(), Interner::CAP);
    }

    #[test]
    fn short_eq_is_byte_equality() {
        let words = [
            "",
            "a",
            "ab",
            "abc",
            "WC",
            "UC-",
            "fentry",
            "tp_btf",
            "workload",
            "vm_normal_page",
            "handle_mm_fault",
            "track_pfn_insert",
            "vmf_insert_pfn_prot",
            "exceptions:page_fault_user",
            "drm_gem_ttm_vm_ops [ttm]",
            "filemap:mm_filemap_delete_from_page_cache",
        ];
        for a in words {
            for b in words {
                assert_eq!(short_eq(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
            }
            // One byte changed anywhere, at every length.
            for at in 0..a.len() {
                let mut c = a.as_bytes().to_vec();
                c[at] ^= 1;
                assert!(!short_eq(a.as_bytes(), &c), "{a:?} at {at}");
            }
        }
    }

    #[test]
    fn a_sym_is_one_word() {
        assert_eq!(size_of::<Sym>(), 8);
        assert_eq!(size_of::<Option<Sym>>(), 8);
    }

    #[test]
    fn compares_like_a_string() {
        let s = Sym::from("WC");
        assert!(s == "WC");
        assert!("WC" == s);
        assert_eq!(s, Sym::from(String::from("WC")));
        assert_eq!(format!("{s} {s:?}"), "WC \"WC\"");
        assert_eq!(Sym::default(), "");
    }

    #[test]
    fn the_kept_names_are_bounded() {
        let mut names = Names::default();
        let a = names.get("track_pfn_insert", 30).unwrap();
        assert!(std::ptr::eq(a, names.get("track_pfn_insert", 30).unwrap()));
        assert!(names.get("pfnmap_setup_cachemode", 30).is_none());
        assert_eq!(names.get("WC", 30).copied(), Some("WC"));
        assert_eq!(names.bytes, 18);
        // Past the bound a Sym is a counted copy, equal to the text, freed with its last clone.
        let late = Sym::shared("pfnmap_setup_cachemode");
        assert_eq!(late, "pfnmap_setup_cachemode");
        assert_eq!(late, Sym::from("pfnmap_setup_cachemode"));
        let again = late.clone();
        assert!(late.same(&again));
        let p = late.counted().unwrap();
        // SAFETY: `late` and `again` keep the Arc alive here.
        assert_eq!(
            unsafe { Arc::strong_count(&std::mem::ManuallyDrop::new(Arc::from_raw(p))) },
            2
        );
        drop(again);
        assert_eq!(
            unsafe { Arc::strong_count(&std::mem::ManuallyDrop::new(Arc::from_raw(p))) },
            1
        );
        assert_eq!(late.as_str(), "pfnmap_setup_cachemode");
    }
}
