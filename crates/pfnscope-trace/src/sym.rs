//! Interned strings for the few distinct names a trace repeats on every row (hook, mode, comm,
//! driver, cache modes). A trace of millions of rows holds a handful of distinct values: each
//! is stored once for the life of the process and rows carry a reference to it. No reference
//! count: records are decoded on one thread and dropped on another, and a shared count would
//! bounce between the two CPUs on every row. A `Sym` is `Copy`, a plain reference: a record
//! holds seven, and decoding a row over a stale one runs no drop code.
//!
//! The process-wide set is bounded ([`STATIC_BYTES`]): a corrupt or hostile file full of
//! distinct strings gets [`OVERFLOW`] for every new name past it. The tracer's traces hold a
//! few hundred distinct names.

use std::{
    borrow::Borrow,
    cmp::Ordering,
    collections::HashMap,
    fmt,
    hash::{Hash, Hasher},
    ops::Deref,
    sync::{Mutex, OnceLock},
};

/// How many bytes of distinct names are kept for the life of the process.
pub const STATIC_BYTES: usize = 16 << 20;

/// The name every new name becomes once [`STATIC_BYTES`] are taken.
pub const OVERFLOW: &str = "<name past pfnscope's 16 MiB of distinct names>";

/// One pointer wide (a `Record` carries seven; as two-word `&str`s behind an enum tag they were
/// 168 of its bytes, copied on every decode and every move): the kept name's cell, one per
/// distinct name, so that equal storage means an equal name.
#[derive(Clone, Copy)]
pub struct Sym(&'static &'static str);

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

    /// `s` as a Sym: its kept cell, or [`OVERFLOW`]'s past `cap` bytes.
    fn sym(&mut self, s: &str, cap: usize) -> Sym {
        static FULL: &str = OVERFLOW;
        Sym(self.get(s, cap).unwrap_or(&FULL))
    }
}

fn global(s: &str) -> Sym {
    static ALL: OnceLock<Mutex<Names>> = OnceLock::new();
    ALL.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .sym(s, STATIC_BYTES)
}

impl Sym {
    #[inline]
    pub fn as_str(&self) -> &'static str {
        self.0
    }

    /// The storage's address: equal for Syms that are [`Sym::same`], to hash them by.
    #[inline]
    pub fn addr(&self) -> usize {
        std::ptr::from_ref(self.0).addr()
    }

    /// Whether `self` and `o` share storage (interning worked).
    #[inline]
    pub fn same(&self, o: &Sym) -> bool {
        // Each kept name has one cell.
        std::ptr::eq(self.0, o.0)
    }
}

impl Default for Sym {
    #[inline]
    fn default() -> Sym {
        static EMPTY: &str = "";
        Sym(&EMPTY)
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
        global(s)
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
            return self.seen[0];
        }
        let v = Sym::from(String::from_utf8_lossy(s).as_ref());
        if self.seen.len() < Self::CAP {
            self.seen.insert(0, v);
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
        // Past the bound every new name is OVERFLOW; kept names still come back.
        assert_eq!(names.sym("pfnmap_setup_cachemode", 30), OVERFLOW);
        assert!(names.sym("WC", 30).same(&names.sym("WC", 30)));
        assert_eq!(names.sym("WC", 30), "WC");
        assert_eq!(names.bytes, 18);
    }
}
