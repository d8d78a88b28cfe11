//! `cargo xtask`: project automation (`setup`, `testbox`, `test`, `bench`).

mod bench;
mod bench_collect;
mod check;
mod cpio;
mod fuzz;
mod guest;
mod initramfs;
mod kernels;
mod kmod;
mod mainjob;
mod modules;
mod qemu;
mod report;
mod select;
mod setup;
mod stream;
mod suite;
mod testbox;
mod userbox;
mod userspec;
mod usertest;
mod util;
mod zoo;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need on a fresh Debian machine (run as root; idempotent).
    Setup(setup::Args),
    /// Boot Debian kernels under qemu, run the driver workloads under `tracer record`, bring the
    /// traces back to target/testbox/ and check them for their hooks.
    Testbox(testbox::Args),
    /// The main job: set-up, real traces (Debian 6.12 test box + this host), replay, reports.
    Run(mainjob::Args),
    /// Every test: set-up, fmt, clippy, the test box on all kernels, cargo test (README's second
    /// command; CI runs it).
    Test(suite::Args),
    /// Benchmarks, written to BENCHMARKS.md.
    Bench(bench::Args),
    /// The trace reader's fuzz target for a bounded time, seeded with the test box's traces.
    Fuzz(fuzz::Args),
    /// The fault generator the overhead benchmark times (touches MIB of fresh anonymous memory).
    #[command(hide = true, name = "__touch")]
    Touch { mib: usize },
    /// A streaming sender the collector benchmark runs (BATCHES batches to ADDR, every PACE_MS
    /// milliseconds, 0: as fast as acknowledged).
    #[command(hide = true, name = "__send")]
    Send {
        addr: String,
        batches: u64,
        id: u64,
        #[arg(default_value_t = 0)]
        pace_ms: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Setup(a) => setup::run(&a),
        Cmd::Testbox(a) => testbox::run(&a),
        Cmd::Run(a) => mainjob::run(&a),
        Cmd::Test(a) => suite::run(&a),
        Cmd::Bench(a) => bench::run(&a),
        Cmd::Fuzz(a) => fuzz::run(&a),
        Cmd::Touch { mib } => bench::touch(mib),
        Cmd::Send {
            addr,
            batches,
            id,
            pace_ms,
        } => bench_collect::send(&addr, batches, id, pace_ms),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
