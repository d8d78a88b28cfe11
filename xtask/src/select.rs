//! Which kernels and workloads a test-box run asks for, from the command line's lists.

use anyhow::{Context, Result, bail};
use workload::expect::{self, WORKLOADS};

use crate::kernels::{self, BoxKernel};

/// Requested kernels (`6.1,6.12` or `all`, repeatable), each once, in the order asked.
pub fn pick_series(requested: &[String]) -> Result<Vec<BoxKernel>> {
    let mut out = Vec::new();
    for r in requested.iter().flat_map(|r| r.split(',')) {
        let add: Vec<BoxKernel> = if r == "all" {
            kernels::ALL.to_vec()
        } else {
            vec![
                BoxKernel::parse(r)
                    .with_context(|| format!("unknown kernel {r}: use 6.1, 6.12, 7.2 or all"))?,
            ]
        };
        for s in add {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// Requested workloads in the table's order (which the guest depends on: DRM drivers last).
pub fn pick_workloads(requested: &[String], host: bool) -> Result<Vec<&'static str>> {
    let requested: Vec<&str> = requested
        .iter()
        .flat_map(|r| r.split(','))
        .filter(|r| !r.is_empty())
        .collect();
    for r in &requested {
        let w = expect::workload(r).with_context(|| {
            format!(
                "unknown workload {r}; known: {}",
                WORKLOADS
                    .iter()
                    .map(|w| w.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        if host && !w.host {
            bail!(
                "workload {r} needs a guest (its driver is not on this machine); host workloads: anon, file, vvar"
            );
        }
    }
    Ok(WORKLOADS
        .iter()
        .filter(|w| {
            if requested.is_empty() {
                !host || w.host
            } else {
                requested.contains(&w.name)
            }
        })
        .map(|w| w.name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_selection() {
        assert_eq!(pick_series(&["all".into()]).unwrap(), kernels::ALL);
        assert_eq!(
            pick_series(&["7.2".into(), "6.1,7.2".into()]).unwrap(),
            [BoxKernel::V7_2, BoxKernel::V6_1]
        );
        assert!(pick_series(&["5.10".into()]).is_err());
    }

    #[test]
    fn workload_selection_keeps_table_order() {
        let all = pick_workloads(&[], false).unwrap();
        assert_eq!(all.len(), WORKLOADS.len());
        assert_eq!(pick_workloads(&[], true).unwrap(), ["anon", "file", "vvar"]);
        assert_eq!(
            pick_workloads(&["drm-vgem".into(), "anon,fbdev".into()], false).unwrap(),
            ["anon", "fbdev", "drm-vgem"]
        );
        assert!(pick_workloads(&["pci-bar".into()], true).is_err());
        assert!(pick_workloads(&["nope".into()], false).is_err());
    }
}
