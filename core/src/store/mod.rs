//! Object state stores: the [`StateStore`] trait and its in-memory implementation.
//!
//! Every write is fenced (invariant 5): before serving a shard at epoch `e`, the owner raises
//! the store's fence for that shard to `e`; a save or delete carries `e` and is applied only if
//! the fence is still exactly `e`, in the same transaction. Within and across epochs each object's
//! version must increase, and deletes leave tombstones, so a stale owner can never overwrite,
//! resurrect or delete newer state.

mod memory;

pub use memory::{DEFAULT_TOMBSTONE_RETENTION, MemoryStore};

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

use crate::epoch::Epoch;
use crate::shard::ShardId;

/// What a fence protects: a shard, or the objects pinned to one node (`<node-id>/…`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FenceKey {
    /// All objects of one shard.
    Shard(ShardId),
    /// All objects pinned to the named node.
    Node(String),
}

impl fmt::Display for FenceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FenceKey::Shard(s) => write!(f, "shard {}", s.0),
            FenceKey::Node(n) => write!(f, "node {n}"),
        }
    }
}

/// A stored record of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// The object's type name (the id alone identifies an object; the type is recorded with it).
    pub object_type: String,
    /// The version of the last save or delete.
    pub version: u64,
    /// The encoded state, or `None` for a tombstone (deleted object).
    pub state: Option<Bytes>,
}

impl StoredObject {
    /// Whether this record is a tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.state.is_none()
    }
}

/// A save request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveRequest {
    /// Fence the write is conditional on.
    pub fence: FenceKey,
    /// The epoch the writer serves the fence key at; must equal the store's current fence.
    pub epoch: Epoch,
    /// The object id.
    pub object_id: String,
    /// The object's type name.
    pub object_type: String,
    /// New version; must be greater than the stored version (record or tombstone).
    pub version: u64,
    /// The encoded state.
    pub state: Bytes,
}

/// A delete request (leaves a tombstone at `version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    /// Fence the write is conditional on.
    pub fence: FenceKey,
    /// The epoch the writer serves the fence key at; must equal the store's current fence.
    pub epoch: Epoch,
    /// The object id.
    pub object_id: String,
    /// The object's type name (recorded in the tombstone).
    pub object_type: String,
    /// Tombstone version; must be greater than the stored version.
    pub version: u64,
}

/// Errors of state store operations.
///
/// `Fenced` and `StaleVersion` are *operating* errors: the write was refused and nothing
/// changed; the writer must not retry with the same epoch (it lost ownership or raced itself).
/// `Unavailable` is retryable: the store could not be reached and nothing is known to have
/// changed for `fence` (for `save`/`delete` the outcome may be unknown, but a retry with the same
/// version is safe because versions must increase). `Corrupt` is fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The write's epoch is not the current fence for its key.
    #[error("write for {key} at epoch {attempted} refused: fence is at {current}")]
    Fenced {
        /// The fence key.
        key: FenceKey,
        /// The epoch the writer used.
        attempted: Epoch,
        /// The store's current fence for the key ([`Epoch::ZERO`] if never raised).
        current: Epoch,
    },
    /// The write's version is not above the stored version.
    #[error("write of {object_id} at version {attempted} refused: stored version is {stored}")]
    StaleVersion {
        /// The object id.
        object_id: String,
        /// The version the writer used.
        attempted: u64,
        /// The stored version.
        stored: u64,
    },
    /// The store is unreachable or overloaded (retryable).
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The store's data is damaged or an invariant of the store broke (fatal).
    #[error("state store corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Durable (or, for [`MemoryStore`], process-lifetime) object state, fenced by shard epoch.
///
/// All methods are cancel safe in the sense that dropping the future never leaves a partial
/// write: each write is one transaction, applied entirely or not at all (whether it was applied
/// is then unknown to the dropped caller). Implementations own no timeouts: callers bound them.
#[async_trait]
pub trait StateStore: Send + Sync + fmt::Debug + 'static {
    /// Raises the fence for `key` to `epoch` if it is lower, and returns the fence after the call.
    ///
    /// Monotonic and idempotent: fencing at an epoch lower than or equal to the current fence
    /// changes nothing and returns the current fence (the caller compares it with its epoch: a
    /// higher fence means another owner has already claimed). This is the only way a fence rises.
    async fn fence(&self, key: &FenceKey, epoch: Epoch) -> Result<Epoch, StoreError>;

    /// Reads the current fence for `key` ([`Epoch::ZERO`] when never raised).
    async fn current_fence(&self, key: &FenceKey) -> Result<Epoch, StoreError>;

    /// Loads an object: its state (or tombstone), type and version; `None` if never written or
    /// its tombstone has been purged.
    async fn load(&self, object_id: &str) -> Result<Option<StoredObject>, StoreError>;

    /// Saves state, conditional on the fence of `req.fence` being exactly `req.epoch` and
    /// `req.version` being above the stored version (tombstones included).
    ///
    /// The fence is checked first: a write that breaks both conditions fails with
    /// [`StoreError::Fenced`]. A refused write changes nothing (not even a tombstone's age).
    async fn save(&self, req: SaveRequest) -> Result<(), StoreError>;

    /// Deletes an object by writing a tombstone, under the same conditions as `save`. Deleting an
    /// object that was never stored writes a tombstone too (so a stale owner cannot create it
    /// afterwards at a lower version).
    async fn delete(&self, req: DeleteRequest) -> Result<(), StoreError>;

    /// Removes tombstones older than the implementation's retention and returns how many went.
    async fn purge_tombstones(&self) -> Result<usize, StoreError>;

    /// Whether this store is node-local (its promises hold only where one node hosts objects).
    fn is_node_local(&self) -> bool;
}
