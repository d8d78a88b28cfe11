//! Where `tracer record -o` sends the trace: a file, standard output, or a collector.

use std::{fmt, path::PathBuf};

/// The port of `tcp://HOST` without one, and the port `tracer collect` listens on unless told
/// otherwise.
pub const DEFAULT_PORT: u16 = 7430;

/// The forms of `-o`, parsed without touching the system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A trace file (the default).
    File(PathBuf),
    /// `-`: the Arrow IPC stream on standard output (`ssh box tracer record -o - ... > t.arrows`).
    Stdout,
    /// `tcp://HOST:PORT`: a `tracer collect` reached over the network.
    Tcp(String),
    /// `virtio:NAME`: a `tracer collect` behind the virtio-serial port named NAME
    /// (qemu `-device virtserialport,name=NAME`), for a guest without networking.
    Virtio(String),
}

impl Destination {
    /// Whether the trace goes to a collector (handshake, token, acknowledgements).
    pub fn is_collector(&self) -> bool {
        matches!(self, Destination::Tcp(_) | Destination::Virtio(_))
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::File(p) => write!(f, "{}", p.display()),
            Destination::Stdout => f.write_str("standard output"),
            Destination::Tcp(a) => write!(f, "tcp://{a}"),
            Destination::Virtio(n) => write!(f, "virtio:{n}"),
        }
    }
}

/// clap's parser for `-o`.
pub fn parse(s: &str) -> Result<Destination, String> {
    if s == "-" {
        return Ok(Destination::Stdout);
    }
    if let Some(addr) = s.strip_prefix("tcp://") {
        let addr = addr.trim_end_matches('/');
        let port_ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            return Err(format!(
                "`{s}`: give the collector as tcp://HOST:PORT, e.g. tcp://127.0.0.1:{}",
                DEFAULT_PORT
            ));
        }
        return Ok(Destination::Tcp(addr.to_string()));
    }
    if let Some(name) = s.strip_prefix("virtio:") {
        let fits = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !fits {
            return Err(format!(
                "`{s}`: give the virtio-serial port's name (qemu's virtserialport name=...), e.g. virtio:pfnscope"
            ));
        }
        return Ok(Destination::Virtio(name.to_string()));
    }
    if let Some((scheme, _)) = s.split_once("://") {
        return Err(format!(
            "`{s}`: unknown scheme {scheme}://; -o takes a file, `-` (standard output), tcp://HOST:PORT or virtio:NAME"
        ));
    }
    if s.is_empty() {
        return Err("empty output name: give a file, `-`, tcp://HOST:PORT or virtio:NAME".into());
    }
    Ok(Destination::File(PathBuf::from(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_of_o() {
        assert_eq!(parse("t.arrows"), Ok(Destination::File("t.arrows".into())));
        assert_eq!(parse("-"), Ok(Destination::Stdout));
        assert_eq!(
            parse("tcp://10.0.0.2:7430"),
            Ok(Destination::Tcp("10.0.0.2:7430".into()))
        );
        assert_eq!(
            parse("tcp://[::1]:7430/"),
            Ok(Destination::Tcp("[::1]:7430".into()))
        );
        assert_eq!(
            parse("virtio:pfnscope"),
            Ok(Destination::Virtio("pfnscope".into()))
        );
        let table = [
            ("tcp://host", "tcp://HOST:PORT"),
            ("tcp://host:0", "tcp://HOST:PORT"),
            ("tcp://:7430", "tcp://HOST:PORT"),
            ("udp://host:1", "unknown scheme udp://"),
            ("virtio:", "port's name"),
            ("virtio:../x", "port's name"),
            ("", "empty output"),
        ];
        for (arg, want) in table {
            let e = parse(arg).unwrap_err();
            assert!(e.contains(want), "{arg}: {e}");
        }
        assert!(Destination::Tcp("h:1".into()).is_collector());
        assert!(!Destination::Stdout.is_collector());
    }
}
