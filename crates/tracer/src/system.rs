//! Facts about the running system, probed once: kernel release, privileges, tracefs, kprobes,
//! kallsyms.

use std::{
    fs,
    path::{Path, PathBuf},
};

#[derive(Clone, Debug, Default)]
pub struct Uname {
    pub release: String,
    pub version: String,
    pub nodename: String,
}

pub fn uname() -> Uname {
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return Uname::default();
    }
    let s = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Uname {
        release: s(&u.release),
        version: s(&u.version),
        nodename: s(&u.nodename),
    }
}

/// Whether this process may load and attach tracing programs: root, or CAP_BPF + CAP_PERFMON.
pub fn privileged() -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    // CapEff from /proc/self/status: bit 38 CAP_PERFMON, bit 39 CAP_BPF, bit 21 CAP_SYS_ADMIN.
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    has(21) || (has(38) && has(39))
}

/// Where tracefs is mounted, mounting it if it is not (a bare initramfs has nothing mounted).
pub fn tracefs() -> Option<PathBuf> {
    for p in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(p).join("events").is_dir() {
            return Some(PathBuf::from(p));
        }
    }
    let target = c"/sys/kernel/tracing";
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    (rc == 0 && Path::new("/sys/kernel/tracing/events").is_dir())
        .then(|| PathBuf::from("/sys/kernel/tracing"))
}

/// tracefs as this user finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TracefsState {
    Usable(PathBuf),
    /// Mounted, but this user cannot read it (it is mode 700: root only).
    Unreadable(PathBuf),
    NotMounted,
}

/// Like [`tracefs`], but telling a mount this user cannot read from no mount at all.
pub fn tracefs_state() -> TracefsState {
    if let Some(p) = tracefs() {
        return TracefsState::Usable(p);
    }
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    match tracefs_mount(&mounts) {
        Some(p) => TracefsState::Unreadable(p),
        None => TracefsState::NotMounted,
    }
}

/// The first tracefs mount point in a mounts table (`/proc/self/mounts`).
fn tracefs_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (point, kind) = (f.nth(1)?, f.next()?);
        (kind == "tracefs").then(|| PathBuf::from(point))
    })
}

pub const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";

pub fn kprobe_pmu() -> bool {
    Path::new(KPROBE_PMU).exists()
}

/// Field offsets of a tracepoint's record, from its tracefs `format` file.
pub fn tracepoint_fields(tracefs: &Path, group: &str, event: &str) -> Option<Vec<(String, u32)>> {
    let text = fs::read_to_string(
        tracefs
            .join("events")
            .join(group)
            .join(event)
            .join("format"),
    )
    .ok()?;
    Some(parse_format(&text))
}

fn parse_format(text: &str) -> Vec<(String, u32)> {
    let mut out = vec![];
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';');
        let decl = parts.next().unwrap_or("").trim();
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or("");
        let name = name.split('[').next().unwrap_or(name).to_string();
        let off = parts
            .find_map(|p| p.trim().strip_prefix("offset:"))
            .and_then(|v| v.trim().parse().ok());
        if let Some(off) = off {
            out.push((name, off));
        }
    }
    out
}

/// /proc/iomem, read once for both [`system_ram`] and [`zero_pfn`]; empty when unreadable
/// (its addresses read as zero without root anyway).
pub fn iomem() -> String {
    fs::read_to_string("/proc/iomem").unwrap_or_default()
}

/// Top-level "System RAM" ranges of /proc/iomem as [first pfn, end pfn).
pub fn system_ram(text: &str) -> Vec<[u64; 2]> {
    // Nested resources are indented; RAM is a top-level entry.
    crate::iomem::resources(text)
        .filter(|r| r.depth == 0 && r.name == "System RAM" && r.last > r.start)
        .map(|r| [r.start >> 12, (r.last + 1) >> 12])
        .collect()
}

/// The shared zero page's pfn: `empty_zero_page` sits in the kernel image, which /proc/iomem
/// places at "Kernel code" (`__pa_symbol(_text)`). Checked against /proc/kpageflags' ZERO_PAGE
/// bit where that file reads; None without kallsyms data symbols (CONFIG_KALLSYMS_ALL) or root.
pub fn zero_pfn(k: &Kallsyms, iomem: &str) -> Option<u64> {
    let pfn = zero_pfn_from(k, iomem)?;
    const KPF_ZERO_PAGE: u64 = 24;
    match kpageflags(pfn) {
        Some(f) if f & (1 << KPF_ZERO_PAGE) == 0 => None,
        _ => Some(pfn),
    }
}

fn zero_pfn_from(k: &Kallsyms, iomem: &str) -> Option<u64> {
    let text = k.text?;
    let zero = k.data.iter().find(|(_, n)| n == "empty_zero_page")?.0;
    let code = crate::iomem::resources(iomem)
        .find(|r| r.name == "Kernel code")?
        .start;
    Some((code + zero.checked_sub(text)?) >> 12)
}

fn kpageflags(pfn: u64) -> Option<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open("/proc/kpageflags").ok()?;
    f.seek(SeekFrom::Start(pfn.checked_mul(8)?)).ok()?;
    let mut b = [0u8; 8];
    f.read_exact(&mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

/// `/proc/kallsyms`: function names for kprobe checks, data symbols to name `vm_ops` tables.
#[derive(Default)]
pub struct Kallsyms {
    /// Data symbols sorted by address: `name` or `name [module]`.
    data: Vec<(u64, String)>,
    funcs: std::collections::HashSet<String>,
    /// `_text`, the start of the kernel image.
    text: Option<u64>,
    /// False when addresses read as zero (kptr_restrict, or not root).
    pub addresses_visible: bool,
}

impl Kallsyms {
    pub fn load() -> Kallsyms {
        match fs::read_to_string("/proc/kallsyms") {
            Ok(text) => Self::parse(&text),
            Err(_) => Kallsyms::default(),
        }
    }

    pub fn parse(text: &str) -> Kallsyms {
        let mut k = Kallsyms::default();
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let (Some(addr), Some(ty), Some(name)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let module = f.next();
            let addr = u64::from_str_radix(addr, 16).unwrap_or(0);
            match ty {
                "t" | "T" if module.is_none() => {
                    if name == "_text" && addr != 0 {
                        k.text = Some(addr);
                    }
                    k.funcs.insert(name.to_string());
                }
                "d" | "D" | "r" | "R" | "b" | "B" if addr != 0 => {
                    let full = match module {
                        Some(m) => format!("{name} {m}"),
                        None => name.to_string(),
                    };
                    k.data.push((addr, full));
                }
                _ => {}
            }
        }
        k.addresses_visible = !k.data.is_empty();
        k.data.sort_unstable_by_key(|(a, _)| *a);
        k
    }

    pub fn has_function(&self, name: &str) -> bool {
        self.funcs.contains(name)
    }

    /// Where the kernel's own (not a module's) data symbol `name` is.
    pub fn data_address(&self, name: &str) -> Option<u64> {
        self.data.iter().find(|(_, n)| n == name).map(|(a, _)| *a)
    }

    /// The empty `vm_operations_struct`s of vmas not yet through `->mmap`: `vma_dummy_vm_ops`,
    /// or up to 6.1 the `dummy_vm_ops` static (suffixed `.NNN` by GCC) of each file that
    /// inlines `vma_init` (include/linux/mm.h).
    pub fn dummy_vm_ops(&self) -> Vec<u64> {
        self.data
            .iter()
            .filter(|(_, n)| {
                n == "vma_dummy_vm_ops"
                    || n == "dummy_vm_ops"
                    || n.strip_prefix("dummy_vm_ops.")
                        .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|(a, _)| *a)
            .collect()
    }

    /// The data symbol starting exactly at `addr` (a `vm_operations_struct` is a whole object).
    pub fn data_symbol(&self, addr: u64) -> Option<&str> {
        let i = self.data.partition_point(|(a, _)| *a < addr);
        match self.data.get(i) {
            Some((a, n)) if *a == addr => Some(n),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracefs_mount_points_come_from_the_mount_table() {
        let mounts = "sysfs /sys sysfs rw 0 0\ntracefs /sys/kernel/tracing tracefs rw,nosuid 0 0\n";
        assert_eq!(
            tracefs_mount(mounts),
            Some(PathBuf::from("/sys/kernel/tracing"))
        );
        assert_eq!(tracefs_mount("sysfs /sys sysfs rw 0 0\n"), None);
    }

    #[test]
    fn format_file_offsets() {
        let text = "name: page_fault_user\nID: 123\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
                    \tfield:unsigned long address;\toffset:8;\tsize:8;\tsigned:0;\n\
                    \tfield:unsigned long ip;\toffset:16;\tsize:8;\tsigned:0;\n\
                    \tfield:char comm[16];\toffset:24;\tsize:16;\tsigned:0;\n";
        let f = parse_format(text);
        assert!(f.contains(&("address".into(), 8)));
        assert!(f.contains(&("ip".into(), 16)));
        assert!(f.contains(&("comm".into(), 24)));
    }

    #[test]
    fn kallsyms_names_vm_ops_with_module() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T handle_mm_fault\nffffffffc0001000 d bochs_vm_ops\t[bochs]\nffffffff82000000 D generic_file_vm_ops\n",
        );
        assert!(k.has_function("handle_mm_fault"));
        assert_eq!(
            k.data_symbol(0xffffffffc0001000),
            Some("bochs_vm_ops [bochs]")
        );
        assert_eq!(
            k.data_symbol(0xffffffff82000000),
            Some("generic_file_vm_ops")
        );
        assert_eq!(k.data_symbol(0xffffffff82000008), None);
        assert!(k.addresses_visible);
        let hidden = Kallsyms::parse("0000000000000000 D generic_file_vm_ops\n");
        assert!(!hidden.addresses_visible);
    }

    /// The lines as 6.1 (GCC's numbered statics) and 6.12 print them; a module's look-alike
    /// and a longer name are not the kernel's dummy.
    #[test]
    fn dummy_vm_ops_of_every_kernel_series() {
        let k = Kallsyms::parse(
            "ffffffff82a1c0c0 r dummy_vm_ops.252\nffffffff82a1d000 r dummy_vm_ops.7\nffffffff82a1e000 r dummy_vm_ops_table\nffffffffc0002000 r dummy_vm_ops\t[foo]\n",
        );
        assert_eq!(k.dummy_vm_ops(), [0xffffffff82a1c0c0, 0xffffffff82a1d000]);
        let k = Kallsyms::parse("ffffffff82a1c0c0 R vma_dummy_vm_ops\n");
        assert_eq!(k.dummy_vm_ops(), [0xffffffff82a1c0c0]);
    }

    #[test]
    fn zero_pfn_from_kallsyms_and_iomem() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _text\nffffffff83a4b000 B empty_zero_page\nffffffff81001000 T foo\n",
        );
        let iomem = "00100000-3ffdffff : System RAM\n  05200000-064fffff : Kernel code\n";
        // 0x5200000 + (0x83a4b000 - 0x81000000) = 0x7c4b000.
        assert_eq!(zero_pfn_from(&k, iomem), Some(0x7c4b));
        assert_eq!(
            zero_pfn_from(&Kallsyms::parse("ffffffff81000000 T _text\n"), iomem),
            None
        );
    }

    #[test]
    fn iomem_ram_ranges() {
        let t = "00000000-00000fff : Reserved\n00001000-0009fbff : System RAM\n000a0000-000bffff : PCI Bus 0000:00\n\
                 00100000-3ffdffff : System RAM\n  01000000-01ffffff : Kernel code\nfd000000-fdffffff : 0000:00:02.0\n";
        assert_eq!(system_ram(t), vec![[0x1, 0x9f], [0x100, 0x3ffe0]]);
        // Without root every address reads as zero: no ranges rather than a wrong one.
        assert!(system_ram("00000000-00000000 : System RAM\n").is_empty());
    }

    #[test]
    fn this_machine_has_a_release() {
        let u = uname();
        assert!(
            pfnscope_abi::kernel::parse_release(&u.release).is_some(),
            "{}",
            u.release
        );
    }
}
