//! The serde records the coordinator's gRPC services carry (see `proto/coordinator.proto`):
//! reads, their answers, watch events, errors and membership changes, with their conversions
//! to the `verse-core` types. `verse-core` stays free of serde, so these mirror its types as
//! plain data.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use verse_core::coordinator::{
    ClusterSnapshot, CoordError, MemberRecord, Revision, Term, WatchChange, WatchEvent,
};
use verse_core::{Incarnation, MemberId, ShardEntry, ShardId, ShardMap};

use crate::access::{Answer, Query};
use crate::records::{ChangeRec, ConfigRec, LeaderRec, MemberRec, OwnerRec, TargetRec};
use crate::state::CoordState;

/// A linearizable read (see [`Query`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum QueryRec {
    Members,
    Leader,
    Snapshot,
    Entry(u32),
}

impl From<Query> for QueryRec {
    fn from(query: Query) -> Self {
        match query {
            Query::Members => QueryRec::Members,
            Query::Leader => QueryRec::Leader,
            Query::Snapshot => QueryRec::Snapshot,
            Query::Entry(shard) => QueryRec::Entry(shard.0),
        }
    }
}

/// The whole state at one revision (see [`ClusterSnapshot`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotRec {
    revision: u64,
    config: ConfigRec,
    members: Vec<MemberRec>,
    leader: Option<LeaderRec>,
    targets: Vec<(u32, TargetRec)>,
    owners: Vec<(u32, OwnerRec)>,
    pins: Vec<(u32, String)>,
}

impl SnapshotRec {
    /// The revision of the snapshot.
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// The snapshot of an applied state. Errors: `NotInitialised` before the first join.
    pub(crate) fn of(state: &CoordState) -> Result<Self, CoordError> {
        let config = state.config().ok_or(CoordError::NotInitialised)?;
        Ok(SnapshotRec {
            revision: state.revision(),
            config,
            members: state.members().cloned().collect(),
            leader: state.leader().cloned(),
            targets: state.targets().iter().map(|(s, t)| (*s, t.clone())).collect(),
            owners: state.owners().iter().map(|(s, o)| (*s, o.clone())).collect(),
            pins: state.pins().iter().map(|(s, n)| (*s, n.clone())).collect(),
        })
    }
}

impl From<SnapshotRec> for ClusterSnapshot {
    fn from(rec: SnapshotRec) -> Self {
        let mut map = ShardMap::new(rec.config.shard_count);
        for (shard, target) in rec.targets {
            map.set_target(ShardId(shard), Some(target.into()));
        }
        for (shard, owner) in rec.owners {
            map.set_owner(ShardId(shard), Some(owner.into()));
        }
        let members: BTreeMap<MemberId, MemberRecord> = rec
            .members
            .into_iter()
            .map(|member| (MemberId::new(member.id.clone()), member.into()))
            .collect();
        ClusterSnapshot {
            revision: Revision(rec.revision),
            config: rec.config.into(),
            members,
            leader: rec.leader.map(Into::into),
            map,
            pins: rec
                .pins
                .into_iter()
                .map(|(shard, node)| (ShardId(shard), MemberId::new(node)))
                .collect(),
        }
    }
}

/// The answer to a [`QueryRec`] (see [`Answer`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum AnswerRec {
    Members(Vec<MemberRec>),
    Leader(Option<LeaderRec>, u64),
    Snapshot(Box<SnapshotRec>),
    Entry { shard: u32, target: Option<TargetRec>, owner: Option<OwnerRec> },
}

impl AnswerRec {
    /// Answers `query` from an applied state.
    pub(crate) fn of(state: &CoordState, query: QueryRec) -> Result<Self, CoordError> {
        match query {
            QueryRec::Members => Ok(AnswerRec::Members(state.members().cloned().collect())),
            QueryRec::Leader => Ok(AnswerRec::Leader(state.leader().cloned(), state.revision())),
            QueryRec::Snapshot => Ok(AnswerRec::Snapshot(Box::new(SnapshotRec::of(state)?))),
            QueryRec::Entry(shard) => {
                let config = state.config().ok_or(CoordError::NotInitialised)?;
                if shard >= config.shard_count {
                    return Err(CoordError::InvalidShard {
                        shard: ShardId(shard),
                        shard_count: config.shard_count,
                    });
                }
                Ok(AnswerRec::Entry {
                    shard,
                    target: state.targets().get(&shard).cloned(),
                    owner: state.owners().get(&shard).cloned(),
                })
            }
        }
    }
}

impl From<AnswerRec> for Answer {
    fn from(rec: AnswerRec) -> Self {
        match rec {
            AnswerRec::Members(members) => {
                Answer::Members(members.into_iter().map(Into::into).collect())
            }
            AnswerRec::Leader(leader, revision) => {
                Answer::Leader(leader.map(Into::into), Revision(revision))
            }
            AnswerRec::Snapshot(snapshot) => Answer::Snapshot(Box::new((*snapshot).into())),
            AnswerRec::Entry { shard, target, owner } => Answer::Entry(ShardEntry {
                shard: ShardId(shard),
                target: target.map(Into::into),
                owner: owner.map(Into::into),
            }),
        }
    }
}

/// One event of a watch (see [`WatchEvent`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EventRec {
    pub(crate) revision: u64,
    pub(crate) change: EventChange,
}

/// What a watch event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum EventChange {
    Change(ChangeRec),
    Progress,
    Resync(Box<SnapshotRec>),
}

impl From<EventRec> for WatchEvent {
    fn from(rec: EventRec) -> Self {
        let change = match rec.change {
            EventChange::Change(change) => change.into(),
            EventChange::Progress => WatchChange::Progress,
            EventChange::Resync(snapshot) => WatchChange::Resync(Box::new((*snapshot).into())),
        };
        WatchEvent { revision: Revision(rec.revision), change }
    }
}

/// A [`CoordError`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ErrorRec {
    Unavailable(String),
    MemberExists { id: String, incarnation: u64 },
    NotRegistered,
    LeaseLost(u64),
    StaleTerm(u64),
    ShardCountMismatch { cluster: u32, ours: u32 },
    NotInitialised,
    InvalidShard { shard: u32, shard_count: u32 },
    Corrupt(String),
}

impl From<CoordError> for ErrorRec {
    fn from(error: CoordError) -> Self {
        match error {
            CoordError::Unavailable(reason) => ErrorRec::Unavailable(reason),
            CoordError::MemberExists { id, incarnation } => {
                ErrorRec::MemberExists { id: id.as_str().to_owned(), incarnation: incarnation.0 }
            }
            CoordError::NotRegistered => ErrorRec::NotRegistered,
            CoordError::LeaseLost(incarnation) => ErrorRec::LeaseLost(incarnation.0),
            CoordError::StaleTerm(term) => ErrorRec::StaleTerm(term.0),
            CoordError::ShardCountMismatch { cluster, ours } => {
                ErrorRec::ShardCountMismatch { cluster, ours }
            }
            CoordError::NotInitialised => ErrorRec::NotInitialised,
            CoordError::InvalidShard { shard, shard_count } => {
                ErrorRec::InvalidShard { shard: shard.0, shard_count }
            }
            CoordError::Corrupt(reason) => ErrorRec::Corrupt(reason),
        }
    }
}

impl From<ErrorRec> for CoordError {
    fn from(rec: ErrorRec) -> Self {
        match rec {
            ErrorRec::Unavailable(reason) => CoordError::Unavailable(reason),
            ErrorRec::MemberExists { id, incarnation } => CoordError::MemberExists {
                id: MemberId::new(id),
                incarnation: Incarnation(incarnation),
            },
            ErrorRec::NotRegistered => CoordError::NotRegistered,
            ErrorRec::LeaseLost(incarnation) => CoordError::LeaseLost(Incarnation(incarnation)),
            ErrorRec::StaleTerm(term) => CoordError::StaleTerm(Term(term)),
            ErrorRec::ShardCountMismatch { cluster, ours } => {
                CoordError::ShardCountMismatch { cluster, ours }
            }
            ErrorRec::NotInitialised => CoordError::NotInitialised,
            ErrorRec::InvalidShard { shard, shard_count } => {
                CoordError::InvalidShard { shard: ShardId(shard), shard_count }
            }
            ErrorRec::Corrupt(reason) => CoordError::Corrupt(reason),
        }
    }
}

/// A change of the group's membership, made by the Raft leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MembershipChange {
    /// Add a non-voting member that receives the log (it must be running).
    AddLearner { id: u64, address: String },
    /// Make learners voters.
    Promote(BTreeSet<u64>),
    /// Remove voters (or learners) from the group entirely.
    Remove(BTreeSet<u64>),
}

/// The group's membership as one voter knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipView {
    /// Voters and their addresses.
    pub voters: BTreeMap<u64, String>,
    /// Learners and their addresses.
    pub learners: BTreeMap<u64, String>,
}

impl MembershipView {
    /// Whether `id` is a voter or a learner.
    pub fn knows(&self, id: u64) -> bool {
        self.voters.contains_key(&id) || self.learners.contains_key(&id)
    }
}

/// Encodes a record as JSON bytes.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<bytes::Bytes, CoordError> {
    serde_json::to_vec(value)
        .map(bytes::Bytes::from)
        .map_err(|e| CoordError::Corrupt(format!("encode: {e}")))
}

/// Decodes a JSON record.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CoordError> {
    serde_json::from_slice(bytes).map_err(|e| CoordError::Corrupt(format!("decode: {e}")))
}
