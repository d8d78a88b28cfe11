//! Arrow readers that panic on a crafted file: the batch is corrupt, the program goes on.
//!
//! arrow-rs asserts instead of failing on some malformed buffers: a dictionary's offsets
//! buffer whose length is not a whole number of offsets panics in `Buffer::typed_data` while
//! the array is being validated (found by `cargo fuzz`, arrow 60). [`CheckedStream`] cannot
//! see that without the types, so the decode itself is guarded.
//!
//! [`CheckedStream`]: crate::CheckedStream

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic into `Err(message)`. While `f` runs on this thread, the panic
/// message is kept off stderr: the caller reports the damage in its own one line. Panics
/// anywhere else print as before.
///
/// Only for decoding foreign bytes: after a panic, whatever `f` was working on must be dropped,
/// not used again.
pub fn guard_panics<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let out = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    out.map_err(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        format!("the Arrow reader failed on it ({what})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_and_the_thread_goes_on() {
        let r: Result<(), String> = guard_panics(|| panic!("bad offsets"));
        assert_eq!(
            r.unwrap_err(),
            "the Arrow reader failed on it (bad offsets)"
        );
        let r = guard_panics(|| panic!("{} offsets", 3));
        assert!(r.unwrap_err().contains("3 offsets"));
        assert_eq!(guard_panics(|| 7), Ok(7));
        // Outside a guard, panics are still panics.
        assert!(catch_unwind(|| panic!("still a panic")).is_err());
    }
}
