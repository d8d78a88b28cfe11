//! Debian kernel packages: which ones, downloaded with a private apt state (the system's apt
//! configuration is never touched) and unpacked into the cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::util;

/// A Debian kernel the test box boots, by its upstream series. Not the replay's rule set
/// (`pfnscope_abi::kernel::Series`): 7.2 falls in the 6.16 rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoxKernel {
    V6_1,
    V6_12,
    V7_2,
}

pub const ALL: [BoxKernel; 3] = [BoxKernel::V6_1, BoxKernel::V6_12, BoxKernel::V7_2];

impl BoxKernel {
    pub fn parse(s: &str) -> Option<BoxKernel> {
        match s {
            "6.1" => Some(BoxKernel::V6_1),
            "6.12" => Some(BoxKernel::V6_12),
            "7.2" => Some(BoxKernel::V7_2),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BoxKernel::V6_1 => "6.1",
            BoxKernel::V6_12 => "6.12",
            BoxKernel::V7_2 => "7.2",
        }
    }
}

/// The packages holding one kernel and its modules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// `uname -r` of the kernel, which is also its modules directory's name.
    pub release: String,
    /// Packages to download; the first one names the cache entry.
    pub packages: Vec<String>,
}

/// The newest amd64 flavour of `series` among the package names apt knows. 6.1 and 6.12 ship the
/// kernel and its modules in one `linux-image-*` package (bookworm); sid's 7.x `linux-image-*` is
/// a meta package over `linux-binary-*` (vmlinuz) and `linux-modules-*`.
pub fn select(series: BoxKernel, names: &[&str]) -> Option<Selection> {
    // (prefix, suffix) around one number, the ABI or patch level we maximise.
    let (prefix, suffix) = match series {
        BoxKernel::V6_1 => ("linux-image-6.1.0-", "-amd64"),
        BoxKernel::V6_12 => ("linux-image-6.12.", "+deb12-amd64"),
        BoxKernel::V7_2 => ("linux-binary-7.2.", "-amd64"),
    };
    let best = names
        .iter()
        .filter_map(|n| {
            let mid = n.strip_prefix(prefix)?.strip_suffix(suffix)?;
            // sid names carry a Debian suffix ("13+deb14"); the others are just the number.
            let (num, rest) = match series {
                BoxKernel::V7_2 => mid.split_once("+deb")?,
                _ => (mid, ""),
            };
            if num.is_empty()
                || !num.bytes().all(|b| b.is_ascii_digit())
                || !rest.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            Some((
                num.parse::<u64>().ok()?,
                rest.parse::<u64>().unwrap_or(0),
                *n,
            ))
        })
        .max()?;
    let name = best.2;
    let release = name.strip_prefix(match series {
        BoxKernel::V7_2 => "linux-binary-",
        _ => "linux-image-",
    })?;
    let mut packages = vec![name.to_string()];
    if series == BoxKernel::V7_2 {
        packages.push(format!("linux-modules-{release}"));
    }
    Some(Selection {
        release: release.to_string(),
        packages,
    })
}

/// `Version:` of the first stanza of `apt-cache show` output.
pub fn parse_version(show: &str) -> Option<String> {
    show.lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(|v| v.trim().to_string())
}

/// A private apt state under the cache: its own sources list, lists and package cache.
pub struct Apt {
    dir: PathBuf,
}

const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The Debian mirror: `PFNSCOPE_DEBIAN_MIRROR`, else deb.debian.org.
pub fn mirror() -> String {
    std::env::var("PFNSCOPE_DEBIAN_MIRROR").unwrap_or_else(|_| MIRROR.into())
}

/// The security mirror (bookworm-security carries 6.12): `PFNSCOPE_DEBIAN_SECURITY_MIRROR`.
pub fn security_mirror() -> String {
    std::env::var("PFNSCOPE_DEBIAN_SECURITY_MIRROR").unwrap_or_else(|_| SECURITY_MIRROR.into())
}

/// The private sources list. Bookworm carries 6.1 and (through its security suite) 6.12; sid
/// carries 7.x.
pub fn sources_list(mirror: &str, security: &str, keyring_present: bool) -> String {
    let opt = if keyring_present {
        format!("[signed-by={KEYRING}]")
    } else {
        "[trusted=yes]".to_string()
    };
    format!(
        "deb {opt} {mirror} bookworm main\n\
         deb {opt} {mirror} bookworm-updates main\n\
         deb {opt} {security} bookworm-security main\n\
         deb {opt} {mirror} sid main\n"
    )
}

impl Apt {
    pub fn new(cache: &Path) -> Result<Apt> {
        let dir = cache.join("apt");
        for d in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let (mirror, security) = (mirror(), security_mirror());
        let keyring = Path::new(KEYRING).exists();
        if !keyring {
            eprintln!(
                "note: {KEYRING} missing: using [trusted=yes] for the private kernel sources"
            );
        }
        std::fs::write(
            dir.join("sources.list"),
            sources_list(&mirror, &security, keyring),
        )?;
        Ok(Apt { dir })
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        let d = |s: &str| self.dir.join(s).display().to_string();
        for o in [
            format!("Dir::Etc::sourcelist={}", d("sources.list")),
            "Dir::Etc::sourceparts=-".to_string(),
            format!("Dir::State::Lists={}", d("lists")),
            format!("Dir::Cache={}", d("cache")),
            // The cache is root's; apt's unprivileged download user cannot write there.
            "APT::Sandbox::User=root".to_string(),
            "Acquire::Languages=none".to_string(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".to_string(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".to_string(),
        ] {
            c.arg("-o").arg(o);
        }
        c
    }

    /// The private apt state under `cache`, and how updating its lists went (without network
    /// the cached kernels still serve, see [`fetch`]).
    pub fn updated(cache: &Path) -> Result<(Apt, Result<()>)> {
        let apt = Apt::new(cache)?;
        println!(
            "updating the private package lists under {}",
            cache.join("apt").display()
        );
        let updated = apt.update();
        Ok((apt, updated))
    }

    pub fn update(&self) -> Result<()> {
        let mut c = self.cmd("apt-get");
        c.arg("-q").arg("update");
        util::output(&mut c).map(|_| ())
    }

    pub fn names(&self) -> Result<Vec<String>> {
        let mut c = self.cmd("apt-cache");
        c.args(["pkgnames", "linux-"]);
        Ok(util::output(&mut c)?.lines().map(str::to_string).collect())
    }

    pub fn version(&self, package: &str) -> Result<String> {
        let mut c = self.cmd("apt-cache");
        c.args(["show", "--no-all-versions", package]);
        parse_version(&util::output(&mut c)?).with_context(|| format!("no Version for {package}"))
    }

    pub fn download(&self, package: &str, into: &Path) -> Result<PathBuf> {
        let mut c = self.cmd("apt-get");
        c.args(["-q", "download", package]).current_dir(into);
        util::output(&mut c)?;
        let found = std::fs::read_dir(into)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
            });
        found.with_context(|| {
            format!(
                "apt-get download {package} left no .deb in {}",
                into.display()
            )
        })
    }
}

/// An unpacked kernel: vmlinuz and its modules directory.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub series: BoxKernel,
    pub release: String,
    /// The Debian package version (`6.1.192-3`): a release string can be rebuilt.
    pub version: String,
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
}

impl Kernel {
    /// A boot's first line: `kernel 6.12: 6.12.118+deb12-amd64 (.../vmlinuz-...)`.
    pub fn heading(&self) -> String {
        format!(
            "kernel {}: {} ({})",
            self.series.name(),
            self.release,
            self.vmlinuz.display()
        )
    }
}

fn locate(root: &Path, series: BoxKernel, release: &str, version: &str) -> Result<Kernel> {
    let vmlinuz = [
        root.join(format!("boot/vmlinuz-{release}")),
        root.join(format!("usr/lib/modules/{release}/vmlinuz")),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .with_context(|| format!("no vmlinuz for {release} under {}", root.display()))?;
    let modules = [
        root.join(format!("lib/modules/{release}")),
        root.join(format!("usr/lib/modules/{release}")),
    ]
    .into_iter()
    .find(|p| p.join("kernel").is_dir())
    .with_context(|| format!("no modules for {release} under {}", root.display()))?;
    Ok(Kernel {
        series,
        release: release.to_string(),
        version: version.to_string(),
        vmlinuz,
        modules,
    })
}

const COMPLETE: &str = ".pfnscope-complete";

/// The newest kernel of `series`, downloaded and unpacked unless the cache already has that exact
/// version. Without network the newest cached one is used, with a warning.
pub fn fetch(
    series: BoxKernel,
    apt: &Apt,
    updated: Result<(), &anyhow::Error>,
    cache: &Path,
) -> Result<Kernel> {
    let base = cache.join("kernels").join(series.name());
    std::fs::create_dir_all(&base)?;
    if let Err(e) = updated {
        return cached_fallback(series, &base)
            .with_context(|| format!("apt-get update failed ({e:#}) and nothing is cached"));
    }
    let names = apt.names()?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let sel = select(series, &refs).with_context(|| {
        format!(
            "no Debian package for kernel {} in the package lists",
            series.name()
        )
    })?;
    let version = apt.version(&sel.packages[0])?;
    let dir = base.join(format!(
        "{}_{}",
        sel.release,
        version.replace(['/', ':'], "_")
    ));
    if dir.join(COMPLETE).exists() {
        println!(
            "kernel {}: {} ({version}) from the cache",
            series.name(),
            sel.release
        );
        return locate(&dir, series, &sel.release, &version);
    }
    println!(
        "kernel {}: downloading {} ({version})",
        series.name(),
        sel.packages.join(" + ")
    );
    let _ = std::fs::remove_dir_all(&dir);
    let dl = dir.with_extension("download");
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    std::fs::create_dir_all(&dir)?;
    for p in &sel.packages {
        let deb = apt.download(p, &dl)?;
        util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
    }
    std::fs::remove_dir_all(&dl)?;
    std::fs::write(
        dir.join(COMPLETE),
        format!("{}\n{version}\n", sel.packages.join(" ")),
    )?;
    locate(&dir, series, &sel.release, &version)
}

fn cached_fallback(series: BoxKernel, base: &Path) -> Result<Kernel> {
    let mut entries: Vec<_> = std::fs::read_dir(base)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join(COMPLETE).exists())
        .collect();
    entries.sort_by_key(|p| {
        std::fs::metadata(p.join(COMPLETE))
            .and_then(|m| m.modified())
            .ok()
    });
    let dir = entries.pop().context("no cached kernel")?;
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    // `<release>_<version>`, as fetch names it.
    let (release, version) = name.split_once('_').unwrap_or((name.as_str(), ""));
    let (release, version) = (release.to_string(), version.to_string());
    eprintln!(
        "warning: kernel {}: package lists unavailable, using cached {release}",
        series.name()
    );
    locate(&dir, series, &release, &version)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &[
        "linux-image-6.1.0-47-amd64",
        "linux-image-6.1.0-54-amd64",
        "linux-image-6.1.0-9-amd64",
        "linux-image-6.1.0-54-rt-amd64",
        "linux-image-6.1.0-54-cloud-amd64",
        "linux-image-6.1.0-54-amd64-dbg",
        "linux-image-6.1.0-54-amd64-unsigned",
        "linux-image-6.12.117+deb12-amd64",
        "linux-image-6.12.99+deb12-amd64",
        "linux-image-6.12.117+deb12-amd64-unsigned",
        "linux-image-6.12.117+deb12-cloud-amd64",
        "linux-image-6.12-amd64",
        "linux-binary-7.2.13+deb14-amd64",
        "linux-binary-7.2.9+deb14-amd64",
        "linux-binary-7.2.13+deb14-cloud-amd64",
        "linux-image-7.2.13+deb14-amd64",
        "linux-modules-7.2.13+deb14-amd64",
    ];

    #[test]
    fn picks_the_newest_plain_amd64_flavour() {
        let s = select(BoxKernel::V6_1, NAMES).unwrap();
        assert_eq!(s.release, "6.1.0-54-amd64");
        assert_eq!(s.packages, ["linux-image-6.1.0-54-amd64"]);
        let s = select(BoxKernel::V6_12, NAMES).unwrap();
        assert_eq!(s.release, "6.12.117+deb12-amd64");
        assert_eq!(s.packages, ["linux-image-6.12.117+deb12-amd64"]);
    }

    #[test]
    fn sid_takes_binary_and_modules_packages() {
        let s = select(BoxKernel::V7_2, NAMES).unwrap();
        assert_eq!(s.release, "7.2.13+deb14-amd64");
        assert_eq!(
            s.packages,
            [
                "linux-binary-7.2.13+deb14-amd64",
                "linux-modules-7.2.13+deb14-amd64"
            ]
        );
    }

    #[test]
    fn numbers_compare_numerically_and_missing_series_is_none() {
        let s = select(
            BoxKernel::V6_1,
            &["linux-image-6.1.0-9-amd64", "linux-image-6.1.0-10-amd64"],
        )
        .unwrap();
        assert_eq!(s.release, "6.1.0-10-amd64");
        assert!(select(BoxKernel::V7_2, &["linux-image-6.1.0-9-amd64"]).is_none());
        assert!(select(BoxKernel::V6_12, &["linux-image-6.12.x+deb12-amd64"]).is_none());
    }

    #[test]
    fn version_from_apt_cache_show() {
        let show = "Package: linux-image-6.1.0-54-amd64\nSource: linux-signed-amd64 (6.1.190+1)\nVersion: 6.1.190-1\nArchitecture: amd64\n";
        assert_eq!(parse_version(show).as_deref(), Some("6.1.190-1"));
        assert_eq!(parse_version("Package: x\n"), None);
    }

    #[test]
    fn sources_list_has_every_suite() {
        let s = sources_list("http://m/debian", "http://m/debian-security", true);
        assert!(s.contains(
            "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://m/debian sid main"
        ));
        assert!(s.contains("http://m/debian-security bookworm-security main"));
        assert!(
            sources_list("a", "b", false)
                .lines()
                .all(|l| l.contains("[trusted=yes]"))
        );
    }
}
