//! The invariant checkers, one concern per file, run on a finished run's [`History`]:
//! - [`single_activation`]: turns of one object never overlap and epochs never decrease (S1);
//! - [`acknowledged`]: every acknowledged increment is reflected (S2);
//! - [`liveness`]: after the faults stop the cluster converges and serves every shard;
//! - [`events`]: the seed did what it must to count (crash, partition, handoff, writes);
//! - [`validity`]: `Node::validate` held on every node after every simulation step.

pub mod acknowledged;
pub mod events;
pub mod liveness;
pub mod single_activation;
pub mod validity;

use crate::history::History;
use crate::scenario::Scenario;

/// What the checkers found in one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Every violation, each naming its checker.
    pub violations: Vec<String>,
    /// Event counts of the run.
    pub counts: events::Counts,
}

/// Runs every checker. `run_error` is turmoil's error if the run ended abnormally (a host
/// panicked, or the clients were not done by the give-up time).
pub fn check(history: &History, scenario: &Scenario, run_error: Option<String>) -> Verdict {
    let mut violations = Vec::new();
    if let Some(error) = run_error {
        violations.push(format!("run: the simulation ended abnormally: {error}"));
    }
    let turns = history.turns();
    let calls = history.calls();
    let events_seen = history.events();
    let (fenced, committed) = (history.fenced_saves(), history.committed_saves());
    let failed = history.failed_saves();
    let stalls: Vec<(String, std::time::Duration)> = events_seen
        .iter()
        .filter_map(|(at, event)| match event {
            crate::history::Event::Stall { host, .. } => Some((host.clone(), *at)),
            _ => None,
        })
        .collect();
    let saves = single_activation::Saves {
        fenced: &fenced,
        committed: &committed,
        failed: &failed,
        stalls: &stalls,
    };
    violations.extend(single_activation::check(&turns, saves));
    violations.extend(acknowledged::check(&calls));
    violations.extend(liveness::check(&calls, &events_seen, scenario));
    violations.extend(validity::check(&events_seen));
    let counts = events::count(&turns, &calls, &events_seen, scenario.lease_ttl);
    if scenario.require_events {
        violations.extend(events::check(&counts, scenario));
    }
    Verdict { violations, counts }
}
