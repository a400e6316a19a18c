//! Honest seeds: a run counts only if it did something. Each seed must have at least one node
//! or voter crash, one partition, one handoff (an object's turns moving to another node or
//! another incarnation: a new epoch) and `min_acknowledged` acknowledged increments.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::history::{CallKind, CallRecord, Event, Outcome, TurnInterval};
use crate::scenario::Scenario;

/// Event counts of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Host crashes.
    pub crashes: usize,
    /// Partitions.
    pub partitions: usize,
    /// Forced Raft leader changes.
    pub leader_changes: usize,
    /// Objects moving to another node or incarnation (a new epoch).
    pub handoffs: usize,
    /// Turns run.
    pub turns: usize,
    /// Acknowledged increments.
    pub acknowledged: usize,
    /// Increments with an unknown outcome.
    pub unknown: usize,
    /// Increments that provably did not run.
    pub failed: usize,
    /// Seeded stalls (all stall points).
    pub stalls: usize,
    /// Stalls longer than the lease TTL.
    pub long_stalls: usize,
    /// Voter crashes that tore an unsynced disk write.
    pub torn_writes: usize,
}

/// Counts the run's events; a stall counts as long when it outlasts `lease_ttl`.
pub fn count(
    turns: &[TurnInterval],
    calls: &[CallRecord],
    events: &[(Duration, Event)],
    lease_ttl: Duration,
) -> Counts {
    let mut counts = Counts { turns: turns.len(), ..Counts::default() };
    for (_, event) in events {
        match event {
            Event::Stall { duration, .. } => {
                counts.stalls += 1;
                if *duration >= lease_ttl {
                    counts.long_stalls += 1;
                }
            }
            Event::TornWrite(..) => counts.torn_writes += 1,
            Event::Crash(_) => counts.crashes += 1,
            Event::Partition(_) => counts.partitions += 1,
            Event::LeaderChange(_) => counts.leader_changes += 1,
            _ => {}
        }
    }
    let mut last: BTreeMap<&str, &TurnInterval> = BTreeMap::new();
    let mut ordered: Vec<&TurnInterval> = turns.iter().collect();
    ordered.sort_by_key(|t| t.start);
    for turn in ordered {
        if let Some(previous) = last.insert(turn.object.as_str(), turn)
            && (previous.node != turn.node || previous.epoch != turn.epoch)
        {
            counts.handoffs += 1;
        }
    }
    for call in calls.iter().filter(|c| c.kind == CallKind::Increment) {
        match call.outcome {
            Outcome::Acknowledged(_) => counts.acknowledged += 1,
            Outcome::Unknown(_) => counts.unknown += 1,
            Outcome::Failed(_) => counts.failed += 1,
        }
    }
    counts
}

/// The violations of the minimum counts.
pub fn check(counts: &Counts, scenario: &Scenario) -> Vec<String> {
    let mut violations = Vec::new();
    if counts.crashes == 0 {
        violations.push("events: no crash happened".to_owned());
    }
    if counts.partitions == 0 {
        violations.push("events: no partition happened".to_owned());
    }
    if counts.handoffs == 0 {
        violations.push("events: no handoff happened".to_owned());
    }
    if counts.acknowledged < scenario.min_acknowledged {
        violations.push(format!(
            "events: only {} increments acknowledged (at least {} required)",
            counts.acknowledged, scenario.min_acknowledged
        ));
    }
    violations
}
