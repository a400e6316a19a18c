//! The records the coordinator stores and the requests, answers and events of its API.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::clock::MonoTime;
use crate::epoch::Epoch;
use crate::shard::ShardId;
use crate::shardmap::{Incarnation, MemberId, OwnerRecord, ShardMap, TargetRecord};

/// A position in the coordinator's history (etcd's revision, or the Raft state machine's
/// counter). Every change has a revision; later changes have larger ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision(pub u64);

impl Revision {
    /// The revision after this one.
    pub const fn next(self) -> Revision {
        Revision(self.0 + 1)
    }
}

/// The leader's fencing token: strictly larger for every new leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Term(pub u64);

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "term {}", self.0)
    }
}

/// What a member is. Gateways are never placement candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberRole {
    /// Hosts objects.
    Node,
    /// Serves clients; hosts nothing.
    Gateway,
}

/// The flags a member sets on its own record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MemberFlags {
    /// The member is leaving: the planner moves its shards away.
    pub draining: bool,
    /// The member is ready to serve.
    pub ready: bool,
}

/// What a process registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRegistration {
    /// The member id (stable across incarnations).
    pub id: MemberId,
    /// Advertised addresses (node protocol, client endpoints).
    pub addresses: Vec<String>,
    /// Node or gateway.
    pub role: MemberRole,
    /// The software version.
    pub version: String,
    /// Process start time, milliseconds since the Unix epoch (informational only).
    pub start_time_unix_ms: u64,
    /// The initial flags.
    pub flags: MemberFlags,
    /// A node whose objects' state lives in a node-local store (memory or redb): that state
    /// does not follow a shard that moves away, so object-hosting nodes refuse to join a
    /// cluster with such a node unless told to accept the loss (`allow_state_loss`).
    pub node_local_store: bool,
}

/// A registered member incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// The member id.
    pub id: MemberId,
    /// The incarnation: the process lifetime that holds this record's lease.
    pub incarnation: Incarnation,
    /// Advertised addresses.
    pub addresses: Vec<String>,
    /// Node or gateway.
    pub role: MemberRole,
    /// The software version.
    pub version: String,
    /// Process start time, milliseconds since the Unix epoch.
    pub start_time_unix_ms: u64,
    /// Current flags.
    pub flags: MemberFlags,
    /// The node keeps its objects' state in a node-local store (see [`MemberRegistration`]).
    pub node_local_store: bool,
}

impl MemberRecord {
    /// The record a registration produces under `incarnation`.
    pub fn from_registration(registration: &MemberRegistration, incarnation: Incarnation) -> Self {
        MemberRecord {
            id: registration.id.clone(),
            incarnation,
            addresses: registration.addresses.clone(),
            role: registration.role,
            version: registration.version.clone(),
            start_time_unix_ms: registration.start_time_unix_ms,
            flags: registration.flags,
            node_local_store: registration.node_local_store,
        }
    }
}

/// The current leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The leading member.
    pub member: MemberId,
    /// Its term.
    pub term: Term,
}

/// The cluster configuration, created once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Number of shards (8192 by default); never changes.
    pub shard_count: u32,
    /// Cluster generation: the first component of every epoch. Rises on a restore.
    pub generation: u64,
}

/// Whether the lease is proven (see the lease rule in [`super::lease`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseState {
    /// `now < lease_valid_until`: effects may be issued.
    Proven,
    /// The proof ran out without a definitive answer: hold every effect, keep activations.
    Unproven,
    /// The coordinator said the lease is gone: discard activations, register again.
    Lost,
}

/// The lease as the holder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The incarnation the lease belongs to (`None` before registration).
    pub incarnation: Option<Incarnation>,
    /// The state.
    pub state: LeaseState,
    /// Until when (this node's clock) the lease is proven.
    pub valid_until: MonoTime,
    /// The TTL granted by the last successful answer.
    pub granted_ttl: Duration,
}

impl LeaseStatus {
    /// The status before any registration: unproven, valid never.
    pub const UNREGISTERED: LeaseStatus = LeaseStatus {
        incarnation: None,
        state: LeaseState::Unproven,
        valid_until: MonoTime::ZERO,
        granted_ttl: Duration::ZERO,
    };

    /// Whether effects may be issued at `now` (Proven and not past `valid_until`).
    pub fn is_proven_at(&self, now: MonoTime) -> bool {
        self.state == LeaseState::Proven && now < self.valid_until
    }
}

/// The connection to the coordinator, for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionHealth {
    /// The last request succeeded.
    Connected,
    /// The last request failed; the client is reconnecting.
    Disconnected,
}

/// One target change of a leader batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetWrite {
    /// The shard.
    pub shard: ShardId,
    /// The new target (`None` removes it).
    pub target: Option<TargetRecord>,
}

/// One shard of a claim batch: the claimant's view of the shard when it decided to claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// The shard.
    pub shard: ShardId,
    /// The target record read (it must name the claimant and must be unchanged).
    pub expected_target: TargetRecord,
    /// The owner record read (`None`: never owned); it must be unchanged.
    pub expected_owner: Option<OwnerRecord>,
}

/// Why a claim on one shard was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimRejection {
    /// The target is not the claimant (or changed since read).
    #[error("the target is {current:?}, not the claimant")]
    NotTarget {
        /// The current target.
        current: Option<TargetRecord>,
    },
    /// The owner record changed since the claimant read it.
    #[error("the owner record changed: now {current:?}")]
    OwnerChanged {
        /// The current owner.
        current: Option<OwnerRecord>,
    },
    /// The previous owner's incarnation is live and has not released the shard.
    #[error("the owner {owner:?} is live and has not released")]
    OwnerLive {
        /// The owner.
        owner: OwnerRecord,
    },
}

/// The result of one shard of a claim batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimOutcome {
    /// The shard.
    pub shard: ShardId,
    /// The new owner record (with the new epoch), or why not.
    pub result: Result<OwnerRecord, ClaimRejection>,
}

/// One shard of a release batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRequest {
    /// The shard.
    pub shard: ShardId,
    /// The epoch of the caller's claim.
    pub epoch: Epoch,
}

/// Why a release was refused: the caller's incarnation does not own the shard at that epoch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not the owner: the owner record is {current:?}")]
pub struct NotOwner {
    /// The current owner record.
    pub current: Option<OwnerRecord>,
}

/// The result of one shard of a release batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseOutcome {
    /// The shard.
    pub shard: ShardId,
    /// The released owner record, or why not.
    pub result: Result<OwnerRecord, NotOwner>,
}

/// Everything the coordinator holds, read at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSnapshot {
    /// The revision of the read.
    pub revision: Revision,
    /// The cluster configuration.
    pub config: ClusterConfig,
    /// Live members by id.
    pub members: BTreeMap<MemberId, MemberRecord>,
    /// The leader, if any.
    pub leader: Option<Leader>,
    /// Targets and owners.
    pub map: ShardMap,
    /// Operator pins.
    pub pins: BTreeMap<ShardId, MemberId>,
}

/// What changed, in one watch event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchChange {
    /// A member registered or changed its record.
    MemberPut(MemberRecord),
    /// A member's record disappeared (expiry or deregistration).
    MemberGone(MemberId),
    /// The leader changed (`None`: no leader).
    Leader(Option<Leader>),
    /// A shard's target changed.
    Target {
        /// The shard.
        shard: ShardId,
        /// The new target.
        target: Option<TargetRecord>,
    },
    /// A shard's owner record changed.
    Owner {
        /// The shard.
        shard: ShardId,
        /// The new owner record.
        owner: Option<OwnerRecord>,
    },
    /// A pin was set or removed.
    Pin {
        /// The shard.
        shard: ShardId,
        /// The pinned node (`None`: unpinned).
        node: Option<MemberId>,
    },
    /// The cluster configuration was written.
    Config(ClusterConfig),
    /// Nothing changed up to the event's revision (a progress notification).
    Progress,
    /// History was lost (compaction, a stalled or broken watch): replace all state with this
    /// snapshot; events continue after its revision.
    Resync(Box<ClusterSnapshot>),
}

/// One event of the watch stream. Events come in revision order; the events of one revision
/// come together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The revision of the change (for a resync, the snapshot's).
    pub revision: Revision,
    /// The change.
    pub change: WatchChange,
}
