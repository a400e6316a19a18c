//! The coordinator: membership under leases, leadership, the shard map, and one ordered watch.
//!
//! [`Coordinator`] is the boundary between the runtime and a coordination backend (etcd in
//! `verse-coord-etcd`, an embedded Raft group in `verse-coord-raft`). One value is one client
//! connection of one process: it registers at most one member incarnation at a time and keeps
//! its lease alive in the background, by the lease rule of [`lease`].
//!
//! Common promises of every method (each method's rustdoc adds its own):
//! - **Errors**: [`CoordError::is_retryable`] tells whether to retry (after a backoff).
//! - **Timeouts** are owned by the backend: every request is bounded by its configured request
//!   timeout and fails with [`CoordError::Unavailable`] when it passes. Callers may add their
//!   own (shorter) deadline by dropping the future.
//! - **Cancel safety**: dropping a read is harmless. Dropping a write may leave it applied or
//!   not; every write is a compare-and-swap, so the caller re-reads (the watch or
//!   [`Coordinator::read_entry`]) and decides again.

pub mod error;
pub mod lease;
pub mod types;
pub mod view;

use async_trait::async_trait;
use futures::stream::BoxStream;
use tokio::sync::watch;

use crate::shard::ShardId;
use crate::shardmap::{MemberId, ShardEntry};

pub use error::CoordError;
pub use lease::{LeaseRule, LeaseTracker};
pub use types::{
    ClaimOutcome, ClaimRejection, ClaimRequest, ClusterConfig, ClusterSnapshot, ConnectionHealth,
    Leader, LeaseState, LeaseStatus, MemberFlags, MemberRecord, MemberRegistration, MemberRole,
    NotOwner, ReleaseOutcome, ReleaseRequest, Revision, TargetWrite, Term, WatchChange, WatchEvent,
};
pub use view::{ClusterView, register_when_free};

/// The ordered stream of [`Coordinator::watch`]. An `Err` item is fatal and ends the stream.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, CoordError>>;

/// A coordination backend, as one process sees it (see the module docs for the promises every
/// method shares).
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Coordinator: Send + Sync + 'static {
    /// Creates the cluster configuration if absent (`shard_count`, generation 1) and initialises
    /// every shard's records; returns the configuration.
    ///
    /// Idempotent and resumable: every member calls it at start, and a call interrupted half way
    /// is finished by the next. Errors: [`CoordError::ShardCountMismatch`] (fatal) when the
    /// cluster has another shard count; `Unavailable` (retryable).
    async fn join_cluster(&self, shard_count: u32) -> Result<ClusterConfig, CoordError>;

    /// Registers a member under a new lease, create-if-absent, and starts keeping the lease
    /// alive; returns the record with the new incarnation.
    ///
    /// Errors: [`CoordError::MemberExists`] (retryable: wait until the holder's record expires,
    /// see [`register_when_free`]); `Unavailable` (retryable; a lease granted meanwhile is
    /// revoked or expires unused). Calling it while registered with a live lease ends the
    /// previous lease first (a new incarnation). Not idempotent: each success is a new
    /// incarnation. Cancel safety: a dropped call may leave a record that expires after the TTL.
    async fn register(&self, registration: MemberRegistration) -> Result<MemberRecord, CoordError>;

    /// The lease as this process sees it, updated by the background keepalive (Proven,
    /// Unproven, Lost and `valid_until`, by the lease rule). Never blocks.
    fn lease_status(&self) -> watch::Receiver<LeaseStatus>;

    /// Replaces this member's flags (draining, ready); returns the new record.
    ///
    /// Idempotent. Errors: `NotRegistered` (fatal), `LeaseLost` (fatal for the incarnation),
    /// `Unavailable` (retryable).
    async fn set_flags(&self, flags: MemberFlags) -> Result<MemberRecord, CoordError>;

    /// Ends this member's lease (its record, and its candidacy or leadership, disappear). The
    /// only way a lease ends besides expiry. Idempotent: Ok when not registered.
    /// Errors: `Unavailable` (retryable; the lease then expires by itself).
    async fn deregister(&self) -> Result<(), CoordError>;

    /// Live members. A linearizable read. Errors: `Unavailable` (retryable).
    async fn members(&self) -> Result<Vec<MemberRecord>, CoordError>;

    /// Campaigns for leadership under this member's lease; resolves once this member leads,
    /// with its term (larger than every earlier term).
    ///
    /// Waits as long as another member leads; the caller owns that timeout. Idempotent: a
    /// leader campaigning again gets its current term. Cancel safety: dropping the future
    /// leaves the candidacy in place (it may still win); call [`Coordinator::resign`] or
    /// deregister to withdraw. Errors: `NotRegistered`, `LeaseLost` (fatal), `Unavailable`.
    async fn campaign(&self) -> Result<Term, CoordError>;

    /// The current leader, if any. Linearizable. Errors: `Unavailable` (retryable).
    async fn leader(&self) -> Result<Option<Leader>, CoordError>;

    /// Gives up leadership (or candidacy) of `term`. Idempotent: Ok if `term` is no longer
    /// current. Errors: `Unavailable` (retryable).
    async fn resign(&self, term: Term) -> Result<(), CoordError>;

    /// Resolves when `term` is no longer the current term (resigned, lease expired, or never
    /// was). Cancel safe. Errors: `Unavailable` when the coordinator cannot be reached (the
    /// caller must then assume leadership may be lost).
    async fn leadership_lost(&self, term: Term) -> Result<(), CoordError>;

    /// Reads configuration, members, leader, targets, owners and pins at one revision.
    /// Errors: `NotInitialised` (call `join_cluster`), `Unavailable` (retryable).
    async fn snapshot(&self) -> Result<ClusterSnapshot, CoordError>;

    /// A linearizable read of one shard's target and owner (to refresh after a `NotServed`
    /// when the watch lags). Errors: `InvalidShard`, `NotInitialised` (fatal), `Unavailable`.
    async fn read_entry(&self, shard: ShardId) -> Result<ShardEntry, CoordError>;

    /// Writes targets, fenced by `term`: applied only while `term` is current. Batches larger
    /// than the backend's transaction limit are applied in chunks, each fenced on its own; a
    /// [`CoordError::StaleTerm`] means some chunks may not have been applied. Idempotent.
    /// Errors: `StaleTerm` (fatal for this leadership), `InvalidShard`, `Unavailable`.
    async fn write_targets(&self, term: Term, writes: Vec<TargetWrite>) -> Result<(), CoordError>;

    /// Claims shards for this incarnation, one compare-and-swap per shard with the claim rule:
    /// the owner record is unchanged since read, the target is the claimant and unchanged, the
    /// previous owner released or its incarnation is not live, and this member's record still
    /// carries its lease. Every success sets the epoch to the next counter of the cluster
    /// generation (also when the previous owner was an incarnation of the same node id).
    ///
    /// Per-shard results: a conflict on one shard does not fail the others. Not idempotent
    /// (a second claim of an owned shard is refused, `OwnerChanged`/`OwnerLive`); after an
    /// `Unavailable`, re-read. Errors (whole batch): `LeaseLost` (fatal for the incarnation),
    /// `NotRegistered`, `NotInitialised`, `InvalidShard`, `Unavailable`.
    async fn claim(&self, claims: Vec<ClaimRequest>) -> Result<Vec<ClaimOutcome>, CoordError>;

    /// Releases shards this incarnation owns at the given epochs; per-shard results. Refused
    /// ([`NotOwner`]) for a shard another member or another incarnation of this member owns.
    /// Idempotent: releasing an already released own record succeeds. Errors (whole batch):
    /// `NotRegistered`, `InvalidShard`, `Unavailable`.
    async fn release(
        &self,
        releases: Vec<ReleaseRequest>,
    ) -> Result<Vec<ReleaseOutcome>, CoordError>;

    /// Pins a shard to a node (an operator action; needs no term). The leader turns the pin
    /// into a pinned target. Idempotent. Errors: `InvalidShard`, `NotInitialised`,
    /// `Unavailable`.
    async fn pin(&self, shard: ShardId, node: MemberId) -> Result<(), CoordError>;

    /// Removes a pin. Idempotent. Errors: `InvalidShard`, `Unavailable`.
    async fn unpin(&self, shard: ShardId) -> Result<(), CoordError>;

    /// One ordered stream of every change (members, leader, targets, owners, pins, config)
    /// from `from` (inclusive). Reconnects by itself; when history since the last delivered
    /// revision is gone (compaction) or the stream stalls (no event and no progress for the
    /// backend's `watch_stall_timeout`), it delivers [`WatchChange::Resync`] with a full
    /// snapshot and continues after it. To resume without loss or duplication, watch again
    /// from the last revision fully applied plus one. Errors: `Unavailable` when the stream
    /// cannot be opened (retryable); an `Err` item in the stream is fatal.
    async fn watch(&self, from: Revision) -> Result<WatchStream, CoordError>;

    /// The connection state, for readiness. Never blocks.
    fn health(&self) -> ConnectionHealth;
}
