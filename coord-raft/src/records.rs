//! The serialisable records of the replicated state machine, and their conversions to the
//! `verse-core` types.
//!
//! `verse-core` stays free of serde, so the log entries, responses and snapshots of the Raft
//! group use these mirrors. They are plain data: member ids as strings, shards as numbers,
//! epochs as `(generation, counter)`.

use serde::{Deserialize, Serialize};
use verse_core::coordinator::{
    ClaimRejection, ClusterConfig, CoordError, Leader, MemberFlags, MemberRecord,
    MemberRegistration, MemberRole, NotOwner, Term, WatchChange,
};
use verse_core::{Epoch, Incarnation, MemberId, OwnerRecord, ShardId, TargetRecord};

/// The cluster configuration (see [`ClusterConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRec {
    /// Number of shards.
    pub shard_count: u32,
    /// Cluster generation.
    pub generation: u64,
}

impl From<ConfigRec> for ClusterConfig {
    fn from(rec: ConfigRec) -> Self {
        ClusterConfig { shard_count: rec.shard_count, generation: rec.generation }
    }
}

/// A member's role (see [`MemberRole`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoleRec {
    /// Hosts objects.
    Node,
    /// Serves clients.
    Gateway,
}

/// A registered member incarnation (see [`MemberRecord`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRec {
    /// Member id.
    pub id: String,
    /// Incarnation: the log index of the registration.
    pub incarnation: u64,
    /// Advertised addresses.
    pub addresses: Vec<String>,
    /// Node or gateway.
    pub role: RoleRec,
    /// Software version.
    pub version: String,
    /// Process start time, ms since the Unix epoch (informational).
    pub start_time_unix_ms: u64,
    /// The draining flag.
    pub draining: bool,
    /// The ready flag.
    pub ready: bool,
    /// The node's store is node-local (absent in records written before the field existed).
    #[serde(default)]
    pub node_local_store: bool,
}

impl MemberRec {
    /// The record a registration produces under `incarnation`.
    pub fn from_registration(registration: &MemberRegistration, incarnation: u64) -> Self {
        MemberRec {
            id: registration.id.as_str().to_owned(),
            incarnation,
            addresses: registration.addresses.clone(),
            role: match registration.role {
                MemberRole::Node => RoleRec::Node,
                MemberRole::Gateway => RoleRec::Gateway,
            },
            version: registration.version.clone(),
            start_time_unix_ms: registration.start_time_unix_ms,
            draining: registration.flags.draining,
            ready: registration.flags.ready,
            node_local_store: registration.node_local_store,
        }
    }
}

impl From<MemberRec> for MemberRecord {
    fn from(rec: MemberRec) -> Self {
        MemberRecord {
            id: MemberId::new(rec.id),
            incarnation: Incarnation(rec.incarnation),
            addresses: rec.addresses,
            role: match rec.role {
                RoleRec::Node => MemberRole::Node,
                RoleRec::Gateway => MemberRole::Gateway,
            },
            version: rec.version,
            start_time_unix_ms: rec.start_time_unix_ms,
            flags: MemberFlags { draining: rec.draining, ready: rec.ready },
            node_local_store: rec.node_local_store,
        }
    }
}

/// The current leader (see [`Leader`]); the incarnation is kept so that only the leading
/// process can resign, and so that its expiry ends the leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRec {
    /// The leading member.
    pub member: String,
    /// Its incarnation.
    pub incarnation: u64,
    /// Its term (the revision at which it was granted leadership).
    pub term: u64,
}

impl From<LeaderRec> for Leader {
    fn from(rec: LeaderRec) -> Self {
        Leader { member: MemberId::new(rec.member), term: Term(rec.term) }
    }
}

/// A shard's target (see [`TargetRecord`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRec {
    /// The wanted node.
    pub node: String,
    /// Fixed by an operator pin.
    pub pinned: bool,
}

impl From<&TargetRecord> for TargetRec {
    fn from(rec: &TargetRecord) -> Self {
        TargetRec { node: rec.node.as_str().to_owned(), pinned: rec.pinned }
    }
}

impl From<TargetRec> for TargetRecord {
    fn from(rec: TargetRec) -> Self {
        TargetRecord { node: MemberId::new(rec.node), pinned: rec.pinned }
    }
}

/// A shard's owner (see [`OwnerRecord`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRec {
    /// The owning node.
    pub node: String,
    /// Its incarnation.
    pub incarnation: u64,
    /// The epoch of the claim, `(generation, counter)`.
    pub epoch: (u64, u64),
    /// Released by its owner.
    pub released: bool,
}

impl From<&OwnerRecord> for OwnerRec {
    fn from(rec: &OwnerRecord) -> Self {
        OwnerRec {
            node: rec.node.as_str().to_owned(),
            incarnation: rec.incarnation.0,
            epoch: (rec.epoch.generation, rec.epoch.counter),
            released: rec.released,
        }
    }
}

impl From<OwnerRec> for OwnerRecord {
    fn from(rec: OwnerRec) -> Self {
        OwnerRecord {
            node: MemberId::new(rec.node),
            incarnation: Incarnation(rec.incarnation),
            epoch: Epoch::new(rec.epoch.0, rec.epoch.1),
            released: rec.released,
        }
    }
}

/// One change recorded in the change log (a [`WatchChange`] without progress and resync).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeRec {
    /// A member registered or changed its record.
    MemberPut(MemberRec),
    /// A member's record disappeared.
    MemberGone(String),
    /// The leader changed.
    Leader(Option<LeaderRec>),
    /// A target changed.
    Target(u32, Option<TargetRec>),
    /// An owner record changed.
    Owner(u32, Option<OwnerRec>),
    /// A pin was set or removed.
    Pin(u32, Option<String>),
    /// The configuration was written.
    Config(ConfigRec),
}

impl From<ChangeRec> for WatchChange {
    fn from(rec: ChangeRec) -> Self {
        match rec {
            ChangeRec::MemberPut(member) => WatchChange::MemberPut(member.into()),
            ChangeRec::MemberGone(id) => WatchChange::MemberGone(MemberId::new(id)),
            ChangeRec::Leader(leader) => WatchChange::Leader(leader.map(Leader::from)),
            ChangeRec::Target(shard, target) => {
                WatchChange::Target { shard: ShardId(shard), target: target.map(Into::into) }
            }
            ChangeRec::Owner(shard, owner) => {
                WatchChange::Owner { shard: ShardId(shard), owner: owner.map(Into::into) }
            }
            ChangeRec::Pin(shard, node) => {
                WatchChange::Pin { shard: ShardId(shard), node: node.map(MemberId::new) }
            }
            ChangeRec::Config(config) => WatchChange::Config(config.into()),
        }
    }
}

/// Why the state machine refused a command (the replicated subset of [`CoordError`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The entry carried no valid lease-time stamp (proposed across a leader change): retry.
    Unstamped,
    /// A record for this member id exists.
    MemberExists {
        /// The id.
        id: String,
        /// The holder's incarnation.
        incarnation: u64,
    },
    /// The incarnation's lease is gone.
    LeaseLost(u64),
    /// The term is not current.
    StaleTerm(u64),
    /// Another shard count.
    ShardCountMismatch {
        /// The cluster's.
        cluster: u32,
        /// The requested.
        ours: u32,
    },
    /// No configuration yet.
    NotInitialised,
    /// A shard outside the map.
    InvalidShard {
        /// The shard.
        shard: u32,
        /// The shard count.
        shard_count: u32,
    },
}

impl From<Refusal> for CoordError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unstamped => {
                CoordError::Unavailable("the Raft leader changed while proposing".into())
            }
            Refusal::MemberExists { id, incarnation } => CoordError::MemberExists {
                id: MemberId::new(id),
                incarnation: Incarnation(incarnation),
            },
            Refusal::LeaseLost(incarnation) => CoordError::LeaseLost(Incarnation(incarnation)),
            Refusal::StaleTerm(term) => CoordError::StaleTerm(Term(term)),
            Refusal::ShardCountMismatch { cluster, ours } => {
                CoordError::ShardCountMismatch { cluster, ours }
            }
            Refusal::NotInitialised => CoordError::NotInitialised,
            Refusal::InvalidShard { shard, shard_count } => {
                CoordError::InvalidShard { shard: ShardId(shard), shard_count }
            }
        }
    }
}

/// Why one shard of a claim was refused (see [`ClaimRejection`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimRefusal {
    /// The target is not the claimant or changed.
    NotTarget(Option<TargetRec>),
    /// The owner record changed since read.
    OwnerChanged(Option<OwnerRec>),
    /// The owner is live and has not released.
    OwnerLive(OwnerRec),
}

impl From<ClaimRefusal> for ClaimRejection {
    fn from(refusal: ClaimRefusal) -> Self {
        match refusal {
            ClaimRefusal::NotTarget(current) => {
                ClaimRejection::NotTarget { current: current.map(Into::into) }
            }
            ClaimRefusal::OwnerChanged(current) => {
                ClaimRejection::OwnerChanged { current: current.map(Into::into) }
            }
            ClaimRefusal::OwnerLive(owner) => ClaimRejection::OwnerLive { owner: owner.into() },
        }
    }
}

/// Converts a refused release's current owner.
pub fn not_owner(current: Option<OwnerRec>) -> NotOwner {
    NotOwner { current: current.map(Into::into) }
}
