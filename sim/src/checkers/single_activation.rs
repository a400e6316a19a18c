//! S1 (invariant 1): turns of one object never overlap in time, across nodes and incarnations,
//! and the epochs an object's turns run under never decrease along the global timeline.
//!
//! Intervals are closed at the observer's `turn_finished` (after a write-through save) or at
//! the crash of their host. Two intervals overlap when one starts strictly before the other
//! ends; a turn admitted at the instant another finished does not overlap it.

use std::collections::BTreeMap;

use crate::history::TurnInterval;

/// The violations in `turns`.
pub fn check(turns: &[TurnInterval]) -> Vec<String> {
    let mut by_object: BTreeMap<&str, Vec<&TurnInterval>> = BTreeMap::new();
    for turn in turns {
        by_object.entry(turn.object.as_str()).or_default().push(turn);
    }
    let mut violations = Vec::new();
    for (object, mut turns) in by_object {
        turns.sort_by_key(|t| (t.start, t.end));
        // The running turn that ends last so far.
        let mut latest: Option<&TurnInterval> = None;
        let mut highest_epoch: Option<&TurnInterval> = None;
        for turn in turns {
            if let Some(previous) = latest
                && previous.end.is_none_or(|end| turn.start < end)
            {
                violations.push(format!(
                    "S1 single activation: {object} ran on {} (epoch {}) from {:?} to {:?} \
                     while a turn on {} (epoch {}) ran from {:?} to {:?}",
                    turn.node,
                    turn.epoch,
                    turn.start,
                    turn.end,
                    previous.node,
                    previous.epoch,
                    previous.start,
                    previous.end
                ));
            }
            if let Some(high) = highest_epoch
                && turn.epoch < high.epoch
            {
                violations.push(format!(
                    "S1 epochs: {object} ran on {} at epoch {} at {:?}, after a turn on {} at \
                     epoch {} at {:?}",
                    turn.node, turn.epoch, turn.start, high.node, high.epoch, high.start
                ));
            }
            if highest_epoch.is_none_or(|high| turn.epoch > high.epoch) {
                highest_epoch = Some(turn);
            }
            let ends_later = match (latest.and_then(|l| l.end), turn.end) {
                (_, None) => true,
                (None, Some(_)) => latest.is_none(),
                (Some(old), Some(new)) => new > old,
            };
            if ends_later {
                latest = Some(turn);
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use verse_core::Epoch;

    use super::*;

    fn turn(node: &str, epoch: u64, start: u64, end: u64) -> TurnInterval {
        TurnInterval {
            object: "c".into(),
            node: node.into(),
            epoch: Epoch::new(1, epoch),
            start: Duration::from_millis(start),
            end: Some(Duration::from_millis(end)),
        }
    }

    #[test]
    fn sequential_turns_pass() {
        let turns = [turn("a", 1, 0, 10), turn("a", 1, 10, 20), turn("b", 2, 25, 30)];
        assert!(check(&turns).is_empty());
    }

    #[test]
    fn overlapping_turns_on_two_nodes_fail() {
        let turns = [turn("a", 1, 0, 10), turn("b", 2, 5, 12)];
        let found = check(&turns);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("single activation"));
    }

    #[test]
    fn a_turn_inside_a_long_one_fails() {
        let turns = [turn("a", 1, 0, 100), turn("a", 1, 100, 110), turn("b", 1, 50, 60)];
        assert_eq!(check(&turns).len(), 1);
    }

    #[test]
    fn decreasing_epochs_fail() {
        let turns = [turn("a", 2, 0, 10), turn("b", 1, 20, 30)];
        let found = check(&turns);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("epochs"));
    }

    #[test]
    fn a_turn_still_running_overlaps_everything_after_it() {
        let mut open = turn("a", 1, 0, 0);
        open.end = None;
        assert_eq!(check(&[open, turn("b", 2, 50, 60)]).len(), 1);
    }
}
