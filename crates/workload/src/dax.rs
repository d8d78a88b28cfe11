//! Device DAX over legacy persistent memory: the test box's kernel command line reserves two
//! ranges of RAM as pmem (`memmap=SIZE!START`, e820 type 12), nd_e820 makes a region of each, and
//! this module turns each region's namespace into a device-dax instance through libnvdimm's
//! sysfs interface (what `ndctl create-namespace -m devdax` does), so no ndctl is needed in the
//! guest.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

const ND: &str = "/sys/bus/nd";

fn read(p: &Path) -> Result<String> {
    Ok(fs::read_to_string(p)
        .with_context(|| format!("reading {}", p.display()))?
        .trim()
        .to_owned())
}

fn write(p: &Path, v: &str) -> Result<()> {
    fs::write(p, v).with_context(|| format!("writing {v:?} to {}", p.display()))
}

/// Names of the entries of `dir` that start with `prefix`, sorted.
fn entries(dir: &Path, prefix: &str) -> Result<Vec<String>> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    Ok(v)
}

/// The legacy pmem regions (`regionN`), in address order.
pub fn regions() -> Result<Vec<String>> {
    let devs = Path::new(ND).join("devices");
    if !devs.exists() {
        bail!(
            "no {ND}: libnvdimm is not loaded (the test box loads nd_e820, nd_pmem, dax_pmem and device_dax)"
        );
    }
    let mut r = entries(&devs, "region")?;
    r.sort_by_key(|n| n[6..].parse::<u32>().unwrap_or(u32::MAX));
    ensure!(
        !r.is_empty(),
        "no pmem region: boot with memmap=SIZE!START (e820 type 12) and load nd_e820"
    );
    Ok(r)
}

/// Makes the namespace of `region` a device-dax instance with `align` and returns its character
/// device (`/dev/daxN.M`).
pub fn devdax(region: &str, align: usize) -> Result<PathBuf> {
    let devs = Path::new(ND).join("devices");
    let rdir = devs.join(region);
    let ns = entries(&rdir, "namespace")?
        .into_iter()
        .next()
        .with_context(|| format!("{region} has no namespace"))?;
    // nd_pmem claims the raw namespace as /dev/pmemN at load; the dax seed can only take it
    // once that driver lets go.
    let nsdir = devs.join(&ns);
    if nsdir.join("driver").exists() {
        let drv = fs::canonicalize(nsdir.join("driver"))?;
        write(&drv.join("unbind"), &ns)?;
    }
    let seed = read(&rdir.join("dax_seed"))?;
    ensure!(
        !seed.is_empty(),
        "{region} has no dax seed (dax_pmem not loaded?)"
    );
    let sdir = devs.join(&seed);
    let before = entries(Path::new("/dev"), "dax")?;
    write(
        &sdir.join("uuid"),
        &read(Path::new("/proc/sys/kernel/random/uuid"))?,
    )?;
    // The struct pages live in the pmem itself, as ndctl's default.
    write(&sdir.join("mode"), "pmem")?;
    write(&sdir.join("align"), &align.to_string())?;
    write(&sdir.join("namespace"), &ns)?;
    write(&Path::new(ND).join("drivers/dax_pmem/bind"), &seed)?;
    // device_dax binds the new instance and devtmpfs adds its node.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = entries(Path::new("/dev"), "dax")?;
        if let Some(n) = now.iter().find(|n| !before.contains(n)) {
            return Ok(Path::new("/dev").join(n));
        }
        if Instant::now() > deadline {
            bail!("{seed} bound to dax_pmem but no /dev/dax* appeared (device_dax not loaded?)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The block device nd_pmem made of `region`'s namespace (`/dev/pmemN`).
pub fn pmem_block(region: &str) -> Result<PathBuf> {
    let devs = Path::new(ND).join("devices");
    let ns = entries(&devs.join(region), "namespace")?
        .into_iter()
        .next()
        .with_context(|| format!("{region} has no namespace"))?;
    let block = devs.join(&ns).join("block");
    let name = entries(&block, "pmem")?
        .into_iter()
        .next()
        .with_context(|| format!("{ns} has no block device (nd_pmem not bound?)"))?;
    Ok(Path::new("/dev").join(name))
}
