//! `verse-store-redb`: the Verse [`StateStore`](verse_core::StateStore) on an embedded redb file.
//!
//! Node-local: its promises hold where one node hosts objects (`verse dev`) or for ephemeral
//! types (see the architecture's "State"). redb was chosen over sled: it is maintained, ACID and
//! fsyncs every commit, where sled 0.34 dates from 2021, its 1.0 stalled in alpha and its writes
//! are durable only after an explicit flush.
//!
//! Writes are fenced (invariant 5) inside one redb write transaction each. Blocking work goes
//! through injected machinery (invariant 10): in production a dedicated writer thread per file
//! with group commit, and reads on the blocking executor; in simulation everything runs inline.
//!
//! ```no_run
//! use verse_store_redb::{RedbOptions, RedbStore};
//! # fn main() -> Result<(), verse_core::StoreError> {
//! let store = RedbStore::open("/var/lib/verse/state.redb", RedbOptions::production())?;
//! # drop(store);
//! # Ok(())
//! # }
//! ```

mod record;
mod store;
mod txn;
mod writer;

pub use store::{
    DEFAULT_MAX_BATCH, DEFAULT_QUEUE_CAPACITY, DEFAULT_TOMBSTONE_RETENTION, RedbOptions, RedbStore,
    WriteMode, WritePause, WriteStats,
};
