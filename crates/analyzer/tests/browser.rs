//! Looks at the report the way a person would: headless Chromium loads index.html from a
//! file:// URL; every image (PNG and SVG) must decode and the page must not be blank.
//! Needs Debian's `chromium` (installed by `cargo xtask setup`); without it the test says
//! SKIPPED and why.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Runs chromium headless with a fresh profile; returns stdout. Killed after 90 s.
fn chromium(bin: &Path, profile: &Path, args: &[String]) -> String {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish in 90 s: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn replay_reports(dir: &Path) -> (PathBuf, PathBuf) {
    let check = dir.join("check.json");
    std::fs::write(
        &check,
        format!(
            r#"{{"schema":"pfnscope.replay.check/1","trace":"t.arrows","kernel_release":"6.12.48+deb13-amd64","rules":"6.12","events":9000,
"divergences":[{{"rule":"pat.lookup.mode","expected":"WC (memtype of the BAR)","observed":"UC- in the PTE","seqs":[812,810],"ids":[411,409],"source":"arch/x86/mm/pat/memtype.c:lookup_memtype"}}],
"divergences_omitted":0,
"findings":[{{"rule":"pat.downgrade","driver":"{TTM}","count":768,"message":"driver asked WC, PAT gave UC-: writes to this buffer are uncached","seqs":[14],"ids":[7],"source":"arch/x86/mm/pat/memtype.c"}}],
"rule_table":[{{"id":"pat.lookup.mode","kind":"divergence","what":"PTE cache mode matches the memtype","source":"x","held":767,"failed":1,"not_checkable":0}}]}}"#
        ),
    )
    .unwrap();
    let overhead = dir.join("overhead.json");
    let top: Vec<String> = (0..12)
        .map(|i| {
            format!(
                r#"{{"kind":"pfn","page":{},"mm":1,"driver":"{TTM}","faults":{},"total_ns":{},"mean_ns":9000,"insert_ns":{},"pat_ns":{},"insert_share":0.4,"pat_share":0.1,"corrected_total_ns":{}}}"#,
                0xe0000 + i,
                30 - i,
                (30 - i) * 9000,
                (30 - i) * 3600,
                (30 - i) * 900,
                (30 - i) * 8000
            )
        })
        .collect();
    std::fs::write(
        &overhead,
        format!(
            r#"{{"schema":"pfnscope.replay.overhead/1","trace":"t.arrows","events":9000,"faults":3000,"faults_without_latency":0,
"probe_cost":{{"in_window_ns":180,"per_nested_call_ns":420,"basis":"min leaf latency; min single-child gap"}},"top":[{}],"pages":2400,"drivers":[]}}"#,
            top.join(",")
        ),
    )
    .unwrap();
    (check, overhead)
}

#[test]
fn report_renders_in_headless_chromium() {
    let dir = scratch("browser");
    let trace = dir.join("t.arrows");
    fault_trace(
        &trace,
        &Shape {
            faults: 3000,
            dropped: 3,
            ..Shape::default()
        },
    );
    let (check, overhead) = replay_reports(&dir);
    let out = dir.join("report");
    let o = analyzer(&[
        "report",
        trace.to_str().unwrap(),
        "--replay",
        check.to_str().unwrap(),
        "--replay",
        overhead.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let stems = [
        "latency_hist_driver",
        "latency_cdf_vma_kind",
        "latency_heatmap",
        "rate_per_hook",
        "pat_matrix",
        "overhead_top",
    ];
    for s in stems {
        assert!(
            html.contains(&format!("src=\"{s}.png\"")),
            "{s} missing from the page"
        );
        for ext in ["png", "svg"] {
            let p = out.join(format!("{s}.{ext}"));
            assert!(
                std::fs::metadata(&p)
                    .map(|m| m.len() > 1000)
                    .unwrap_or(false),
                "{} empty",
                p.display()
            );
        }
    }
    for want in [
        "pat.lookup.mode",
        "pat.downgrade",
        "768",
        "3 events were dropped",
        "http",
    ] {
        if want == "http" {
            assert!(
                !html.contains("http://") && !html.contains("https://"),
                "the page must not fetch anything"
            );
        } else {
            assert!(html.contains(want), "{want} missing from the page");
        }
    }

    let Some(bin) = find_chromium() else {
        skip(
            "report_renders_in_headless_chromium: no `chromium` on PATH (Debian package `chromium`, installed by `cargo xtask setup`)",
        );
        return;
    };

    // A copy of the page with a probe that lists images that failed to decode, SVGs included.
    let svgs: String = stems
        .iter()
        .map(|s| format!("<img src=\"{s}.svg\">"))
        .collect();
    let probe = format!(
        "{svgs}<script>window.addEventListener('load', () => {{\
const imgs = [...document.images];\
const bad = imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src'));\
const p = document.createElement('pre'); p.id = 'probe';\
p.textContent = 'IMAGES ' + imgs.length + ' BROKEN ' + bad.length + ' [' + bad.join(' ') + '] TEXT ' + document.body.innerText.trim().length;\
document.body.appendChild(p); }});</script></body>"
    );
    let probed = out.join("probe.html");
    std::fs::write(&probed, html.replace("</body>", &probe)).unwrap();
    let dom = chromium(
        &bin,
        &dir.join("profile-dom"),
        &[
            "--virtual-time-budget=10000".into(),
            "--dump-dom".into(),
            format!("file://{}", probed.display()),
        ],
    );
    let line = dom
        .split_once("<pre id=\"probe\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(probe, _)| probe)
        .unwrap_or_else(|| {
            panic!(
                "probe did not run; DOM ends:\n{}",
                &dom[dom.len().saturating_sub(2000)..]
            )
        });
    let n = stems.len();
    assert!(
        line.contains(&format!("IMAGES {} BROKEN 0 []", 2 * n)),
        "every PNG and SVG must load: {line}"
    );
    let text: usize = line.rsplit("TEXT ").next().unwrap().trim().parse().unwrap();
    assert!(text > 2000, "page text too short: {line}");

    let shot = dir.join("screenshot.png");
    chromium(
        &bin,
        &dir.join("profile-shot"),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1100,2400".into(),
            format!("file://{}", out.join("index.html").display()),
        ],
    );
    let img = image::open(&shot).expect("screenshot written").to_rgb8();
    let mut colours = std::collections::HashSet::new();
    for p in img.pixels() {
        colours.insert(p.0);
        if colours.len() > 200 {
            break;
        }
    }
    assert!(
        colours.len() > 200,
        "screenshot looks blank: {} colours",
        colours.len()
    );
}
