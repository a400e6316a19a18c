//! S1 (invariant 1): turns of one object never overlap in time, across nodes and incarnations,
//! and the epochs an object's turns run under never decrease along the global timeline.
//!
//! Intervals are closed at the observer's `turn_finished` (after a write-through save) or at
//! the crash of their host. Two intervals overlap when one starts strictly before the other
//! ends; a turn admitted at the instant another finished does not overlap it.
//!
//! The one overlap allowed is the architecture's accepted limit: a node stalled between its
//! serve check and its effect for longer than the lease allows runs a turn at a stale epoch
//! while its successor's turns run, and state writes stay fenced (invariant 5). A turn is left
//! out of the overlap check (not of the epoch order: a turn starts only while its node holds
//! the newest epoch, invariant 2) when a seeded stall of its host began while it ran and it
//! had no effect: the store refused its save at the fence, or its save failed otherwise (an
//! injected outage: a write-through turn then answers an error and its state is discarded)
//! and none committed, or its host crashed before it finished (it answered nobody) and no
//! save of it committed. The planted `SkipEpochFence` bug
//! turns the first case into a violation (the stale save commits, so the turn counts); the
//! planted `SkipLeaseCheck` bug runs unstalled turns after the lease ran out, which count.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::history::{SaveRecord, TurnInterval};

/// Whether one of `saves` is of `turn`'s object at its epoch while it ran.
fn saved_during(turn: &TurnInterval, saves: &[SaveRecord]) -> bool {
    saves.iter().any(|save| {
        save.object == turn.object
            && save.epoch == turn.epoch
            && save.at >= turn.start
            && turn.end.is_none_or(|end| save.at <= end)
    })
}

/// The store's saves and the seeded stalls of a run, as far as S1 needs them.
#[derive(Debug, Clone, Copy)]
pub struct Saves<'a> {
    /// Saves the store refused at the fence.
    pub fenced: &'a [SaveRecord],
    /// Saves the store committed.
    pub committed: &'a [SaveRecord],
    /// Saves that failed for another reason than the fence (nothing written).
    pub failed: &'a [SaveRecord],
    /// Seeded stalls: (host, global time it began).
    pub stalls: &'a [(String, Duration)],
}

/// The violations in `turns`, given the store's saves.
pub fn check(turns: &[TurnInterval], saves: Saves<'_>) -> Vec<String> {
    let effect_free = |turn: &TurnInterval| {
        let stalled = saves.stalls.iter().any(|(host, at)| {
            *host == turn.node && *at >= turn.start && turn.end.is_none_or(|end| *at <= end)
        });
        let committed = saved_during(turn, saves.committed);
        stalled
            && (saved_during(turn, saves.fenced)
                || (saved_during(turn, saves.failed) && !committed)
                || (turn.crashed && !committed))
    };
    let mut by_object: BTreeMap<&str, Vec<&TurnInterval>> = BTreeMap::new();
    for turn in turns {
        by_object.entry(turn.object.as_str()).or_default().push(turn);
    }
    let mut violations = Vec::new();
    for (object, mut turns) in by_object {
        turns.sort_by_key(|t| (t.start, t.end));
        // The running turn (with an effect) that ends last so far.
        let mut latest: Option<&TurnInterval> = None;
        let mut highest_epoch: Option<&TurnInterval> = None;
        for turn in turns {
            // Every turn counts for the epoch order (a turn may only start while its node
            // holds the newest epoch: invariant 2); only turns with an effect for overlaps.
            let counts = !effect_free(turn);
            if counts
                && let Some(previous) = latest
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
            if counts && ends_later {
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

    const NONE: Saves<'static> = Saves { fenced: &[], committed: &[], failed: &[], stalls: &[] };

    /// node "a" stalled at 10 ms.
    fn stalls() -> Vec<(String, Duration)> {
        vec![("a".to_owned(), Duration::from_millis(10))]
    }

    fn saves<'a>(fenced: &'a [SaveRecord], stalls: &'a [(String, Duration)]) -> Saves<'a> {
        Saves { fenced, committed: &[], failed: &[], stalls }
    }

    fn turn(node: &str, epoch: u64, start: u64, end: u64) -> TurnInterval {
        TurnInterval {
            object: "c".into(),
            node: node.into(),
            epoch: Epoch::new(1, epoch),
            start: Duration::from_millis(start),
            end: Some(Duration::from_millis(end)),
            crashed: false,
        }
    }

    #[test]
    fn sequential_turns_pass() {
        let turns = [turn("a", 1, 0, 10), turn("a", 1, 10, 20), turn("b", 2, 25, 30)];
        assert!(check(&turns, NONE).is_empty());
    }

    #[test]
    fn overlapping_turns_on_two_nodes_fail() {
        let turns = [turn("a", 1, 0, 10), turn("b", 2, 5, 12)];
        let found = check(&turns, NONE);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("single activation"));
    }

    #[test]
    fn a_turn_inside_a_long_one_fails() {
        let turns = [turn("a", 1, 0, 100), turn("a", 1, 100, 110), turn("b", 1, 50, 60)];
        assert_eq!(check(&turns, NONE).len(), 1);
    }

    #[test]
    fn decreasing_epochs_fail() {
        let turns = [turn("a", 2, 0, 10), turn("b", 1, 20, 30)];
        let found = check(&turns, NONE);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("epochs"));
    }

    #[test]
    fn a_stale_turn_whose_save_was_fenced_is_left_out() {
        let turns = [turn("a", 1, 0, 100), turn("b", 2, 50, 60)];
        // (A stale turn starting after the newer epoch's turn is still an epoch violation.)
        let late = [turn("b", 2, 50, 60), turn("a", 1, 70, 100)];
        let refused_late = SaveRecord {
            object: "c".into(),
            epoch: Epoch::new(1, 1),
            at: Duration::from_millis(99),
        };
        let stalled = stalls();
        let found = check(&late, saves(std::slice::from_ref(&refused_late), &stalled));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("epochs"));
        let refused = SaveRecord {
            object: "c".into(),
            epoch: Epoch::new(1, 1),
            at: Duration::from_millis(99),
        };
        assert!(check(&turns, saves(std::slice::from_ref(&refused), &stalled)).is_empty());
        // Without a stall of its node, or with a refusal at another epoch or outside the
        // turn, the overlap is a violation.
        assert_eq!(check(&turns, saves(std::slice::from_ref(&refused), &[])).len(), 1);
        let other = SaveRecord { epoch: Epoch::new(1, 3), ..refused.clone() };
        assert_eq!(check(&turns, saves(&[other], &stalled)).len(), 1);
        let later = SaveRecord { at: Duration::from_millis(150), ..refused };
        assert_eq!(check(&turns, saves(&[later], &stalled)).len(), 1);
    }

    #[test]
    fn a_stale_turn_cut_short_by_a_crash_before_its_save_is_left_out() {
        let mut stale = turn("a", 1, 0, 100);
        stale.crashed = true;
        let turns = [stale, turn("b", 2, 50, 60)];
        let stalled = stalls();
        assert!(check(&turns, Saves { stalls: &stalled, ..NONE }).is_empty());
        assert_eq!(check(&turns, NONE).len(), 1, "not without a stall");
        // Nor when its save committed before the crash.
        let committed = [SaveRecord {
            object: "c".into(),
            epoch: Epoch::new(1, 1),
            at: Duration::from_millis(90),
        }];
        let found = check(
            &turns,
            Saves { fenced: &[], committed: &committed, failed: &[], stalls: &stalled },
        );
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn a_stale_turn_whose_save_failed_in_an_outage_is_left_out() {
        let turns = [turn("a", 1, 0, 100), turn("b", 2, 50, 60)];
        let stalled = stalls();
        let failed = [SaveRecord {
            object: "c".into(),
            epoch: Epoch::new(1, 1),
            at: Duration::from_millis(100),
        }];
        let with = |committed: &[SaveRecord], stalls: &[(String, Duration)]| {
            check(&turns, Saves { fenced: &[], committed, failed: &failed, stalls }).len()
        };
        assert_eq!(with(&[], &stalled), 0);
        assert_eq!(with(&[], &[]), 1, "not without a stall");
        // Nor when another save of it committed (it had an effect).
        let committed = [SaveRecord { at: Duration::from_millis(40), ..failed[0].clone() }];
        assert_eq!(with(&committed, &stalled), 1);
    }

    #[test]
    fn a_turn_still_running_overlaps_everything_after_it() {
        let mut open = turn("a", 1, 0, 0);
        open.end = None;
        assert_eq!(check(&[open, turn("b", 2, 50, 60)], NONE).len(), 1);
    }
}
