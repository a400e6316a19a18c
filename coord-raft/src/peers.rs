//! How a voter reaches the other voters outside Raft itself: forwarding proposals, reads and
//! membership changes to the Raft leader, and asking peers for the group's membership when it
//! starts without a data file. [`crate::LocalRouter`] does it in process, [`crate::GrpcNetwork`]
//! over the coordinator service.

use async_trait::async_trait;
use openraft::BasicNode;
use verse_core::coordinator::CoordError;

use crate::command::{Command, Reply};
use crate::voter::MembershipError;
use crate::wire::{AnswerRec, MembershipChange, MembershipView, QueryRec};

/// The Raft leader to forward to: its id and, when known, its node record (address).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) id: u64,
    pub(crate) node: Option<BasicNode>,
}

/// Forwarding and discovery between voters. Every method may fail with `Unavailable` when the
/// target cannot be reached; a forwarded proposal's outcome is then unknown.
#[async_trait]
pub(crate) trait Peers: Send + Sync + 'static {
    /// Proposes `command` at `to`, counting `forwards` hops so far.
    async fn propose(
        &self,
        from: u64,
        to: Target,
        command: Command,
        forwards: u8,
    ) -> Result<Reply, CoordError>;

    /// Runs a linearizable read at `to`.
    async fn query(
        &self,
        from: u64,
        to: Target,
        query: QueryRec,
        forwards: u8,
    ) -> Result<AnswerRec, CoordError>;

    /// Changes the membership at `to`.
    async fn change_membership(
        &self,
        from: u64,
        to: Target,
        change: MembershipChange,
        forwards: u8,
    ) -> Result<(), MembershipError>;

    /// The membership as the first reachable peer other than `me` knows it (`None`: no peer
    /// answered).
    async fn membership(&self, me: u64) -> Option<MembershipView>;

    /// Voter `id` stopped (the in-process router forgets it).
    fn leave(&self, id: u64);
}
