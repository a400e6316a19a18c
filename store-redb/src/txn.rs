//! The blocking redb transactions behind the store: one write transaction per batch of write
//! operations, each checked against the state left by the operations before it, and the reads.
//!
//! Everything here blocks (and a commit fsyncs); callers run it on the writer thread or through
//! the injected executor, never on an async worker.

use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use verse_core::store::{DeleteRequest, FenceKey, SaveRequest, StoreError, StoredObject};
use verse_core::{Epoch, MonoTime};

use crate::record::{self, RecordError};

/// Fence key (see [`record::fence_key_bytes`]) → epoch `(generation, counter)`.
const FENCES: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("verse_fences");
/// Object id → encoded record (see [`crate::record`]).
const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("verse_objects");

/// One write operation, with the time the caller issued it (taken from the store's clock).
#[derive(Debug)]
pub(crate) enum WriteOp {
    Fence { key: FenceKey, epoch: Epoch },
    Save { req: SaveRequest, now: MonoTime },
    Delete { req: DeleteRequest, now: MonoTime },
    Purge { now: MonoTime, retention: Duration },
}

/// What a successful write operation reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteOutcome {
    Fence(Epoch),
    Written,
    Purged(usize),
}

/// The answer to one write operation.
pub(crate) type WriteResult = Result<WriteOutcome, StoreError>;

/// What happened to a batch, for the store's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchEnd {
    /// Something changed and the transaction committed (one fsync).
    Committed,
    /// Nothing changed (every operation refused or a no-op): aborted, no fsync.
    NothingToCommit,
    /// The transaction failed; every operation got the error.
    Failed,
}

/// Maps a redb error: damage is fatal, everything else is reported as unavailable.
pub(crate) fn store_error(err: impl Into<redb::Error>) -> StoreError {
    match err.into() {
        redb::Error::Corrupted(msg) => StoreError::Corrupt(format!("redb: {msg}")),
        // After a failed fsync redb refuses all further work until the file is reopened.
        redb::Error::PreviousIo => {
            StoreError::Corrupt("redb: an earlier I/O error requires reopening the file".into())
        }
        other => StoreError::Unavailable(format!("redb: {other}")),
    }
}

fn corrupt(object_id: &str, err: RecordError) -> StoreError {
    StoreError::Corrupt(format!("record of {object_id}: {err}"))
}

/// Creates the tables if they do not exist, so read transactions always find them.
pub(crate) fn create_tables(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(store_error)?;
    txn.open_table(FENCES).map_err(store_error)?;
    txn.open_table(OBJECTS).map_err(store_error)?;
    txn.commit().map_err(store_error)
}

/// Applies `ops` in order in one write transaction and returns one result per operation.
///
/// Each operation is checked against the state as modified by the operations before it; a
/// refused operation writes nothing, so it cannot affect the others. If the transaction itself
/// fails, every operation gets that error (whether refused or not: the caller learns nothing
/// from a batch that did not commit).
pub(crate) fn apply_batch(db: &Database, ops: &[WriteOp]) -> (Vec<WriteResult>, BatchEnd) {
    match try_apply_batch(db, ops) {
        Ok(done) => done,
        Err(err) => {
            tracing::warn!(error = %err, operations = ops.len(), "redb write batch failed");
            (vec![Err(err); ops.len()], BatchEnd::Failed)
        }
    }
}

fn try_apply_batch(
    db: &Database,
    ops: &[WriteOp],
) -> Result<(Vec<WriteResult>, BatchEnd), StoreError> {
    let txn = db.begin_write().map_err(store_error)?;
    let mut results = Vec::with_capacity(ops.len());
    let mut changed = false;
    {
        let mut fences = txn.open_table(FENCES).map_err(store_error)?;
        let mut objects = txn.open_table(OBJECTS).map_err(store_error)?;
        for op in ops {
            let (result, op_changed) = apply_one(&mut fences, &mut objects, op)?;
            changed |= op_changed;
            results.push(result);
        }
    }
    if changed {
        txn.commit().map_err(store_error)?;
        Ok((results, BatchEnd::Committed))
    } else {
        txn.abort().map_err(store_error)?;
        Ok((results, BatchEnd::NothingToCommit))
    }
}

type Fences<'txn> = Table<'txn, &'static [u8], (u64, u64)>;
type Objects<'txn> = Table<'txn, &'static str, &'static [u8]>;

/// Applies one operation. The outer error aborts the whole batch (storage failure or damage);
/// the inner result is the operation's own answer. The flag says whether anything was written.
fn apply_one(
    fences: &mut Fences<'_>,
    objects: &mut Objects<'_>,
    op: &WriteOp,
) -> Result<(WriteResult, bool), StoreError> {
    match op {
        WriteOp::Fence { key, epoch } => {
            let key_bytes = record::fence_key_bytes(key);
            let current = read_fence(fences, &key_bytes)?;
            if *epoch > current {
                fences
                    .insert(key_bytes.as_slice(), (epoch.generation, epoch.counter))
                    .map_err(store_error)?;
                Ok((Ok(WriteOutcome::Fence(*epoch)), true))
            } else {
                Ok((Ok(WriteOutcome::Fence(current)), false))
            }
        }
        WriteOp::Save { req, now } => {
            if let Err(refused) =
                check_write(fences, objects, &req.fence, req.epoch, &req.object_id, req.version)?
            {
                return Ok((Err(refused), false));
            }
            let bytes = record::encode(&req.object_type, req.version, Some(&req.state), *now);
            objects.insert(req.object_id.as_str(), bytes.as_slice()).map_err(store_error)?;
            Ok((Ok(WriteOutcome::Written), true))
        }
        WriteOp::Delete { req, now } => {
            if let Err(refused) =
                check_write(fences, objects, &req.fence, req.epoch, &req.object_id, req.version)?
            {
                return Ok((Err(refused), false));
            }
            let bytes = record::encode(&req.object_type, req.version, None, *now);
            objects.insert(req.object_id.as_str(), bytes.as_slice()).map_err(store_error)?;
            Ok((Ok(WriteOutcome::Written), true))
        }
        WriteOp::Purge { now, retention } => {
            let purged = purge(objects, *now, *retention)?;
            Ok((Ok(WriteOutcome::Purged(purged)), purged > 0))
        }
    }
}

fn read_fence(
    fences: &impl ReadableTable<&'static [u8], (u64, u64)>,
    key: &[u8],
) -> Result<Epoch, StoreError> {
    let stored = fences.get(key).map_err(store_error)?;
    Ok(stored.map_or(Epoch::ZERO, |guard| {
        let (generation, counter) = guard.value();
        Epoch::new(generation, counter)
    }))
}

/// The write conditions of invariant 5, fence first. `Ok(Err(_))` is a refusal.
fn check_write(
    fences: &Fences<'_>,
    objects: &Objects<'_>,
    key: &FenceKey,
    epoch: Epoch,
    object_id: &str,
    version: u64,
) -> Result<Result<(), StoreError>, StoreError> {
    let current = read_fence(fences, &record::fence_key_bytes(key))?;
    if current != epoch {
        return Ok(Err(StoreError::Fenced { key: key.clone(), attempted: epoch, current }));
    }
    if let Some(stored) = objects.get(object_id).map_err(store_error)? {
        let meta = record::decode_meta(stored.value()).map_err(|e| corrupt(object_id, e))?;
        if version <= meta.version {
            return Ok(Err(StoreError::StaleVersion {
                object_id: object_id.to_owned(),
                attempted: version,
                stored: meta.version,
            }));
        }
    }
    Ok(Ok(()))
}

/// Removes tombstones at least `retention` old. Scans the table: purges are rare maintenance.
fn purge(
    objects: &mut Objects<'_>,
    now: MonoTime,
    retention: Duration,
) -> Result<usize, StoreError> {
    let mut purged = 0;
    let mut damaged: Option<(String, RecordError)> = None;
    objects
        .retain(|object_id, bytes| match record::decode_meta(bytes) {
            Ok(meta) if meta.tombstone && now - meta.written_at >= retention => {
                purged += 1;
                false
            }
            Ok(_) => true,
            Err(err) => {
                damaged.get_or_insert_with(|| (object_id.to_owned(), err));
                true
            }
        })
        .map_err(store_error)?;
    match damaged {
        // Aborts the batch, so the removals above are undone too.
        Some((object_id, err)) => Err(corrupt(&object_id, err)),
        None => Ok(purged),
    }
}

/// Reads the fence for `key` in a read transaction.
pub(crate) fn load_fence(db: &Database, key: &FenceKey) -> Result<Epoch, StoreError> {
    let txn = db.begin_read().map_err(store_error)?;
    let fences = txn.open_table(FENCES).map_err(store_error)?;
    read_fence(&fences, &record::fence_key_bytes(key))
}

/// Reads one object in a read transaction.
pub(crate) fn load_object(
    db: &Database,
    object_id: &str,
) -> Result<Option<StoredObject>, StoreError> {
    let txn = db.begin_read().map_err(store_error)?;
    let objects = txn.open_table(OBJECTS).map_err(store_error)?;
    let Some(stored) = objects.get(object_id).map_err(store_error)? else {
        return Ok(None);
    };
    record::decode(stored.value()).map(Some).map_err(|e| corrupt(object_id, e))
}
