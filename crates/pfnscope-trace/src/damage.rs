//! How much of a trace a reader could read, and why not all of it.
//!
//! Every reader (the replay, the analyzer's polars loader, the fuzz target) reads through
//! [`crate::CheckedStream`] and reports damage as a [`Damage`]: the same class, the same
//! numbers and the same words, whichever columns it decodes. A trace is whole only when it ends
//! with the end-of-stream marker that a finished recording writes.

use std::{fmt, path::Path};

use serde::{Deserialize, Serialize, Serializer};

/// How a stream of messages stopped, as [`crate::CheckedStream::stopped`] saw it.
#[derive(Clone, Copy, Debug)]
pub struct StreamEnd<'a> {
    /// It ended with the end-of-stream marker.
    pub saw_end_marker: bool,
    /// The damage a read failed on, if one did: its class and what is wrong.
    pub broken: Option<(DamageKind, &'a str)>,
    /// Bytes of the stream handed on.
    pub offset: u64,
}

/// Why a reader stopped before the end of a finished recording.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DamageKind {
    /// The file ends between two batches without the end-of-stream marker: the tracer was
    /// killed, the machine crashed or the disk filled. Every batch on disk was read; what
    /// happened after the last flush (up to a second of events) is not in the file.
    #[default]
    CutShort,
    /// The file ends inside a message: a batch was being written when the recording stopped,
    /// or a copy of the file was cut.
    Truncated,
    /// Bytes inside the file are wrong: a checksum that does not match, framing that makes no
    /// sense, or a batch that does not decode. A stopped recording does not do this; the file
    /// was damaged after it was written.
    Corrupt,
}

impl DamageKind {
    /// The class as messages and JSON name it.
    pub fn name(self) -> &'static str {
        match self {
            DamageKind::CutShort => "cut short",
            DamageKind::Truncated => "truncated",
            DamageKind::Corrupt => "corrupt",
        }
    }
}

/// What a reader could not read, and what it kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub kind: DamageKind,
    /// The file, as the reader was given it.
    pub path: String,
    /// The damaged batch, from 1 (one past the last batch when cut short).
    pub batch: u64,
    /// What is wrong with that batch, as the check that found it says it, to follow
    /// "batch N" (empty when cut short).
    pub detail: String,
    /// Rows read before the damage, counter rows included.
    pub records_kept: u64,
    pub batches_kept: u64,
    /// Bytes of the file up to the end of the last batch read.
    pub bytes_kept: u64,
    /// Size of the file, when it has one.
    pub file_bytes: Option<u64>,
}

/// What a reader has read of a trace so far: what it says it kept when it stops.
#[derive(Clone, Debug)]
pub struct ReadSoFar {
    path: String,
    pub records: u64,
    pub batches: u64,
    /// Bytes up to the end of the last batch read (the schema's end before the first).
    pub bytes: u64,
    pub file_bytes: Option<u64>,
}

impl ReadSoFar {
    /// Nothing read yet but the schema, which ends at `bytes`.
    pub fn new(path: &Path, bytes: u64, file_bytes: Option<u64>) -> ReadSoFar {
        ReadSoFar {
            path: path.display().to_string(),
            records: 0,
            batches: 0,
            bytes,
            file_bytes,
        }
    }

    /// One more batch of `rows` rows read, ending at byte `end`.
    pub fn batch(&mut self, rows: u64, end: u64) {
        self.records += rows;
        self.batches += 1;
        self.bytes = end;
    }

    /// The verdict once the stream stopped (`end`): at the end of the file (`error` is
    /// None), or on a batch it could not read (`error` is the Arrow reader's or the decoder's
    /// message, used when the framing checks found nothing wrong). None: the trace is whole.
    pub fn verdict(&self, end: StreamEnd<'_>, error: Option<String>) -> Option<Damage> {
        let (kind, detail) = match (error, end.broken) {
            (None, _) if end.saw_end_marker => return None,
            (None, _) => (DamageKind::CutShort, String::new()),
            (Some(_), Some((kind, why))) => (kind, one_line(why)),
            (Some(e), None) => (
                DamageKind::Corrupt,
                format!("cannot be decoded ({})", one_line(&e)),
            ),
        };
        let cut_short = kind == DamageKind::CutShort;
        Some(Damage {
            kind,
            path: self.path.clone(),
            batch: self.batches + 1,
            detail,
            records_kept: self.records,
            batches_kept: self.batches,
            // Cut short: everything up to the end of the file was read.
            bytes_kept: if cut_short { end.offset } else { self.bytes },
            file_bytes: if cut_short {
                Some(end.offset)
            } else {
                self.file_bytes
            },
        })
    }
}

/// `s` on one line: the Arrow readers' messages can span several (found by the fuzz target),
/// and every report of damage is one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, records, batches) = (&self.path, self.records_kept, self.batches_kept);
        let share = match self.file_bytes {
            Some(total) if total > 0 => format!(
                " ({:.0}% of the file's {total} bytes)",
                100.0 * self.bytes_kept as f64 / total as f64
            ),
            _ => String::new(),
        };
        match self.kind {
            DamageKind::CutShort => write!(
                f,
                "{path} was cut short: it ends after batch {batches} without the end-of-stream \
                 marker a finished recording writes (the tracer was killed, the machine crashed \
                 or the disk filled); kept all {records} records, but the events after the last \
                 flush are missing"
            ),
            DamageKind::Truncated => write!(
                f,
                "{path} is truncated: the file ends inside batch {} ({}); kept the {records} \
                 records of the {batches} complete batches before it{share}",
                self.batch, self.detail
            ),
            DamageKind::Corrupt => write!(
                f,
                "{path} is corrupt: batch {} {}; kept the {records} records of the {batches} \
                 batches before it{share}; the file was damaged after it was written (disk, \
                 copy or transfer), which a stopped recording does not do",
                self.batch, self.detail
            ),
        }
    }
}

/// A [`Damage`] as reports carry it (JSON): the class, the numbers and the message, so tools
/// need not parse the words. Read back by the analyzer from the replay's reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DamageReport {
    pub kind: DamageKind,
    pub batch: u64,
    pub records_kept: u64,
    pub batches_kept: u64,
    pub bytes_kept: u64,
    pub file_bytes: Option<u64>,
    /// [`Damage`]'s one-line message.
    pub message: String,
}

impl From<&Damage> for DamageReport {
    fn from(d: &Damage) -> DamageReport {
        DamageReport {
            kind: d.kind,
            batch: d.batch,
            records_kept: d.records_kept,
            batches_kept: d.batches_kept,
            bytes_kept: d.bytes_kept,
            file_bytes: d.file_bytes,
            message: d.to_string(),
        }
    }
}

impl fmt::Display for DamageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Serialize for Damage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        DamageReport::from(self).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn damage(kind: DamageKind) -> Damage {
        Damage {
            kind,
            path: "t.arrows".into(),
            batch: 4,
            detail: match kind {
                DamageKind::CutShort => String::new(),
                DamageKind::Truncated => "byte 300 of 420".into(),
                DamageKind::Corrupt => "does not match its checksum".into(),
            },
            records_kept: 150,
            batches_kept: 3,
            bytes_kept: 300,
            file_bytes: Some(400),
        }
    }

    /// Each class says its name, how much was kept, and only a cut-short trace blames a
    /// stopped recording.
    #[test]
    fn each_class_says_what_happened_and_what_was_kept() {
        for kind in [
            DamageKind::CutShort,
            DamageKind::Truncated,
            DamageKind::Corrupt,
        ] {
            let m = damage(kind).to_string();
            assert!(m.contains(kind.name()), "{m}");
            assert!(m.contains("150 records"), "{m}");
            assert_eq!(m.contains("killed"), kind == DamageKind::CutShort, "{m}");
            assert_eq!(m.lines().count(), 1);
        }
        assert!(
            damage(DamageKind::Truncated)
                .to_string()
                .contains("(75% of")
        );
        let v = serde_json::to_value(damage(DamageKind::CutShort)).unwrap();
        assert_eq!(v["kind"], "cut_short");
        assert_eq!(v["records_kept"], 150);
        assert!(v["message"].as_str().unwrap().contains("cut short"));
    }
}
