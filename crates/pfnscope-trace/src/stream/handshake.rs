//! The lines around a stream: the sender's hello with its token, the collector's replies, and
//! the shared token itself.

use std::{fmt, io, path::Path};

/// The first word of every hello.
pub const PROTOCOL: &str = "pfnscope-stream";
/// The protocol version this build speaks.
const VERSION: &str = "1";
/// Longest hello or reply line, newline included; a peer that sends more is refused.
pub const MAX_LINE: usize = 1024;
/// Tokens are at least this long: a short one is guessed.
const MIN_TOKEN: usize = 16;
/// And at most this long, so a hello stays one short line.
const MAX_TOKEN: usize = 512;

/// Names a stream across connections (16 hex digits on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl StreamId {
    /// A fresh id from the kernel's random pool.
    pub fn random() -> StreamId {
        let mut v = 0u64;
        // SAFETY: getrandom writes at most 8 bytes into `v`.
        let n = unsafe { libc::getrandom((&raw mut v).cast(), 8, 0) };
        if n != 8 {
            // No entropy (never on Linux 3.17+): time and pid still tell streams apart.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            v = t ^ (u64::from(std::process::id()) << 40);
        }
        StreamId(v)
    }

    fn parse(s: &str) -> Option<StreamId> {
        if s.len() != 16 {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(StreamId)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The sender's first line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub id: StreamId,
    /// The first batch the sender still holds (1 for a new stream).
    pub next: u64,
    pub token: String,
}

/// Why a first line is no hello. Each says what the peer should do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error(
        "an Arrow IPC stream without the pfnscope handshake, so without the token: send it with `tracer record -o tcp://HOST:PORT --token-file FILE`"
    )]
    ArrowWithoutHandshake,
    #[error(
        "not a pfnscope stream (it starts with {first}): send with `tracer record -o tcp://HOST:PORT`"
    )]
    NotAStream { first: String },
    #[error(
        "protocol version {0}, this collector speaks {VERSION}: use the same pfnscope on both ends"
    )]
    Version(String),
    #[error("no token: give the sender the collector's token with --token-file")]
    NoToken,
    #[error("a malformed handshake ({0})")]
    Malformed(String),
}

impl Hello {
    /// The line on the wire, newline included.
    pub fn line(&self) -> String {
        format!(
            "{PROTOCOL} {VERSION} {} {} {}\n",
            self.id, self.next, self.token
        )
    }

    /// Parses a first line (`line` without its newline, as received: any bytes).
    pub fn parse(line: &[u8]) -> Result<Hello, HelloError> {
        if line.starts_with(&[0xff, 0xff, 0xff, 0xff]) {
            return Err(HelloError::ArrowWithoutHandshake);
        }
        let text = std::str::from_utf8(line).ok().filter(|t| {
            t.starts_with(PROTOCOL) && t.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        });
        let Some(text) = text else {
            return Err(HelloError::NotAStream {
                first: describe(line),
            });
        };
        let words: Vec<&str> = text.split(' ').collect();
        if words.get(1) != Some(&VERSION) {
            return Err(HelloError::Version(
                words.get(1).unwrap_or(&"(none)").to_string(),
            ));
        }
        let id = words
            .get(2)
            .and_then(|w| StreamId::parse(w))
            .ok_or_else(|| HelloError::Malformed("no stream id".into()))?;
        let next = words
            .get(3)
            .and_then(|w| w.parse::<u64>().ok())
            .filter(|&n| n >= 1)
            .ok_or_else(|| HelloError::Malformed("no batch number".into()))?;
        let token = match words.get(4) {
            None | Some(&"") => return Err(HelloError::NoToken),
            Some(t) => t.to_string(),
        };
        if words.len() > 5 {
            return Err(HelloError::Malformed("words after the token".into()));
        }
        Ok(Hello { id, next, token })
    }
}

/// The first bytes of a line, for a message: printable text as it is, anything else in hex.
fn describe(line: &[u8]) -> String {
    let head = &line[..line.len().min(16)];
    if !head.is_empty() && head.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(head))
    } else if head.is_empty() {
        "an empty line".into()
    } else {
        let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
        format!("bytes {}", hex.join(" "))
    }
}

/// A line from the collector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The hello is accepted: send the batches after `have`.
    Ok { id: StreamId, have: u64 },
    /// Batch `seq` and all before it are on the collector's disk.
    Ack { id: StreamId, seq: u64 },
    /// The end-of-stream marker is on disk too, after batch `seq`.
    Done { id: StreamId, seq: u64 },
    /// The collector is stopping: it finished the file after batch `seq` and closes the
    /// connection (the sender may find it again, or keep the rest locally).
    Bye { id: StreamId, seq: u64 },
    /// The collector refuses or gives up; it closes the connection.
    Error(String),
}

impl Reply {
    pub fn line(&self) -> String {
        match self {
            Reply::Ok { id, have } => format!("ok {id} {have}\n"),
            Reply::Ack { id, seq } => format!("ack {id} {seq}\n"),
            Reply::Done { id, seq } => format!("done {id} {seq}\n"),
            Reply::Bye { id, seq } => format!("bye {id} {seq}\n"),
            // One line, whatever the reason holds.
            Reply::Error(why) => format!("error {}\n", why.replace(['\n', '\r'], " ")),
        }
    }

    /// None for a line that is no reply.
    pub fn parse(line: &str) -> Option<Reply> {
        let line = line.trim_end_matches(['\n', '\r']);
        if let Some(why) = line.strip_prefix("error ") {
            return Some(Reply::Error(why.to_string()));
        }
        let mut w = line.split(' ');
        let (kind, id, n) = (w.next()?, w.next()?, w.next()?);
        if w.next().is_some() {
            return None;
        }
        let (id, n) = (StreamId::parse(id)?, n.parse().ok()?);
        match kind {
            "ok" => Some(Reply::Ok { id, have: n }),
            "ack" => Some(Reply::Ack { id, seq: n }),
            "done" => Some(Reply::Done { id, seq: n }),
            "bye" => Some(Reply::Bye { id, seq: n }),
            _ => None,
        }
    }
}

/// The secret a collector and its senders share (`--token-file`). It keeps strangers from
/// writing files on the collector's machine; it is no encryption: the stream and the token
/// travel in clear, so outside a test box or a trusted lab network tunnel the connection (ssh).
#[derive(Clone)]
pub struct Token(String);

/// Deliberately without the token.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read token file {path}: {err}")]
    Read { path: String, err: io::Error },
    #[error(
        "token file {path} {why}: put one line of {MIN_TOKEN} to {MAX_TOKEN} printable characters without spaces in it, e.g. `head -c 24 /dev/urandom | base64 > {path}`"
    )]
    Unfit { path: String, why: String },
}

impl Token {
    /// Reads a token file: one line, surrounding whitespace ignored.
    pub fn read(path: &Path) -> Result<Token, TokenError> {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|err| TokenError::Read {
            path: shown.clone(),
            err,
        })?;
        if !meta.is_file() || meta.len() > 4096 {
            return Err(TokenError::Unfit {
                path: shown,
                why: "is not a small regular file".into(),
            });
        }
        let text = std::fs::read(path).map_err(|err| TokenError::Read {
            path: shown.clone(),
            err,
        })?;
        let text = String::from_utf8_lossy(&text);
        Token::new(text.trim()).map_err(|why| TokenError::Unfit { path: shown, why })
    }

    /// `text` as a token, or why it cannot be one.
    pub fn new(text: &str) -> Result<Token, String> {
        if text.is_empty() {
            return Err("is empty".into());
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("holds spaces, line breaks or other unprintable characters".into());
        }
        if text.len() < MIN_TOKEN || text.len() > MAX_TOKEN {
            return Err(format!("holds a token of {} characters", text.len()));
        }
        Ok(Token(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `offered` is this token, in time that does not depend on where they differ.
    pub fn matches(&self, offered: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), offered.as_bytes());
        let mut diff = (a.len() != b.len()) as u8;
        for (i, x) in a.iter().enumerate() {
            diff |= x ^ b.get(i).copied().unwrap_or(!x);
        }
        diff == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "c2VjcmV0LXRva2VuLWZvci10ZXN0cw";

    #[test]
    fn a_hello_survives_the_wire_and_bad_ones_say_what_to_do() {
        let h = Hello {
            id: StreamId(0xdead_beef),
            next: 7,
            token: TOKEN.into(),
        };
        let line = h.line();
        assert_eq!(
            line,
            format!("pfnscope-stream 1 00000000deadbeef 7 {TOKEN}\n")
        );
        assert_eq!(Hello::parse(line.trim_end().as_bytes()), Ok(h));
        let table: &[(&[u8], HelloError)] = &[
            (
                b"\xff\xff\xff\xff\x10\x00\x00\x00",
                HelloError::ArrowWithoutHandshake,
            ),
            (
                b"GET / HTTP/1.1",
                HelloError::NotAStream {
                    first: "\"GET / HTTP/1.1\"".into(),
                },
            ),
            (
                b"\x00\x01",
                HelloError::NotAStream {
                    first: "bytes 00 01".into(),
                },
            ),
            (
                b"pfnscope-stream 2 00000000deadbeef 1 x",
                HelloError::Version("2".into()),
            ),
            (b"pfnscope-stream 1 00000000deadbeef 1", HelloError::NoToken),
            (
                b"pfnscope-stream 1 00000000deadbeef 1 ",
                HelloError::NoToken,
            ),
            (
                b"pfnscope-stream 1 beef 1 tok",
                HelloError::Malformed("no stream id".into()),
            ),
            (
                b"pfnscope-stream 1 00000000deadbeef 0 tok",
                HelloError::Malformed("no batch number".into()),
            ),
        ];
        for (line, want) in table {
            assert_eq!(Hello::parse(line).as_ref(), Err(want), "{line:?}");
            assert_eq!(want.to_string().lines().count(), 1);
        }
    }

    #[test]
    fn replies_survive_the_wire() {
        let id = StreamId(42);
        for r in [
            Reply::Ok { id, have: 0 },
            Reply::Ack { id, seq: 12 },
            Reply::Done { id, seq: 13 },
            Reply::Bye { id, seq: 14 },
            Reply::Error("disk full".into()),
        ] {
            assert_eq!(Reply::parse(&r.line()), Some(r));
        }
        assert_eq!(
            Reply::Error("two\nlines".into()).line(),
            "error two lines\n"
        );
        assert_eq!(Reply::parse("ack 42 1"), None);
        assert_eq!(Reply::parse("hello"), None);
    }

    #[test]
    fn tokens_are_checked_and_compared_whole() {
        let t = Token::new(TOKEN).unwrap();
        assert!(t.matches(TOKEN));
        assert!(!t.matches(&TOKEN[..TOKEN.len() - 1]));
        assert!(!t.matches(&format!("{TOKEN}x")));
        assert!(!t.matches(""));
        assert!(format!("{t:?}").find(TOKEN).is_none());
        for bad in [
            "",
            "short",
            "has a space in it, so no",
            "tab\tin-the-middle-of-it",
        ] {
            assert!(Token::new(bad).is_err(), "{bad:?}");
        }
        let dir = std::env::temp_dir().join(format!("pfnscope-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("token");
        std::fs::write(&f, format!("  {TOKEN}\n")).unwrap();
        assert!(Token::read(&f).unwrap().matches(TOKEN));
        std::fs::write(&f, "\n").unwrap();
        let e = Token::read(&f).unwrap_err().to_string();
        assert!(e.contains("is empty") && e.contains("head -c 24"), "{e}");
        let e = Token::read(&dir.join("none")).unwrap_err().to_string();
        assert!(e.starts_with("cannot read token file"), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }
}
