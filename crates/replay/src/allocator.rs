//! How the `replay` binary (and its bench) tune memory: mimalloc, their global allocator, and
//! the kernel's huge pages.

/// mimalloc's `mi_option_purge_delay` (mimalloc.h; the same in v2 and in v3, which is built).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped for reuse instead of handing it back to the kernel 10 ms later
/// (mimalloc's default). The trace reader frees every batch's decompressed buffers (~15 MB)
/// and allocates the next one's: purged, each batch's pages were faulted in and zeroed again,
/// 7% of a `replay check` profile (`clear_page_erms`). Peak RSS grows by about one batch's
/// buffers (84 -> 97 MiB on the 10M bench trace). An explicit `MIMALLOC_PURGE_DELAY` wins.
/// Harmless where mimalloc is linked but not the global allocator.
///
/// Also turns transparent huge pages off for this process: mimalloc commits its arenas
/// eagerly, and as an arena grew each 2 MiB of it was faulted in as a huge page and zeroed
/// whole, used or not (`clear_page_erms` under `do_huge_pmd_anonymous_page`, ~10% of a
/// `replay check` profile on the development VM, with spikes of 0.15 s of system time). On the
/// 10M bench trace, 7 alternating runs: 1.26-1.41 -> 1.25-1.27 CPU-s, peak RSS 115 -> 96 MiB.
/// Setting the mimalloc option that commits lazily instead comes too late from `main`: the
/// first arena is reserved before it runs.
pub fn tune() {
    // SAFETY: a process attribute taking plain integers; a kernel without it (before 3.15)
    // returns EINVAL, which changes nothing.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option; mimalloc allows it at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}
