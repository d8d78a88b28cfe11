//! A trace row's `hook` name, decoded once per distinct name into the hook the engine knows it
//! as (`None` for a hook this build does not know, a newer tracer's: its calls still link their
//! children).

use pfnscope_abi::Hook;

/// Hooks of the names met last. Names are interned, so a name's storage identifies it: one
/// pointer compare instead of matching the string against every hook name on every record. A
/// direct-mapped table by that address: a trace has a dozen hooks, and scanning a list of the
/// recent ones was 50 instructions a record.
/// A name and the hook it decodes to.
type Slot = Option<(pfnscope_trace::Sym, Option<Hook>)>;

pub struct HookCache {
    slots: Box<[Slot]>,
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
    pub fn get(&mut self, name: &pfnscope_trace::Sym) -> Option<Hook> {
        // Fibonacci hashing of the address (cells are word-aligned: the low bits carry nothing).
        let i = (((name.addr() as u64) >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> Self::SHIFT)
            as usize;
        let slot = &mut self.slots[i % Self::SLOTS];
        if let Some((n, h)) = slot
            && n.same(name)
        {
            return *h;
        }
        let h = Hook::parse(name);
        *slot = Some((*name, h));
        h
    }
}

#[cfg(test)]
mod tests {
    use pfnscope_trace::Sym;

    use super::*;

    #[test]
    fn the_cache_answers_like_the_names() {
        let mut c = HookCache::default();
        let mut names: Vec<Sym> = Hook::all().map(|h| h.name().into()).collect();
        names.push("do_something_else".into());
        // More names than the cache has slots, twice over, so hits and evictions both happen.
        names.extend((0..2 * HookCache::SLOTS).map(|i| Sym::from(format!("other_{i}"))));
        for _ in 0..2 {
            for n in &names {
                assert_eq!(c.get(n), Hook::parse(n), "{n}");
            }
        }
    }
}
