//! Raft RPC between voters of one process: a router that hands each request to the target
//! voter's Raft handle directly (the `verse dev` case, and tests with several voters).
//!
//! A voter can be isolated, which makes every RPC from or to it fail as unreachable: that is
//! how tests cut a Raft leader off. The tonic transport for voters in separate processes is
//! not built yet (see `docs/COORDINATOR-RAFT.md`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};

use crate::types::{NodeId, Raft, TypeConfig};
use crate::voter::VoterInner;

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

    pub(crate) fn remove(&self, id: NodeId) {
        self.lock().voters.remove(&id);
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
