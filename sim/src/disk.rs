//! The simulated disk of a Raft voter: a redb `StorageBackend` whose writes stay pending until
//! `sync_data`, kept outside the simulated host. A crash ([`SimDisk::crash`]) loses the writes
//! not yet synced, so openraft's durability code (vote, log append, truncate, purge) and redb's
//! recovery run for real against a disk that forgets what was not fsynced.
//!
//! A disk made [`SimDisk::with_torn_writes`] may also **tear** at a crash, as the seed
//! chooses: the disk had written the first `kept` unsynced writes (in order) whole and was in
//! the middle of the next one, of which only a prefix of its bytes reached the platter; the
//! rest is lost. redb must recover from that (its commit slots are checksummed).
//!
//! Handles opened before a crash go stale: they fail every operation, so a database dropped
//! with the crashed host cannot write to the disk of the next incarnation.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use redb::{Database, DatabaseError, StorageBackend};
use verse_coord_raft::DatabaseSource;

#[derive(Debug, Default)]
struct State {
    /// What survives a crash.
    durable: Vec<u8>,
    /// What reads see: `durable` plus the pending writes.
    current: Vec<u8>,
    /// Writes and resizes since the last sync, in order.
    pending: Vec<Pending>,
    /// Bumped by every crash; handles of older generations are stale.
    generation: u64,
    /// Syncs so far (for the trace).
    syncs: u64,
    /// Draws whether and where a crash tears (none: crashes never tear).
    tearing: Option<ChaCha8Rng>,
    /// The next this many syncs fail without syncing (tests: a crash mid-commit).
    failing_syncs: u32,
}

/// What a crash did to a disk's unsynced writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crash {
    /// Unsynced writes (and resizes) that were pending.
    pub pending: usize,
    /// Of them, this many reached the disk whole (0 unless torn).
    pub kept: usize,
    /// The write after those was torn: this many of its bytes reached the disk, of `of`.
    pub torn: Option<(usize, usize)>,
}

impl std::fmt::Display for Crash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.torn {
            None => write!(f, "loses {} unsynced disk writes", self.pending),
            Some((prefix, of)) => write!(
                f,
                "loses unsynced disk writes torn: {} of {} kept whole, the next torn after {prefix} \
                 of its {of} bytes",
                self.kept, self.pending
            ),
        }
    }
}

#[derive(Debug)]
enum Pending {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

fn apply(bytes: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::Write(offset, data) => {
            let start = usize::try_from(*offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(data.len());
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[start..end].copy_from_slice(data);
        }
        Pending::SetLen(len) => bytes.resize(usize::try_from(*len).unwrap_or(usize::MAX), 0),
    }
}

/// One voter's disk (see the module docs). Clones share the same disk.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        SimDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty disk whose crashes may tear unsynced writes, as drawn from `seed` (module
    /// docs): half the crashes with pending writes tear.
    pub fn with_torn_writes(seed: u64) -> Self {
        let disk = SimDisk::default();
        disk.lock().tearing = Some(ChaCha8Rng::seed_from_u64(seed));
        disk
    }

    /// The machine crashed: unsynced writes are lost (or, on a disk with torn writes, some
    /// reach the disk and the next is torn, as the seed chooses) and open handles go stale.
    pub fn crash(&self) -> Crash {
        let mut state = self.lock();
        let State { tearing, pending, .. } = &mut *state;
        let tear = match tearing.as_mut() {
            Some(rng) if !pending.is_empty() => rng.gen_bool(0.5).then(|| {
                let kept = rng.gen_range(0..pending.len());
                let bytes = match &pending[kept] {
                    Pending::Write(_, data) => data.len(),
                    Pending::SetLen(_) => 0,
                };
                let prefix = if bytes == 0 { 0 } else { rng.gen_range(0..bytes) };
                (kept, prefix)
            }),
            _ => None,
        };
        drop(state);
        match tear {
            Some((kept, prefix)) => self.crash_tearing(kept, prefix),
            None => self.crash_tearing(usize::MAX, 0),
        }
    }

    /// A crash in which the first `kept` unsynced writes reached the disk whole and `prefix`
    /// bytes of the next one (if it is a write); `kept = usize::MAX` loses every unsynced
    /// write (no tear).
    pub fn crash_tearing(&self, kept: usize, prefix: usize) -> Crash {
        let mut state = self.lock();
        let pending = std::mem::take(&mut state.pending);
        let mut crash = Crash { pending: pending.len(), kept: 0, torn: None };
        if kept != usize::MAX {
            let kept = kept.min(pending.len());
            for op in &pending[..kept] {
                apply(&mut state.durable, op);
            }
            crash.kept = kept;
            if let Some(Pending::Write(offset, data)) = pending.get(kept) {
                let prefix = prefix.min(data.len());
                apply(&mut state.durable, &Pending::Write(*offset, data[..prefix].to_vec()));
                crash.torn = Some((prefix, data.len()));
            } else {
                crash.torn = Some((0, 0));
            }
        }
        state.current = state.durable.clone();
        state.generation += 1;
        crash
    }

    /// Bytes that survive a crash.
    pub fn durable_len(&self) -> usize {
        self.lock().durable.len()
    }
}

impl DatabaseSource for SimDisk {
    fn is_fresh(&self) -> bool {
        self.lock().durable.is_empty()
    }

    fn open(&self) -> Result<Database, DatabaseError> {
        let generation = self.lock().generation;
        Database::builder().create_with_backend(Handle { disk: self.clone(), generation })
    }
}

/// A database's handle on the disk, valid until the next crash.
#[derive(Debug)]
struct Handle {
    disk: SimDisk,
    generation: u64,
}

impl Handle {
    fn state(&self) -> io::Result<MutexGuard<'_, State>> {
        let state = self.disk.lock();
        if state.generation != self.generation {
            return Err(io::Error::other("the simulated host crashed: stale disk handle"));
        }
        Ok(state)
    }
}

impl StorageBackend for Handle {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state()?.current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let state = self.state()?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start.saturating_add(out.len());
        let bytes = state.current.get(start..end).ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the disk")
        })?;
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state()?;
        let op = Pending::SetLen(len);
        apply(&mut state.current, &op);
        state.pending.push(op);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.state()?;
        if state.failing_syncs > 0 {
            state.failing_syncs -= 1;
            return Err(io::Error::other("simulated sync failure"));
        }
        let pending = std::mem::take(&mut state.pending);
        for op in &pending {
            apply(&mut state.durable, op);
        }
        state.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state()?;
        let op = Pending::Write(offset, data.to_vec());
        apply(&mut state.current, &op);
        state.pending.push(op);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, TableDefinition};

    use super::*;

    const TABLE: TableDefinition<u64, u64> = TableDefinition::new("t");

    #[test]
    fn committed_data_survives_a_crash() {
        let disk = SimDisk::new();
        assert!(disk.is_fresh());
        let db = disk.open().expect("create");
        let txn = db.begin_write().expect("write");
        txn.open_table(TABLE).expect("table").insert(1, 10).expect("insert");
        txn.commit().expect("commit");
        assert!(!disk.is_fresh());
        disk.crash();
        drop(db);
        let db = disk.open().expect("reopen");
        let read = db.begin_read().expect("read");
        let table = read.open_table(TABLE).expect("table");
        assert_eq!(table.get(1).expect("get").map(|v| v.value()), Some(10));
    }

    #[test]
    fn unsynced_writes_are_lost_and_old_handles_go_stale() {
        let disk = SimDisk::new();
        let handle = Handle { disk: disk.clone(), generation: 0 };
        handle.write(0, &[1, 2, 3]).expect("write");
        handle.sync_data().expect("sync");
        handle.write(0, &[9]).expect("write");
        handle.set_len(10).expect("grow");
        assert_eq!(handle.len().expect("len"), 10);
        assert_eq!(disk.crash(), Crash { pending: 2, kept: 0, torn: None });
        assert!(handle.len().is_err(), "a handle from before the crash is stale");
        let fresh = Handle { disk: disk.clone(), generation: 1 };
        assert_eq!(fresh.len().expect("len"), 3);
        let mut out = [0; 3];
        fresh.read(0, &mut out).expect("read");
        assert_eq!(out, [1, 2, 3]);
    }

    fn put(db: &Database, value: u64) -> Result<(), redb::CommitError> {
        let txn = db.begin_write().expect("write");
        txn.open_table(TABLE).expect("table").insert(1, value).expect("insert");
        txn.commit()
    }

    /// Writes value 10 durably, then tries to commit 20 with its sync failing: the commit's
    /// writes are pending at the crash. Returns the disk and the number of pending writes.
    fn commit_cut_short() -> (SimDisk, Database, usize) {
        let disk = SimDisk::new();
        let db = disk.open().expect("create");
        put(&db, 10).expect("first commit");
        disk.lock().failing_syncs = 1;
        assert!(put(&db, 20).is_err(), "the commit whose sync fails fails");
        let pending = disk.lock().pending.len();
        (disk, db, pending)
    }

    #[test]
    fn redb_recovers_from_every_tear_of_a_commit() {
        let (_, _, writes) = commit_cut_short();
        assert!(writes > 0, "the failed commit left writes pending");
        let mut cases = 0;
        for kept in 0..=writes {
            let (disk, db, _) = commit_cut_short();
            let size = match disk.lock().pending.get(kept) {
                Some(Pending::Write(_, data)) => data.len(),
                _ => 0,
            };
            drop(disk);
            drop(db);
            let mut prefixes: Vec<usize> = vec![0, 1, 7, 8, 9, 16, 32, 64, 100, 511, 512, 513];
            prefixes.extend((0..size).step_by(256));
            prefixes.extend([size / 3, size / 2, size.saturating_sub(1), size]);
            for prefix in prefixes.into_iter().filter(|p| *p <= size) {
                let (disk, db, _) = commit_cut_short();
                let crash = disk.crash_tearing(kept, prefix);
                drop(db);
                let db = disk
                    .open()
                    .unwrap_or_else(|error| panic!("redb does not open after {crash}: {error}"));
                let read = db.begin_read().expect("read");
                let value =
                    read.open_table(TABLE).expect("table").get(1).expect("get").map(|v| v.value());
                assert!(
                    matches!(value, Some(10 | 20)),
                    "after {crash}: read {value:?}, not a committed value"
                );
                cases += 1;
            }
        }
        assert!(cases > writes, "{cases} tears tried");
    }

    #[test]
    fn seeded_crashes_tear_some_of_the_time() {
        let disk = SimDisk::with_torn_writes(3);
        let handle = Handle { disk: disk.clone(), generation: 0 };
        let mut torn = 0;
        for generation in 0..40 {
            let handle = Handle { disk: disk.clone(), generation };
            handle.write(0, &[1; 64]).expect("write");
            handle.write(64, &[2; 64]).expect("write");
            if disk.crash().torn.is_some() {
                torn += 1;
            }
        }
        assert!((5..35).contains(&torn), "{torn} of 40 crashes tore");
        assert!(handle.len().is_err());
    }
}
