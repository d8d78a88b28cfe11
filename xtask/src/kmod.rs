//! Out-of-tree kernel modules built for a guest kernel against that exact release's Debian
//! headers: `kmod/bugzoo` for the bug zoo, and any module given to `testbox --module
//! SRC_DIR`.
//!
//! The build runs in a Debian chroot of the kernel's own suite, one per suite, made once with
//! debootstrap and kept under the cache (`$PFNSCOPE_CACHE/chroots/{bookworm,sid}`): the 7.x
//! headers need sid's gcc 16 and glibc (their objtool links against glibc 2.38), and the host's
//! apt configuration and packages are never touched. `linux-headers-<release>` is unpacked into
//! the chroot after its dependencies are installed from the suite, leaving out the kernel image
//! some of them depend on (6.12's does; nothing here boots it). Built modules are cached per
//! (release, headers version, hash of the source files).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::kernels::{self, BoxKernel, Kernel};
use crate::{modules, util};

/// Why a module cannot be built on this machine (no root, no debootstrap, no network, no headers
/// package): its users are reported SKIPPED with this reason, never passed. A module that does
/// not compile is an error instead.
#[derive(Debug)]
pub struct Unavailable(pub String);

/// The result of a build: the `.ko` files, and the lines of the build log that warn.
#[derive(Debug)]
pub struct Built {
    pub modules: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    Bookworm,
    Sid,
}

impl Suite {
    /// The suite that carries the headers of a test box kernel (kernels.rs picks them from the
    /// same suites).
    pub fn of(series: BoxKernel) -> Suite {
        match series {
            BoxKernel::V6_1 | BoxKernel::V6_12 => Suite::Bookworm,
            BoxKernel::V7_2 => Suite::Sid,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Suite::Bookworm => "bookworm",
            Suite::Sid => "sid",
        }
    }

    /// The chroot's sources list: 6.12 reaches bookworm through its security suite.
    pub fn sources(self, mirror: &str, security: &str) -> String {
        match self {
            Suite::Bookworm => format!(
                "deb {mirror} bookworm main\ndeb {mirror} bookworm-updates main\n\
                 deb {security} bookworm-security main\n"
            ),
            Suite::Sid => format!("deb {mirror} sid main\n"),
        }
    }

    /// Installed besides the headers' dependencies: make, and on bookworm pahole for the
    /// modules' BTF (6.1's kbuild package does not depend on it; the later ones do).
    fn extra_packages(self) -> &'static [&'static str] {
        match self {
            Suite::Bookworm => &["make", "dwarves"],
            Suite::Sid => &["make"],
        }
    }
}

/// The packages to install for `linux-headers-*` from its `Depends:` field: the first
/// alternative of each clause that is not a kernel image (`name=version` where the clause pins
/// one version); a clause of images only is left out.
pub fn install_set(depends: &str) -> Vec<String> {
    depends
        .split(',')
        .filter_map(|clause| {
            clause
                .split('|')
                .map(str::trim)
                .find(|alt| !alt.starts_with("linux-image-"))
                .map(|alt| {
                    let (name, constraint) = alt.split_once('(').unwrap_or((alt, ""));
                    let name = name.trim().split(':').next().unwrap_or("").to_string();
                    match constraint.trim().strip_prefix('=') {
                        Some(v) => format!("{name}={}", v.trim_end_matches(')').trim()),
                        None => name,
                    }
                })
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// The first stanza's value of `field` in `apt-cache show` output.
pub fn control_field(show: &str, field: &str) -> Option<String> {
    let key = format!("{field}: ");
    show.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix(&key))
        .map(|v| v.trim().to_string())
}

/// The host apt's date checks (`apt-config dump` lines), which the chroot's apt must share to
/// see what the test box's private apt state (run with the host's configuration) sees.
pub fn host_date_policy(dump: &str) -> String {
    dump.lines()
        .filter(|l| {
            l.starts_with("Acquire::Check-Valid-Until ") || l.starts_with("Acquire::Check-Date ")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Files of a module source tree that a build reads: everything but kbuild's outputs and hidden
/// files (kbuild's `.*.cmd`), so a tree built by hand hashes like a clean one.
pub fn is_source(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    const OUTPUTS: [&str; 7] = [".o", ".ko", ".mod", ".mod.c", ".a", ".symvers", ".order"];
    !name.starts_with('.') && !OUTPUTS.iter().any(|x| name.ends_with(x))
}

/// FNV-1a (64 bit) over each file's relative path and contents, in path order: a cache key that
/// stays the same across Rust releases (std's hasher makes no such promise).
pub fn source_key(files: &BTreeMap<String, Vec<u8>>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (path, data) in files {
        eat(path.as_bytes());
        eat(&[0]);
        eat(&(data.len() as u64).to_le_bytes());
        eat(data);
    }
    format!("{h:016x}")
}

fn source_files(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            let rel = p.strip_prefix(dir)?.to_string_lossy().into_owned();
            if p.is_dir() {
                if !rel.starts_with('.') {
                    stack.push(p);
                }
            } else if is_source(&rel) {
                out.insert(rel, std::fs::read(&p)?);
            }
        }
    }
    if !out.keys().any(|k| k == "Kbuild" || k == "Makefile") {
        bail!("{} has no Kbuild or Makefile", dir.display());
    }
    Ok(out)
}

/// Holds an exclusive lock on a file while alive: one chroot, one writer (CI and a developer
/// share the cache).
struct Lock {
    /// Closing it releases the lock.
    _file: File,
}

impl Lock {
    fn take(path: &Path) -> Result<Lock> {
        let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            println!(
                "  kmod: waiting for {} (another build holds it)",
                path.display()
            );
            // SAFETY: as above.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
                bail!(
                    "flock {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(Lock { _file: f })
    }
}

struct Chroot {
    dir: PathBuf,
    suite: Suite,
}

const COMPLETE: &str = ".pfnscope-complete";

impl Chroot {
    /// `script` run by sh inside the chroot, with /proc and /dev/pts (dpkg logs through a pty)
    /// mounted in a private mount namespace (gone with the process, whatever happens) and an
    /// environment of its own, so nothing of the host's (CC, ARCH, RUSTFLAGS...) reaches apt or
    /// kbuild.
    fn sh(&self, script: &str) -> Command {
        let mut c = Command::new("unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            "mount -t proc proc \"$1/proc\" && \
             mount -t devpts -o newinstance devpts \"$1/dev/pts\" && \
             exec chroot \"$1\" /usr/bin/env -i \
             PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C \
             DEBIAN_FRONTEND=noninteractive /bin/sh -c \"$2\"",
            "sh",
        ])
        .arg(&self.dir)
        .arg(script);
        c
    }

    fn path(&self, inside: &str) -> PathBuf {
        self.dir.join(inside.trim_start_matches('/'))
    }

    /// debootstrap once; the apt configuration (sources, the host's date checks, resolv.conf)
    /// is written every time, so a changed mirror or network reaches the next update.
    fn ensure(&self) -> Result<Result<(), Unavailable>> {
        if !self.dir.join(COMPLETE).exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
            let log = self.dir.with_extension("debootstrap.log");
            let started = Instant::now();
            let mut c = Command::new("debootstrap");
            c.args(["--variant=minbase"]);
            if Path::new(kernels::KEYRING).exists() {
                c.arg(format!("--keyring={}", kernels::KEYRING));
            } else {
                c.arg("--no-check-gpg");
            }
            c.arg(self.suite.name())
                .arg(&self.dir)
                .arg(kernels::mirror());
            println!("  kmod: {} (about a minute)", util::show(&c));
            let out = c.output().context("running debootstrap")?;
            std::fs::write(&log, [out.stdout.as_slice(), &out.stderr].concat())?;
            if !out.status.success() {
                return Ok(Err(Unavailable(format!(
                    "debootstrap {} failed ({}; log {}): {}",
                    self.suite.name(),
                    out.status,
                    log.display(),
                    util::tail(&String::from_utf8_lossy(&out.stderr), 3)
                ))));
            }
            std::fs::write(self.dir.join(COMPLETE), "")?;
            println!(
                "  kmod: chroot {} made in {:.0}s",
                self.suite.name(),
                started.elapsed().as_secs_f64()
            );
        }
        std::fs::write(
            self.path("etc/apt/sources.list"),
            self.suite
                .sources(&kernels::mirror(), &kernels::security_mirror()),
        )?;
        let dump = util::output(Command::new("apt-config").arg("dump")).unwrap_or_default();
        std::fs::write(
            self.path("etc/apt/apt.conf.d/99pfnscope"),
            host_date_policy(&dump),
        )?;
        if let Ok(r) = std::fs::read("/etc/resolv.conf") {
            std::fs::write(self.path("etc/resolv.conf"), r)?;
        }
        Ok(Ok(()))
    }

    fn headers_stamp(&self, release: &str) -> PathBuf {
        self.path(&format!("var/lib/pfnscope/headers-{release}"))
    }

    /// The installed headers' Debian version, if `linux-headers-<release>` is there.
    fn headers_version(&self, release: &str) -> Option<String> {
        let v = std::fs::read_to_string(self.headers_stamp(release)).ok()?;
        Some(v.trim().to_string())
    }

    /// `linux-headers-<release>` and what building against it needs.
    fn install_headers(&self, release: &str) -> Result<Result<String, Unavailable>> {
        let started = Instant::now();
        let pkg = format!("linux-headers-{release}");
        let unavailable = |what: &str, e: anyhow::Error| {
            let what = format!("{what} in the {} chroot failed", self.suite.name());
            println!("  kmod: {what}:\n{}", util::tail(&format!("{e:#}"), 12));
            Ok(Err(Unavailable(format!("{what} (its output is above)"))))
        };
        if let Err(e) = util::output(&mut self.sh("apt-get -q update")) {
            return unavailable("apt-get update", e);
        }
        let show =
            match util::output(&mut self.sh(&format!("apt-cache show --no-all-versions {pkg}"))) {
                Ok(s) => s,
                Err(_) => {
                    return Ok(Err(Unavailable(format!(
                        "Debian {} has no package {pkg}",
                        self.suite.name()
                    ))));
                }
            };
        let version = control_field(&show, "Version").context("headers without a Version")?;
        let mut set = install_set(&control_field(&show, "Depends").unwrap_or_default());
        set.extend(self.suite.extra_packages().iter().map(|p| p.to_string()));
        // Unpacked with tar, keeping the chroot's /lib -> usr/lib symlink: bookworm's headers
        // carry lib/modules/<release>/build, and a plain `dpkg-deb -x` would make /lib a real
        // directory, cutting every binary off its libraries.
        let script = format!(
            "apt-get -q -y install --no-install-recommends {} && \
             rm -rf /tmp/headers && mkdir /tmp/headers && cd /tmp/headers && \
             apt-get -q -o APT::Sandbox::User=root download {pkg}={version} && \
             dpkg-deb --fsys-tarfile {pkg}_*.deb | tar -x --keep-directory-symlink -C / && \
             cd / && rm -rf /tmp/headers",
            set.join(" ")
        );
        println!(
            "  kmod: installing {pkg} ({version}) in the {} chroot",
            self.suite.name()
        );
        if let Err(e) = util::output(&mut self.sh(&script)) {
            return unavailable(&format!("installing {pkg}"), e);
        }
        let stamp = self.headers_stamp(release);
        std::fs::create_dir_all(stamp.parent().unwrap())?;
        std::fs::write(&stamp, format!("{version}\n"))?;
        println!(
            "  kmod: {pkg} installed in {:.0}s",
            started.elapsed().as_secs_f64()
        );
        Ok(Ok(version))
    }
}

/// Why this machine cannot work in a chroot, if it cannot.
fn missing_tools() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("building kernel modules needs root (debootstrap, chroot)".into());
    }
    for tool in ["debootstrap", "unshare", "chroot"] {
        if which(tool).is_none() {
            return Some(format!("{tool} not found (cargo xtask setup installs it)"));
        }
    }
    None
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Builds the module source tree `src` (a Kbuild or Makefile for `make M=`) for `kernel`.
/// `Ok(Err(_))`: this machine cannot build it (the reason says why); `Err(_)`: it does not
/// build (the compiler's output says why).
pub fn build(src: &Path, kernel: &Kernel, cache: &Path) -> Result<Result<Built, Unavailable>> {
    let files = source_files(src)?;
    let key = source_key(&files);
    let name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "module".into());
    let suite = Suite::of(kernel.series);
    let roots = cache.join("chroots");
    let chroot = Chroot {
        dir: roots.join(suite.name()),
        suite,
    };
    let built_dir = |headers: &str| {
        cache
            .join("kmod")
            .join(format!(
                "{}_{}",
                kernel.release,
                headers.replace(['/', ':'], "_")
            ))
            .join(format!("{name}-{key}"))
    };
    let cached = |out: &Path| -> Result<Option<Built>> {
        if !out.join(COMPLETE).exists() {
            return Ok(None);
        }
        println!(
            "  kmod: {name} for {} from the cache ({})",
            kernel.release,
            out.display()
        );
        collect(out).map(Some)
    };

    // Warm path: built before, against headers of the kernel's own version. It needs neither
    // root nor the lock: the stamps are written last.
    if chroot.headers_version(&kernel.release).as_deref() == Some(kernel.version.as_str())
        && let Some(built) = cached(&built_dir(&kernel.version))?
    {
        return Ok(Ok(built));
    }
    if let Some(why) = missing_tools() {
        return Ok(Err(Unavailable(why)));
    }
    std::fs::create_dir_all(&roots)?;
    let _lock = Lock::take(&roots.join(format!("{}.lock", suite.name())))?;
    // Read again under the lock: another build may have installed them meanwhile.
    let mut headers = chroot.headers_version(&kernel.release);
    if headers.as_deref() != Some(kernel.version.as_str()) {
        if let Err(u) = chroot.ensure()? {
            return Ok(Err(u));
        }
        match chroot.install_headers(&kernel.release)? {
            Ok(v) => headers = Some(v),
            Err(u) => return Ok(Err(u)),
        }
    }
    let headers = headers.unwrap_or_default();
    if headers != kernel.version {
        println!(
            "  kmod: note: linux-headers-{} is {headers}, the kernel {}",
            kernel.release, kernel.version
        );
    }
    let out = built_dir(&headers);
    if let Some(built) = cached(&out)? {
        return Ok(Ok(built));
    }

    let started = Instant::now();
    let inside = format!("/build/{name}-{key}");
    let work = chroot.path(&inside);
    let _ = std::fs::remove_dir_all(&work);
    for (rel, data) in &files {
        let p = work.join(rel);
        std::fs::create_dir_all(p.parent().unwrap())?;
        std::fs::write(&p, data)?;
    }
    // Debian's headers set CC, CROSS_COMPILE and ARCH themselves (.kernelvariables).
    let make = format!(
        "make -C /usr/src/linux-headers-{} M={inside} modules 2>&1",
        kernel.release
    );
    let o = chroot
        .sh(&make)
        .output()
        .context("running make in the chroot")?;
    let log = String::from_utf8_lossy(&o.stdout).into_owned();
    if !o.status.success() {
        bail!(
            "{name} does not build against linux-headers-{} ({}):\n{}",
            kernel.release,
            o.status,
            util::tail(&log, 30)
        );
    }
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    for e in std::fs::read_dir(&work)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "ko") {
            let ko = std::fs::read(&p)?;
            check_vermagic(&ko, &kernel.release)
                .with_context(|| format!("{} built from {}", p.display(), src.display()))?;
            std::fs::write(out.join(p.file_name().unwrap()), ko)?;
        }
    }
    std::fs::write(out.join("build.log"), &log)?;
    std::fs::write(out.join(COMPLETE), "")?;
    let _ = std::fs::remove_dir_all(&work);
    let built = collect(&out)?;
    if built.modules.is_empty() {
        bail!(
            "make in {} built no .ko:\n{}",
            src.display(),
            util::tail(&log, 10)
        );
    }
    println!(
        "  kmod: {name} built for {} in {:.1}s ({})",
        kernel.release,
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(Ok(built))
}

fn collect(dir: &Path) -> Result<Built> {
    let mut modules: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ko"))
        .collect();
    modules.sort();
    let log = std::fs::read_to_string(dir.join("build.log")).unwrap_or_default();
    Ok(Built {
        modules,
        warnings: build_warnings(&log),
    })
}

/// Lines of a kbuild log that warn (compiler, modpost). Not among them: "Skipping BTF
/// generation ... unavailability of vmlinux", which Debian 6.1's headers (no vmlinux) always
/// print; the module loads the same, only without BTF of its own functions.
pub fn build_warnings(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.to_ascii_lowercase().contains("warning:"))
        .map(str::to_string)
        .collect()
}

/// A module loads only into the release its `vermagic=` names.
pub fn check_vermagic(ko: &[u8], release: &str) -> Result<()> {
    let vermagic = modules::vermagic(ko).context("no vermagic in its .modinfo")?;
    if vermagic.split_whitespace().next() != Some(release) {
        bail!("vermagic {vermagic:?} is not for {release}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_dependencies_without_the_kernel_image() {
        // linux-headers-6.12.118+deb12-amd64 (bookworm-security).
        let d = "linux-base (>= 4.12~), linux-headers-6.12.118+deb12-common (= 6.12.118-1~deb12u1), linux-image-6.12.118+deb12-amd64 (= 6.12.118-1~deb12u1) | linux-image-6.12.118+deb12-amd64-unsigned (= 6.12.118-1~deb12u1), linux-kbuild-6.12.118+deb12, gcc-12";
        assert_eq!(
            install_set(d),
            [
                "linux-base",
                "linux-headers-6.12.118+deb12-common=6.12.118-1~deb12u1",
                "linux-kbuild-6.12.118+deb12",
                "gcc-12"
            ]
        );
        // sid's 7.2: an alternative that is not an image is kept.
        assert_eq!(
            install_set(
                "gcc-16-for-host, linux-image-x | linux-foo (>= 1), linux-kbuild-7.2.13+deb14"
            ),
            ["gcc-16-for-host", "linux-foo", "linux-kbuild-7.2.13+deb14"]
        );
        assert!(install_set("").is_empty());
    }

    #[test]
    fn control_fields_of_the_first_stanza() {
        let show = "Package: linux-headers-7.2.13+deb14-amd64\nVersion: 7.2.13-1\nDepends: gcc-16-for-host, make\n\nPackage: other\nVersion: 9\n";
        assert_eq!(control_field(show, "Version").as_deref(), Some("7.2.13-1"));
        assert_eq!(
            control_field(show, "Depends").as_deref(),
            Some("gcc-16-for-host, make")
        );
        assert_eq!(control_field(show, "Source"), None);
    }

    #[test]
    fn only_the_date_checks_of_the_host_apt() {
        let dump = "APT \"\";\nAcquire::Check-Valid-Until \"false\";\nAcquire::Check-Date \"false\";\nAcquire::http::Proxy \"http://x\";\n";
        assert_eq!(
            host_date_policy(dump),
            "Acquire::Check-Valid-Until \"false\";\nAcquire::Check-Date \"false\";\n"
        );
        assert_eq!(host_date_policy("APT \"\";\n"), "");
    }

    #[test]
    fn key_covers_sources_not_build_outputs() {
        for rel in ["bugzoo.c", "Kbuild", "Makefile", "sub/x.h"] {
            assert!(is_source(rel), "{rel}");
        }
        for rel in [
            "bugzoo.o",
            "bugzoo.ko",
            "bugzoo.mod",
            "bugzoo.mod.c",
            ".bugzoo.o.cmd",
            "Module.symvers",
            "modules.order",
        ] {
            assert!(!is_source(rel), "{rel}");
        }
        let mut files = BTreeMap::new();
        files.insert("Kbuild".to_string(), b"obj-m := a.o\n".to_vec());
        files.insert("a.c".to_string(), b"int x;\n".to_vec());
        let k = source_key(&files);
        assert_eq!(k.len(), 16);
        assert_eq!(k, source_key(&files.clone()));
        files.insert("a.c".to_string(), b"int y;\n".to_vec());
        assert_ne!(k, source_key(&files));
        // A file's bytes cannot pass for the next file's name.
        let mut a = BTreeMap::new();
        a.insert("a".to_string(), b"bc".to_vec());
        let mut b = BTreeMap::new();
        b.insert("ab".to_string(), b"c".to_vec());
        assert_ne!(source_key(&a), source_key(&b));
    }

    #[test]
    fn suites_for_the_test_box_kernels() {
        assert_eq!(Suite::of(BoxKernel::V6_1), Suite::Bookworm);
        assert_eq!(Suite::of(BoxKernel::V6_12), Suite::Bookworm);
        assert_eq!(Suite::of(BoxKernel::V7_2), Suite::Sid);
        let s = Suite::Bookworm.sources("http://m/debian", "http://m/debian-security");
        assert!(s.contains("http://m/debian-security bookworm-security main"));
        assert_eq!(Suite::Sid.sources("M", "S"), "deb M sid main\n");
    }

    #[test]
    fn warnings_in_build_logs() {
        let log = "  CC [M]  bugzoo.o\nbugzoo.c:3:1: warning: unused\nWARNING: modpost: missing MODULE_DESCRIPTION()\nSkipping BTF generation for x.ko due to unavailability of vmlinux\n  LD [M]  bugzoo.ko\n";
        assert_eq!(build_warnings(log).len(), 2);
        assert!(build_warnings("  CC [M]  bugzoo.o\n  BTF [M] bugzoo.ko\n").is_empty());
    }
}
