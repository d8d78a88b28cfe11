//! What the guest does: its /init script, generated from the plan of modules and workloads.

/// Printed by the guest on the serial console; the host follows progress through these lines.
pub const MARK: &str = "PFNSCOPE:";
pub const DONE: &str = "PFNSCOPE: DONE";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub workload: String,
    /// insmod before the workload, already in dependency order.
    pub modules: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub boot_modules: Vec<String>,
    pub steps: Vec<Step>,
    /// Seconds one traced workload may take before busybox `timeout` stops it.
    pub workload_timeout_s: u32,
    /// Run the workloads without the tracer (checks the box itself, not the tracer).
    pub trace: bool,
    /// Extra `tracer record` arguments.
    pub record_args: Vec<String>,
}

fn is_safe(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.,:=/".contains(&b))
}

/// The /init shell script (busybox sh). Results go to /out, which is written as a tar archive to
/// the raw disk /dev/vda at the end; the serial console only carries progress lines.
pub fn init_script(plan: &Plan) -> String {
    for w in plan.boot_modules.iter().chain(&plan.record_args).chain(
        plan.steps
            .iter()
            .flat_map(|s| s.modules.iter().chain([&s.workload])),
    ) {
        assert!(is_safe(w), "unsafe name in guest plan: {w:?}");
    }
    let mut s = String::from(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mkdir -p /out
say() { echo "PFNSCOPE: $*"; }
# The kernel log in shares: what came since the last call, appended to /out/dmesg.txt and, with
# a workload's name, kept as /out/NAME.dmesg (its own lines, e.g. PAT's complaints).
kmsg() {
    dmesg -c >/tmp/kmsg; cat /tmp/kmsg >>/out/dmesg.txt
    if [ -n "$1" ]; then cp /tmp/kmsg "/out/$1.dmesg"; fi
}
load() {
    if insmod /lib/modules/$1.ko 2>>/out/modules.log; then echo "loaded $1" >>/out/modules.log
    else say "insmod $1 failed"; echo "FAILED $1" >>/out/modules.log; fi
}
say "init up: kernel $(uname -r)"
uname -a >/out/uname.txt
cat /proc/cmdline >/out/cmdline.txt
"#,
    );
    for m in &plan.boot_modules {
        s.push_str(&format!("load {m}\n"));
    }
    s.push_str(
        r#"i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/vda ] || say "no /dev/vda: results cannot be written back"
"#,
    );
    if plan.trace {
        s.push_str(
            r#"tracer doctor --json >/out/doctor.json 2>/out/doctor.err
echo $? >/out/doctor.rc
say "doctor rc=$(cat /out/doctor.rc)"
"#,
        );
    }
    let t = plan.workload_timeout_s;
    let extra: String = plan.record_args.iter().map(|a| format!(" {a}")).collect();
    for step in &plan.steps {
        let w = &step.workload;
        for m in &step.modules {
            s.push_str(&format!("load {m}\n"));
        }
        s.push_str(&format!("kmsg\nsay \"workload {w} start\"\ncd /tmp\n"));
        if plan.trace {
            s.push_str(&format!(
                "timeout {t} /bin/tracer record -q{extra} -o /out/{w}.arrows -- /bin/workload {w} >/out/{w}.log 2>&1\n"
            ));
        } else {
            s.push_str(&format!(
                "timeout {t} /bin/workload {w} >/out/{w}.log 2>&1\n"
            ));
        }
        s.push_str(&format!(
            "echo $? >/out/{w}.rc\nkmsg {w}\ncd /\nsay \"workload {w} rc=$(cat /out/{w}.rc)\"\n"
        ));
    }
    s.push_str(&format!(
        r#"kmsg
lsmod >/out/lsmod.txt 2>&1
cd /out && tar -cf /dev/vda . && sync && say "results written"
cd /
echo "{DONE}"
reboot -f
"#
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(trace: bool) -> Plan {
        Plan {
            boot_modules: vec!["virtio_blk".into()],
            steps: vec![
                Step {
                    workload: "anon".into(),
                    modules: vec![],
                },
                Step {
                    workload: "drm-bochs".into(),
                    modules: vec!["drm".into(), "bochs".into()],
                },
            ],
            workload_timeout_s: 200,
            trace,
            record_args: vec![],
        }
    }

    #[test]
    fn traced_script_runs_each_workload_under_the_tracer_after_its_modules() {
        let s = init_script(&plan(true));
        assert!(s.starts_with("#!/bin/busybox sh\n"));
        assert!(s.contains("tracer doctor --json >/out/doctor.json"));
        assert!(s.contains("timeout 200 /bin/tracer record -q -o /out/anon.arrows -- /bin/workload anon >/out/anon.log 2>&1"));
        let drm = s.find("load drm\n").unwrap();
        let bochs = s.find("load bochs\n").unwrap();
        let run = s.find("/bin/workload drm-bochs").unwrap();
        let anon = s.find("/bin/workload anon").unwrap();
        assert!(anon < drm && drm < bochs && bochs < run);
        assert!(s.find("load virtio_blk").unwrap() < s.find("-b /dev/vda").unwrap());
        let tar = s.find("tar -cf /dev/vda").unwrap();
        assert!(run < tar && tar < s.find(DONE).unwrap() && s.trim_end().ends_with("reboot -f"));
    }

    #[test]
    fn each_workload_keeps_its_share_of_the_kernel_log() {
        let s = init_script(&plan(true));
        let load = s.find("load bochs\n").unwrap();
        let cut = load + s[load..].find("kmsg\n").unwrap();
        let run = s.find("/bin/workload drm-bochs").unwrap();
        let kept = s.find("kmsg drm-bochs\n").unwrap();
        // The driver's load messages stay out of the workload's share.
        assert!(load < cut && cut < run && run < kept);
        assert!(s.find("kmsg anon\n").unwrap() < load);
        // The whole log still reaches dmesg.txt, in order, before the results are written.
        assert!(s.contains("cat /tmp/kmsg >>/out/dmesg.txt") && !s.contains("dmesg >"));
        let last = s.rfind("kmsg\n").unwrap();
        assert!(kept < last && last < s.find("tar -cf").unwrap());
    }

    #[test]
    fn untraced_script_skips_the_tracer() {
        let s = init_script(&plan(false));
        assert!(!s.contains("tracer"));
        assert!(s.contains("timeout 200 /bin/workload anon >/out/anon.log"));
    }

    #[test]
    fn extra_record_arguments() {
        let mut p = plan(true);
        p.record_args = vec!["--buffer-mb".into(), "64".into()];
        assert!(init_script(&p).contains("tracer record -q --buffer-mb 64 -o /out/anon.arrows"));
        p.record_args = vec!["$(reboot)".into()];
        assert!(std::panic::catch_unwind(|| init_script(&p)).is_err());
    }

    #[test]
    #[should_panic(expected = "unsafe name")]
    fn rejects_shell_metacharacters() {
        let mut p = plan(true);
        p.steps[0].workload = "anon; rm -rf /".into();
        init_script(&p);
    }
}
