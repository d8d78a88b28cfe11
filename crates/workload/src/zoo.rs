//! The user-space side of the bug zoo ([`crate::bugzoo`]): open `/dev/bugzoo`, pick the mode,
//! map, touch, and fork or unmap as the mode needs. `kmod/bugzoo/bugzoo.c` says what the driver
//! does wrong in each mode; these only make it happen, and fail when the kernel does something
//! else than the driver's bug predicts.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::sys::{Map, PAGE, errno, in_child};

const DEV: &str = "/dev/bugzoo";
const RW: libc::c_int = libc::PROT_READ | libc::PROT_WRITE;

pub fn run(mode: &str) -> Result<()> {
    match mode {
        "correct" => shared_device(mode, 256),
        "ram-wc" => shared_device(mode, 16),
        "per-page-pat" => per_page_pat(),
        "double-insert" => shared_device(mode, 64),
        "stale-page" => stale_page(),
        "partial-untrack" => partial_untrack(),
        "pat-leak" => shared_device(mode, 16),
        "nopage-loop" => nopage_loop(),
        "cow-pgoff" => cow_pgoff(),
        // Inserted at mmap: the touches fault nothing.
        "insert-page-wc" => shared_device(mode, 16),
        _ => bail!("unknown bugzoo mode {mode}"),
    }
}

/// `/dev/bugzoo` opened and set to `mode` (the driver takes the mode as one write).
fn open(mode: &str) -> Result<OwnedFd> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(DEV)
        .with_context(|| format!("open {DEV} (is bugzoo.ko loaded?)"))?;
    f.write_all(mode.as_bytes())
        .with_context(|| format!("selecting mode {mode}"))?;
    Ok(f.into())
}

fn map(fd: &OwnedFd, pages: usize, flags: libc::c_int) -> Result<Map> {
    Map::new(pages * PAGE, RW, flags, Some(fd), 0)
}

/// Write every page, read it back: each page's first touch is one `->fault` and one PFN insert.
fn shared_device(mode: &str, pages: usize) -> Result<()> {
    let fd = open(mode)?;
    let m = map(&fd, pages, libc::MAP_SHARED)?;
    m.write_all(0xb0b0_0000);
    for p in 0..pages {
        ensure!(
            m.read_page(p) == 0xb0b0_0000 ^ p as u32,
            "{mode}: page {p} does not read back what was written"
        );
    }
    drop(m);
    println!("bugzoo-{mode}: {pages} pages mapped shared, written and read back");
    Ok(())
}

/// 64 MiB of unreserved device memory, one fault (and one PAT lookup) per page.
fn per_page_pat() -> Result<()> {
    const PAGES: usize = (64 << 20) / PAGE;
    let fd = open("per-page-pat")?;
    let m = map(&fd, PAGES, libc::MAP_SHARED)?;
    m.read_all();
    m.write_page(PAGES - 1, 0x5a5a);
    ensure!(m.read_page(PAGES - 1) == 0x5a5a, "last page lost a write");
    drop(m);
    println!("bugzoo-per-page-pat: {PAGES} pages faulted in one by one");
    Ok(())
}

/// Every fault maps a page that was truncated out of the driver's shmem file first: it reads as
/// zeros (a fresh shmem page), and the mapping keeps it after it left the page cache.
fn stale_page() -> Result<()> {
    const PAGES: usize = 64;
    let fd = open("stale-page")?;
    let m = map(&fd, PAGES, libc::MAP_SHARED)?;
    ensure!(
        m.read_all() == 0,
        "truncated shmem pages do not read as zeros"
    );
    drop(m);
    println!("bugzoo-stale-page: {PAGES} pages mapped after leaving the page cache");
    Ok(())
}

/// The whole range is remapped (and reserved) at mmap; unmapping its head first makes 6.1/6.12
/// free a range that was never reserved, and the tail's unmap shrinks the reservation to the head.
fn partial_untrack() -> Result<()> {
    const PAGES: usize = 16;
    const HEAD: usize = 4;
    let fd = open("partial-untrack")?;
    let m = map(&fd, PAGES, libc::MAP_SHARED)?;
    m.read_all();
    // SAFETY: the head of our own mapping; nothing refers to it afterwards but `m`'s final
    // munmap of the whole range, which skips what is already gone.
    ensure!(
        unsafe { libc::munmap(m.ptr.cast(), HEAD * PAGE) } == 0,
        "munmap of the head: {}",
        errno()
    );
    for p in HEAD..PAGES {
        m.read_page(p);
    }
    drop(m);
    println!(
        "bugzoo-partial-untrack: {PAGES} pages remapped, head of {HEAD} unmapped, then the rest"
    );
    Ok(())
}

/// A child touches a page the driver never maps: its fault returns VM_FAULT_NOPAGE and the
/// access faults again until the child is killed.
fn nopage_loop() -> Result<()> {
    const LOOP: Duration = Duration::from_millis(300);
    let fd = open("nopage-loop")?;
    let m = map(&fd, 1, libc::MAP_SHARED)?;
    // SAFETY: single-threaded; the child only touches the page and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", errno());
    }
    if pid == 0 {
        m.read_page(0);
        // Reached only if the driver mapped something after all.
        // SAFETY: leave the child without running the parent's destructors.
        unsafe { libc::_exit(3) };
    }
    std::thread::sleep(LOOP);
    // SAFETY: our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut status = 0;
    // SAFETY: waiting for our own child.
    ensure!(
        unsafe { libc::waitpid(pid, &mut status, 0) } == pid,
        "waitpid: {}",
        errno()
    );
    ensure!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "the faulting child ended by itself (wait status {status:#x}): the fault did not loop"
    );
    drop(m);
    println!("bugzoo-nopage-loop: a child refaulted one page for {LOOP:?}, then was killed");
    Ok(())
}

/// A private remap whose vm_pgoff the driver changed: read every page (raw pfns), write some
/// (COW copies, never page 0: its PTE is how 6.1/6.12 find the range again at fork and unmap),
/// fork so the copy sees both kinds of PTE, unmap.
fn cow_pgoff() -> Result<()> {
    const PAGES: usize = 16;
    let fd = open("cow-pgoff")?;
    let m = map(&fd, PAGES, libc::MAP_PRIVATE)?;
    let device = m.read_page(PAGES - 1);
    for p in 1..PAGES / 2 {
        m.write_page(p, 0xc0c0_0000 | p as u32);
    }
    in_child("bugzoo-cow-pgoff fork", || {
        m.read_all();
        m.write_page(PAGES - 2, 7);
        Ok(())
    })?;
    ensure!(
        m.read_page(1) == 0xc0c0_0001,
        "private write to page 1 lost"
    );
    ensure!(
        m.read_page(PAGES - 1) == device,
        "device page changed under a private mapping"
    );
    drop(m);
    println!(
        "bugzoo-cow-pgoff: {PAGES} pages remapped private, {} COWed, forked, unmapped",
        PAGES / 2 - 1
    );
    Ok(())
}
