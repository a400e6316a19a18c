//! The Raft log, vote and committed log id on redb, under openraft's durability contract:
//! the vote is on disk before `save_vote` returns, `log_io_completed` is called only after the
//! appended entries are committed (fsynced), and truncate and purge are durable.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use super::{Disk, DiskError, LOG, META, decode, encode};
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// The log store of one voter (cheap to clone: clones share the database).
#[derive(Debug, Clone)]
pub(crate) struct LogStore {
    disk: Disk,
}

impl LogStore {
    pub(crate) fn new(disk: Disk) -> Self {
        LogStore { disk }
    }
}

fn read_error(error: DiskError) -> StorageError {
    StorageIOError::read_logs(AnyError::new(&error)).into()
}

fn write_error(error: DiskError) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&error)).into()
}

/// Reads one META record.
fn read_meta<T: serde::de::DeserializeOwned>(
    db: &Database,
    key: &str,
) -> Result<Option<T>, DiskError> {
    let txn = db.begin_read().map_err(DiskError::redb)?;
    let table = txn.open_table(META).map_err(DiskError::redb)?;
    let value = table.get(key).map_err(DiskError::redb)?;
    value.map(|bytes| decode(bytes.value())).transpose()
}

/// Writes one META record in its own transaction, durable or not.
fn write_meta(db: &Database, key: &str, bytes: &[u8], durable: bool) -> Result<(), DiskError> {
    let mut txn = db.begin_write().map_err(DiskError::redb)?;
    if !durable {
        txn.set_durability(Durability::None).map_err(DiskError::redb)?;
    }
    {
        let mut table = txn.open_table(META).map_err(DiskError::redb)?;
        table.insert(key, bytes).map_err(DiskError::redb)?;
    }
    txn.commit().map_err(DiskError::redb)
}

fn owned_bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(&start) => start,
        Bound::Excluded(&start) => start.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&end) => Some(end.saturating_add(1)),
        Bound::Excluded(&end) => Some(end),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = owned_bounds(&range);
        self.disk
            .run(move |db| {
                let txn = db.begin_read().map_err(DiskError::redb)?;
                let table = txn.open_table(LOG).map_err(DiskError::redb)?;
                let rows = match end {
                    Some(end) if end <= start => return Ok(Vec::new()),
                    Some(end) => table.range(start..end),
                    None => table.range(start..),
                }
                .map_err(DiskError::redb)?;
                let mut entries = Vec::new();
                for row in rows {
                    let (_, value) = row.map_err(DiskError::redb)?;
                    entries.push(decode::<Entry>(value.value())?);
                }
                Ok(entries)
            })
            .await
            .map_err(read_error)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.disk
            .run(|db| {
                let last_purged: Option<LogId> = read_meta(db, LAST_PURGED)?;
                let txn = db.begin_read().map_err(DiskError::redb)?;
                let table = txn.open_table(LOG).map_err(DiskError::redb)?;
                let last = match table.last().map_err(DiskError::redb)? {
                    Some((_, value)) => Some(decode::<Entry>(value.value())?.log_id),
                    None => last_purged,
                };
                Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
            })
            .await
            .map_err(read_error)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes = encode(vote)
            .map_err(|e| StorageError::from(StorageIOError::write_vote(AnyError::new(&e))))?;
        self.disk
            .run(move |db| write_meta(db, VOTE, &bytes, true))
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.disk
            .run(|db| read_meta(db, VOTE))
            .await
            .map_err(|e| StorageIOError::read_vote(AnyError::new(&e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = encode(&committed).map_err(write_error)?;
        // Not fsynced on its own: the next durable commit (an append) carries it. A committed
        // id lost in a crash only means less is re-applied at start; the leader commits again.
        self.disk.run(move |db| write_meta(db, COMMITTED, &bytes, false)).await.map_err(write_error)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.disk
            .run(|db| Ok(read_meta::<Option<LogId>>(db, COMMITTED)?.flatten()))
            .await
            .map_err(read_error)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let result = self
            .disk
            .run(move |db| {
                let txn = db.begin_write().map_err(DiskError::redb)?;
                {
                    let mut table = txn.open_table(LOG).map_err(DiskError::redb)?;
                    for entry in &entries {
                        table
                            .insert(entry.log_id.index, encode(entry)?.as_slice())
                            .map_err(DiskError::redb)?;
                    }
                }
                txn.commit().map_err(DiskError::redb)
            })
            .await;
        match result {
            Ok(()) => {
                // The entries are on disk: only now may openraft count them.
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(io::Error::other(error.to_string())));
                Err(write_error(error))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.disk
            .run(move |db| {
                let txn = db.begin_write().map_err(DiskError::redb)?;
                {
                    let mut table = txn.open_table(LOG).map_err(DiskError::redb)?;
                    table.retain_in(log_id.index.., |_, _| false).map_err(DiskError::redb)?;
                }
                txn.commit().map_err(DiskError::redb)
            })
            .await
            .map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = encode(&log_id).map_err(write_error)?;
        self.disk
            .run(move |db| {
                let txn = db.begin_write().map_err(DiskError::redb)?;
                {
                    let mut meta = txn.open_table(META).map_err(DiskError::redb)?;
                    meta.insert(LAST_PURGED, bytes.as_slice()).map_err(DiskError::redb)?;
                    let mut table = txn.open_table(LOG).map_err(DiskError::redb)?;
                    table.retain_in(..=log_id.index, |_, _| false).map_err(DiskError::redb)?;
                }
                txn.commit().map_err(DiskError::redb)
            })
            .await
            .map_err(write_error)
    }
}
