//! Workloads whose faults block for a known reason, so that off-CPU time inside a fault and
//! the site it blocked at can be checked against what the kernel must do:
//!
//! - `cold-file`: a file's pages dropped from the page cache (`POSIX_FADV_DONTNEED` after
//!   `fsync`: clean pages are evicted), then faulted one by one with readahead off
//!   (`MADV_RANDOM`): each fault reads its page from disk and waits for the read on the folio
//!   lock (mm/filemap.c:filemap_fault -> filemap_read_folio -> folio_wait_locked_killable ->
//!   folio_wait_bit_common).
//! - `mmap-contend`: one thread faults fresh pages while another keeps splitting and merging
//!   the same vma with `mprotect` (which write-locks the vma and takes mmap_lock for write):
//!   the fault's per-VMA lock attempt fails and it waits for mmap_lock
//!   (mm/memory.c:lock_mm_and_find_vma -> rwsem_down_read_slowpath), as every fault did
//!   before 6.4.
//!
//! The loads that fault are inline assembly in named functions, so the faulting instruction
//! lies in `touch_cold_pages` / `touch_contended_pages` in any build, and a user stack names
//! them without frame pointers.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use anyhow::{Context, Result, ensure};

use crate::sys::{self, Map, PAGE, errno};

/// One load from `p`, the instruction that faults.
#[inline(always)]
fn load(p: *const u8) -> u32 {
    let v: u32;
    // SAFETY: `p` is inside a live mapping of the caller.
    unsafe {
        core::arch::asm!("mov {0:e}, dword ptr [{1}]", out(reg) v, in(reg) p, options(nostack, readonly))
    };
    v
}

#[inline(never)]
fn touch_cold_pages(m: &Map) -> u64 {
    let mut sum = 0u64;
    for p in 0..m.pages() {
        sum += u64::from(load(unsafe { m.ptr.add(p * PAGE) }));
    }
    sum
}

pub fn cold_file(dir: Option<&str>) -> Result<()> {
    let dir = dir
        .map(str::to_owned)
        .or_else(|| std::env::var("TMPDIR").ok())
        .unwrap_or_else(|| "/var/tmp".into());
    let path = format!("{dir}/pfnscope-cold-{}", std::process::id());
    const PAGES: usize = 1024;
    std::fs::write(&path, vec![0x11u8; PAGES * PAGE]).with_context(|| format!("writing {path}"))?;
    let result = cold_file_in(&path, PAGES);
    let _ = std::fs::remove_file(&path);
    result
}

fn cold_file_in(path: &str, pages: usize) -> Result<()> {
    use std::os::fd::AsRawFd;
    let fd = sys::open(path, libc::O_RDONLY)?;
    // Written back first: only clean pages leave the cache.
    ensure!(
        unsafe { libc::fsync(fd.as_raw_fd()) } == 0,
        "fsync {path}: {}",
        errno()
    );
    let r = unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    ensure!(r == 0, "posix_fadvise(DONTNEED) on {path}: error {r}");
    let m = Map::new(
        pages * PAGE,
        libc::PROT_READ,
        libc::MAP_SHARED,
        Some(&fd),
        0,
    )?;
    m.no_huge_pages()?;
    // One page per fault: without readahead each fault waits for its own read.
    ensure!(
        unsafe { libc::madvise(m.ptr.cast(), m.len, libc::MADV_RANDOM) } == 0,
        "madvise(MADV_RANDOM): {}",
        errno()
    );
    let t = Instant::now();
    let sum = touch_cold_pages(&m);
    let us = t.elapsed().as_micros();
    ensure!(
        sum == pages as u64 * 0x1111_1111,
        "file content not read back"
    );
    println!("cold-file: {pages} pages faulted from disk in {us} us");
    Ok(())
}

#[inline(never)]
fn touch_contended_pages(m: &Map) -> u64 {
    let mut sum = 0u64;
    for p in 0..m.pages() {
        sum += u64::from(load(unsafe { m.ptr.add(p * PAGE) }));
    }
    sum
}

pub fn mmap_contend() -> Result<()> {
    const PAGES: usize = 4096;
    const ROUNDS: usize = 16;
    let m = Map::anon(PAGES * PAGE)?;
    let stop = AtomicBool::new(false);
    let base = m.ptr as usize;
    let t = Instant::now();
    let changes = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut n = 0u64;
            // A page in the middle changes protection and back: each change splits or merges
            // the faulting vma under mmap_lock held for write.
            let mid = (base + PAGES / 2 * PAGE) as *mut libc::c_void;
            while !stop.load(Ordering::Relaxed) {
                unsafe {
                    libc::mprotect(mid, PAGE, libc::PROT_READ);
                    libc::mprotect(mid, PAGE, libc::PROT_READ | libc::PROT_WRITE);
                    let extra = libc::mmap(
                        std::ptr::null_mut(),
                        PAGE,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                    if extra != libc::MAP_FAILED {
                        libc::munmap(extra, PAGE);
                    }
                }
                n += 1;
            }
            n
        });
        let mut sum = 0;
        for _ in 0..ROUNDS {
            sum += touch_contended_pages(&m);
            // Gone again, so the next round faults every page afresh.
            unsafe { libc::madvise(m.ptr.cast(), m.len, libc::MADV_DONTNEED) };
        }
        stop.store(true, Ordering::Relaxed);
        let _ = sum;
        writer.join().unwrap_or(0)
    });
    println!(
        "mmap-contend: {} faults against {changes} vma changes in {} us",
        PAGES * ROUNDS,
        t.elapsed().as_micros()
    );
    Ok(())
}
