//! The narrow interface between a [`crate::RaftCoordinator`] client and the Raft group:
//! propose a command, run a linearizable query, watch from a revision.
//!
//! A voter implements it in process ([`crate::RaftVoter`]); the `CoordinatorService` over
//! tonic for non-voting members will implement it remotely. Tests wrap it to cut a client's
//! link.

use std::collections::BTreeMap;

use async_trait::async_trait;
use verse_core::coordinator::{
    ClusterSnapshot, CoordError, Leader, MemberRecord, Revision, WatchStream,
};
use verse_core::{MemberId, ShardEntry, ShardId, ShardMap};

use crate::command::{Command, Reply};
use crate::state::CoordState;

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

/// Answers `query` from an applied state.
pub(crate) fn answer(state: &CoordState, query: Query) -> Result<Answer, CoordError> {
    match query {
        Query::Members => Ok(Answer::Members(state.members().cloned().map(Into::into).collect())),
        Query::Leader => {
            Ok(Answer::Leader(state.leader().cloned().map(Into::into), Revision(state.revision())))
        }
        Query::Snapshot => Ok(Answer::Snapshot(Box::new(snapshot(state)?))),
        Query::Entry(shard) => {
            let config = state.config().ok_or(CoordError::NotInitialised)?;
            if shard.0 >= config.shard_count {
                return Err(CoordError::InvalidShard { shard, shard_count: config.shard_count });
            }
            Ok(Answer::Entry(ShardEntry {
                shard,
                target: state.targets().get(&shard.0).cloned().map(Into::into),
                owner: state.owners().get(&shard.0).cloned().map(Into::into),
            }))
        }
    }
}

/// The whole state as a [`ClusterSnapshot`].
pub(crate) fn snapshot(state: &CoordState) -> Result<ClusterSnapshot, CoordError> {
    let config = state.config().ok_or(CoordError::NotInitialised)?;
    let mut map = ShardMap::new(config.shard_count);
    for (shard, target) in state.targets() {
        map.set_target(ShardId(*shard), Some(target.clone().into()));
    }
    for (shard, owner) in state.owners() {
        map.set_owner(ShardId(*shard), Some(owner.clone().into()));
    }
    let members: BTreeMap<MemberId, MemberRecord> = state
        .members()
        .map(|member| (MemberId::new(member.id.clone()), member.clone().into()))
        .collect();
    Ok(ClusterSnapshot {
        revision: Revision(state.revision()),
        config: config.into(),
        members,
        leader: state.leader().cloned().map(Into::into),
        map,
        pins: state
            .pins()
            .iter()
            .map(|(shard, node)| (ShardId(*shard), MemberId::new(node.clone())))
            .collect(),
    })
}
