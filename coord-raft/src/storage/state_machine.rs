//! The state machine side of openraft's storage: applies committed entries to the in-memory
//! [`CoordState`], builds and installs snapshots, and keeps the current snapshot on redb.
//!
//! Durability: the state machine is not written per entry. Its durable form is the latest
//! snapshot (state, `last_applied` and membership in one redb transaction, so they never
//! disagree) plus the log after it; at start openraft re-applies the committed entries after
//! the snapshot. Each write therefore costs one fsync (the log append), not two.

use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageIOError, StoredMembership,
};
use redb::ReadableDatabase;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Disk, DiskError, SNAPSHOT, decode, encode};
use crate::command::Reply;
use crate::state::{CoordState, Frame};
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

type Membership = StoredMembership<NodeId, openraft::BasicNode>;
type Meta = SnapshotMeta<NodeId, openraft::BasicNode>;

/// The applied state and where it stands in the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Applied {
    pub(crate) state: CoordState,
    pub(crate) last_applied: Option<LogId>,
    pub(crate) membership: Membership,
}

/// The replica's applied state, shared by openraft's state machine task (writer) and the
/// voter's reads and watches (readers).
#[derive(Debug)]
pub(crate) struct Replica {
    // A std lock: critical sections are short and never await.
    applied: RwLock<Applied>,
    /// The revision after each apply, for watchers.
    revision: watch::Sender<u64>,
}

impl Replica {
    pub(crate) fn new(applied: Applied) -> Self {
        let revision = applied.state.revision();
        Replica { applied: RwLock::new(applied), revision: watch::Sender::new(revision) }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Applied> {
        // Poisoning means a panic while applying; the state is then not trusted anywhere,
        // but readers still get a consistent (if stale) copy rather than a second panic.
        self.applied.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Applied> {
        self.applied.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes up on every applied revision.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    fn publish(&self, revision: u64) {
        self.revision.send_if_modified(|current| {
            let changed = *current != revision;
            *current = revision;
            changed
        });
    }
}

const SNAPSHOT_META: &str = "meta";
const SNAPSHOT_DATA: &str = "data";

/// The state machine store of one voter.
#[derive(Debug, Clone)]
pub(crate) struct StateMachineStore {
    replica: Arc<Replica>,
    disk: Disk,
}

fn sm_read_error(error: DiskError) -> StorageError {
    StorageIOError::read_state_machine(AnyError::new(&error)).into()
}

fn snapshot_write_error(error: DiskError) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::new(&error)).into()
}

impl StateMachineStore {
    /// Loads the latest snapshot from disk (or starts empty) with a change log of
    /// `max_changes`.
    pub(crate) async fn open(disk: Disk, max_changes: usize) -> Result<Self, DiskError> {
        let stored = disk.run(read_snapshot).await?;
        let applied = match stored {
            Some((meta, data)) => {
                let state: CoordState = decode(&data)?;
                Applied { state, last_applied: meta.last_log_id, membership: meta.last_membership }
            }
            None => Applied { state: CoordState::new(max_changes), ..Applied::default() },
        };
        Ok(StateMachineStore { replica: Arc::new(Replica::new(applied)), disk })
    }

    pub(crate) fn replica(&self) -> Arc<Replica> {
        Arc::clone(&self.replica)
    }
}

fn read_snapshot(db: &redb::Database) -> Result<Option<(Meta, Vec<u8>)>, DiskError> {
    let txn = db.begin_read().map_err(DiskError::redb)?;
    let table = txn.open_table(SNAPSHOT).map_err(DiskError::redb)?;
    let meta = table.get(SNAPSHOT_META).map_err(DiskError::redb)?;
    let data = table.get(SNAPSHOT_DATA).map_err(DiskError::redb)?;
    match (meta, data) {
        (Some(meta), Some(data)) => Ok(Some((decode(meta.value())?, data.value().to_vec()))),
        _ => Ok(None),
    }
}

/// Stores a snapshot, meta and data in one durable transaction.
async fn write_snapshot(disk: &Disk, meta: &Meta, data: Vec<u8>) -> Result<(), DiskError> {
    let meta = encode(meta)?;
    disk.run(move |db| {
        let txn = db.begin_write().map_err(DiskError::redb)?;
        {
            let mut table = txn.open_table(SNAPSHOT).map_err(DiskError::redb)?;
            table.insert(SNAPSHOT_META, meta.as_slice()).map_err(DiskError::redb)?;
            table.insert(SNAPSHOT_DATA, data.as_slice()).map_err(DiskError::redb)?;
        }
        txn.commit().map_err(DiskError::redb)
    })
    .await
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let applied = self.replica.read().clone();
        let data = encode(&applied.state).map_err(snapshot_write_error)?;
        let snapshot_id = match &applied.last_applied {
            Some(log_id) => {
                format!("{}-{}-{}", log_id.leader_id.term, log_id.leader_id.node_id, log_id.index)
            }
            None => "empty".to_owned(),
        };
        let meta = Meta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership,
            snapshot_id,
        };
        write_snapshot(&self.disk, &meta, data.clone()).await.map_err(snapshot_write_error)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let applied = self.replica.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<crate::command::Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let revision = {
            let mut applied = self.replica.write();
            for entry in entries {
                let log_id = entry.log_id;
                applied.last_applied = Some(log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Ok(Reply::Done),
                    EntryPayload::Normal(proposal) => {
                        let frame =
                            Frame { term: log_id.leader_id.term, leader: log_id.leader_id.node_id };
                        applied.state.apply(log_id.index, frame, &proposal)
                    }
                    EntryPayload::Membership(membership) => {
                        applied.membership = StoredMembership::new(Some(log_id), membership);
                        Ok(Reply::Done)
                    }
                };
                responses.push(response);
            }
            applied.state.revision()
        };
        self.replica.publish(revision);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: CoordState = decode(&data).map_err(snapshot_write_error)?;
        write_snapshot(&self.disk, meta, data).await.map_err(snapshot_write_error)?;
        let revision = state.revision();
        *self.replica.write() = Applied {
            state,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.replica.publish(revision);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored = self.disk.run(read_snapshot).await.map_err(sm_read_error)?;
        Ok(stored.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}
