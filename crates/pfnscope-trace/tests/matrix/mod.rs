//! The damage matrix (issue 21): one clean trace damaged every way a file gets damaged, and
//! what every reading command must make of each. The trace crate, `replay` and `analyzer`
//! include this file in their tests (`#[path]`), each running its own commands over the same
//! cases; the framing is parsed here independently of the readers under test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use pfnscope_trace::DamageKind;

/// What a reader must conclude about a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A whole trace: exit 0 (for `replay check`, 0 or 1).
    Whole,
    /// Damage of this class, reported with what was kept: exit 2.
    Damaged(DamageKind),
    /// Nothing can be read: exit 3, one line containing these words.
    Unusable(&'static str),
}

impl Expect {
    pub fn exit(self) -> i32 {
        match self {
            Expect::Whole => 0,
            Expect::Damaged(_) => 2,
            Expect::Unusable(_) => 3,
        }
    }

    /// Words the one line on stderr must hold (none for a whole trace).
    pub fn words(self) -> Option<&'static str> {
        match self {
            Expect::Whole => None,
            Expect::Damaged(k) => Some(k.name()),
            Expect::Unusable(w) => Some(w),
        }
    }

    /// Checks a command's exit status and stderr against the expectation.
    pub fn check(self, case: &str, cmd: &str, code: Option<i32>, stderr: &str) {
        let what = format!("{cmd} on {case}: exit {code:?}, stderr: {stderr}");
        let want = self.exit();
        let ok = code == Some(want)
            // replay check's divergences are findings of the trace, not of the file.
            || (self == Expect::Whole && cmd.starts_with("replay check") && code == Some(1));
        assert!(ok, "expected exit {want}: {what}");
        let Some(words) = self.words() else {
            assert!(stderr.trim().is_empty(), "{what}");
            return;
        };
        assert!(stderr.contains(words), "expected `{words}`: {what}");
        assert_eq!(stderr.trim().lines().count(), 1, "not one line: {what}");
        assert!(!stderr.contains("panicked"), "{what}");
        if let Expect::Damaged(kind) = self {
            assert!(stderr.contains("kept"), "says nothing kept: {what}");
            // Only a trace that ends between batches may be blamed on a stopped recording.
            assert_eq!(
                stderr.contains("killed"),
                kind == DamageKind::CutShort,
                "{what}"
            );
        }
    }
}

pub struct Case {
    pub name: &'static str,
    pub path: PathBuf,
    pub expect: Expect,
    /// Whole batches before the damage (for damaged cases).
    pub batches_kept: usize,
}

/// One IPC message of the clean file.
struct Message {
    start: usize,
    meta_end: usize,
    end: usize,
    is_batch: bool,
}

fn messages(bytes: &[u8]) -> Vec<Message> {
    let mut out = vec![];
    let mut at = 0;
    while at + 8 <= bytes.len() {
        assert_eq!(&bytes[at..at + 4], &[0xff; 4], "continuation at {at}");
        let meta_len = i32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if meta_len == 0 {
            break;
        }
        let meta_end = at + 8 + meta_len;
        let m = arrow_ipc::root_as_message(&bytes[at + 8..meta_end]).unwrap();
        let end = meta_end + m.bodyLength() as usize;
        out.push(Message {
            start: at,
            meta_end,
            end,
            is_batch: m.header_as_record_batch().is_some(),
        });
        at = end;
    }
    out
}

/// Builds every case in `dir` from `clean`, a whole trace of at least four batches.
pub fn cases(dir: &Path, clean: &Path) -> Vec<Case> {
    std::fs::create_dir_all(dir).unwrap();
    let bytes = std::fs::read(clean).unwrap();
    let msgs = messages(&bytes);
    let batches: Vec<&Message> = msgs.iter().filter(|m| m.is_batch).collect();
    assert!(batches.len() >= 4, "{} batches", batches.len());
    // Batches whole before byte `at`.
    let whole_before = |at: usize| batches.iter().filter(|b| b.end <= at).count();
    let mut out = vec![Case {
        name: "whole",
        path: clean.to_owned(),
        expect: Expect::Whole,
        batches_kept: batches.len(),
    }];
    let mut write = |name: &'static str, data: &[u8], expect: Expect, kept: usize| {
        let path = dir.join(format!("{name}.arrows"));
        std::fs::write(&path, data).unwrap();
        out.push(Case {
            name,
            path,
            expect,
            batches_kept: kept,
        });
    };
    // Cut inside a message near 25, 50 and 75% of the file (never on a boundary).
    for (name, share) in [("cut-25", 25), ("cut-50", 50), ("cut-75", 75)] {
        let mut at = bytes.len() * share / 100;
        while msgs.iter().any(|m| at == m.start || at == m.end) {
            at += 9;
        }
        let expect = Expect::Damaged(DamageKind::Truncated);
        write(name, &bytes[..at], expect, whole_before(at));
    }
    let at = batches[1].end;
    write(
        "cut-between-batches",
        &bytes[..at],
        Expect::Damaged(DamageKind::CutShort),
        2,
    );
    write(
        "no-end-marker",
        &bytes[..bytes.len() - 8],
        Expect::Damaged(DamageKind::CutShort),
        batches.len(),
    );
    write(
        "schema-only",
        &bytes[..msgs[0].end],
        Expect::Damaged(DamageKind::CutShort),
        0,
    );
    let last = batches.last().unwrap();
    let mut flipped = bytes.clone();
    flipped[(last.meta_end + last.end) / 2] ^= 0x10;
    write(
        "flip-in-a-batch",
        &flipped,
        Expect::Damaged(DamageKind::Corrupt),
        batches.len() - 1,
    );
    let mut flipped = bytes.clone();
    let b = batches[2];
    flipped[(b.start + 8 + b.meta_end) / 2] ^= 0x01;
    write(
        "flip-in-a-header",
        &flipped,
        Expect::Damaged(DamageKind::Corrupt),
        2,
    );
    let mut zeroed = bytes.clone();
    zeroed[..64].fill(0);
    write(
        "zeroed-header",
        &zeroed,
        Expect::Unusable("not a pfnscope trace"),
        0,
    );
    write("empty", b"", Expect::Unusable("is empty"), 0);
    write(
        "wrong-format",
        b"PAR1\x15\x04\x15\x10\x15\x14L\x15\x02\x15\x00\x12\x00\x00\x08\x1c this is Parquet",
        Expect::Unusable("not a pfnscope trace"),
        0,
    );
    out.push(Case {
        name: "directory",
        path: dir.to_owned(),
        expect: Expect::Unusable("is a directory"),
        batches_kept: 0,
    });
    out.push(Case {
        name: "dev-null",
        path: PathBuf::from("/dev/null"),
        expect: Expect::Unusable("is empty"),
        batches_kept: 0,
    });
    out.push(Case {
        name: "missing",
        path: dir.join("no-such-trace.arrows"),
        expect: Expect::Unusable("cannot open"),
        batches_kept: 0,
    });
    out
}
