//! The simulated disk of a Raft voter: a redb `StorageBackend` whose writes stay pending until
//! `sync_data`, kept outside the simulated host. A crash ([`SimDisk::crash`]) drops every write
//! not yet synced, so openraft's durability code (vote, log append, truncate, purge) runs for
//! real against a disk that forgets what was not fsynced.
//!
//! Handles opened before a crash go stale: they fail every operation, so a database dropped
//! with the crashed host cannot write to the disk of the next incarnation.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

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

    /// The machine crashed: every unsynced write is lost and open handles go stale. Returns the
    /// number of writes lost.
    pub fn crash(&self) -> usize {
        let mut state = self.lock();
        let lost = state.pending.len();
        state.pending.clear();
        state.current = state.durable.clone();
        state.generation += 1;
        lost
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
        assert_eq!(disk.crash(), 2);
        assert!(handle.len().is_err(), "a handle from before the crash is stale");
        let fresh = Handle { disk: disk.clone(), generation: 1 };
        assert_eq!(fresh.len().expect("len"), 3);
        let mut out = [0; 3];
        fresh.read(0, &mut out).expect("read");
        assert_eq!(out, [1, 2, 3]);
    }
}
