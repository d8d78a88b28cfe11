//! The name of a streamed trace: `<box>-<kernel>-<start time>.arrows`, from the recording's own
//! metadata. The collector and a sender that keeps the rest locally name it the same way.
//!
//! The parts come from the sender, so they are only ever words: each keeps letters, digits,
//! `.`, `_` and `-` (anything else becomes `_`), never starts with a dot, and is cut to 64
//! bytes. No sender can name a path, a hidden file or another directory.

use pfnscope_trace::TraceMeta;

/// Longest part of a name.
const MAX_PART: usize = 64;

/// `<box>-<kernel>-<start time>.arrows`, e.g. `lab3-6.12.118+deb12-amd64` turns into
/// `lab3-6.12.118_deb12-amd64-20261207T213045.123Z.arrows`.
pub fn trace_file_name(meta: &TraceMeta) -> String {
    format!(
        "{}-{}-{}.arrows",
        word(&meta.host, "unknown-box"),
        word(&meta.kernel_release, "unknown-kernel"),
        utc(meta.started_unix_ns)
    )
}

/// The `n`th name for a stream whose first choice is taken (`n` from 2).
pub fn numbered(name: &str, n: u32) -> String {
    let stem = name.strip_suffix(".arrows").unwrap_or(name);
    format!("{stem}-{n}.arrows")
}

/// `s` as a harmless file-name part; `empty` when nothing of it is left.
fn word(s: &str, empty: &str) -> String {
    let mut w: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_PART)
        .collect();
    while w.starts_with('.') {
        w.remove(0);
    }
    if w.is_empty() || w.chars().all(|c| c == '.') {
        empty.to_string()
    } else {
        w
    }
}

/// Nanoseconds since the epoch as `YYYYMMDDTHHMMSS.mmmZ` (UTC); `unknown-time` for 0.
fn utc(unix_ns: u64) -> String {
    if unix_ns == 0 {
        return "unknown-time".into();
    }
    let secs = unix_ns / 1_000_000_000;
    let ms = (unix_ns / 1_000_000) % 1000;
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{ms:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, http://howardhinnant.github.io/date_algorithms.html).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(host: &str, kernel: &str, ns: u64) -> TraceMeta {
        TraceMeta {
            host: host.into(),
            kernel_release: kernel.into(),
            started_unix_ns: ns,
            ..Default::default()
        }
    }

    #[test]
    fn names_come_from_the_metadata() {
        // 2026-12-07 21:30:45.123 UTC.
        let ns = 1_796_679_045_123_000_000;
        assert_eq!(
            trace_file_name(&meta("lab3", "6.12.118+deb12-amd64", ns)),
            "lab3-6.12.118_deb12-amd64-20261207T213045.123Z.arrows"
        );
        assert_eq!(utc(951_782_400_000_000_000), "20000229T000000.000Z");
        assert_eq!(
            trace_file_name(&meta("", "", 0)),
            "unknown-box-unknown-kernel-unknown-time.arrows"
        );
        assert_eq!(numbered("a-b-c.arrows", 2), "a-b-c-2.arrows");
    }

    /// A sender chooses these words: none of them may name a path, a hidden file or another
    /// directory, however it tries.
    #[test]
    fn a_sender_never_chooses_a_path() {
        let hostile = [
            "../../etc/passwd",
            "/etc/cron.d/x",
            "..",
            ".",
            ".hidden",
            "a/b",
            "nul\0byte",
            "new\nline",
            "ünïcode",
            &"x".repeat(300),
        ];
        for h in hostile {
            for name in [
                trace_file_name(&meta(h, "6.1", 1)),
                trace_file_name(&meta("box", h, 1)),
            ] {
                assert!(!name.contains('/') && !name.contains('\0'), "{h:?}: {name}");
                assert!(!name.starts_with('.'), "{h:?}: {name}");
                assert!(name.len() < 200, "{h:?}: {name}");
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
                    "{h:?}: {name}"
                );
                let p = std::path::Path::new("/srv/traces").join(&name);
                assert_eq!(p.parent(), Some(std::path::Path::new("/srv/traces")));
            }
        }
    }
}
