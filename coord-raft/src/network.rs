//! Raft RPC between voters of one process: a router that hands each request to the target
//! voter's Raft handle directly (the `verse dev` case, and tests with several voters).
//!
//! A voter can be isolated, which makes every RPC from or to it fail as unreachable: that is
//! how tests cut a Raft leader off. Voters in separate processes use [`crate::GrpcNetwork`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use verse_core::coordinator::CoordError;

use crate::command::{Command, Reply};
use crate::peers::{Peers, Target};
use crate::types::{NodeId, Raft, TypeConfig};
use crate::voter::{MembershipError, VoterInner};
use crate::wire::{AnswerRec, MembershipChange, MembershipView, QueryRec};

/// Why a voter cannot be reached.
#[derive(Debug, thiserror::Error)]
#[error("Raft node {0} is unreachable")]
struct NotReachable(NodeId);

#[derive(Default)]
struct Routes {
    voters: BTreeMap<NodeId, (Raft, Weak<VoterInner>)>,
    isolated: BTreeSet<NodeId>,
}

/// Connects the voters of one process. Cheap to clone; clones share the routes.
#[derive(Clone, Default)]
pub struct LocalRouter {
    routes: Arc<Mutex<Routes>>,
}

impl fmt::Debug for LocalRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes = self.lock();
        f.debug_struct("LocalRouter")
            .field("voters", &routes.voters.keys().collect::<Vec<_>>())
            .field("isolated", &routes.isolated)
            .finish()
    }
}

impl LocalRouter {
    /// An empty router.
    pub fn new() -> Self {
        LocalRouter::default()
    }

    fn lock(&self) -> MutexGuard<'_, Routes> {
        // A std mutex: map lookups only, never held across an await.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add(&self, id: NodeId, raft: Raft, voter: Weak<VoterInner>) {
        self.lock().voters.insert(id, (raft, voter));
    }

    /// Voter `to`, for forwarding a proposal or a read from `from` to the Raft leader.
    pub(crate) fn voter(&self, from: NodeId, to: NodeId) -> Option<Arc<VoterInner>> {
        let routes = self.lock();
        if routes.isolated.contains(&from) || routes.isolated.contains(&to) {
            return None;
        }
        routes.voters.get(&to).and_then(|(_, voter)| voter.upgrade())
    }

    /// Cuts (`true`) or restores (`false`) every Raft RPC from and to voter `id`.
    pub fn isolate(&self, id: u64, isolated: bool) {
        let mut routes = self.lock();
        if isolated {
            routes.isolated.insert(id);
        } else {
            routes.isolated.remove(&id);
        }
    }

    fn route(&self, from: NodeId, to: NodeId) -> Result<Raft, Unreachable> {
        let routes = self.lock();
        if routes.isolated.contains(&from) || routes.isolated.contains(&to) {
            return Err(Unreachable::new(&NotReachable(to)));
        }
        routes
            .voters
            .get(&to)
            .map(|(raft, _)| raft.clone())
            .ok_or_else(|| Unreachable::new(&NotReachable(to)))
    }

    pub(crate) fn factory(&self, from: NodeId) -> LocalNetwork {
        LocalNetwork { router: self.clone(), from }
    }
}

fn unreachable_leader() -> CoordError {
    CoordError::Unavailable("no reachable Raft leader".into())
}

#[async_trait]
impl Peers for LocalRouter {
    async fn propose(
        &self,
        from: u64,
        to: Target,
        command: Command,
        forwards: u8,
    ) -> Result<Reply, CoordError> {
        let voter = self.voter(from, to.id).ok_or_else(unreachable_leader)?;
        voter.propose(command, forwards).await
    }

    async fn query(
        &self,
        from: u64,
        to: Target,
        query: QueryRec,
        forwards: u8,
    ) -> Result<AnswerRec, CoordError> {
        let voter = self.voter(from, to.id).ok_or_else(unreachable_leader)?;
        voter.query(query, forwards).await
    }

    async fn change_membership(
        &self,
        from: u64,
        to: Target,
        change: MembershipChange,
        forwards: u8,
    ) -> Result<(), MembershipError> {
        let voter = self
            .voter(from, to.id)
            .ok_or_else(|| MembershipError::Unavailable("no reachable Raft leader".into()))?;
        voter.change_membership(change, forwards).await
    }

    async fn membership(&self, me: u64) -> Option<MembershipView> {
        let voters: Vec<Arc<VoterInner>> = {
            let routes = self.lock();
            routes
                .voters
                .iter()
                .filter(|(id, _)| **id != me && !routes.isolated.contains(id))
                .filter_map(|(_, (_, voter))| voter.upgrade())
                .collect()
        };
        voters.first().map(|voter| voter.membership_view())
    }

    fn leave(&self, id: u64) {
        self.lock().voters.remove(&id);
    }
}

/// The network factory of one voter.
pub(crate) struct LocalNetwork {
    router: LocalRouter,
    from: NodeId,
}

/// One voter's connection to another.
pub(crate) struct LocalConnection {
    router: LocalRouter,
    from: NodeId,
    to: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for LocalNetwork {
    type Network = LocalConnection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> LocalConnection {
        LocalConnection { router: self.router.clone(), from: self.from, to: target }
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl RaftNetwork<TypeConfig> for LocalConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let raft = self.router.route(self.from, self.to)?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let raft = self.router.route(self.from, self.to)?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let raft = self.router.route(self.from, self.to)?;
        raft.vote(rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }
}
