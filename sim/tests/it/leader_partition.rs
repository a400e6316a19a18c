//! Issue 4's Raft leader partition, on turmoil: the leader is cut from every other host for
//! four seconds while clients write. A new leader must take over, no acknowledged write may be
//! lost, and no node's lease may expire because of the leader change.

use verse_sim::checkers::{acknowledged, liveness};
use verse_sim::history::Event;
use verse_sim::{Scenario, run_seed};

#[test]
fn partitioning_the_raft_leader_moves_leadership_and_keeps_every_lease() {
    let scenario = Scenario::leader_partition();
    for seed in [11, 12, 13] {
        let report = run_seed(seed, &scenario);
        let events = report.events.clone();
        let took_over = events.iter().find_map(|(_, e)| match e {
            Event::LeaderTookOver { old, new } => Some((*old, *new)),
            _ => None,
        });
        let (old, new) =
            took_over.unwrap_or_else(|| panic!("seed {seed}: the leader was never isolated"));
        assert!(new.is_some_and(|new| new != old), "seed {seed}: no new leader replaced {old}");
        let lost: Vec<_> =
            events.iter().filter(|(_, e)| matches!(e, Event::LeaseLost(_))).collect();
        assert!(lost.is_empty(), "seed {seed}: leases lost: {lost:?}");
        let writes = acknowledged::check(&report.calls);
        assert!(writes.is_empty(), "seed {seed}: {writes:#?}");
        let live = liveness::check(&report.calls, &events, &scenario);
        assert!(live.is_empty(), "seed {seed}: {live:#?}");
        assert!(report.passed(), "seed {seed}: {:#?}", report.verdict.violations);
    }
}
