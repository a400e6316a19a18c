//! S2: every acknowledged increment of a write-through counter is reflected.
//!
//! Each increment adds one and turns of a counter run one at a time, so: the values returned
//! by acknowledged increments of one counter are all different (a repeated value means an
//! acknowledged write was lost and its value handed out again); every value a counter shows
//! later (a later increment's answer or the final read) is at least the highest value
//! acknowledged before that call started; and the final value lies between the number of
//! acknowledged increments and that number plus the increments whose outcome is unknown.

use std::collections::BTreeMap;

use crate::history::{CallKind, CallRecord, Outcome};

/// The violations in `calls`.
pub fn check(calls: &[CallRecord]) -> Vec<String> {
    let mut by_object: BTreeMap<&str, Vec<&CallRecord>> = BTreeMap::new();
    for call in calls {
        by_object.entry(call.object.as_str()).or_default().push(call);
    }
    let mut violations = Vec::new();
    for (object, calls) in by_object {
        let mut values: BTreeMap<i64, &CallRecord> = BTreeMap::new();
        let mut acknowledged = 0i64;
        let mut unknown = 0i64;
        for call in &calls {
            match (&call.kind, &call.outcome) {
                (CallKind::Increment, Outcome::Acknowledged(value)) => {
                    acknowledged += 1;
                    if let Some(earlier) = values.insert(*value, call) {
                        violations.push(format!(
                            "S2 lost write: two acknowledged increments of {object} returned \
                             {value} ({} at {:?} and {} at {:?})",
                            earlier.client, earlier.end, call.client, call.end
                        ));
                    }
                }
                (CallKind::Increment, Outcome::Unknown(_)) => unknown += 1,
                _ => {}
            }
        }
        // Monotonic: whatever a call saw is at least what was acknowledged before it started.
        for call in &calls {
            let Outcome::Acknowledged(seen) = call.outcome else { continue };
            let before = calls
                .iter()
                .filter(|c| c.kind == CallKind::Increment && c.end < call.start)
                .filter_map(|c| match c.outcome {
                    Outcome::Acknowledged(v) => Some(v),
                    _ => None,
                })
                .max();
            if let Some(before) = before
                && seen < before
            {
                violations.push(format!(
                    "S2 value went back: {:?} of {object} by {} at {:?} saw {seen}, but {before} \
                     was acknowledged before it started",
                    call.kind, call.client, call.start
                ));
            }
        }
        let finals: Vec<i64> = calls
            .iter()
            .filter(|c| c.kind == CallKind::Get)
            .filter_map(|c| match c.outcome {
                Outcome::Acknowledged(v) => Some(v),
                _ => None,
            })
            .collect();
        if let Some(&last) = finals.last()
            && !(acknowledged..=acknowledged + unknown).contains(&last)
        {
            violations.push(format!(
                "S2 final value: {object} reads {last}, but {acknowledged} increments were \
                 acknowledged and {unknown} are unknown"
            ));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn call(kind: CallKind, at: u64, outcome: Outcome) -> CallRecord {
        CallRecord {
            client: "c".into(),
            object: "x".into(),
            kind,
            start: Duration::from_millis(at),
            end: Duration::from_millis(at + 1),
            outcome,
        }
    }

    #[test]
    fn consistent_history_passes() {
        let calls = [
            call(CallKind::Increment, 0, Outcome::Acknowledged(1)),
            call(CallKind::Increment, 10, Outcome::Unknown("timeout".into())),
            call(CallKind::Increment, 20, Outcome::Acknowledged(3)),
            call(CallKind::Get, 30, Outcome::Acknowledged(3)),
        ];
        assert!(check(&calls).is_empty());
    }

    #[test]
    fn a_lost_write_fails() {
        let calls = [
            call(CallKind::Increment, 0, Outcome::Acknowledged(1)),
            call(CallKind::Increment, 10, Outcome::Acknowledged(2)),
            call(CallKind::Increment, 20, Outcome::Acknowledged(2)),
            call(CallKind::Get, 30, Outcome::Acknowledged(1)),
        ];
        let found = check(&calls);
        assert!(found.iter().any(|v| v.contains("lost write")), "{found:?}");
        assert!(found.iter().any(|v| v.contains("went back")), "{found:?}");
        assert!(found.iter().any(|v| v.contains("final value")), "{found:?}");
    }

    #[test]
    fn a_final_value_above_every_possible_increment_fails() {
        let calls = [
            call(CallKind::Increment, 0, Outcome::Acknowledged(1)),
            call(CallKind::Get, 30, Outcome::Acknowledged(2)),
        ];
        assert_eq!(check(&calls).len(), 1);
    }
}
