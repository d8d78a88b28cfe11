//! A correct kernel's hand-built workload replays clean, on every rule set.

use pfnscope_abi::kernel::Series;
use replay::check_records;
use replay::kernel::KernelRules;
use replay::synth::workload;

#[test]
fn correct_workload_has_no_divergence_and_the_known_findings() {
    for series in [Series::V6_1, Series::V6_12, Series::V6_16] {
        let b = workload(series);
        let rep = check_records(
            &b.meta(),
            KernelRules::for_series(series),
            b.records(),
            "workload",
        );
        assert_eq!(rep.summary.divergences, 0, "{series}: {}", rep.to_human());
        let ids: Vec<&str> = rep.findings.iter().map(|f| f.rule.id()).collect();
        assert!(ids.contains(&"find.wc_downgrade"), "{series}: {ids:?}");
        if series != Series::V6_16 {
            assert!(
                ids.contains(&"find.fork_cow_first_page"),
                "{series}: {ids:?}"
            );
        }
        let wc = rep
            .findings
            .iter()
            .find(|f| f.rule.id() == "find.wc_downgrade")
            .unwrap();
        assert_eq!(wc.count, 8, "{series}: one per TTM page");
        assert_eq!(wc.driver.as_deref(), Some("drm_gem_ttm_vm_ops [ttm]"));
    }
}
