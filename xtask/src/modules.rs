//! Kernel modules for the guest: found in the unpacked package, decompressed (busybox insmod takes
//! plain .ko only) and ordered so that every module comes after the ones its `depends=` names.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Module names treat `-` and `_` alike; file names use either.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The contents of an ELF64 little-endian file's section called `name`.
pub fn elf_section<'a>(elf: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = u64_at(0x28)? as usize;
    let shentsize = u16_at(0x3a)? as usize;
    let shnum = u16_at(0x3c)? as usize;
    let shstrndx = u16_at(0x3e)? as usize;
    let header = |i: usize| shoff + i * shentsize;
    let strtab_off = u64_at(header(shstrndx) + 0x18)? as usize;
    for i in 0..shnum {
        let h = header(i);
        let name_off = strtab_off + u32_at(h)? as usize;
        let end = name_off + elf.get(name_off..)?.iter().position(|&b| b == 0)?;
        if &elf[name_off..end] == name.as_bytes() {
            let off = u64_at(h + 0x18)? as usize;
            let size = u64_at(h + 0x20)? as usize;
            return elf.get(off..off + size);
        }
    }
    None
}

/// The first value of `key` in a `.modinfo` section (NUL-separated `key=value` strings).
pub fn modinfo_value(modinfo: &[u8], key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    modinfo
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A module's `vermagic=` (`6.12.118+deb12-amd64 SMP preempt mod_unload modversions`): it loads
/// only into the release its first word names.
pub fn vermagic(ko: &[u8]) -> Option<String> {
    modinfo_value(elf_section(ko, ".modinfo")?, "vermagic")
}

/// The `depends=` list of a `.modinfo` section.
pub fn modinfo_depends(modinfo: &[u8]) -> Vec<String> {
    modinfo
        .split(|&b| b == 0)
        .filter_map(|kv| kv.strip_prefix(b"depends="))
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(canonical)
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// `wanted` and everything they depend on, dependencies first, leaving out `already` (loaded in
/// an earlier stage) and whatever `depends` says is not a loadable module (`None`: built in).
pub fn load_order(
    wanted: &[String],
    already: &HashSet<String>,
    mut depends: impl FnMut(&str) -> Result<Option<Vec<String>>>,
) -> Result<Vec<String>> {
    fn visit(
        m: &str,
        already: &HashSet<String>,
        depends: &mut dyn FnMut(&str) -> Result<Option<Vec<String>>>,
        on_path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) -> Result<()> {
        if already.contains(m) || done.contains(m) {
            return Ok(());
        }
        if on_path.iter().any(|p| p == m) {
            bail!("module dependency cycle: {} -> {m}", on_path.join(" -> "));
        }
        let Some(deps) = depends(m)? else {
            done.insert(m.to_string());
            return Ok(());
        };
        on_path.push(m.to_string());
        for d in deps {
            visit(&d, already, depends, on_path, done, out)?;
        }
        on_path.pop();
        done.insert(m.to_string());
        out.push(m.to_string());
        Ok(())
    }
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    for w in wanted {
        visit(
            &canonical(w),
            already,
            &mut depends,
            &mut Vec::new(),
            &mut done,
            &mut out,
        )?;
    }
    Ok(out)
}

/// What a kernel's tree has under one module name.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A loadable module file.
    File,
    /// Listed in `modules.builtin`: nothing to load, its parameters go on the command line.
    BuiltIn,
    /// Neither; `listed` says whether the package had a `modules.builtin` to tell by.
    Missing { listed: bool },
}

/// The modules of one unpacked kernel.
pub struct ModuleTree {
    files: BTreeMap<String, PathBuf>,
    builtin: HashSet<String>,
    /// Whether the package carried `modules.builtin` (sid's split packages do not).
    builtin_listed: bool,
    /// Decompressed modules, by name.
    plain: BTreeMap<String, Vec<u8>>,
}

const EXTENSIONS: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

impl ModuleTree {
    pub fn open(dir: &Path) -> Result<ModuleTree> {
        let mut files = BTreeMap::new();
        let mut stack = vec![dir.join("kernel")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Some(n) = p.file_name().map(|n| n.to_string_lossy().into_owned())
                    && let Some(stem) = EXTENSIONS.iter().find_map(|x| n.strip_suffix(x))
                {
                    files.insert(canonical(stem), p);
                }
            }
        }
        // Sid's split packages leave modules.builtin out; a module with no file is then taken as
        // built in, and the guest's insmod log shows if that was wrong.
        let listed = std::fs::read_to_string(dir.join("modules.builtin")).ok();
        let builtin = listed
            .as_deref()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit('/').next()?.strip_suffix(".ko").map(canonical))
            .collect();
        Ok(ModuleTree {
            files,
            builtin,
            builtin_listed: listed.is_some(),
            plain: BTreeMap::new(),
        })
    }

    pub fn find(&self, name: &str) -> Found {
        let name = canonical(name);
        if self.files.contains_key(&name) {
            Found::File
        } else if self.builtin.contains(&name) {
            Found::BuiltIn
        } else {
            Found::Missing {
                listed: self.builtin_listed,
            }
        }
    }

    /// Up to `n` module names that contain `part`: suggestions for a name that is not there.
    pub fn similar(&self, part: &str, n: usize) -> Vec<&str> {
        let part = canonical(part);
        let mut names: Vec<&str> = self
            .files
            .keys()
            .chain(self.builtin.iter())
            .filter(|m| m.contains(&part) || (m.len() > 3 && part.contains(m.as_str())))
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names.dedup();
        names.truncate(n);
        names
    }

    /// `depends=` of a module file; `None` for a name with no file (built in).
    pub fn depends(&mut self, name: &str) -> Result<Option<Vec<String>>> {
        let Some(data) = self.plain(name)? else {
            return Ok(None);
        };
        let info = elf_section(data, ".modinfo")
            .with_context(|| format!("module {name} has no .modinfo"))?;
        Ok(Some(modinfo_depends(info)))
    }

    fn plain(&mut self, name: &str) -> Result<Option<&[u8]>> {
        if !self.plain.contains_key(name) {
            let Some(path) = self.files.get(name) else {
                return Ok(None);
            };
            let data = decompress(path)?;
            self.plain.insert(name.to_string(), data);
        }
        Ok(self.plain.get(name).map(Vec::as_slice))
    }

    /// Dependency-ordered list of modules to insmod for `wanted`, skipping `already`.
    pub fn resolve(&mut self, wanted: &[String], already: &HashSet<String>) -> Result<Vec<String>> {
        for w in wanted {
            let w = canonical(w);
            if !self.files.contains_key(&w) {
                let how = if self.builtin.contains(&w) {
                    "built in"
                } else {
                    "no module file: assuming built in"
                };
                println!("  module {w}: {how}");
            }
        }
        load_order(wanted, already, |m| self.depends(m))
    }

    pub fn data(&mut self, name: &str) -> Result<Vec<u8>> {
        self.plain(name)?
            .map(<[u8]>::to_vec)
            .with_context(|| format!("module {name} not found"))
    }
}

/// A module file's plain ELF: `.ko` as it is, `.ko.xz`, `.ko.zst` and `.ko.gz` decompressed.
pub fn decompress(path: &Path) -> Result<Vec<u8>> {
    let n = path.to_string_lossy();
    let tool = if n.ends_with(".xz") {
        "xz"
    } else if n.ends_with(".zst") {
        "zstd"
    } else if n.ends_with(".gz") {
        "gzip"
    } else {
        return std::fs::read(path).with_context(|| format!("reading {n}"));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} (cargo xtask setup installs it)"))?;
    if !out.status.success() {
        bail!("{tool} -dc {n}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

/// A minimal ELF64 with a null section, `.modinfo` and `.shstrtab`: a stand-in module for
/// tests (one that no kernel would load).
pub fn tiny_elf(modinfo: &[u8]) -> Vec<u8> {
    let shstrtab = b"\0.modinfo\0.shstrtab\0";
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(b"\x7fELF\x02\x01");
    let modinfo_off = f.len();
    f.extend_from_slice(modinfo);
    let strtab_off = f.len();
    f.extend_from_slice(shstrtab);
    while !f.len().is_multiple_of(8) {
        f.push(0);
    }
    let shoff = f.len();
    let section = |name: u32, off: usize, size: usize| {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(&name.to_le_bytes());
        h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
        h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
        h
    };
    f.extend(section(0, 0, 0));
    f.extend(section(1, modinfo_off, modinfo.len()));
    f.extend(section(10, strtab_off, shstrtab.len()));
    f[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
    f[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    f[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
    f[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps_of<'a>(
        table: &'a [(&'a str, &'a [&'a str])],
    ) -> impl FnMut(&str) -> Result<Option<Vec<String>>> + 'a {
        |m| {
            Ok(table
                .iter()
                .find(|(n, _)| *n == m)
                .map(|(_, d)| d.iter().map(|s| s.to_string()).collect()))
        }
    }

    const DRM: &[(&str, &[&str])] = &[
        (
            "bochs",
            &[
                "drm_vram_helper",
                "drm_kms_helper",
                "drm",
                "drm_ttm_helper",
                "ttm",
            ],
        ),
        (
            "drm_vram_helper",
            &["drm_kms_helper", "drm_ttm_helper", "ttm", "drm"],
        ),
        ("drm_ttm_helper", &["ttm", "drm", "drm_kms_helper"]),
        ("drm_kms_helper", &["drm"]),
        ("ttm", &["drm"]),
        ("drm", &[]),
        ("vgem", &["drm", "drm_shmem_helper"]),
        ("drm_shmem_helper", &["drm"]),
        ("virtio_blk", &["virtio", "virtio_ring"]),
        ("virtio_ring", &[]),
        ("virtio", &[]),
    ];

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn assert_deps_first(order: &[String]) {
        for (i, m) in order.iter().enumerate() {
            let deps = DRM.iter().find(|(n, _)| n == m).unwrap().1;
            for d in deps {
                let j = order
                    .iter()
                    .position(|x| x == d)
                    .unwrap_or_else(|| panic!("{d} missing"));
                assert!(j < i, "{d} must come before {m} in {order:?}");
            }
        }
    }

    #[test]
    fn dependencies_come_first_once() {
        let order = load_order(&strings(&["bochs"]), &HashSet::new(), deps_of(DRM)).unwrap();
        assert_eq!(order.len(), 6);
        assert_eq!(order.last().unwrap(), "bochs");
        assert_deps_first(&order);
    }

    #[test]
    fn earlier_stages_and_builtins_are_skipped() {
        let already: HashSet<String> = [
            "drm",
            "drm_kms_helper",
            "ttm",
            "drm_ttm_helper",
            "drm_vram_helper",
            "bochs",
        ]
        .map(String::from)
        .into();
        let order = load_order(&strings(&["vgem"]), &already, deps_of(DRM)).unwrap();
        assert_eq!(order, ["drm_shmem_helper", "vgem"]);
        // virtio_pci is not in the table: built in.
        let order = load_order(
            &strings(&["virtio_pci", "virtio-blk"]),
            &HashSet::new(),
            deps_of(DRM),
        )
        .unwrap();
        assert_eq!(order.last().unwrap(), "virtio_blk");
        assert!(!order.contains(&"virtio_pci".to_string()));
        assert_deps_first(&order);
    }

    #[test]
    fn cycles_are_an_error() {
        let t: &[(&str, &[&str])] = &[("a", &["b"]), ("b", &["a"])];
        assert!(load_order(&strings(&["a"]), &HashSet::new(), deps_of(t)).is_err());
    }

    #[test]
    fn depends_from_modinfo() {
        let info = b"license=GPL\0depends=drm,drm-kms-helper,ttm\0retpoline=Y\0name=bochs\0";
        assert_eq!(modinfo_depends(info), ["drm", "drm_kms_helper", "ttm"]);
        assert!(modinfo_depends(b"license=GPL\0depends=\0name=drm\0").is_empty());
    }

    #[test]
    fn finds_modinfo_in_an_elf() {
        let elf = tiny_elf(b"depends=virtio,virtio_ring\0name=virtio_blk\0");
        let info = elf_section(&elf, ".modinfo").unwrap();
        assert_eq!(modinfo_depends(info), ["virtio", "virtio_ring"]);
        assert!(elf_section(&elf, ".text").is_none());
        assert!(elf_section(b"not an elf", ".modinfo").is_none());
    }
}
