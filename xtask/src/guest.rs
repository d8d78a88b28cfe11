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

/// The start of every /init: mounts, the helpers `say`, `kmsg` and `load`, the boot's facts.
/// `box_dir` holds what belongs to the whole boot (`dmesg.txt`, `modules.log`, `uname.txt`,
/// `cmdline.txt`).
fn prelude(box_dir: &str) -> String {
    format!(
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
mkdir -p /out {box_dir}
say() {{ echo "PFNSCOPE: $*"; }}
# The kernel log in shares: what came since the last call, appended to {box_dir}/dmesg.txt and,
# given a file, kept there too (a workload's own lines, e.g. PAT's complaints).
kmsg() {{
    dmesg -c >/tmp/kmsg; cat /tmp/kmsg >>{box_dir}/dmesg.txt
    if [ -n "$1" ]; then cp /tmp/kmsg "$1"; fi
}}
# load NAME [PARAM...]: insmod with the module's parameters.
load() {{
    m=$1; shift
    if insmod /lib/modules/$m.ko "$@" 2>>{box_dir}/modules.log; then echo "loaded $m $*" >>{box_dir}/modules.log
    else say "insmod $m failed"; echo "FAILED $m" >>{box_dir}/modules.log; fi
}}
say "init up: kernel $(uname -r)"
uname -a >{box_dir}/uname.txt
cat /proc/cmdline >{box_dir}/cmdline.txt
"#
    )
}

/// Waits for the virtio disks the results go back on.
fn wait_for_disks(disks: &[&str]) -> String {
    let mut s = String::from("i=0\n");
    let missing: Vec<String> = disks.iter().map(|d| format!("[ ! -b {d} ]")).collect();
    s.push_str(&format!(
        "while {{ {}; }} && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n",
        missing.join(" || ")
    ));
    for d in disks {
        s.push_str(&format!(
            "[ -b {d} ] || say \"no {d}: results cannot be written back\"\n"
        ));
    }
    s
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
    let mut s = prelude("/out");
    for m in &plan.boot_modules {
        s.push_str(&format!("load {m}\n"));
    }
    s.push_str(&wait_for_disks(&["/dev/vda"]));
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
            "echo $? >/out/{w}.rc\nkmsg /out/{w}.dmesg\ncd /\nsay \"workload {w} rc=$(cat /out/{w}.rc)\"\n"
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

/// One `testbox --run` command: its results go to `/out/<name>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRun {
    pub name: String,
    pub command: String,
}

/// The guest's plan for the user's own modules and commands (`testbox --run`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserPlan {
    pub boot_modules: Vec<String>,
    /// insmod after the boot modules, in this order, each with its parameters.
    pub loads: Vec<(String, Vec<String>)>,
    pub runs: Vec<UserRun>,
    /// Seconds one command may take; then it and whatever it left running are killed.
    pub run_timeout_s: u32,
    /// Extra `tracer record` arguments.
    pub record_args: Vec<String>,
    /// Each trace goes to the host's collector through the virtio-serial port instead of a
    /// file in the guest ([`crate::stream`]).
    pub stream: bool,
}

/// What belongs to the whole boot, under /out (a run's name never starts with a dot).
pub const USER_BOX: &str = ".box";
/// A run's exit status when it ran out of time.
pub const TIMED_OUT: u32 = 124;

/// The progress line a run starts with and the prefix of the one it ends with (`rc=N`).
pub fn run_marks(name: &str) -> (String, String) {
    (
        format!("{MARK} run {name} start"),
        format!("{MARK} run {name} rc="),
    )
}

/// The /init script for the user's commands. Results leave the guest as they come, so a guest
/// that dies keeps what it made: after each command its directory is appended to /dev/vda as
/// one more tar archive (the host reads them all with `tar --ignore-zeros`), and while a
/// command runs its directory, trace so far included, is copied to /dev/vdb every two seconds.
pub fn user_script(p: &UserPlan) -> String {
    use crate::userspec::{is_module_name, module_arg, sh_quote};
    for m in p.boot_modules.iter().chain(p.loads.iter().map(|l| &l.0)) {
        assert!(is_module_name(m), "unsafe module name in guest plan: {m:?}");
    }
    for a in p.loads.iter().flat_map(|l| &l.1) {
        assert!(module_arg(a).is_ok(), "unsafe module argument: {a:?}");
    }
    for w in p.runs.iter().map(|r| &r.name).chain(&p.record_args) {
        assert!(is_safe(w), "unsafe name in guest plan: {w:?}");
    }
    let b = format!("/out/{USER_BOX}");
    let mut s = prelude(&b);
    for m in &p.boot_modules {
        s.push_str(&format!("load {m}\n"));
    }
    s.push_str(&wait_for_disks(&["/dev/vda", "/dev/vdb"]));
    s.push_str(
        r#"off=0
save() {
    (cd /out && tar -cf /tmp/save.tar "$@") || return
    dd if=/tmp/save.tar of=/dev/vda bs=65536 seek=$off conv=notrunc,fsync 2>/dev/null &&
        off=$((off + ($(stat -c %s /tmp/save.tar) + 65535) / 65536))
    rm -f /tmp/save.tar
}
# watchdog SECONDS PID: past the limit SIGTERM, on which the tracer finishes its file, and
# SIGKILL 10 s later, as the tracer then still waits for a command that runs on. The caller
# then kills everything but this script: nothing is left for the next command.
watchdog() {
    sleep $1 && touch /tmp/timed-out && kill -TERM $2 2>/dev/null && sleep 10 && kill -KILL $2 2>/dev/null
}
snapshots() {
    while sleep 2; do
        (cd /out && tar -cf /tmp/snap.tar "$1") &&
            dd if=/tmp/snap.tar of=/dev/vdb bs=65536 conv=notrunc,fsync 2>/dev/null
    done
}
"#,
    );
    for (m, args) in &p.loads {
        let args: String = args.iter().map(|a| format!(" {}", sh_quote(a))).collect();
        s.push_str(&format!("load {m}{args}\n"));
    }
    s.push_str(&format!("kmsg\nsave {USER_BOX}\n"));
    let t = p.run_timeout_s;
    let extra: String = p.record_args.iter().map(|a| format!(" {a}")).collect();
    for r in &p.runs {
        let (n, d) = (&r.name, format!("/out/{}", r.name));
        let (start, end) = run_marks(n);
        let start = start.trim_start_matches(MARK).trim();
        let end = end.trim_start_matches(MARK).trim();
        s.push_str(&format!(
            r#"mkdir -p {d}
kmsg
say "{start}"
snapshots {n} & snap=$!
cd /root
/bin/tracer record -q{extra} {output} -- /bin/sh -c {cmd} >{d}/output.log 2>&1 </dev/null &
tracer=$!
watchdog {t} $tracer & dog=$!
wait $tracer
rc=$?
cd /
kill $dog 2>/dev/null
if [ -e /tmp/timed-out ]; then rm /tmp/timed-out; rc={TIMED_OUT}; kill -9 -1; sleep 1; fi
kill $snap 2>/dev/null; wait $snap 2>/dev/null
echo $rc >{d}/rc
kmsg {d}/dmesg.txt
cat /sys/kernel/debug/x86/pat_memtype_list >{d}/pat_memtype_list.txt 2>&1
cat /proc/iomem >{d}/iomem.txt
save {n} {USER_BOX}
say "{end}$rc"
"#,
            cmd = sh_quote(&r.command),
            output = if p.stream {
                stream_output(&d)
            } else {
                format!("-o {d}/trace.arrows")
            },
        ));
    }
    s.push_str(&format!(
        r#"kmsg
lsmod >{b}/lsmod.txt 2>&1
save {USER_BOX} && sync && say "results written"
echo "{DONE}"
reboot -f
"#
    ));
    s
}

// Streaming (`testbox --stream`): the guest's side of the virtio-serial port; the host's is
// `crate::stream`.

/// The virtio-serial port's name (`-o virtio:NAME` in the guest).
pub const PORT: &str = "pfnscope";
/// Where the guest finds the token the host's collector was given.
pub const GUEST_TOKEN: &str = "/etc/pfnscope-stream-token";

/// `tracer record`'s output arguments in a streaming guest: the port, and the run's directory for
/// what the collector does not take.
pub fn stream_output(run_dir: &str) -> String {
    format!("-o virtio:{PORT} --token-file {GUEST_TOKEN} --fallback-dir {run_dir}")
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
        let kept = s.find("kmsg /out/drm-bochs.dmesg\n").unwrap();
        // The driver's load messages stay out of the workload's share.
        assert!(load < cut && cut < run && run < kept);
        assert!(s.find("kmsg /out/anon.dmesg\n").unwrap() < load);
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

    fn user_plan() -> UserPlan {
        UserPlan {
            boot_modules: vec!["virtio_blk".into()],
            loads: vec![
                ("drm".into(), vec![]),
                (
                    "qxl".into(),
                    vec!["num_heads=2".into(), "x='$(reboot)'".into()],
                ),
                ("pfndemo".into(), vec!["pages=16".into()]),
            ],
            runs: vec![
                UserRun {
                    name: "pfndemo-touch".into(),
                    command: "pfndemo-touch 16".into(),
                },
                UserRun {
                    name: "echo".into(),
                    command: "echo c > /proc/sysrq-trigger; echo '$HOME'".into(),
                },
            ],
            run_timeout_s: 60,
            record_args: vec![],
            stream: false,
        }
    }

    #[test]
    fn a_streaming_box_sends_each_trace_through_the_port_and_keeps_the_rest_in_the_run() {
        let mut p = user_plan();
        p.stream = true;
        let s = user_script(&p);
        assert!(s.contains("/bin/tracer record -q -o virtio:pfnscope --token-file /etc/pfnscope-stream-token --fallback-dir /out/pfndemo-touch -- /bin/sh -c 'pfndemo-touch 16'"), "{s}");
        assert!(!s.contains("trace.arrows"));
    }

    #[test]
    fn user_script_loads_in_order_with_quoted_parameters_then_runs_each_command_traced() {
        let s = user_script(&user_plan());
        let qxl = s
            .find(r#"load qxl 'num_heads=2' 'x='\''$(reboot)'\'''"#)
            .unwrap();
        assert!(s.find("load drm\n").unwrap() < qxl);
        assert!(qxl < s.find("load pfndemo 'pages=16'\n").unwrap());
        let run = s
            .find("/bin/tracer record -q -o /out/pfndemo-touch/trace.arrows -- /bin/sh -c 'pfndemo-touch 16' >/out/pfndemo-touch/output.log 2>&1 </dev/null &\n")
            .unwrap();
        assert!(s.find("load pfndemo").unwrap() < run);
        assert!(s.contains(
            r#"/bin/sh -c 'echo c > /proc/sysrq-trigger; echo '\''$HOME'\''' >/out/echo/output.log"#
        ));
        // Both disks are waited for before anything is saved.
        assert!(s.find("[ ! -b /dev/vdb ]").unwrap() < s.find("save .box").unwrap());
        assert!(s.trim_end().ends_with("reboot -f"));
    }

    #[test]
    fn each_command_leaves_its_results_on_disk_before_the_next_starts() {
        let s = user_script(&user_plan());
        let say = |mark: &str| {
            s.find(&format!("say \"{}", mark.trim_start_matches(MARK).trim()))
                .unwrap()
        };
        let (start1, end1) = run_marks("pfndemo-touch");
        let (start2, _) = run_marks("echo");
        let snap = s.find("snapshots pfndemo-touch & snap=$!").unwrap();
        let run = s.find("-o /out/pfndemo-touch/trace.arrows").unwrap();
        let kept = s.find("echo $rc >/out/pfndemo-touch/rc").unwrap();
        let pat = s
            .find("cat /sys/kernel/debug/x86/pat_memtype_list >/out/pfndemo-touch/pat_memtype_list.txt")
            .unwrap();
        let iomem = s
            .find("cat /proc/iomem >/out/pfndemo-touch/iomem.txt")
            .unwrap();
        let saved = s.find("save pfndemo-touch .box\n").unwrap();
        assert!(say(&start1) < snap && snap < run && run < kept);
        assert!(kept < pat && pat < iomem && iomem < saved && saved < say(&end1));
        assert!(say(&end1) < say(&start2));
        assert!(s.contains("kmsg /out/pfndemo-touch/dmesg.txt\n"));
        // A timeout kills what the command left behind, and says so in its exit status.
        let dog = s.find("watchdog 60 $tracer & dog=$!\n").unwrap();
        assert!(run < dog && dog < kept);
        assert!(s.contains(&format!("rc={TIMED_OUT}; kill -9 -1;")));
    }

    #[test]
    #[should_panic(expected = "unsafe module argument")]
    fn user_script_refuses_unchecked_module_arguments() {
        let mut p = user_plan();
        p.loads[0].1.push("a b".into());
        user_script(&p);
    }
}
