//! Shared immutable strings for the few distinct names a trace repeats on every row (hook, mode,
//! comm, driver, cache modes). A trace of millions of rows holds a handful of distinct values:
//! decoding hands out clones of one allocation instead of allocating a `String` per row.

use std::{borrow::Borrow, fmt, ops::Deref, sync::Arc};

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sym(Arc<str>);

impl Sym {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Sym {
    fn default() -> Sym {
        thread_local! {
            static EMPTY: Sym = Sym(Arc::from(""));
        }
        EMPTY.with(Sym::clone)
    }
}

impl Deref for Sym {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Sym {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Sym {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl From<&str> for Sym {
    fn from(s: &str) -> Sym {
        Sym(Arc::from(s))
    }
}

impl From<String> for Sym {
    fn from(s: String) -> Sym {
        Sym(Arc::from(s))
    }
}

impl From<&String> for Sym {
    fn from(s: &String) -> Sym {
        Sym(Arc::from(s.as_str()))
    }
}

impl From<Sym> for String {
    fn from(s: Sym) -> String {
        s.0.to_string()
    }
}

impl PartialEq<str> for Sym {
    fn eq(&self, o: &str) -> bool {
        &*self.0 == o
    }
}

impl PartialEq<&str> for Sym {
    fn eq(&self, o: &&str) -> bool {
        &*self.0 == *o
    }
}

impl PartialEq<String> for Sym {
    fn eq(&self, o: &String) -> bool {
        *self.0 == **o
    }
}

impl PartialEq<Sym> for &str {
    fn eq(&self, o: &Sym) -> bool {
        *self == &*o.0
    }
}

impl PartialEq<Sym> for str {
    fn eq(&self, o: &Sym) -> bool {
        self == &*o.0
    }
}

/// Hands out one [`Sym`] per distinct string seen: the most recent ones first, since a column
/// repeats a few values in runs. Past `cap` distinct values it stops remembering new ones.
#[derive(Default)]
pub struct Interner {
    seen: Vec<Sym>,
}

impl Interner {
    const CAP: usize = 64;

    pub fn get(&mut self, s: &str) -> Sym {
        if let Some(i) = self.seen.iter().position(|v| v.as_str() == s) {
            let v = self.seen[i].clone();
            if i > 0 {
                self.seen[..=i].rotate_right(1);
            }
            return v;
        }
        let v = Sym::from(s);
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
        assert!(Arc::ptr_eq(&a.0, &a2.0));
        assert!(!Arc::ptr_eq(&a.0, &b.0));
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
