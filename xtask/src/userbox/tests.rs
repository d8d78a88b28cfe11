//! The box's reading of what came back: insmod failures, last words, guest problems.

use super::*;

#[test]
fn a_failed_insmod_is_one_line_with_its_reason() {
    let log = "loaded drm \ninsmod: can't insert '/lib/modules/qxl.ko': No such device\nFAILED qxl\nloaded pfndemo pages=16\n";
    assert_eq!(
        insmod_failures(log),
        [
            "insmod qxl failed: insmod: can't insert '/lib/modules/qxl.ko': No such device (dmesg.txt may say more)"
        ]
    );
    assert!(insmod_failures("loaded drm \n").is_empty());
}

#[test]
fn the_last_words_are_the_commands_not_the_tracers() {
    let out = "hello\nmytest: 3 of 4 passed\ntracer: wrote 120 events to /out/x/trace.arrows (0.1 MiB) in 1.0 s\n  handle_mm_fault 10\ntracer: the traced command exited with status 1\n";
    assert_eq!(last_words(out), Some("mytest: 3 of 4 passed"));
    let silent = "tracer: wrote 1 events to x (0.1 MiB) in 0.2 s\ntracer: the traced command exited with status 1\n";
    assert_eq!(last_words(silent), None);
    assert_eq!(
        last_words("tracer: --hooks nope: unknown hook\n"),
        Some("tracer: --hooks nope: unknown hook")
    );
    assert_eq!(last_words(""), None);
}

#[test]
fn kernel_lines_lose_their_time_stamps() {
    assert_eq!(
        untimed("[   37.564007] Kernel panic - not syncing: sysrq triggered crash"),
        "Kernel panic - not syncing: sysrq triggered crash"
    );
    assert_eq!(untimed("Kernel panic - x"), "Kernel panic - x");
    assert_eq!(untimed("[x] y"), "[x] y");
}

#[test]
fn a_prebuilt_module_for_another_release_is_refused_with_what_to_do() {
    let ko = modules::tiny_elf(
        b"vermagic=6.1.0-57-amd64 SMP preempt mod_unload modversions \0name=mine\0",
    );
    let e = vermagic_fits(&ko, "6.12.118+deb12-amd64").unwrap_err();
    assert!(e.starts_with("built for 6.1.0-57-amd64"), "{e}");
    assert!(e.contains("but the guest runs 6.12.118+deb12-amd64"), "{e}");
    assert!(vermagic_fits(&ko, "6.1.0-57-amd64").is_ok());
    let e = vermagic_fits(&modules::tiny_elf(b"name=x\0"), "6.1.0-57-amd64");
    assert!(e.unwrap_err().contains("no vermagic"));
}

fn runs() -> Vec<Run> {
    ["mytest", "echo"]
        .map(|n| Run {
            name: n.into(),
            command: n.into(),
        })
        .to_vec()
}

#[test]
fn a_guest_that_dies_is_one_line_naming_the_command_it_died_in() {
    let started =
        "PFNSCOPE: run mytest start\nPFNSCOPE: run mytest rc=0\nPFNSCOPE: run echo start\n";
    let panic = format!(
        "{started}[   37.5] sysrq: Trigger a crash\n[   37.6] Kernel panic - not syncing: sysrq triggered crash\n[   37.7] Call Trace:\n[   37.8] WARNING: in the dump\n"
    );
    assert_eq!(
        guest_problems(&panic, None, &runs(), "", ""),
        ["the guest panicked during run echo: Kernel panic - not syncing: sysrq triggered crash"]
    );
    let hung = guest_problems(&panic, Some(Duration::from_secs(180)), &runs(), "", "");
    assert_eq!(hung.len(), 1);
    assert!(
        hung[0]
            .ends_with("it did not reboot (panic= on --cmdline?), so qemu was killed after 180s")
    );
    assert_eq!(
        guest_problems(started, Some(Duration::from_secs(99)), &runs(), "", ""),
        ["the guest hung during run echo: qemu was killed after 99s"]
    );
    assert_eq!(
        guest_problems(started, None, &runs(), "", ""),
        ["the guest stopped during run echo before its script finished"]
    );
    let done = format!("{started}PFNSCOPE: run echo rc=0\n{}\n", guest::DONE);
    assert!(guest_problems(&done, None, &runs(), "loaded drm \n", "").is_empty());
}

#[test]
fn the_oops_before_a_panic_counts_once_and_insmod_failures_each_once() {
    let console = "PFNSCOPE: run mytest start\n[ 5.1] BUG: kernel NULL pointer dereference, address: 0\n[ 5.2] Oops: 0000 [#1] SMP\n[ 5.3] Kernel panic - not syncing: Fatal exception\n[ 5.4] Call Trace:\n";
    let dmesg = "[ 5.1] BUG: kernel NULL pointer dereference, address: 0\n";
    let log = "insmod: can't insert '/lib/modules/x.ko': Unknown symbol in module\nFAILED x\n";
    assert_eq!(
        guest_problems(console, None, &runs(), log, dmesg),
        [
            "the guest panicked during run mytest: Kernel panic - not syncing: Fatal exception",
            "insmod x failed: insmod: can't insert '/lib/modules/x.ko': Unknown symbol in module (dmesg.txt may say more)",
            "the kernel logged trouble: BUG: kernel NULL pointer dereference, address: 0 (+1 more lines) (console.log, dmesg.txt)",
        ]
    );
}

#[test]
fn module_names_from_file_names() {
    assert_eq!(module_stem(Path::new("/x/my-drv.ko.xz")), "my-drv");
    assert_eq!(module_stem(Path::new("pfndemo.ko")), "pfndemo");
}
