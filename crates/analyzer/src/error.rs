//! The analyzer's errors: each one is meant to be printed as a single line.

use std::{io, path::PathBuf};

use polars::prelude::PolarsError;

#[derive(Debug, thiserror::Error)]
pub enum AnalyzerError {
    /// The trace cannot be used at all (missing, empty file, not a trace, newer schema).
    #[error(transparent)]
    Trace(#[from] pfnscope_trace::TraceError),
    #[error("{path} holds no events{}", match .damage { Some(d) => format!(" that could be read ({d})"), None => " (the recording stopped before its first flush)".to_string() })]
    NoEvents {
        path: PathBuf,
        damage: Option<String>,
    },
    #[error(
        "{path} has no latencies (recorded in tracepoint mode, which sees no returns): nothing to compare"
    )]
    NoLatency { path: PathBuf },
    #[error("{path}: {what}: {source}")]
    Polars {
        path: PathBuf,
        what: &'static str,
        source: PolarsError,
    },
    #[error("cannot read replay report {path}: {source}")]
    ReplayRead { path: PathBuf, source: io::Error },
    #[error("{path} is not a replay report this analyzer understands: {why}")]
    ReplayFormat { path: PathBuf, why: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot draw {path}: {why}")]
    Plot { path: PathBuf, why: String },
}

pub type Result<T, E = AnalyzerError> = std::result::Result<T, E>;

pub(crate) fn write_err(path: &std::path::Path) -> impl FnOnce(io::Error) -> AnalyzerError + '_ {
    move |source| AnalyzerError::Write {
        path: path.to_owned(),
        source,
    }
}
