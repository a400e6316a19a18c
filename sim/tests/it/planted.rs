//! Planted bugs: with a test-only fault switch on, a safety checker must fail on some seed
//! within a small budget (otherwise the checkers would not bite), and the same seed must pass
//! without the switch. The scenario cuts a node from the coordinator for longer than its lease
//! TTL plus failover, where the lease check and the epoch fence are what keep turns single.

use verse_sim::Scenario;
use verse_sim::runner::{Plant, run_planted};

const BUDGET: u64 = 10;

/// The first seed (from 1000) on which a safety checker (S1 or S2) fails with `plants`.
fn first_caught(plants: &[Plant]) -> u64 {
    let scenario = Scenario::node_cut_from_coordinator();
    for seed in 1_000..1_000 + BUDGET {
        let report = run_planted(seed, &scenario, plants);
        if report.verdict.violations.iter().any(|v| v.starts_with("S1") || v.starts_with("S2")) {
            let clean = run_planted(seed, &scenario, &[]);
            assert!(
                clean.passed(),
                "seed {seed} fails without the planted bug too: {:#?}",
                clean.verdict.violations
            );
            return seed;
        }
    }
    panic!("{plants:?}: no safety checker failed in {BUDGET} seeds");
}

#[test]
fn skipping_the_lease_check_is_caught() {
    first_caught(&[Plant::SkipLeaseCheck]);
}

#[test]
fn skipping_the_lease_check_and_the_epoch_fence_is_caught() {
    first_caught(&[Plant::SkipLeaseCheck, Plant::SkipEpochFence]);
}
