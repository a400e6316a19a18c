//! `verse node --turn-log FILE`: every turn's start and end appended to `FILE`, for the
//! invariant checker of the process-level tests (no two nodes run turns of one object at
//! overlapping times; epochs never decrease).
//!
//! Times are `CLOCK_MONOTONIC` read through libc, which every process on a machine shares
//! (unlike `std::time::Instant`'s origin), so intervals from several processes compare. Each
//! event is one `write` on a file opened for appending, unbuffered, so a SIGKILLed process
//! leaves every event it recorded; its open intervals end at the kill time, which only the
//! killer knows. Recording is conservative in the sense the design asks: the start is read
//! when the runtime admitted the turn (before the method runs), the end after the method and
//! its write-through save finished (before the caller gets its answer).
//!
//! One line per event, tab-separated: `S` or `E`, nanoseconds of `CLOCK_MONOTONIC`, node id,
//! incarnation (0 before the node registered), epoch generation, epoch counter, object type,
//! object id (last, so it may contain anything but a line break; `\n` and `\r` are escaped).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use verse_core::ClusterNode;
use verse_core::runtime::observe::{TurnObserver, TurnRecord};

/// Nanoseconds of `CLOCK_MONOTONIC` now (shared by every process of the machine).
pub fn monotonic_nanos() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec and CLOCK_MONOTONIC always exists on
    // Linux; clock_gettime writes nothing else.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    debug_assert_eq!(status, 0, "CLOCK_MONOTONIC is always readable");
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// A [`TurnObserver`] appending to a file (module docs).
pub struct TurnLog {
    file: File,
    /// The cluster runtime, once started (for the current incarnation).
    cluster: Arc<OnceLock<Arc<ClusterNode>>>,
}

impl std::fmt::Debug for TurnLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnLog").finish_non_exhaustive()
    }
}

impl TurnLog {
    /// Opens (creating, appending to) `path`. `cluster` is filled once the node joined.
    pub fn open(path: &Path, cluster: Arc<OnceLock<Arc<ClusterNode>>>) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the turn log {}", path.display()))?;
        Ok(TurnLog { file, cluster })
    }

    fn record(&self, kind: char, turn: &TurnRecord<'_>) {
        let at = monotonic_nanos();
        let incarnation = self.cluster.get().map_or(0, |cluster| cluster.me().incarnation.0);
        let id = turn.object_id.replace('\n', "\\n").replace('\r', "\\r");
        let line = format!(
            "{kind}\t{at}\t{}\t{incarnation}\t{}\t{}\t{}\t{id}\n",
            turn.node_id, turn.epoch.generation, turn.epoch.counter, turn.object_type
        );
        // One write of the whole line on an O_APPEND file: lines never interleave.
        if let Err(error) = (&self.file).write_all(line.as_bytes()) {
            tracing::error!(%error, "writing the turn log failed");
        }
    }
}

impl TurnObserver for TurnLog {
    fn turn_started(&self, turn: &TurnRecord<'_>) {
        self.record('S', turn);
    }

    fn turn_finished(&self, turn: &TurnRecord<'_>) {
        self.record('E', turn);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use verse_core::epoch::Epoch;

    use super::*;

    #[test]
    fn every_event_is_one_line_with_a_monotonic_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("turns.log");
        let log = TurnLog::open(&path, Arc::default()).unwrap();
        let turn = TurnRecord {
            node_id: "n1",
            object_type: "Counter",
            object_id: "odd\nid",
            epoch: Epoch::new(1, 7),
        };
        let before = monotonic_nanos();
        log.turn_started(&turn);
        log.turn_finished(&turn);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0][0], "S");
        assert_eq!(lines[1][0], "E");
        let start: u64 = lines[0][1].parse().unwrap();
        let end: u64 = lines[1][1].parse().unwrap();
        assert!(before <= start && start <= end && end <= monotonic_nanos());
        assert_eq!(&lines[0][2..], ["n1", "0", "1", "7", "Counter", "odd\\nid"]);
    }
}
