//! The replay's JSON reports (`replay check --json`, `replay overhead --json`), read with the
//! types the replay writes them with (`replay_report`): leniently, a missing field as its
//! default, an unknown one ignored.

use std::path::{Path, PathBuf};

use replay_report::{AnyReport, read};
pub use replay_report::{CheckReport, OverheadReport, PageRow};

use crate::error::{AnalyzerError, Result};

/// What the report page shows from the replay.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    pub check: Option<(PathBuf, CheckReport)>,
    pub overhead: Option<(PathBuf, OverheadReport)>,
}

impl Replay {
    /// Reads each file and files it as a check or an overhead report (a later file of the same
    /// kind replaces an earlier one).
    pub fn load(paths: &[PathBuf]) -> Result<Replay> {
        let mut r = Replay::default();
        for p in paths {
            match read_one(p)? {
                AnyReport::Check(c) => r.check = Some((p.clone(), *c)),
                AnyReport::Overhead(o) => r.overhead = Some((p.clone(), *o)),
            }
        }
        Ok(r)
    }

    pub fn is_empty(&self) -> bool {
        self.check.is_none() && self.overhead.is_none()
    }
}

fn read_one(path: &Path) -> Result<AnyReport> {
    let text = std::fs::read_to_string(path).map_err(|err| AnalyzerError::ReplayRead {
        path: path.to_owned(),
        err,
    })?;
    read(&text).map_err(|why| AnalyzerError::ReplayFormat {
        path: path.to_owned(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each file is filed by its kind (what the kinds are: `replay_report::read`); a file that
    /// cannot be read or is no report is an error naming it.
    #[test]
    fn files_each_report_by_kind() {
        let dir = std::env::temp_dir().join(format!("analyzer-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (c, o, f) = (dir.join("c.json"), dir.join("o.json"), dir.join("f.json"));
        std::fs::write(&c, r#"{"schema":"pfnscope.replay.check/1","events":7}"#).unwrap();
        std::fs::write(&o, r#"{"schema":"pfnscope.replay.overhead/1","pages":3}"#).unwrap();
        std::fs::write(&f, r#"{"hello":1}"#).unwrap();
        let r = Replay::load(&[o, c]).unwrap();
        assert_eq!(
            (r.check.unwrap().1.events, r.overhead.unwrap().1.pages),
            (7, 3)
        );
        let e = Replay::load(&[f]).unwrap_err();
        assert!(matches!(e, AnalyzerError::ReplayFormat { .. }), "{e}");
        let m = Replay::load(&[PathBuf::from("/nonexistent/r.json")]).unwrap_err();
        assert!(matches!(m, AnalyzerError::ReplayRead { .. }));
        std::fs::remove_dir_all(dir).ok();
    }
}
