//! `analyzer export`: the whole trace (every row and column, plus the derived `vma_kind` and
//! `fault_type`) as Parquet, CSV or JSON for other tools.

use std::{io::BufWriter, path::Path, str::FromStr};

use pfnscope_trace::{Damage, Existing, NewFile};
use polars::prelude::*;

use crate::{
    error::{AnalyzerError, Result},
    load::{Columns, LoadOptions, Trace},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Csv,
    /// One JSON array of row objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "parquet" => Format::Parquet,
            "csv" => Format::Csv,
            "json" => Format::Json,
            "ndjson" | "jsonl" => Format::Ndjson,
            _ => {
                return Err(format!(
                    "unknown export format `{s}` (parquet, csv, json, ndjson)"
                ));
            }
        })
    }
}

/// Loads `trace` in full and writes it to `out`; returns the number of rows written and the
/// trace's damage, if any (the good part is still exported).
///
/// `out` is never the trace (that once replaced the trace with its own export) and is created
/// as [`pfnscope_trace::output`] creates every command's output: an existing file is replaced
/// only as `existing` says, a link is never followed, and the export gets its name only once
/// it is complete.
pub fn export(
    trace: &Path,
    format: Format,
    out: &Path,
    existing: Existing,
    opts: &LoadOptions,
) -> Result<(usize, Option<Damage>)> {
    // Before the load, which takes seconds for a large trace.
    pfnscope_trace::output::check(out, existing, &[trace])?;
    let opts = LoadOptions {
        columns: Columns::Full,
        ..opts.clone()
    };
    let t = Trace::load_allow_empty(trace, &opts)?;
    let mut df = t.events.clone();
    let mut file = NewFile::create(out, existing, &[trace])?;
    let w = BufWriter::new(file.file());
    let res = match format {
        Format::Parquet => ParquetWriter::new(w).finish(&mut df).map(|_| ()),
        Format::Csv => CsvWriter::new(w).include_header(true).finish(&mut df),
        Format::Json => JsonWriter::new(w)
            .with_json_format(JsonFormat::Json)
            .finish(&mut df),
        Format::Ndjson => JsonWriter::new(w)
            .with_json_format(JsonFormat::JsonLines)
            .finish(&mut df),
    };
    res.map_err(|err| AnalyzerError::Polars {
        path: out.to_owned(),
        what: "writing the export",
        err,
    })?;
    file.place()?;
    Ok((df.height(), t.damage))
}
