//! Planted bugs: with a test-only fault switch on, a safety checker must fail on some seed
//! within a small budget (otherwise the checkers would not bite), and the same seed must pass
//! without the switch.
//!
//! - Skipping the lease check: a node cut from the coordinator for longer than its lease TTL
//!   plus failover keeps starting turns after its lease ran out, at an epoch older than the
//!   new owner's (S1 epochs).
//! - Skipping only the epoch fence (the lease check stays): the seeded stall points hold a
//!   turn that passed its serve check just before its node's lease ran out until another node
//!   took the shard over; its save then commits at the stale epoch while the new owner's turns
//!   run (S1). The store's per-object version check hides most such saves (a stale save after
//!   the new owner's first save of the object is refused as a stale version), so the
//!   `stale_owner` scenario makes such stalls frequent.

use verse_sim::Scenario;
use verse_sim::runner::{Plant, run_planted};

const BUDGET: u64 = 20;

/// The first seed (from 1000) on which a safety checker (S1 or S2) fails with `plants`.
fn first_caught(scenario: &Scenario, plants: &[Plant]) -> u64 {
    for seed in 1_000..1_000 + BUDGET {
        let report = run_planted(seed, scenario, plants);
        if report.verdict.violations.iter().any(|v| v.starts_with("S1") || v.starts_with("S2")) {
            let clean = run_planted(seed, scenario, &[]);
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
    first_caught(&Scenario::node_cut_from_coordinator(), &[Plant::SkipLeaseCheck]);
}

#[test]
fn skipping_only_the_epoch_fence_is_caught() {
    first_caught(&Scenario::stale_owner(), &[Plant::SkipEpochFence]);
}
