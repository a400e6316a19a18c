//! The narrow interface between a [`crate::RaftCoordinator`] client and the Raft group:
//! propose a command, run a linearizable query, watch from a revision.
//!
//! A voter implements it in process ([`crate::RaftVoter`]); [`crate::RemoteAccess`] implements
//! it over the coordinator service for members that are not voters. Tests wrap it to cut a
//! client's link.

use async_trait::async_trait;
use verse_core::coordinator::{
    ClusterSnapshot, CoordError, Leader, MemberRecord, Revision, WatchStream,
};
use verse_core::{ShardEntry, ShardId};

use crate::command::{Command, Reply};

/// A linearizable read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// Live members.
    Members,
    /// The leader, with the revision of the read.
    Leader,
    /// Everything, at one revision.
    Snapshot,
    /// One shard's target and owner.
    Entry(ShardId),
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Live members.
    Members(Vec<MemberRecord>),
    /// The leader and the revision of the read.
    Leader(Option<Leader>, Revision),
    /// Everything.
    Snapshot(Box<ClusterSnapshot>),
    /// One shard.
    Entry(ShardEntry),
}

/// Access to the Raft group, as a client sees it.
///
/// Errors: [`CoordError::Unavailable`] when the group cannot be reached or has no leader
/// (retryable; for a proposal the outcome is unknown); the state machine's refusals otherwise.
/// Cancel safety: as [`verse_core::Coordinator`]'s (a dropped proposal may still apply).
#[async_trait]
pub trait RaftAccess: Send + Sync + 'static {
    /// Proposes `command` to the Raft leader; resolves once it is committed and applied.
    async fn propose(&self, command: Command) -> Result<Reply, CoordError>;
    /// Answers `query` linearizably.
    async fn query(&self, query: Query) -> Result<Answer, CoordError>;
    /// The ordered change stream from revision `from` (see [`verse_core::Coordinator::watch`]).
    async fn watch(&self, from: Revision) -> Result<WatchStream, CoordError>;
}
