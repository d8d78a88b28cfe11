//! `workload NAME [ARGS]`: one fault-path workload per driver (see `workload --list`).

use workload::expect::WORKLOADS;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        usage();
        std::process::exit(2);
    };
    if name == "--list" || name == "-h" || name == "--help" {
        usage();
        return;
    }
    if let Err(e) = workload::workloads::run(name, &args[1..]) {
        eprintln!("workload {name}: {e:#}");
        std::process::exit(1);
    }
}

fn usage() {
    eprintln!("usage: workload NAME [ARGS]\n");
    for w in WORKLOADS {
        eprintln!("  {:<24} {}", w.name, w.about);
    }
    eprintln!(
        "\n  file takes an optional directory for its scratch file (default $TMPDIR or /tmp)"
    );
    eprintln!(
        "  cold-file [DIR]: a file in DIR (default $TMPDIR or /var/tmp; not tmpfs) dropped from the\n  \
         page cache, then faulted page by page: faults that wait for disk reads\n  \
         mmap-contend: faults while another thread changes the same vma: faults that wait for mmap_lock"
    );
    eprintln!(
        "  drm-dumb DRIVER (not in the test box's table): a dumb buffer of any DRM driver,\n  \
         mapped and touched, e.g. `workload drm-dumb qxl` in `cargo xtask testbox --run`"
    );
}
