//! Thin wrappers over the libc calls the workloads share.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr;

use anyhow::{Context, Result, bail};

pub const PAGE: usize = 4096;

pub fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

pub fn open(path: &str, flags: libc::c_int) -> Result<OwnedFd> {
    let c = CString::new(path)?;
    // SAFETY: c is a valid NUL-terminated string.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    if fd < 0 {
        bail!("open {path}: {}", errno());
    }
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A mapping unmapped on drop, so every workload also exercises the unmap path.
pub struct Map {
    pub ptr: *mut u8,
    pub len: usize,
}

impl Map {
    pub fn new(
        len: usize,
        prot: libc::c_int,
        flags: libc::c_int,
        fd: Option<&OwnedFd>,
        off: u64,
    ) -> Result<Map> {
        let raw = fd.map_or(-1, |f| f.as_raw_fd());
        // SAFETY: a fresh mapping chosen by the kernel; no existing memory is affected.
        let p = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, raw, off as libc::off_t) };
        if p == libc::MAP_FAILED {
            bail!("mmap of {len} bytes at offset {off:#x}: {}", errno());
        }
        Ok(Map { ptr: p.cast(), len })
    }

    /// Fresh private anonymous memory in 4 KiB pages: the plain fault storm that the tracer's
    /// tests and benchmarks count.
    pub fn anon(len: usize) -> Result<Map> {
        let m = Map::new(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            None,
            0,
        )?;
        m.no_huge_pages()?;
        Ok(m)
    }

    pub fn pages(&self) -> usize {
        self.len / PAGE
    }

    /// Debian kernels default THP to `always`; without this an anonymous or file workload would
    /// take one 2 MiB fault instead of 512 4 KiB ones.
    pub fn no_huge_pages(&self) -> Result<()> {
        // SAFETY: the range is this mapping.
        let r = unsafe { libc::madvise(self.ptr.cast(), self.len, libc::MADV_NOHUGEPAGE) };
        // EINVAL: a kernel without THP, where every page is 4 KiB anyway.
        if r != 0 && errno().raw_os_error() != Some(libc::EINVAL) {
            bail!("madvise(MADV_NOHUGEPAGE): {}", errno());
        }
        Ok(())
    }

    pub fn read_u32(&self, off: usize) -> u32 {
        assert!(off + 4 <= self.len);
        // SAFETY: in bounds and aligned by the callers; volatile so every access really faults.
        unsafe { ptr::read_volatile(self.ptr.add(off).cast::<u32>()) }
    }

    pub fn write_u32(&self, off: usize, v: u32) {
        assert!(off + 4 <= self.len);
        // SAFETY: as read_u32.
        unsafe { ptr::write_volatile(self.ptr.add(off).cast::<u32>(), v) }
    }

    pub fn read_page(&self, page: usize) -> u32 {
        self.read_u32(page * PAGE)
    }

    pub fn write_page(&self, page: usize, v: u32) {
        self.write_u32(page * PAGE, v)
    }

    pub fn read_all(&self) -> u64 {
        (0..self.pages())
            .map(|p| u64::from(self.read_page(p)))
            .sum()
    }

    pub fn write_all(&self, v: u32) {
        for p in 0..self.pages() {
            self.write_page(p, v ^ p as u32);
        }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what new() mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Runs `f` in a forked child and waits for it; the child's mappings are copies of ours, which is
/// what drives the fork side of the fault path (`copy_page_range`, PAT copy).
pub fn in_child(what: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    // SAFETY: the workload is single-threaded, so the child may run arbitrary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork ({what}): {}", errno());
    }
    if pid == 0 {
        let code = match f() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("child ({what}): {e:#}");
                1
            }
        };
        // SAFETY: leave without running the parent's atexit handlers or destructors twice.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        bail!("waitpid ({what}): {}", errno());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("child ({what}) failed: wait status {status:#x}");
    }
    Ok(())
}

/// `ioctl` with a typed argument.
///
/// # Safety
/// `req` must take a pointer to a `T`.
pub unsafe fn ioctl<T>(fd: &OwnedFd, req: libc::c_ulong, arg: &mut T, what: &str) -> Result<()> {
    // SAFETY: the caller guarantees that req expects a *mut T.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *mut T) };
    if r < 0 {
        return Err(errno()).with_context(|| format!("ioctl {what}"));
    }
    Ok(())
}

/// mount(2) of a block device.
pub fn mount(dev: &str, target: &str, fstype: &str, data: &str) -> Result<()> {
    let (d, t, f, o) = (
        CString::new(dev)?,
        CString::new(target)?,
        CString::new(fstype)?,
        CString::new(data)?,
    );
    // SAFETY: valid NUL-terminated strings for the call's duration.
    let r = unsafe { libc::mount(d.as_ptr(), t.as_ptr(), f.as_ptr(), 0, o.as_ptr().cast()) };
    if r != 0 {
        bail!("mount -t {fstype} -o {data} {dev} {target}: {}", errno());
    }
    Ok(())
}

pub fn umount(target: &str) -> Result<()> {
    let t = CString::new(target)?;
    // SAFETY: a valid NUL-terminated string.
    if unsafe { libc::umount(t.as_ptr()) } != 0 {
        bail!("umount {target}: {}", errno());
    }
    Ok(())
}

/// ftruncate(2) to `len` bytes.
pub fn truncate(fd: &OwnedFd, len: usize) -> Result<()> {
    // SAFETY: a plain syscall on an fd we own.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
        bail!("ftruncate to {len} bytes: {}", errno());
    }
    Ok(())
}
