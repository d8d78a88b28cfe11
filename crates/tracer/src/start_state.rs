//! The kernel state older than the trace, read when recording starts: PAT's memtype tree, the
//! memtypes RAM pages carry in their page flags, and the device ranges of /proc/iomem.
//!
//! A GPU driver reserves its aperture write-combining at probe time (`arch_io_reserve_memtype_wc`,
//! `io_mapping_init_wc`) and a TTM pool sets pages WC when it fills, long before anyone traces a
//! fault. Without this snapshot the replay could only guess what PAT's lookup must answer.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use pfnscope_abi::Cache;
use pfnscope_trace::{IomemSpan, MemtypeSpan, StartState};

/// debugfs file of the memtype tree (arch/x86/mm/pat/memtype.c, `memtype_seq_show`); present
/// when PAT is enabled and the kernel has CONFIG_DEBUG_FS.
const MEMTYPE_LIST: &str = "x86/pat_memtype_list";
/// Above this many RAM pages (64 GiB) /proc/kpageflags is not scanned at start: reading it
/// costs about 50 ms per GiB of RAM.
const MAX_SCANNED_PAGES: u64 = 16 << 20;

/// Reads everything; `iomem` is /proc/iomem's text, `ram` its System RAM pfn ranges.
pub fn snapshot(iomem: &str, ram: &[[u64; 2]]) -> StartState {
    let mut notes = vec![];
    let memtypes = match debugfs() {
        Some(d) => match fs::read_to_string(d.join(MEMTYPE_LIST)) {
            Ok(text) => Some(parse_memtype_list(&text)),
            Err(e) => {
                notes.push(format!(
                    "PAT memtype list unreadable ({}: {e}): PAT is off, or the kernel lacks CONFIG_X86_PAT or CONFIG_DEBUG_FS; reservations older than the trace are unknown",
                    d.join(MEMTYPE_LIST).display()
                ));
                None
            }
        },
        None => {
            notes.push("debugfs is not mounted and could not be mounted: reservations older than the trace are unknown".into());
            None
        }
    };
    let pages: u64 = ram.iter().map(|r| r[1].saturating_sub(r[0])).sum();
    let ram_memtypes = if ram.is_empty() {
        notes.push("no System RAM ranges in /proc/iomem (not root?): RAM memtypes older than the trace are unknown".into());
        None
    } else if pages > MAX_SCANNED_PAGES {
        notes.push(format!(
            "RAM memtypes not read: {} GiB of RAM is more than the {} GiB scanned at start",
            pages >> 18,
            MAX_SCANNED_PAGES >> 18
        ));
        None
    } else {
        match ram_memtypes(Path::new("/proc/kpageflags"), ram) {
            Ok(v) => Some(v),
            Err(e) => {
                notes.push(format!("RAM memtypes unreadable (/proc/kpageflags: {e})"));
                None
            }
        }
    };
    StartState {
        memtypes,
        ram_memtypes,
        iomem: iomem_spans(iomem),
        notes,
    }
}

/// Where debugfs is mounted, mounting it if it is not.
fn debugfs() -> Option<PathBuf> {
    let mounted = fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, ty) = (f.next()?, f.next()?, f.next()?);
            (ty == "debugfs").then(|| PathBuf::from(dir))
        });
    if mounted.is_some() {
        return mounted;
    }
    let target = c"/sys/kernel/debug";
    // SAFETY: constant NUL-terminated strings; a failure is reported by the return value.
    let rc = unsafe {
        libc::mount(
            c"debugfs".as_ptr(),
            target.as_ptr(),
            c"debugfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    (rc == 0).then(|| PathBuf::from("/sys/kernel/debug"))
}

/// `PAT: [mem 0x00000000fd000000-0x00000000fe000000] write-combining` lines; the end is
/// exclusive (`memtype_seq_show` prints `entry->end`).
pub fn parse_memtype_list(text: &str) -> Vec<MemtypeSpan> {
    text.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("PAT: [mem ")?;
            let (range, name) = rest.split_once("] ")?;
            let (a, b) = range.split_once('-')?;
            let hex = |s: &str| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok();
            let (start, end) = (hex(a)?, hex(b)?);
            Some(MemtypeSpan {
                start_pfn: start >> 12,
                end_pfn: end.div_ceil(4096),
                cache: Cache::parse(name.trim())?,
            })
        })
        .collect()
}

/// /proc/kpageflags bits of the two page flags PAT keeps a RAM page's memtype in
/// (include/uapi/linux/kernel-page-flags.h KPF_ARCH, KPF_UNCACHED; fs/proc/page.c).
const KPF_ARCH: u32 = 38;
const KPF_UNCACHED: u32 = 39;

/// A RAM page's memtype from its /proc/kpageflags word: `_PGMT_WC` is PG_arch_1,
/// `_PGMT_UC_MINUS` PG_uncached, `_PGMT_WT` both (arch/x86/mm/pat/memtype.c:get_page_memtype).
pub fn page_memtype(kpf: u64) -> Cache {
    match ((kpf >> KPF_ARCH) & 1, (kpf >> KPF_UNCACHED) & 1) {
        (0, 0) => Cache::WB,
        (1, 0) => Cache::WC,
        (0, 1) => Cache::UcMinus,
        _ => Cache::WT,
    }
}

/// The RAM pages in `ram` whose memtype is not WB, as runs of one memtype.
fn ram_memtypes(kpageflags: &Path, ram: &[[u64; 2]]) -> std::io::Result<Vec<MemtypeSpan>> {
    let mut f = fs::File::open(kpageflags)?;
    let mut out: Vec<MemtypeSpan> = vec![];
    let mut buf = vec![0u8; 8 << 16];
    for r in ram {
        f.seek(SeekFrom::Start(r[0] * 8))?;
        let mut pfn = r[0];
        while pfn < r[1] {
            let n = ((r[1] - pfn) as usize).min(buf.len() / 8);
            let got = read_full(&mut f, &mut buf[..n * 8])? / 8;
            if got == 0 {
                break;
            }
            for (i, w) in buf[..got * 8].chunks_exact(8).enumerate() {
                let c = page_memtype(u64::from_le_bytes(w.try_into().expect("8 bytes")));
                if c == Cache::WB {
                    continue;
                }
                let p = pfn + i as u64;
                match out.last_mut() {
                    Some(s) if s.end_pfn == p && s.cache == c => s.end_pfn += 1,
                    _ => out.push(MemtypeSpan {
                        start_pfn: p,
                        end_pfn: p + 1,
                        cache: c,
                    }),
                }
            }
            pfn += got as u64;
        }
    }
    Ok(out)
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// /proc/iomem's resources outside System RAM, each with the PCI device above it. Nothing
/// nested in System RAM is kept: that is the kernel image ("Kernel code", ...), whose physical
/// place would tell where KASLR put it.
pub fn iomem_spans(text: &str) -> Vec<IomemSpan> {
    let mut out: Vec<IomemSpan> = vec![];
    // The enclosing resources of the current line, by depth: (name, in RAM, pci device).
    let mut stack: Vec<(String, bool, Option<String>)> = vec![];
    for r in crate::iomem::resources(text) {
        let (depth, a, b) = (r.depth, r.start, r.last);
        stack.truncate(depth);
        let name = r.name.to_string();
        let parent_ram = stack.last().is_some_and(|s| s.1);
        let ram = parent_ram || name == "System RAM";
        let pci = if is_pci_address(&name) {
            Some(name.clone())
        } else {
            stack.last().and_then(|s| s.2.clone())
        };
        stack.push((name.clone(), ram, pci.clone()));
        // Addresses read as zero without root: nothing to keep.
        if ram || b <= a {
            continue;
        }
        out.push(IomemSpan {
            start: a,
            end: b + 1,
            name,
            depth: depth as u32,
            pci,
        });
    }
    out
}

/// `dddd:bb:dd.f`, a PCI device as the kernel names its resources.
fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memtype_list_as_debugfs_prints_it() {
        // From this development VM's 6.18 kernel, and a WC line as a GPU aperture shows it.
        let text = "PAT memtype list:\n\
PAT: [mem 0x000000000009f000-0x00000000000a1000] write-back\n\
PAT: [mem 0x00000000eec00000-0x00000000eed00000] uncached-minus\n\
PAT: [mem 0x00000000fd000000-0x00000000fe000000] write-combining\n\
PAT: [mem 0x0000004000000000-0x0000004000001000] broken\n";
        let v = parse_memtype_list(text);
        assert_eq!(
            v,
            [
                MemtypeSpan {
                    start_pfn: 0x9f,
                    end_pfn: 0xa1,
                    cache: Cache::WB
                },
                MemtypeSpan {
                    start_pfn: 0xeec00,
                    end_pfn: 0xeed00,
                    cache: Cache::UcMinus
                },
                MemtypeSpan {
                    start_pfn: 0xfd000,
                    end_pfn: 0xfe000,
                    cache: Cache::WC
                },
            ]
        );
    }

    #[test]
    fn page_flags_to_memtype_table() {
        // (PG_arch_1, PG_uncached) as get_page_memtype reads them.
        let rows = [
            (0u64, Cache::WB),
            (1 << 38, Cache::WC),
            (1 << 39, Cache::UcMinus),
            (3 << 38, Cache::WT),
            // Other flags (LRU, uptodate, reserved) do not change it.
            ((1 << 5) | (1 << 32) | (1 << 38), Cache::WC),
        ];
        for (kpf, c) in rows {
            assert_eq!(page_memtype(kpf), c, "{kpf:#x}");
        }
    }

    #[test]
    fn kpageflags_runs_of_non_wb_pages() {
        let dir = std::env::temp_dir().join(format!("pfnscope-kpf-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("kpageflags");
        // Pages 0..8: WB WC WC UC- WB WT WT WB.
        let words = [0u64, 1 << 38, 1 << 38, 1 << 39, 0, 3 << 38, 3 << 38, 0];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        fs::write(&p, bytes).unwrap();
        let v = ram_memtypes(&p, &[[0, 4], [5, 8]]).unwrap();
        let spans: Vec<(u64, u64, Cache)> = v
            .iter()
            .map(|s| (s.start_pfn, s.end_pfn, s.cache))
            .collect();
        assert_eq!(
            spans,
            [(1, 3, Cache::WC), (3, 4, Cache::UcMinus), (5, 7, Cache::WT)]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn iomem_keeps_devices_with_their_pci_owner_and_nothing_in_ram() {
        let text = "\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
000a0000-000bffff : PCI Bus 0000:00
00100000-3fffffff : System RAM
  01000000-0225b13f : Kernel code
  02400000-02dfefff : Kernel rodata
fd000000-fdffffff : 0000:00:02.0
  fd000000-fdffffff : bochs-drm
fe000000-fe0fffff : PCI Bus 0000:00
  fe000000-fe0fffff : 0000:00:04.0
    fe000000-fe0fffff : bugzoo
";
        let v = iomem_spans(text);
        let names: Vec<&str> = v.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Reserved",
                "PCI Bus 0000:00",
                "0000:00:02.0",
                "bochs-drm",
                "PCI Bus 0000:00",
                "0000:00:04.0",
                "bugzoo"
            ]
        );
        assert!(!text.is_empty() && !names.contains(&"Kernel code"));
        let bochs = &v[3];
        assert_eq!(
            (bochs.start, bochs.end, bochs.depth, bochs.pci.as_deref()),
            (0xfd00_0000, 0xfe00_0000, 1, Some("0000:00:02.0"))
        );
        assert_eq!(v[6].pci.as_deref(), Some("0000:00:04.0"));
        assert_eq!(v[1].pci, None);
        // Without root every address reads as zero: nothing is kept.
        assert!(
            iomem_spans("00000000-00000000 : System RAM\n00000000-00000000 : Reserved\n")
                .is_empty()
        );
    }
}
