//! The analyzer's errors: each one is meant to be printed as a single line.

use std::{io, path::PathBuf};

use pfnscope_trace::ExitStatus;
use polars::prelude::PolarsError;

// An I/O or polars error is part of the message, so it is a field named `err`, not `source`:
// front ends print the whole chain on one line, and a source would say it twice.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzerError {
    /// The trace cannot be used at all (missing, empty file, not a trace, newer schema).
    #[error(transparent)]
    Trace(#[from] pfnscope_trace::TraceError),
    #[error("{path} holds no events{}", match .damage { Some(d) => format!(" that could be read ({d})"), None => " (the recording stopped before its first flush)".to_string() })]
    NoEvents {
        path: PathBuf,
        // Boxed: it would make every result of the crate as large as a damage report.
        damage: Option<Box<pfnscope_trace::Damage>>,
    },
    #[error(
        "{path} has no latencies (recorded in tracepoint mode, which sees no returns): nothing to compare"
    )]
    NoLatency { path: PathBuf },
    #[error("{path}: {what}: {err}")]
    Polars {
        path: PathBuf,
        what: &'static str,
        err: PolarsError,
    },
    #[error("cannot read replay report {path}: {err}")]
    ReplayRead { path: PathBuf, err: io::Error },
    #[error("{path} is not a replay report this analyzer understands: {why}")]
    ReplayFormat { path: PathBuf, why: String },
    #[error("cannot write {path}: {err}")]
    Write { path: PathBuf, err: io::Error },
    #[error(transparent)]
    Output(#[from] pfnscope_trace::OutputError),
    #[error("cannot draw {path}: {why}")]
    Plot { path: PathBuf, why: String },
}

pub type Result<T, E = AnalyzerError> = std::result::Result<T, E>;

impl AnalyzerError {
    /// The exit status of a run that failed this way: a trace too damaged to show anything is
    /// still a damaged trace; everything else left nothing analysed.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            AnalyzerError::NoEvents {
                damage: Some(_), ..
            } => ExitStatus::Damaged,
            _ => ExitStatus::Unusable,
        }
    }
}

pub(crate) fn write_err(path: &std::path::Path) -> impl FnOnce(io::Error) -> AnalyzerError + '_ {
    move |err| AnalyzerError::Write {
        path: path.to_owned(),
        err,
    }
}
