//! Attach modes: which rung of the attach ladder served a hook.

/// How an event was captured. The value is what the eBPF programs write into `Event::mode`;
/// traces store [`Mode::name`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    Fentry = 1,
    Kprobe = 2,
    TpBtf = 3,
    RawTp = 4,
    Tracepoint = 5,
}

impl Mode {
    /// Every mode, best rung first.
    pub const ALL: [Mode; 5] = [
        Mode::Fentry,
        Mode::Kprobe,
        Mode::TpBtf,
        Mode::RawTp,
        Mode::Tracepoint,
    ];

    pub fn from_u8(v: u8) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| *m as u8 == v)
    }

    /// The name traces, hook plans and `tracer doctor` use.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Fentry => "fentry",
            Mode::Kprobe => "kprobe",
            Mode::TpBtf => "tp_btf",
            Mode::RawTp => "raw_tp",
            Mode::Tracepoint => "tracepoint",
        }
    }

    pub fn parse(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }

    /// A tracepoint rung (tp_btf, raw_tp or a classic tracepoint): the event carries the same
    /// fields whichever one attached.
    pub fn is_tracepoint(self) -> bool {
        matches!(self, Mode::TpBtf | Mode::RawTp | Mode::Tracepoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for m in Mode::ALL {
            assert_eq!(Mode::from_u8(m as u8), Some(m));
            assert_eq!(Mode::parse(m.name()), Some(m));
        }
        assert_eq!(Mode::from_u8(0), None);
        assert_eq!(Mode::parse("fexit"), None);
    }
}
