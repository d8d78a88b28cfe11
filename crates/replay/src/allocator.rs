//! How the `replay` binary (and its bench) tune mimalloc, their global allocator.

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, v2).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped for reuse instead of handing it back to the kernel 10 ms later
/// (mimalloc's default). The trace reader frees every batch's decompressed buffers (~15 MB)
/// and allocates the next one's: purged, each batch's pages were faulted in and zeroed again,
/// 7% of a `replay check` profile (`clear_page_erms`). Peak RSS grows by about one batch's
/// buffers (84 -> 97 MiB on the 10M bench trace). An explicit `MIMALLOC_PURGE_DELAY` wins.
/// Harmless where mimalloc is linked but not the global allocator.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option; mimalloc allows it at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}
