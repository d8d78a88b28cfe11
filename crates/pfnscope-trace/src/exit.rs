//! The exit status of every command that reads a trace (`replay check`, `replay overhead`,
//! `analyzer summary`, `report`, `export`, `diff`): one scheme, kept here, so that a CI gate
//! reads them all the same way.

use std::process::ExitCode;

/// What a run of a reading command concluded, as its exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitStatus {
    /// The whole trace was read (and `replay check` found no divergence).
    Ok = 0,
    /// `replay check` only: the whole trace was read and it diverges from the model.
    Divergences = 1,
    /// The trace is not whole (cut short, truncated, corrupt): what could be read was
    /// analysed, and the message says how much was kept. Wins over [`Self::Divergences`]:
    /// the verdict on a part of a trace is not the verdict on the trace.
    Damaged = 2,
    /// Nothing was analysed: the input cannot be used (missing, empty, not a trace, a newer
    /// schema, a directory), the arguments are wrong, or the output cannot be written.
    Unusable = 3,
}

/// The scheme in words, for each command's `--help` and for README.
pub const EXIT_STATUS_HELP: &str = "\
Exit status (the same for replay check/overhead and analyzer summary/report/export/diff):
  0  the whole trace was read (replay check: and no divergence)
  1  replay check: divergences found
  2  the trace is damaged or incomplete (cut short, truncated, corrupt): what could be read
     was analysed, and the message says how much was kept
  3  nothing was analysed: unusable input (missing, empty, not a trace, newer schema),
     wrong arguments, or an output that cannot be written";

impl ExitStatus {
    /// The status of a run that read trace(s) with this damage and found `divergences`.
    pub fn after_reading<D>(
        damage: impl IntoIterator<Item = Option<D>>,
        divergences: bool,
    ) -> ExitStatus {
        if damage.into_iter().any(|d| d.is_some()) {
            ExitStatus::Damaged
        } else if divergences {
            ExitStatus::Divergences
        } else {
            ExitStatus::Ok
        }
    }

    /// The status for a command line the parser refused: a usage error is unusable input,
    /// but `--help` and `--version` (which clap reports as errors printed to stdout) are not.
    pub fn after_arguments(refused: bool) -> ExitStatus {
        if refused {
            ExitStatus::Unusable
        } else {
            ExitStatus::Ok
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> ExitCode {
        ExitCode::from(s.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::damage::{Damage, DamageKind};

    #[test]
    fn damage_wins_over_divergences_and_the_help_names_every_status() {
        let d = Damage {
            kind: DamageKind::CutShort,
            path: "t".into(),
            batch: 2,
            detail: String::new(),
            records_kept: 1,
            batches_kept: 1,
            bytes_kept: 100,
            file_bytes: Some(100),
        };
        let table = [
            (None, false, ExitStatus::Ok),
            (None, true, ExitStatus::Divergences),
            (Some(&d), false, ExitStatus::Damaged),
            (Some(&d), true, ExitStatus::Damaged),
        ];
        for (damage, divergences, want) in table {
            assert_eq!(ExitStatus::after_reading([damage], divergences), want);
        }
        assert_eq!(
            ExitStatus::after_reading([None, Some(&d)], false),
            ExitStatus::Damaged
        );
        for s in [
            ExitStatus::Ok,
            ExitStatus::Divergences,
            ExitStatus::Damaged,
            ExitStatus::Unusable,
        ] {
            assert!(EXIT_STATUS_HELP.contains(&format!("\n  {}  ", s.code())));
        }
    }
}
