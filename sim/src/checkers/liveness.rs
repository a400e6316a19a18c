//! Liveness: once the faults have stopped (`heal_by`), within the liveness bound (the final
//! reads start at `final_reads_at`), every shard has a live owner that serves: the final read
//! of every counter (one per shard) is acknowledged, and every increment that started after
//! the bound is acknowledged.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::history::{CallKind, CallRecord, Event, Outcome};
use crate::scenario::Scenario;

/// The violations in `calls`.
pub fn check(
    calls: &[CallRecord],
    events: &[(Duration, Event)],
    scenario: &Scenario,
) -> Vec<String> {
    let mut violations = Vec::new();
    for (at, event) in events {
        if let Event::HostError(host, error) = event {
            violations.push(format!("liveness: host {host} failed at {at:?}: {error}"));
        }
    }
    let mut read: BTreeSet<&str> = BTreeSet::new();
    for call in calls {
        let after_bound = call.start >= scenario.final_reads_at;
        match (&call.kind, &call.outcome) {
            (CallKind::Get, Outcome::Acknowledged(_)) => {
                read.insert(call.object.as_str());
            }
            (_, Outcome::Acknowledged(_)) => {}
            (kind, outcome) if after_bound || *kind == CallKind::Get => violations.push(format!(
                "liveness: {kind:?} of {} at {:?} (after the faults stopped at {:?}) ended {outcome:?}",
                call.object, call.start, scenario.heal_by
            )),
            _ => {}
        }
    }
    for shard in 0..scenario.shard_count {
        let counter = format!("shard#{shard}/counter");
        if !read.contains(counter.as_str()) {
            violations.push(format!("liveness: no final read of {counter} was acknowledged"));
        }
    }
    violations
}
