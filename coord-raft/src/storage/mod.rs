//! Durable storage of one voter on redb: the Raft log, vote and committed index
//! ([`log_store`]), and the state machine with its snapshots ([`state_machine`]).
//!
//! Every redb transaction runs through the injected blocking executor (invariant 10); a commit
//! is an fsync, so a method that must be durable before it returns (vote, truncate, purge,
//! append before `log_io_completed`) awaits its commit.

pub(crate) mod log_store;
pub(crate) mod state_machine;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};
use verse_core::SharedExecutor;
use verse_core::executor::run_blocking;

/// Log index → JSON-encoded entry.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Vote, committed log id, last purged log id, node id.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// The current snapshot: its meta and its data.
pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

/// Why the voter's data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// redb failed (I/O, corruption, lock held by another process).
    #[error("redb: {0}")]
    Redb(String),
    /// A stored record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The blocking executor dropped the job (shutting down).
    #[error("the blocking executor is shutting down")]
    Executor,
    /// The data directory belongs to another Raft node id.
    #[error("the data directory belongs to Raft node {found}, not {expected}")]
    WrongNode {
        /// The id asked for.
        expected: u64,
        /// The id stored.
        found: u64,
    },
}

impl DiskError {
    pub(crate) fn redb(error: impl fmt::Display) -> Self {
        DiskError::Redb(error.to_string())
    }
}

/// Where a voter's redb database lives when it is not a file at `VoterConfig::data_path`: the
/// simulation's disk (a redb storage backend that keeps writes pending until `sync_data` and
/// lives outside the simulated host). Production leaves it unset.
pub trait DatabaseSource: Send + Sync + fmt::Debug + 'static {
    /// Whether the storage was never written (a fresh voter, as a missing data file is).
    fn is_fresh(&self) -> bool;
    /// Opens (or creates) the database on this storage.
    fn open(&self) -> Result<Database, redb::DatabaseError>;
}

/// One redb file and the executor its transactions run on.
#[derive(Clone)]
pub(crate) struct Disk {
    db: Arc<Database>,
    executor: SharedExecutor,
}

impl fmt::Debug for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Disk").finish_non_exhaustive()
    }
}

impl Disk {
    /// Opens (or creates) the redb file at `path`, creates the tables, and binds it to
    /// `node_id`: a file written by another node id is refused.
    pub(crate) async fn open(
        path: &Path,
        source: Option<Arc<dyn DatabaseSource>>,
        node_id: u64,
        executor: SharedExecutor,
    ) -> Result<Disk, DiskError> {
        let path = path.to_path_buf();
        let db = run_blocking(&*executor, move || -> Result<Database, DiskError> {
            let db = match source {
                Some(source) => source.open(),
                None => Database::create(&path),
            }
            .map_err(DiskError::redb)?;
            let txn = db.begin_write().map_err(DiskError::redb)?;
            {
                txn.open_table(LOG).map_err(DiskError::redb)?;
                let mut meta = txn.open_table(META).map_err(DiskError::redb)?;
                txn.open_table(SNAPSHOT).map_err(DiskError::redb)?;
                let stored =
                    meta.get("node_id").map_err(DiskError::redb)?.map(|v| decode_u64(v.value()));
                match stored {
                    Some(Ok(found)) if found != node_id => {
                        return Err(DiskError::WrongNode { expected: node_id, found });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(error),
                    None => {
                        meta.insert("node_id", node_id.to_be_bytes().as_slice())
                            .map_err(DiskError::redb)?;
                    }
                }
            }
            txn.commit().map_err(DiskError::redb)?;
            Ok(db)
        })
        .await
        .map_err(|_| DiskError::Executor)??;
        Ok(Disk { db: Arc::new(db), executor })
    }

    /// Runs `job` on the blocking executor with the database.
    pub(crate) async fn run<T, F>(&self, job: F) -> Result<T, DiskError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, DiskError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        run_blocking(&*self.executor, move || job(&db)).await.map_err(|_| DiskError::Executor)?
    }
}

fn decode_u64(bytes: &[u8]) -> Result<u64, DiskError> {
    let array: [u8; 8] =
        bytes.try_into().map_err(|_| DiskError::Corrupt("node id is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(array))
}

/// Encodes a record as JSON.
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, DiskError> {
    serde_json::to_vec(value).map_err(|error| DiskError::Corrupt(error.to_string()))
}

/// Decodes a JSON record.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DiskError> {
    serde_json::from_slice(bytes).map_err(|error| DiskError::Corrupt(error.to_string()))
}
