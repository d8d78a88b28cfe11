//! Command-line arguments, parsed and validated without touching the system.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::destination::Destination;

#[derive(Parser, Debug)]
#[command(
    name = "tracer",
    version,
    about = "Trace the Linux page-fault path for device and PFN mappings with eBPF"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check this kernel: BTF, privileges, and how each hook would attach (or why not).
    Doctor {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Record a trace.
    Record(RecordArgs),
    /// Receive traces streamed by `tracer record -o tcp://...` from many boxes at once, one
    /// file per stream.
    Collect(CollectArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RecordArgs {
    /// Where the trace goes: a file (Arrow IPC stream; never written through a symbolic link
    /// or to a device, an existing one replaced only with --force), `-` for standard output,
    /// tcp://HOST:PORT for a `tracer collect`, or virtio:NAME for a collector behind a
    /// virtio-serial port.
    #[arg(
        short = 'o',
        long,
        default_value = "pfnscope.arrows",
        value_parser = crate::destination::parse
    )]
    pub output: Destination,
    /// The collector's shared token (one line), for -o tcp://... and virtio:...
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Streaming: where the rest of the trace goes when the collector stays unreachable
    /// (a file named as the collector names it).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub fallback_dir: PathBuf,
    /// Streaming: how long a lost collector is retried before the rest goes to a local file.
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_retry)]
    pub retry_for: Duration,
    /// Replace the output file if it exists (a regular file; never a link).
    #[arg(long)]
    pub force: bool,
    /// Stop after this many seconds (at most a year).
    #[arg(long, value_parser = parse_duration, allow_negative_numbers = true)]
    pub duration: Option<Duration>,
    /// Trace this process and its future children (stops when it exits).
    #[arg(short = 'p', long, conflicts_with_all = ["comm", "all"])]
    pub pid: Option<u32>,
    /// Trace tasks with this command name (at most 15 characters, as the kernel keeps it).
    #[arg(long, value_parser = parse_comm, conflicts_with = "all")]
    pub comm: Option<String>,
    /// Trace every process.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Comma-separated hooks to attach (default: all; see `tracer doctor`).
    #[arg(long, value_parser = parse_hook_list)]
    pub hooks: Option<String>,
    /// Keep only calls on vmas with any of these flags: pfnmap, mixedmap, io, shared, pat.
    #[arg(long, value_parser = parse_vma_flags)]
    pub vma_flags: Option<VmaFlags>,
    /// Keep only calls about user addresses in [A, B) (hex with 0x, or decimal).
    #[arg(long, value_parser = parse_addr_range)]
    pub addr_range: Option<(u64, u64)>,
    /// Ring buffer size in MiB (a power of two).
    #[arg(long, default_value_t = 16, value_parser = parse_buffer_mb)]
    pub buffer_mb: u32,
    /// Kernel and user stacks of faults and driver calls slower than THRESHOLD (default
    /// 100us), taken at their return so that fast calls do not pay: `--stacks=2ms`,
    /// `--stacks=all` (every call, and every entry-only fault).
    #[arg(long, value_name = "THRESHOLD", num_args = 0..=1, require_equals = true,
          default_missing_value = crate::stacks::DEFAULT_THRESHOLD)]
    pub stacks: Option<String>,
    /// No stacks at all.
    #[arg(long, conflicts_with = "stacks")]
    pub no_stacks: bool,
    /// No live status line.
    #[arg(short, long)]
    pub quiet: bool,
    /// Command to run and trace (with its children); recording stops when it exits.
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct CollectArgs {
    /// Where to listen: HOST:PORT (loopback unless told otherwise) or unix:PATH (a socket, as
    /// qemu's `-chardev socket,path=PATH` connects to).
    #[arg(long, value_name = "ADDR", default_value_t = format!("127.0.0.1:{}", crate::destination::DEFAULT_PORT))]
    pub listen: String,
    /// Directory the traces go to, one file per stream: <box>-<kernel>-<start time>.arrows.
    #[arg(short = 'd', long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The token every sender must present (one line; the same file `tracer record` gets).
    #[arg(long, value_name = "FILE", required = true)]
    pub token_file: PathBuf,
    /// Most streams at once; more are refused.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_streams: u32,
    /// Largest message (a batch) accepted, in MiB: what one connection may hold in memory.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_message_mb: u32,
    /// A sender that sends nothing for this long is cut off (its file keeps every batch).
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_retry)]
    pub stall_timeout: Duration,
    /// No live lines, only what happens to each stream.
    #[arg(short, long)]
    pub quiet: bool,
}

/// A number of seconds for the streaming limits: more than nothing, at most a day.
fn parse_retry(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v > 0.0 && v <= 86400.0) {
        return Err(format!("give 0 < SECONDS <= 86400, got {s}"));
    }
    Ok(Duration::from_secs_f64(v))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmaFlags(pub Vec<String>);

/// The longest --duration: any longer, and the timer could not be set (1e30 s panicked after
/// the probes were attached).
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn parse_duration(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!("duration must be positive, got {s}"));
    }
    match Duration::try_from_secs_f64(v) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!(
            "duration must be at most {} s (a year), got {s}; to record until stopped, leave --duration out and stop with Ctrl-C",
            MAX_DURATION.as_secs()
        )),
    }
}

/// Names are checked against the hook table before anything is loaded; an empty list is a
/// mistake of its own, not a list of hooks none of which attached.
fn parse_hook_list(s: &str) -> Result<String, String> {
    if s.split(',').all(|h| h.trim().is_empty()) {
        return Err(
            "no hook named: give hooks separated by commas (`tracer doctor` lists them), or leave --hooks out for all".into(),
        );
    }
    Ok(s.to_string())
}

fn parse_comm(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 15 {
        return Err(format!(
            "`{s}`: a command name has 1 to 15 bytes (the kernel truncates comm to 15)"
        ));
    }
    Ok(s.to_string())
}

pub fn parse_vma_flags(s: &str) -> Result<VmaFlags, String> {
    let mut out = vec![];
    for f in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let name = match f.to_ascii_lowercase().as_str() {
            "pfnmap" => "VM_PFNMAP",
            "mixedmap" => "VM_MIXEDMAP",
            "io" => "VM_IO",
            "shared" => "VM_SHARED",
            "pat" => "VM_PAT",
            _ => {
                return Err(format!(
                    "unknown vma flag `{f}`: use pfnmap, mixedmap, io, shared or pat"
                ));
            }
        };
        out.push(name.to_string());
    }
    if out.is_empty() {
        return Err("empty --vma-flags".into());
    }
    Ok(VmaFlags(out))
}

fn parse_num(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
        None => s.replace('_', "").parse(),
    };
    r.map_err(|_| format!("`{s}` is not an address"))
}

pub fn parse_addr_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once('-').ok_or_else(|| {
        format!("`{s}`: write the range as START-END, e.g. 0x7f0000000000-0x7f0000100000")
    })?;
    let (a, b) = (parse_num(a)?, parse_num(b)?);
    if a >= b {
        return Err(format!("empty address range {s}: START must be below END"));
    }
    Ok((a, b))
}

fn parse_buffer_mb(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of MiB"))?;
    if v == 0 || !v.is_power_of_two() || v > 1024 {
        return Err(format!(
            "--buffer-mb must be a power of two from 1 to 1024, got {v}"
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tracer").chain(args.iter().copied()))
    }

    #[test]
    fn record_with_command() {
        let c = parse(&[
            "record", "-o", "x.arrows", "--", "workload", "anon", "--pages", "10",
        ])
        .unwrap();
        let Command::Record(r) = c.command else {
            panic!()
        };
        assert_eq!(r.command, ["workload", "anon", "--pages", "10"]);
        assert_eq!(r.output, Destination::File(PathBuf::from("x.arrows")));
        assert_eq!(r.buffer_mb, 16);
    }

    #[test]
    fn bad_flags_are_refused_with_a_hint() {
        let table: &[(&[&str], &str)] = &[
            (
                &["record", "--vma-flags", "pfnmap,bogus"],
                "unknown vma flag `bogus`",
            ),
            (
                &["record", "--addr-range", "0x2000-0x1000"],
                "START must be below END",
            ),
            (&["record", "--addr-range", "12345"], "START-END"),
            (&["record", "--duration=-3"], "positive"),
            (&["record", "--duration", "-1"], "must be positive, got -1"),
            (&["record", "--duration", "0"], "positive"),
            (&["record", "--duration", "1e30"], "at most 31536000 s"),
            (&["record", "--duration", "nan"], "positive"),
            (&["record", "--hooks", ""], "no hook named"),
            (&["record", "--hooks", " , "], "no hook named"),
            (&["record", "--buffer-mb", "3"], "power of two"),
            (&["record", "--comm", "a-very-long-command-name"], "15"),
            (&["record", "-p", "1", "-a"], "cannot be used with"),
            (&["record", "-o", "tcp://box"], "tcp://HOST:PORT"),
            (&["record", "--retry-for", "0"], "0 < SECONDS"),
            (&["collect", "-d", "x"], "--token-file"),
            (
                &[
                    "collect",
                    "-d",
                    "x",
                    "--token-file",
                    "t",
                    "--max-streams",
                    "0",
                ],
                "0",
            ),
        ];
        for (args, want) in table {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    /// The collector listens on loopback unless told otherwise: reachable from elsewhere only
    /// on purpose.
    #[test]
    fn collect_listens_on_loopback_by_default() {
        let c = parse(&["collect", "-d", "x", "--token-file", "t"]).unwrap();
        let Command::Collect(a) = c.command else {
            panic!()
        };
        assert_eq!(a.listen, "127.0.0.1:7430");
        assert_eq!(a.stall_timeout, Duration::from_secs(60));
    }

    #[test]
    fn good_values() {
        assert_eq!(parse_addr_range("0x1000-0x3000"), Ok((0x1000, 0x3000)));
        assert_eq!(parse_addr_range("4096-8192"), Ok((4096, 8192)));
        assert_eq!(
            parse_vma_flags("pfnmap,IO"),
            Ok(VmaFlags(vec!["VM_PFNMAP".into(), "VM_IO".into()]))
        );
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("31536000"), Ok(MAX_DURATION));
    }
}
