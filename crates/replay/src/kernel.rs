//! The rule set a replay runs under, chosen from a trace's kernel release. The per-kernel facts
//! themselves are one table shared by every stage: [`pfnscope_abi::kernel::TABLE`].

use pfnscope_abi::kernel::{Features, Series, parse_release};

/// The rules chosen for a replay and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRules {
    pub features: Features,
    /// The release string the choice was made from (trace metadata or `--kernel-rules`).
    pub release: String,
    /// Set when the release is not one of the three modelled series exactly, or was missing.
    pub note: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "cannot read a kernel version from `{0}` (expected e.g. 6.1, 6.12.117+deb13-amd64, 7.2.13-amd64)"
)]
pub struct BadRelease(pub String);

impl KernelRules {
    pub fn for_series(series: Series) -> KernelRules {
        KernelRules {
            features: series.features(),
            release: series.to_string(),
            note: None,
        }
    }

    /// Picks the rule set for a release string.
    pub fn from_release(release: &str) -> Result<KernelRules, BadRelease> {
        let (major, minor) = parse_release(release).ok_or_else(|| BadRelease(release.into()))?;
        let (series, exact) = Series::for_version(major, minor);
        let mut rules = KernelRules::for_series(series);
        rules.release = release.to_string();
        if !exact {
            rules.note = Some(format!(
                "kernel {major}.{minor} is not a modelled series: using the {series} rules, the nearest older one"
            ));
        }
        Ok(rules)
    }

    /// From trace metadata; a trace without a release gets 6.12 rules and a note, since the hooks
    /// alone cannot tell 6.1 from 6.12.
    pub fn from_meta_release(release: &str) -> KernelRules {
        match KernelRules::from_release(release) {
            Ok(r) => r,
            Err(_) => {
                let mut r = KernelRules::for_series(Series::V6_12);
                r.note = Some(format!(
                    "trace metadata has no usable kernel_release (`{release}`): assuming 6.12 rules; force others with --kernel-rules"
                ));
                r
            }
        }
    }

    pub fn series(&self) -> Series {
        self.features.series
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_say_when_the_rules_are_a_guess() {
        // (release, series, exact); the release table itself is pfnscope_abi::kernel's.
        let rows: &[(&str, Series, bool)] = &[
            ("6.1.0-28-amd64", Series::V6_1, true),
            ("6.6.30", Series::V6_1, false),
            ("6.15.2", Series::V6_12, false),
            ("7.2.13-amd64", Series::V6_16, true),
        ];
        for (rel, series, exact) in rows {
            let r = KernelRules::from_release(rel).unwrap();
            assert_eq!(r.series(), *series, "{rel}");
            assert_eq!(r.note.is_none(), *exact, "{rel}");
            assert_eq!(r.release, *rel);
        }
        assert_eq!(
            KernelRules::from_release("linux"),
            Err(BadRelease("linux".into()))
        );
        let guess = KernelRules::from_meta_release("");
        assert_eq!(guess.series(), Series::V6_12);
        assert!(guess.note.unwrap().contains("--kernel-rules"));
    }
}
