//! The bug zoo in the test box: which `bugzoo-*` workloads run on a kernel, the `bugzoo` driver
//! built for it (`kmod/bugzoo`, through [`kmod::build`]), and the qemu device its device-memory
//! modes map. The table of what each mode must show is `workload::bugzoo`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use workload::bugzoo;

use crate::kernels::Kernel;
use crate::{kmod, modules, util};

/// The module's name, as insmod and the initramfs know it.
pub const MODULE: &str = "bugzoo";

pub fn source_dir() -> PathBuf {
    util::workspace_root().join("kmod").join(MODULE)
}

/// One kernel's share of the requested workloads.
pub struct Plan {
    /// The workloads to run, in the requested order: the zoo's only where the driver was built.
    pub run: Vec<&'static str>,
    /// Zoo workloads left out on this kernel, each with the reason.
    pub skipped: Vec<(&'static str, String)>,
    /// The driver built for this kernel, when a zoo workload runs.
    pub driver: Option<Driver>,
}

pub struct Driver {
    pub ko: Vec<u8>,
    /// The modules it needs loaded first (`depends=`; none today: all it uses is built in).
    pub depends: Vec<String>,
}

impl Plan {
    pub fn runs_zoo(&self) -> bool {
        self.driver.is_some()
    }
}

/// Decides which zoo workloads run on `k`: none where the table says a mode cannot run there, and
/// none where the driver cannot be built on this machine (both reported SKIPPED by the caller).
/// A driver that does not compile, or compiles with warnings, is an error.
pub fn plan(k: &Kernel, workloads: &[&'static str], cache: &Path) -> Result<Plan> {
    let (features, _) = pfnscope_abi::kernel::Features::for_release(&k.release)
        .with_context(|| format!("no kernel version in release {}", k.release))?;
    let (mut plan, zoo) = split(workloads, |w| {
        bugzoo::mode(w).map(|m| m.outcome(features.series).and_then(|o| o.skip))
    });
    if zoo.is_empty() {
        return Ok(plan);
    }
    match kmod::build(&source_dir(), k, cache)? {
        Ok(built) => {
            if !built.warnings.is_empty() {
                bail!(
                    "{MODULE}.ko for {} built with warnings:\n{}",
                    k.release,
                    built.warnings.join("\n")
                );
            }
            let ko = built
                .modules
                .iter()
                .find(|p| p.file_stem().is_some_and(|s| s == MODULE))
                .with_context(|| format!("no {MODULE}.ko among {:?}", built.modules))?;
            let ko = std::fs::read(ko)?;
            let info =
                modules::elf_section(&ko, ".modinfo").context("bugzoo.ko has no .modinfo")?;
            plan.driver = Some(Driver {
                depends: modules::modinfo_depends(info),
                ko,
            });
        }
        Err(kmod::Unavailable(why)) => {
            plan.run.retain(|w| !zoo.contains(w));
            plan.skipped.extend(
                zoo.iter()
                    .map(|w| (*w, format!("{MODULE}.ko not built: {why}"))),
            );
        }
    }
    Ok(plan)
}

/// The plan before any build, and the zoo workloads in it. `skip(w)`: `None` for a workload
/// outside the zoo, `Some(None)` for a zoo mode that can run on this kernel, `Some(Some(why))`
/// for one that cannot.
fn split(
    workloads: &[&'static str],
    skip: impl Fn(&str) -> Option<Option<&'static str>>,
) -> (Plan, Vec<&'static str>) {
    let mut plan = Plan {
        run: Vec::new(),
        skipped: Vec::new(),
        driver: None,
    };
    let mut zoo = Vec::new();
    for &w in workloads {
        match skip(w) {
            None => plan.run.push(w),
            Some(Some(why)) => plan.skipped.push((w, why.to_string())),
            Some(None) => {
                zoo.push(w);
                plan.run.push(w);
            }
        }
    }
    (plan, zoo)
}

/// The subdirectory of `<kernel>/` that holds the zoo's results. Its traces show divergences
/// and findings by design, while replay's and analyzer's tests take every `<kernel>/*.arrows`
/// for a trace of correct drivers (crates/replay/tests/mutation.rs wants each to replay clean):
/// one level down, they stay out of those until the tests read `workload::bugzoo`.
pub const RESULTS: &str = "bugzoo";

/// Where `workload`'s results are, under a kernel's result directory `out`.
pub fn results_dir(out: &Path, workload: &str) -> PathBuf {
    if bugzoo::mode(workload).is_some() {
        out.join(RESULTS)
    } else {
        out.to_path_buf()
    }
}

/// Moves the zoo workloads' results (the guest writes every workload's to /out) to
/// [`results_dir`].
pub fn file_away(out: &Path, workloads: &[&str]) -> Result<()> {
    for w in workloads {
        let dir = results_dir(out, w);
        if dir == out {
            continue;
        }
        std::fs::create_dir_all(&dir)?;
        for ext in ["arrows", "log", "rc", "dmesg"] {
            let name = format!("{w}.{ext}");
            if out.join(&name).exists() {
                std::fs::rename(out.join(&name), dir.join(&name))
                    .with_context(|| format!("moving {name} to {}", dir.display()))?;
            }
        }
    }
    Ok(())
}

/// The ivshmem-plain device the driver binds (BAR2 = 128 MiB of host RAM; the driver's layout
/// of it is in kmod/bugzoo/bugzoo.c). qemu 7.2 has it.
pub fn qemu_args() -> Vec<String> {
    [
        "-object",
        "memory-backend-ram,id=bugzoo,size=128M,share=on",
        "-device",
        "ivshmem-plain,memdev=bugzoo",
    ]
    .map(String::from)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::BoxKernel;

    fn kernel(release: &str) -> Kernel {
        Kernel {
            series: BoxKernel::V6_12,
            release: release.into(),
            version: "1".into(),
            vmlinuz: PathBuf::new(),
            modules: PathBuf::new(),
        }
    }

    #[test]
    fn without_zoo_workloads_nothing_is_built() {
        // A cache path that cannot exist: building would fail loudly.
        let p = plan(
            &kernel("6.12.118+deb12-amd64"),
            &["anon", "pci-bar"],
            Path::new("/nonexistent/cache"),
        )
        .unwrap();
        assert_eq!(p.run, ["anon", "pci-bar"]);
        assert!(p.skipped.is_empty() && !p.runs_zoo());
    }

    #[test]
    fn a_mode_impossible_on_a_kernel_is_skipped_with_its_reason() {
        let (p, zoo) = split(&["anon", "bugzoo-a", "bugzoo-b"], |w| match w {
            "bugzoo-a" => Some(Some("no such API before 6.5")),
            "bugzoo-b" => Some(None),
            _ => None,
        });
        assert_eq!(p.run, ["anon", "bugzoo-b"]);
        assert_eq!(zoo, ["bugzoo-b"]);
        assert_eq!(
            p.skipped,
            [("bugzoo-a", "no such API before 6.5".to_string())]
        );
    }

    #[test]
    fn every_mode_has_a_workload_the_test_box_knows() {
        for m in bugzoo::MODES {
            assert!(
                crate::select::pick_workloads(&[m.workload.to_string()], false).is_ok(),
                "{}",
                m.workload
            );
        }
    }

    #[test]
    fn the_driver_source_is_in_the_tree() {
        let dir = source_dir();
        for f in ["bugzoo.c", "Kbuild", "Makefile"] {
            assert!(dir.join(f).is_file(), "{}", dir.join(f).display());
        }
        // Every mode the table names is one the driver accepts.
        let c = std::fs::read_to_string(dir.join("bugzoo.c")).unwrap();
        for m in bugzoo::MODES {
            assert!(
                c.contains(&format!("= \"{}\",", m.driver_mode())),
                "bugzoo.c has no mode {}",
                m.driver_mode()
            );
        }
    }

    #[test]
    fn zoo_results_one_level_down() {
        let out = std::env::temp_dir().join(format!("pfnscope-zoo-{}", std::process::id()));
        std::fs::create_dir_all(&out).unwrap();
        for f in ["anon.arrows", "bugzoo-ram-wc.arrows", "bugzoo-ram-wc.dmesg"] {
            std::fs::write(out.join(f), b"x").unwrap();
        }
        file_away(&out, &["anon", "bugzoo-ram-wc", "bugzoo-correct"]).unwrap();
        assert!(out.join("anon.arrows").exists());
        assert!(!out.join("bugzoo-ram-wc.arrows").exists());
        let zoo = results_dir(&out, "bugzoo-ram-wc");
        assert_eq!(zoo, out.join(RESULTS));
        assert!(
            zoo.join("bugzoo-ram-wc.arrows").exists() && zoo.join("bugzoo-ram-wc.dmesg").exists()
        );
        assert_eq!(results_dir(&out, "anon"), out);
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn ivshmem_device() {
        let a = qemu_args().join(" ");
        assert!(a.contains("-device ivshmem-plain,memdev=bugzoo"));
        assert!(a.contains("size=128M,share=on"));
    }
}
