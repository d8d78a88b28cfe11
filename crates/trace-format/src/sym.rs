//! Interned strings for the few distinct names a trace repeats on every row (hook, mode, comm,
//! driver, cache modes). A trace of millions of rows holds a handful of distinct values: each
//! is stored once for the life of the process and rows carry a `&'static str` to it. No
//! reference count: records are decoded on one thread and dropped on another, and a shared
//! count would bounce between the two CPUs on every row.

use std::{
    borrow::Borrow,
    collections::HashSet,
    fmt,
    ops::Deref,
    sync::{Mutex, OnceLock},
};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Sym(&'static str);

/// Every distinct string ever interned. What it holds is never freed: it grows with the number
/// of distinct names (hooks, drivers, task names), not with the number of rows.
fn global(s: &str) -> &'static str {
    static ALL: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(v) = all.get(s) {
        return v;
    }
    let v: &'static str = Box::leak(s.into());
    all.insert(v);
    v
}

impl Sym {
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl Deref for Sym {
    type Target = str;
    fn deref(&self) -> &str {
        self.0
    }
}

impl AsRef<str> for Sym {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl Borrow<str> for Sym {
    fn borrow(&self) -> &str {
        self.0
    }
}

impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl fmt::Display for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.0, f)
    }
}

impl From<&str> for Sym {
    fn from(s: &str) -> Sym {
        Sym(global(s))
    }
}

impl From<String> for Sym {
    fn from(s: String) -> Sym {
        Sym(global(&s))
    }
}

impl From<&String> for Sym {
    fn from(s: &String) -> Sym {
        Sym(global(s))
    }
}

impl From<Sym> for String {
    fn from(s: Sym) -> String {
        s.0.to_string()
    }
}

impl PartialEq<str> for Sym {
    fn eq(&self, o: &str) -> bool {
        self.0 == o
    }
}

impl PartialEq<&str> for Sym {
    fn eq(&self, o: &&str) -> bool {
        self.0 == *o
    }
}

impl PartialEq<String> for Sym {
    fn eq(&self, o: &String) -> bool {
        self.0 == o.as_str()
    }
}

impl PartialEq<Sym> for &str {
    fn eq(&self, o: &Sym) -> bool {
        *self == o.0
    }
}

impl PartialEq<Sym> for str {
    fn eq(&self, o: &Sym) -> bool {
        self == o.0
    }
}

/// A lock-free front for the global set, per decoding pass: the most recent strings first,
/// since a column repeats a few values in runs. Past `CAP` distinct values it stops
/// remembering new ones (they still come from the global set).
#[derive(Default)]
pub struct Interner {
    seen: Vec<Sym>,
}

impl Interner {
    const CAP: usize = 64;

    pub fn get(&mut self, s: &str) -> Sym {
        if let Some(i) = self.seen.iter().position(|v| v.as_str() == s) {
            let v = self.seen[i];
            if i > 0 {
                self.seen[..=i].rotate_right(1);
            }
            return v;
        }
        let v = Sym::from(s);
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
        assert!(std::ptr::eq(a.0, a2.0));
        assert!(!std::ptr::eq(a.0, b.0));
        // Another pass (another interner) gets the same storage.
        assert!(std::ptr::eq(
            Interner::default().get("handle_mm_fault").0,
            a.0
        ));
        assert_eq!(i.seen[0], "handle_mm_fault");
        for n in 0..100 {
            let s = format!("name{n}");
            assert_eq!(i.get(&s), s.as_str());
        }
        assert_eq!(i.seen.len(), Interner::CAP);
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
}
