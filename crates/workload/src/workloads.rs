//! One function per workload. Each prints a line about what it did; any failure is an error (the
//! test box treats a failing workload as a failed run, never as a pass with fewer events).

use std::os::fd::OwnedFd;

use anyhow::{Context, Result, bail, ensure};

use crate::sys::{self, Map, PAGE, in_child};
use crate::{dax, drm, zoo};

const RW: libc::c_int = libc::PROT_READ | libc::PROT_WRITE;

pub fn run(name: &str, args: &[String]) -> Result<()> {
    match name {
        "anon" => anon(),
        "file" => file(args.first().map(String::as_str)),
        "vvar" => vvar(),
        "vvar-child" => vvar_child(),
        "devmem-shared" => devmem_shared(),
        "devmem-cow" => devmem_cow(),
        "pci-bar" => pci_bar(),
        "fbdev" => fbdev(),
        "drm-bochs" => drm_bochs(),
        "drm-vgem" => drm_vgem(),
        "drm-dumb" => drm_dumb(args.first().map(String::as_str)),
        "dax" => dax(),
        "fsdax" => fsdax(),
        "cold-file" => crate::blocking::cold_file(args.first().map(String::as_str)),
        "mmap-contend" => crate::blocking::mmap_contend(),
        _ if name.starts_with(crate::bugzoo::PREFIX) => {
            zoo::run(&name[crate::bugzoo::PREFIX.len()..])
        }
        _ => bail!("unknown workload {name}"),
    }
}

fn anon() -> Result<()> {
    let m = Map::new(
        8 << 20,
        RW,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        None,
        0,
    )?;
    m.no_huge_pages()?;
    // Read first: maps the shared zero page; the writes then replace it.
    let zeros = m.read_all();
    ensure!(zeros == 0, "fresh anonymous memory is not zero");
    m.write_all(0xa5a5_0000);
    in_child("anon COW", || {
        for p in (0..m.pages()).step_by(4) {
            m.write_page(p, 1);
        }
        Ok(())
    })?;
    ensure!(
        m.read_page(4) == 0xa5a5_0004,
        "child's COW write leaked into the parent"
    );
    println!("anon: {} pages read, written, COWed in a child", m.pages());
    Ok(())
}

fn file(dir: Option<&str>) -> Result<()> {
    let dir = dir
        .map(str::to_owned)
        .or_else(|| std::env::var("TMPDIR").ok())
        .unwrap_or_else(|| "/tmp".into());
    let path = format!("{dir}/pfnscope-workload-{}", std::process::id());
    const PAGES: usize = 256;
    std::fs::write(&path, vec![0x5au8; PAGES * PAGE]).with_context(|| format!("writing {path}"))?;
    let result = file_in(&path, PAGES);
    let _ = std::fs::remove_file(&path);
    result
}

fn file_in(path: &str, pages: usize) -> Result<()> {
    let fd = sys::open(path, libc::O_RDWR)?;
    {
        let shared = Map::new(pages * PAGE, RW, libc::MAP_SHARED, Some(&fd), 0)?;
        shared.no_huge_pages()?;
        ensure!(
            shared.read_page(7) == 0x5a5a_5a5a,
            "file content not visible through the mapping"
        );
        shared.read_all();
        for p in (0..pages).step_by(2) {
            shared.write_page(p, p as u32);
        }
        let private = Map::new(pages * PAGE, RW, libc::MAP_PRIVATE, Some(&fd), 0)?;
        private.no_huge_pages()?;
        private.read_all();
        // Writes to a private file mapping copy the page cache page (COW of a file page).
        for p in (1..pages).step_by(8) {
            private.write_page(p, 0xdead_0000 | p as u32);
        }
        // Truncate while both mappings hold the tail: the kernel unmaps it from every vma and
        // drops it from the page cache.
        let half = pages / 2;
        sys::truncate(&fd, half * PAGE)?;
        for p in 0..half {
            shared.read_page(p);
            private.read_page(p);
        }
        ensure!(shared.read_page(2) == 2, "shared write lost");
    }
    println!(
        "file: {pages} pages mapped shared and private, truncated to {} while mapped",
        pages / 2
    );
    Ok(())
}

/// A fresh process per call: each one faults its own vvar page in.
fn vvar() -> Result<()> {
    const CHILDREN: usize = 8;
    let exe = std::env::current_exe().context("current_exe")?;
    for i in 0..CHILDREN {
        let st = std::process::Command::new(&exe)
            .arg("vvar-child")
            .status()
            .context("spawning vvar-child")?;
        ensure!(st.success(), "vvar child {i}: {st}");
    }
    println!("vvar: {CHILDREN} fresh processes called clock_gettime");
    Ok(())
}

fn vvar_child() -> Result<()> {
    // SAFETY: getauxval has no preconditions.
    let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    ensure!(vdso != 0, "no vDSO in this process");
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    for clock in [
        libc::CLOCK_MONOTONIC,
        libc::CLOCK_REALTIME,
        libc::CLOCK_BOOTTIME,
    ] {
        // SAFETY: ts is a valid timespec.
        ensure!(
            unsafe { libc::clock_gettime(clock, &mut ts) } == 0,
            "clock_gettime: {}",
            sys::errno()
        );
    }
    Ok(())
}

/// The legacy VGA window: below 1 MiB, so /dev/mem allows it even with STRICT_DEVMEM, and it is
/// not RAM.
const VGA_WINDOW: u64 = 0xA0000;
const DEVMEM_LEN: usize = 64 << 10;

fn devmem_shared() -> Result<()> {
    let fd = sys::open("/dev/mem", libc::O_RDWR | libc::O_SYNC)?;
    let m = Map::new(DEVMEM_LEN, RW, libc::MAP_SHARED, Some(&fd), VGA_WINDOW)?;
    m.read_all();
    m.write_page(1, 0x1234_5678);
    in_child("devmem-shared fork", || {
        m.read_all();
        Ok(())
    })?;
    drop(m);
    println!(
        "devmem-shared: {} pages of {VGA_WINDOW:#x} mapped shared, forked, unmapped",
        DEVMEM_LEN / PAGE
    );
    Ok(())
}

fn devmem_cow() -> Result<()> {
    let fd = sys::open("/dev/mem", libc::O_RDWR)?;
    let m = Map::new(DEVMEM_LEN, RW, libc::MAP_PRIVATE, Some(&fd), VGA_WINDOW)?;
    m.read_all();
    // Not page 0: once the first PTE is an anonymous page, the fork's PAT copy (track_pfn_copy on
    // 6.1/6.12) fails and fork returns ENOMEM.
    for p in 1..m.pages() {
        m.write_page(p, 0xc0c0_0000 | p as u32);
    }
    for p in 1..m.pages() {
        ensure!(
            m.read_page(p) == 0xc0c0_0000 | p as u32,
            "private write to page {p} lost"
        );
    }
    in_child("devmem-cow fork", || {
        m.read_all();
        m.write_page(2, 7);
        Ok(())
    })?;
    ensure!(
        m.read_page(2) == 0xc0c0_0002,
        "child's write leaked into the parent"
    );
    drop(m);
    println!(
        "devmem-cow: {} pages of {VGA_WINDOW:#x} mapped private, COWed, forked",
        DEVMEM_LEN / PAGE
    );
    Ok(())
}

/// qemu's `edu` device (1234:11e8): BAR0 is 1 MiB of MMIO with an identification register at 0
/// and a liveness register at 4 that reads back the inverse of what was written.
fn pci_bar() -> Result<()> {
    let mut found = None;
    for e in std::fs::read_dir("/sys/bus/pci/devices")? {
        let dir = e?.path();
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        if read("vendor") == "0x1234" && read("device") == "0x11e8" {
            found = Some(dir);
        }
    }
    let dir = found.context("no edu device (1234:11e8): run qemu with -device edu")?;
    let res = dir.join("resource0");
    let fd = sys::open(&res.to_string_lossy(), libc::O_RDWR | libc::O_SYNC)?;
    let m = Map::new(16 * PAGE, RW, libc::MAP_SHARED, Some(&fd), 0)?;
    let id = m.read_u32(0);
    ensure!(
        id & 0xff == 0xed,
        "edu identification register reads {id:#x}"
    );
    m.write_u32(4, 0x1234_5678);
    let live = m.read_u32(4);
    ensure!(
        live == !0x1234_5678u32,
        "edu liveness register reads {live:#x}"
    );
    m.read_all();
    in_child("pci-bar fork", || {
        ensure!(m.read_u32(0) == id, "child reads another id");
        Ok(())
    })?;
    drop(m);
    println!(
        "pci-bar: {} BAR0 mapped (id {id:#x}), forked, unmapped",
        res.display()
    );
    Ok(())
}

#[repr(C)]
struct FbFix {
    id: [u8; 16],
    smem_start: libc::c_ulong,
    smem_len: u32,
    type_: u32,
    type_aux: u32,
    visual: u32,
    xpanstep: u16,
    ypanstep: u16,
    ywrapstep: u16,
    line_length: u32,
    mmio_start: libc::c_ulong,
    mmio_len: u32,
    accel: u32,
    capabilities: u16,
    reserved: [u16; 2],
}

const FBIOGET_FSCREENINFO: libc::c_ulong = 0x4602;

fn fbdev() -> Result<()> {
    let fd = sys::open("/dev/fb0", libc::O_RDWR)?;
    // SAFETY: FbFix is plain old data.
    let mut fix: FbFix = unsafe { std::mem::zeroed() };
    // SAFETY: FBIOGET_FSCREENINFO fills a struct fb_fix_screeninfo.
    unsafe { sys::ioctl(&fd, FBIOGET_FSCREENINFO, &mut fix, "FBIOGET_FSCREENINFO")? };
    let id = String::from_utf8_lossy(&fix.id)
        .trim_end_matches('\0')
        .to_owned();
    ensure!(
        fix.smem_len as usize >= PAGE,
        "{id}: framebuffer of {} bytes",
        fix.smem_len
    );
    let len = (fix.smem_len as usize).min(4 << 20) & !(PAGE - 1);
    let m = Map::new(len, RW, libc::MAP_SHARED, Some(&fd), 0)?;
    m.write_all(0x00ff_00ff);
    m.read_all();
    drop(m);
    println!(
        "fbdev: {id} at {:#x}, {} of {} bytes mapped and written",
        fix.smem_start, len, fix.smem_len
    );
    Ok(())
}

fn map_bo(fd: &OwnedFd, bo: &drm::CreateDumb) -> Result<Map> {
    let off = drm::map_dumb(fd, bo.handle)?;
    Map::new(bo.size as usize, RW, libc::MAP_SHARED, Some(fd), off)
}

fn drm_bochs() -> Result<()> {
    let (card, fd) = drm::open_card("bochs")?;
    let out = drm::first_output(&fd)?;
    let (w, h) = (u32::from(out.mode.hdisplay), u32::from(out.mode.vdisplay));
    let bo = drm::create_dumb(&fd, w, h)?;
    let m = map_bo(&fd, &bo)?;
    // Still in system memory (TTM): faults insert its pages one at a time.
    m.write_all(0x0000_ff00);
    let fb = drm::add_fb(&fd, &bo)?;
    // Scanout pins the buffer in VRAM: TTM moves it and zaps our PTEs, so these faults map the
    // BAR (write-combined as asked, or what PAT makes of it).
    drm::set_crtc(&fd, &out, fb)?;
    m.write_all(0x00ff_0000);
    ensure!(
        m.read_page(3) == 0x00ff_0003,
        "write through the VRAM mapping lost"
    );
    drop(m);
    drm::rm_fb(&fd, fb)?;
    drm::destroy_dumb(&fd, bo.handle)?;
    println!(
        "drm-bochs: {card} {w}x{h} dumb buffer ({} bytes) touched before and after SETCRTC",
        bo.size
    );
    Ok(())
}

fn drm_vgem() -> Result<()> {
    dumb_buffer("vgem", "drm-vgem", 0x1111_0000)
}

/// Not in the table: a dumb buffer of any DRM driver that has them, mapped and touched, for
/// tracing a driver the box has no workload for (`testbox --load qxl --run "workload drm-dumb
/// qxl"`).
fn drm_dumb(driver: Option<&str>) -> Result<()> {
    let driver =
        driver.context("drm-dumb needs a DRM driver's name, e.g. `workload drm-dumb qxl`")?;
    dumb_buffer(driver, "drm-dumb", 0x2222_0000)
}

/// A 512x512 dumb buffer on `driver`'s card: mapped, every page written, one read back.
fn dumb_buffer(driver: &str, label: &str, pattern: u32) -> Result<()> {
    let (card, fd) = drm::open_card(driver)?;
    let bo = drm::create_dumb(&fd, 512, 512)?;
    let m = map_bo(&fd, &bo)?;
    m.write_all(pattern);
    ensure!(
        m.read_page(5) == pattern ^ 5,
        "write through the {driver} mapping lost"
    );
    drop(m);
    drm::destroy_dumb(&fd, bo.handle)?;
    println!(
        "{label}: {card} dumb buffer of {} bytes mapped and touched",
        bo.size
    );
    Ok(())
}

/// Device DAX (see [`crate::dax`]): one instance aligned to 2 MiB, whose faults map whole PMDs
/// (`vmf_insert_pfn_pmd` while the kernel has devmap pfns), and one aligned to 4 KiB, whose
/// faults map PTEs through `vmf_insert_mixed` into a vma with neither VM_PFNMAP nor VM_MIXEDMAP.
fn dax() -> Result<()> {
    const PMD: usize = 2 << 20;
    let regions = dax::regions()?;
    ensure!(
        regions.len() >= 2,
        "{} pmem region(s), the workload needs 2 (two memmap=SIZE!START ranges)",
        regions.len()
    );
    let huge = dax::devdax(&regions[0], PMD)?;
    let small = dax::devdax(&regions[1], PAGE)?;

    let fd = sys::open(&huge.to_string_lossy(), libc::O_RDWR)?;
    let m = Map::new(2 * PMD, RW, libc::MAP_SHARED, Some(&fd), 0)?;
    ensure!(
        (m.ptr as usize).is_multiple_of(PMD),
        "{} mapped at {:p}, not 2 MiB aligned",
        huge.display(),
        m.ptr
    );
    // A read fault maps the first PMD read-only; the write to it then faults on a present PMD.
    m.read_page(0);
    m.write_page(1, 0xdada_0001);
    m.write_page(PMD / PAGE, 0xdada_0200);
    ensure!(
        m.read_page(1) == 0xdada_0001,
        "write through the first PMD lost"
    );
    ensure!(
        m.read_page(PMD / PAGE) == 0xdada_0200,
        "write through the second PMD lost"
    );
    drop(m);

    let fd = sys::open(&small.to_string_lossy(), libc::O_RDWR)?;
    let m = Map::new(64 * PAGE, RW, libc::MAP_SHARED, Some(&fd), 0)?;
    m.read_all();
    m.write_all(0xd5d5_0000);
    // A shared vma without an anon_vma is not copied at fork: the child faults its own PTEs.
    in_child("dax fork", || {
        ensure!(m.read_page(3) == 0xd5d5_0003, "child reads another value");
        m.write_page(4, 0x4444);
        Ok(())
    })?;
    ensure!(
        m.read_page(4) == 0x4444,
        "child's write to the shared mapping not seen"
    );
    drop(m);
    println!(
        "dax: {} (2 MiB) 2 PMDs read and written, {} (4 KiB) 64 pages written, forked",
        huge.display(),
        small.display()
    );
    Ok(())
}

/// fs-dax: the third pmem region stays a block device (nd_pmem gives legacy pmem struct pages),
/// formatted ext2 by busybox mke2fs and mounted `-o dax` by the ext4 driver. File faults then map
/// the pmem's pfns straight into the vma (vmf_insert_mixed of devmap pfns up to 6.x), holes map
/// the zero pfn, private writes COW, and truncate unmaps what the file lost.
fn fsdax() -> Result<()> {
    let regions = dax::regions()?;
    ensure!(
        regions.len() >= 3,
        "{} pmem region(s), the workload needs 3 (three memmap=SIZE!START ranges)",
        regions.len()
    );
    let dev = dax::pmem_block(&regions[2])?;
    let dev = dev.to_string_lossy();
    let out = std::process::Command::new("mke2fs")
        .args(["-F", "-b", "4096", &dev])
        .output()
        .context("running mke2fs (busybox)")?;
    ensure!(
        out.status.success(),
        "mke2fs {dev}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    const MNT: &str = "/tmp/fsdax";
    std::fs::create_dir_all(MNT)?;
    sys::mount(&dev, MNT, "ext4", "dax")?;
    let result = fsdax_files(MNT);
    let unmounted = sys::umount(MNT);
    result?;
    unmounted?;
    println!(
        "fsdax: ext2 on {dev} mounted -o dax: file mapped shared and private, truncated; sparse file's holes read, then written"
    );
    Ok(())
}

fn fsdax_files(dir: &str) -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    ensure!(
        mounts.lines().any(|l| l.contains(dir) && l.contains("dax")),
        "{dir} is not mounted with dax: {mounts}"
    );
    let path = format!("{dir}/data");
    const PAGES: usize = 64;
    std::fs::write(&path, vec![0x5au8; PAGES * PAGE]).with_context(|| format!("writing {path}"))?;
    file_in(&path, PAGES)?;

    // A sparse file: reads of holes map the zero pfn, writes allocate blocks and remap.
    let sparse = format!("{dir}/sparse");
    let fd = sys::open(&sparse, libc::O_RDWR | libc::O_CREAT)?;
    sys::truncate(&fd, 16 * PAGE)?;
    let m = Map::new(16 * PAGE, RW, libc::MAP_SHARED, Some(&fd), 0)?;
    m.no_huge_pages()?;
    ensure!(m.read_all() == 0, "holes do not read as zero");
    m.write_all(0x0dad_0000);
    ensure!(m.read_page(3) == 0x0dad_0003, "write to a former hole lost");
    Ok(())
}
