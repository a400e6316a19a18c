//! The commands of the Raft log and the answers the state machine gives when it applies them.

use serde::{Deserialize, Serialize};

use crate::records::{ClaimRefusal, ConfigRec, MemberRec, OwnerRec, Refusal, TargetRec};

/// Lease time, as the Raft leader stamps it on a proposal: the leader's Raft term and node id
/// (its time frame) and the milliseconds since it became leader, read from its injected clock.
///
/// Stamps of two frames are never compared. A stamp whose frame is not the frame of the log
/// entry that carries it (the proposer lost leadership before appending) is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The Raft term the proposer led in.
    pub term: u64,
    /// The proposer's Raft node id.
    pub leader: u64,
    /// Milliseconds since the proposer became leader of `term`.
    pub elapsed_ms: u64,
}

/// The payload of one Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The leader's lease time when it proposed the entry (`None`: proposed by a non-leader,
    /// which only happens if leadership moved away meanwhile).
    pub stamp: Option<Stamp>,
    /// What to do.
    pub command: Command,
}

/// One claim of a batch, as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimItem {
    /// The shard.
    pub shard: u32,
    /// The target the claimant read.
    pub expected_target: TargetRec,
    /// The owner the claimant read.
    pub expected_owner: Option<OwnerRec>,
}

/// A change of the coordinator's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create the configuration if absent.
    JoinCluster {
        /// The member's shard count.
        shard_count: u32,
    },
    /// Register a member under a new lease (create-if-absent); the incarnation is the entry's
    /// log index.
    Register {
        /// The member record to create (its incarnation is filled in on apply).
        member: MemberRec,
        /// The lease TTL in milliseconds.
        ttl_ms: u64,
    },
    /// Extend a live lease by its TTL from the stamp.
    KeepAlive {
        /// The member id.
        member: String,
        /// The incarnation holding the lease.
        incarnation: u64,
    },
    /// Replace a member's flags.
    SetFlags {
        /// The member id.
        member: String,
        /// Its incarnation.
        incarnation: u64,
        /// Draining flag.
        draining: bool,
        /// Ready flag.
        ready: bool,
    },
    /// End a lease (idempotent).
    Deregister {
        /// The member id.
        member: String,
        /// Its incarnation.
        incarnation: u64,
    },
    /// Campaign for leadership (or join the queue of candidates).
    Campaign {
        /// The member id.
        member: String,
        /// Its incarnation.
        incarnation: u64,
    },
    /// Give up leadership of `term`.
    Resign {
        /// The term.
        term: u64,
    },
    /// Target writes fenced by `term`.
    WriteTargets {
        /// The writer's term.
        term: u64,
        /// `(shard, target)` pairs.
        writes: Vec<(u32, Option<TargetRec>)>,
    },
    /// Claims by one incarnation.
    Claim {
        /// The claimant.
        member: String,
        /// Its incarnation.
        incarnation: u64,
        /// The claims.
        claims: Vec<ClaimItem>,
    },
    /// Releases by one incarnation.
    Release {
        /// The owner.
        member: String,
        /// Its incarnation.
        incarnation: u64,
        /// `(shard, epoch)` pairs.
        releases: Vec<(u32, (u64, u64))>,
    },
    /// Set (`Some`) or remove (`None`) a pin.
    Pin {
        /// The shard.
        shard: u32,
        /// The node.
        node: Option<String>,
    },
    /// Lease time moves: leases whose expiry has passed end. Proposed by the leader once its
    /// clock passes the earliest expiry, and once right after it becomes leader (to open its
    /// time frame, which refreshes every live lease).
    Tick,
    /// Drop the change log up to the current revision.
    Compact,
}

/// What a successful command returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Nothing to report.
    Done,
    /// The configuration.
    Config(ConfigRec),
    /// A member record.
    Member(MemberRec),
    /// A lease was granted or extended by this TTL (milliseconds).
    Granted {
        /// The TTL.
        ttl_ms: u64,
    },
    /// The campaigner leads with this term.
    Leading {
        /// The term.
        term: u64,
    },
    /// The campaigner is queued; the state is at `revision`.
    Waiting {
        /// The revision after the command.
        revision: u64,
    },
    /// Per-shard claim results.
    Claims(Vec<(u32, Result<OwnerRec, ClaimRefusal>)>),
    /// Per-shard release results (`Err` carries the current owner).
    Releases(Vec<(u32, Result<OwnerRec, Option<OwnerRec>>)>),
}

/// The state machine's answer to one entry.
pub type Response = Result<Reply, Refusal>;
