//! The turn-interval checker of the process-level tests (invariant 1 and epoch monotonicity).
//!
//! Each `verse node --turn-log FILE` process appends `S`/`E` events (format in
//! `verse_cli::turnlog`) on `CLOCK_MONOTONIC`, which every process of the machine shares. The
//! tests give every process start its own file; [`read_log`] pairs the events of one file into
//! intervals (a start without an end is open: it ends at the kill time of a SIGKILLed process,
//! and is an error for a process that exited by itself), and [`check`] proves that turns of
//! one object never overlap across node incarnations and that its epochs never decrease.

use std::collections::BTreeMap;
use std::path::Path;

/// One turn of one object on one node incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    /// Object id.
    pub object: String,
    /// Node id.
    pub node: String,
    /// Node incarnation when the turn started (0: not registered yet).
    pub incarnation: u64,
    /// Epoch `(generation, counter)` the turn ran under.
    pub epoch: (u64, u64),
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub start: u64,
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub end: u64,
}

/// What a check saw (to print, and to assert that something was checked at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checked {
    /// Intervals checked.
    pub intervals: usize,
    /// Distinct objects.
    pub objects: usize,
    /// Objects whose turns ran on more than one node incarnation.
    pub moved: usize,
}

/// `CLOCK_MONOTONIC` now, in nanoseconds (the clock the logs use).
pub fn monotonic_nanos() -> u64 {
    verse_cli::turnlog::monotonic_nanos()
}

/// Reads one process's turn log. `killed_at`: when the process was SIGKILLed (its open
/// intervals end then); `None` for a process that exited by itself or still runs (an open
/// interval is then an error).
pub fn read_log(path: &Path, killed_at: Option<u64>) -> Result<Vec<Interval>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        // A process that never ran a turn may not have created its file.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(format!("{}: {error}", path.display())),
    };
    parse_log(&text, killed_at).map_err(|e| format!("{}: {e}", path.display()))
}

/// [`read_log`] on the text of a log.
pub fn parse_log(text: &str, killed_at: Option<u64>) -> Result<Vec<Interval>, String> {
    let mut open: BTreeMap<String, Interval> = BTreeMap::new();
    let mut done = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.splitn(8, '\t').collect();
        let [kind, at, node, incarnation, generation, counter, _type, object] = fields[..] else {
            return Err(format!("line {}: malformed {line:?}", number + 1));
        };
        let number_of = |field: &str| {
            field.parse::<u64>().map_err(|e| format!("line {}: {field:?}: {e}", number + 1))
        };
        let at = number_of(at)?;
        match kind {
            "S" => {
                let interval = Interval {
                    object: object.to_owned(),
                    node: node.to_owned(),
                    incarnation: number_of(incarnation)?,
                    epoch: (number_of(generation)?, number_of(counter)?),
                    start: at,
                    end: u64::MAX,
                };
                if open.insert(object.to_owned(), interval).is_some() {
                    return Err(format!("line {}: {object} started twice", number + 1));
                }
            }
            "E" => {
                let Some(mut interval) = open.remove(object) else {
                    return Err(format!("line {}: {object} ended without a start", number + 1));
                };
                if at < interval.start {
                    return Err(format!("line {}: {object} ended before it started", number + 1));
                }
                interval.end = at;
                done.push(interval);
            }
            other => return Err(format!("line {}: unknown event {other:?}", number + 1)),
        }
    }
    for (object, mut interval) in open {
        match killed_at {
            Some(killed) if killed >= interval.start => {
                interval.end = killed;
                done.push(interval);
            }
            Some(_) => return Err(format!("{object} started after the kill")),
            None => return Err(format!("{object}'s last turn never ended")),
        }
    }
    Ok(done)
}

/// Checks intervals from every process: no two node incarnations ran turns of one object at
/// overlapping times, and each object's epochs never decrease over time. Returns every
/// violation found.
pub fn check(intervals: &[Interval]) -> Result<Checked, Vec<String>> {
    let mut by_object: BTreeMap<&str, Vec<&Interval>> = BTreeMap::new();
    for interval in intervals {
        by_object.entry(&interval.object).or_default().push(interval);
    }
    let mut violations = Vec::new();
    let mut moved = 0;
    for (object, mut turns) in by_object {
        turns.sort_by_key(|t| (t.start, t.end));
        // Latest end so far of each incarnation, and the turn that set it.
        let mut latest: BTreeMap<(&str, u64), &Interval> = BTreeMap::new();
        let mut highest_epoch: Option<&Interval> = None;
        for turn in turns {
            let me = (turn.node.as_str(), turn.incarnation);
            for (other, previous) in &latest {
                if *other != me && previous.end > turn.start {
                    violations.push(format!(
                        "{object}: turns overlap on {}#{} [{}, {}] and {}#{} [{}, {}]",
                        previous.node,
                        previous.incarnation,
                        previous.start,
                        previous.end,
                        turn.node,
                        turn.incarnation,
                        turn.start,
                        turn.end
                    ));
                }
            }
            if let Some(highest) = highest_epoch
                && turn.epoch < highest.epoch
            {
                violations.push(format!(
                    "{object}: epoch {:?} on {}#{} at {} after epoch {:?} on {}#{} at {}",
                    turn.epoch,
                    turn.node,
                    turn.incarnation,
                    turn.start,
                    highest.epoch,
                    highest.node,
                    highest.incarnation,
                    highest.start
                ));
            }
            if highest_epoch.is_none_or(|h| turn.epoch > h.epoch) {
                highest_epoch = Some(turn);
            }
            let entry = latest.entry(me).or_insert(turn);
            if turn.end >= entry.end {
                *entry = turn;
            }
        }
        if latest.len() > 1 {
            moved += 1;
        }
    }
    if violations.is_empty() {
        let objects =
            intervals.iter().map(|i| &i.object).collect::<std::collections::BTreeSet<_>>();
        Ok(Checked { intervals: intervals.len(), objects: objects.len(), moved })
    } else {
        Err(violations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(object: &str, node: &str, epoch: u64, start: u64, end: u64) -> Interval {
        Interval {
            object: object.into(),
            node: node.into(),
            incarnation: 1,
            epoch: (1, epoch),
            start,
            end,
        }
    }

    #[test]
    fn turns_of_one_object_on_two_nodes_must_not_overlap() {
        let apart = [turn("a", "n1", 3, 10, 20), turn("a", "n2", 4, 21, 30)];
        assert_eq!(check(&apart), Ok(Checked { intervals: 2, objects: 1, moved: 1 }));
        let overlapping = [turn("a", "n1", 3, 10, 25), turn("a", "n2", 4, 21, 30)];
        let violations = check(&overlapping).unwrap_err();
        assert_eq!(violations.len(), 1);
        assert!(violations[0].contains("overlap"), "{violations:?}");
        // An early long turn overlapping a later one, with a short turn between them.
        let hidden =
            [turn("a", "n1", 3, 10, 100), turn("a", "n2", 4, 20, 30), turn("a", "n3", 5, 50, 60)];
        assert_eq!(check(&hidden).unwrap_err().len(), 2);
        // Another incarnation of the same node counts as another node.
        let mut again = turn("a", "n1", 4, 15, 30);
        again.incarnation = 2;
        assert!(check(&[turn("a", "n1", 3, 10, 20), again]).is_err());
        // Different objects may overlap; one node's own sequential turns are fine.
        let fine =
            [turn("a", "n1", 3, 10, 20), turn("b", "n2", 3, 10, 20), turn("a", "n1", 3, 20, 30)];
        assert!(check(&fine).is_ok());
    }

    #[test]
    fn epochs_of_one_object_must_never_decrease() {
        assert!(check(&[turn("a", "n1", 3, 10, 20), turn("a", "n2", 3, 30, 40)]).is_ok());
        let violations =
            check(&[turn("a", "n1", 5, 10, 20), turn("a", "n2", 4, 30, 40)]).unwrap_err();
        assert!(violations[0].contains("epoch"), "{violations:?}");
    }

    #[test]
    fn logs_pair_events_and_a_killed_process_ends_at_the_kill() {
        let log = "S\t10\tn1\t7\t1\t3\tCounter\ta\nE\t20\tn1\t7\t1\t3\tCounter\ta\n\
                   S\t30\tn1\t7\t1\t3\tCounter\ta\n";
        assert!(parse_log(log, None).unwrap_err().contains("never ended"));
        let intervals = parse_log(log, Some(50)).unwrap();
        assert_eq!(intervals.len(), 2);
        assert_eq!(intervals[1], {
            let mut open = turn("a", "n1", 3, 30, 50);
            open.incarnation = 7;
            open
        });
        // The open turn overlaps a turn on another node before the kill: a violation.
        let mut all = intervals.clone();
        all.push(turn("a", "n2", 4, 40, 60));
        assert!(check(&all).is_err());
        let mut all = intervals;
        all.push(turn("a", "n2", 4, 51, 60));
        assert!(check(&all).is_ok());
        assert!(parse_log("S\tx\n", None).is_err());
        assert!(parse_log("E\t10\tn1\t7\t1\t3\tCounter\ta\n", None).is_err());
    }
}
