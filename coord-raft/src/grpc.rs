//! The clients of the coordinator's gRPC services: [`GrpcNetwork`] carries Raft RPC between
//! voters and forwards proposals, reads and membership changes to the Raft leader;
//! [`RemoteAccess`] is the [`RaftAccess`] of a member that is not a voter (node or gateway), so
//! it uses the same [`crate::RaftCoordinator`] as a voter's own process.
//!
//! Both keep one HTTP/2 channel per voter address, made lazily over an injected `tower`
//! connector ([`crate::TcpConnector`] by default) and reused by every call.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};
use tower_service::Service;
use verse_core::coordinator::{CoordError, Revision, WatchEvent, WatchStream};

use crate::access::{Answer, Query, RaftAccess};
use crate::command::{Command, Reply};
use crate::net::{BoxError, HyperConnector, TcpConnector};
use crate::peers::{Peers, Target};
use crate::proto;
use crate::proto::coordinator_client::CoordinatorClient;
use crate::proto::raft_client::RaftClient;
use crate::types::{NodeId, TypeConfig};
use crate::voter::MembershipError;
use crate::wire::{
    self, AnswerRec, ErrorRec, EventRec, MembershipChange, MembershipView, QueryRec,
};

/// Settings of the coordinator's gRPC clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcConfig {
    /// Longest wait for a connection to be established.
    pub connect_timeout: Duration,
    /// Timeout of a forwarded or remote request (proposal, read, membership change).
    pub request_timeout: Duration,
    /// HTTP/2 keepalive ping interval.
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection counts as broken.
    pub keepalive_timeout: Duration,
    /// Largest message sent or accepted (Raft batches and snapshot chunks are JSON).
    pub max_message_bytes: usize,
    /// A remote watch that delivers nothing (not even a progress event) for this long ends
    /// with `Unavailable`, so the client resumes it from another voter.
    pub watch_stall_timeout: Duration,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(10),
            max_message_bytes: 64 << 20,
            watch_stall_timeout: Duration::from_secs(5),
        }
    }
}

impl GrpcConfig {
    /// The defaults with every wait (connect, request, keepalive) at most a quarter of
    /// `lease_ttl` and a watch stall at most `lease_ttl`: a member whose connection goes to an
    /// unreachable voter gives it up and tries the next one well before its lease runs out.
    /// (With the defaults a dead connection is noticed only after 5 s + 10 s of keepalive, which
    /// cost nodes with a 2 s lease their lease in the simulation when the Raft leader was cut
    /// off.)
    pub fn for_lease_ttl(lease_ttl: Duration) -> Self {
        let defaults = GrpcConfig::default();
        let quarter = (lease_ttl / 4).max(Duration::from_millis(100));
        GrpcConfig {
            connect_timeout: defaults.connect_timeout.min(quarter),
            request_timeout: defaults.request_timeout.min(quarter),
            keepalive_interval: defaults.keepalive_interval.min(quarter),
            keepalive_timeout: defaults.keepalive_timeout.min(quarter),
            watch_stall_timeout: defaults.watch_stall_timeout.min(lease_ttl),
            ..defaults
        }
    }
}

type MakeChannel = Box<dyn Fn(Endpoint) -> Channel + Send + Sync>;

/// One HTTP/2 channel per address, over an injected connector.
struct Channels {
    config: GrpcConfig,
    make_channel: MakeChannel,
    // A std mutex: held only to look up or insert a channel, never across an await.
    channels: Mutex<HashMap<String, Channel>>,
}

impl Channels {
    fn new<C>(config: GrpcConfig, connector: C) -> Self
    where
        C: Service<Uri> + Clone + Send + Sync + 'static,
        C::Response: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        C::Future: Send + 'static,
        C::Error: Into<BoxError>,
    {
        let make_channel: MakeChannel = Box::new(move |endpoint: Endpoint| {
            endpoint.connect_with_connector_lazy(HyperConnector(connector.clone()))
        });
        Channels { config, make_channel, channels: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn channel(&self, address: &str) -> Result<Channel, CoordError> {
        if let Some(channel) = self.lock().get(address) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| CoordError::Unavailable(format!("invalid voter address {address}: {e}")))?
            .http2_keep_alive_interval(self.config.keepalive_interval)
            .keep_alive_timeout(self.config.keepalive_timeout)
            .keep_alive_while_idle(true)
            .connect_timeout(self.config.connect_timeout);
        let mut channels = self.lock();
        let channel =
            channels.entry(address.to_owned()).or_insert_with(|| (self.make_channel)(endpoint));
        Ok(channel.clone())
    }

    fn raft(&self, address: &str) -> Result<RaftClient<Channel>, CoordError> {
        let limit = self.config.max_message_bytes;
        Ok(RaftClient::new(self.channel(address)?)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit))
    }

    fn coordinator(&self, address: &str) -> Result<CoordinatorClient<Channel>, CoordError> {
        let limit = self.config.max_message_bytes;
        Ok(CoordinatorClient::new(self.channel(address)?)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit))
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.config.request_timeout);
        request
    }

    async fn propose(
        &self,
        address: &str,
        command: &Command,
        forwards: u8,
    ) -> Result<Reply, CoordError> {
        let mut client = self.coordinator(address)?;
        let message = proto::Forwarded { json: wire::encode(command)?, forwards: forwards.into() };
        let response = client.propose(self.request(message)).await.map_err(status_error)?;
        let answer: Result<Reply, ErrorRec> = wire::decode(&response.into_inner().json)?;
        answer.map_err(CoordError::from)
    }

    async fn query(
        &self,
        address: &str,
        query: QueryRec,
        forwards: u8,
    ) -> Result<AnswerRec, CoordError> {
        let mut client = self.coordinator(address)?;
        let message = proto::Forwarded { json: wire::encode(&query)?, forwards: forwards.into() };
        let response = client.query(self.request(message)).await.map_err(status_error)?;
        let answer: Result<AnswerRec, ErrorRec> = wire::decode(&response.into_inner().json)?;
        answer.map_err(CoordError::from)
    }

    async fn change_membership(
        &self,
        address: &str,
        change: &MembershipChange,
        forwards: u8,
    ) -> Result<(), MembershipError> {
        let unavailable = |e: CoordError| MembershipError::Unavailable(e.to_string());
        let mut client = self.coordinator(address).map_err(unavailable)?;
        let json = wire::encode(change).map_err(unavailable)?;
        let message = proto::Forwarded { json, forwards: forwards.into() };
        // A membership change waits for a learner to catch up: no request timeout of its own.
        let response = client
            .change_membership(message)
            .await
            .map_err(|status| unavailable(status_error(status)))?;
        wire::decode::<Result<(), MembershipError>>(&response.into_inner().json)
            .map_err(unavailable)?
    }

    async fn membership(&self, address: &str) -> Result<MembershipView, CoordError> {
        let mut client = self.coordinator(address)?;
        let message = proto::Json { json: wire::encode(&())? };
        let response = client.membership(self.request(message)).await.map_err(status_error)?;
        wire::decode(&response.into_inner().json)
    }

    async fn watch(&self, address: &str, from: Revision) -> Result<WatchStream, CoordError> {
        let mut client = self.coordinator(address)?;
        let message = proto::WatchRequest { from_revision: from.0 };
        // The stream lives long: only opening it is bounded.
        let opened = tokio::time::timeout(self.config.request_timeout, client.watch(message));
        let stream = match opened.await {
            Ok(result) => result.map_err(status_error)?.into_inner(),
            Err(_) => {
                return Err(CoordError::Unavailable(format!("watch at {address}: no answer")));
            }
        };
        let stall = self.config.watch_stall_timeout;
        let events = futures::stream::unfold(Some(stream), move |stream| async move {
            let mut stream = stream?;
            let item = match tokio::time::timeout(stall, stream.next()).await {
                Err(_) => Err(CoordError::Unavailable("the watch stalled".into())),
                Ok(None) => Err(CoordError::Unavailable("the watch ended".into())),
                Ok(Some(Err(status))) => Err(status_error(status)),
                Ok(Some(Ok(message))) => wire::decode::<Result<EventRec, ErrorRec>>(&message.json)
                    .and_then(|event| event.map_err(CoordError::from))
                    .map(WatchEvent::from),
            };
            let next = if item.is_ok() { Some(stream) } else { None };
            Some((item, next))
        });
        Ok(events.boxed())
    }
}

/// A gRPC failure as the coordinator reports it: the call reached no answer.
fn status_error(status: Status) -> CoordError {
    CoordError::Unavailable(format!("coordinator service: {}: {}", status.code(), status.message()))
}

/// Raft RPC and forwarding between voters over gRPC. Cheap to clone; clones share the channels.
#[derive(Clone)]
pub struct GrpcNetwork {
    channels: Arc<Channels>,
    seeds: Arc<Vec<String>>,
}

impl std::fmt::Debug for GrpcNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcNetwork").field("seeds", &self.seeds).finish_non_exhaustive()
    }
}

impl GrpcNetwork {
    /// A network over TCP ([`TcpConnector`]) with default settings. `seeds` are addresses of
    /// other voters of the group, asked for the membership when this voter starts without a
    /// data file (empty for the first voter of a new group).
    pub fn new(seeds: Vec<String>) -> Self {
        Self::with_connector(GrpcConfig::default(), seeds, TcpConnector)
    }

    /// A network over `connector`: a `tower` service from a voter's URI (`http://<address>`) to
    /// a connected byte stream.
    pub fn with_connector<C>(config: GrpcConfig, seeds: Vec<String>, connector: C) -> Self
    where
        C: Service<Uri> + Clone + Send + Sync + 'static,
        C::Response: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        C::Future: Send + 'static,
        C::Error: Into<BoxError>,
    {
        GrpcNetwork { channels: Arc::new(Channels::new(config, connector)), seeds: Arc::new(seeds) }
    }

    /// Waits until every seed voter answers (a voter serves only after its start-up check).
    /// Call it before initialising a new group of voters started together: a fresh voter that
    /// asked a seed for the membership after the group was initialised could not tell that it
    /// never had data from having lost it, and would refuse to start
    /// ([`crate::VoterError::DataMissing`]).
    ///
    /// Errors: `CoordError::Unavailable` naming the seeds still silent after `timeout`.
    pub async fn wait_for_seeds(&self, timeout: std::time::Duration) -> Result<(), CoordError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut silent: Vec<&String> = self.seeds.iter().collect();
        loop {
            let mut still = Vec::new();
            for seed in silent {
                if self.channels.membership(seed).await.is_err() {
                    still.push(seed);
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let names: Vec<&str> = still.iter().map(|s| s.as_str()).collect();
                return Err(CoordError::Unavailable(format!(
                    "Raft voters {} did not answer within {timeout:?}",
                    names.join(", ")
                )));
            }
            silent = still;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

fn leader_address(to: &Target) -> Result<&str, CoordError> {
    to.node
        .as_ref()
        .map(|node| node.addr.as_str())
        .ok_or_else(|| CoordError::Unavailable(format!("no address for Raft leader {}", to.id)))
}

#[async_trait]
impl Peers for GrpcNetwork {
    async fn propose(
        &self,
        _from: u64,
        to: Target,
        command: Command,
        forwards: u8,
    ) -> Result<Reply, CoordError> {
        self.channels.propose(leader_address(&to)?, &command, forwards).await
    }

    async fn query(
        &self,
        _from: u64,
        to: Target,
        query: QueryRec,
        forwards: u8,
    ) -> Result<AnswerRec, CoordError> {
        self.channels.query(leader_address(&to)?, query, forwards).await
    }

    async fn change_membership(
        &self,
        _from: u64,
        to: Target,
        change: MembershipChange,
        forwards: u8,
    ) -> Result<(), MembershipError> {
        let address =
            leader_address(&to).map_err(|e| MembershipError::Unavailable(e.to_string()))?;
        self.channels.change_membership(address, &change, forwards).await
    }

    async fn membership(&self, _me: u64) -> Option<MembershipView> {
        for seed in self.seeds.iter() {
            match self.channels.membership(seed).await {
                Ok(view) => return Some(view),
                Err(error) => tracing::debug!(%seed, %error, "membership from a seed"),
            }
        }
        None
    }

    fn leave(&self, _id: u64) {}
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcConnection {
        GrpcConnection { channels: Arc::clone(&self.channels), target, address: node.addr.clone() }
    }
}

/// One voter's Raft RPC connection to another.
pub struct GrpcConnection {
    channels: Arc<Channels>,
    target: NodeId,
    address: String,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

#[derive(Debug, Clone, Copy)]
enum RaftRpc {
    AppendEntries,
    InstallSnapshot,
    Vote,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RpcFailure(String);

fn network_error<E>(error: impl std::fmt::Display) -> RPCError<NodeId, BasicNode, E>
where
    E: StdError,
{
    RPCError::Network(NetworkError::new(&RpcFailure(error.to_string())))
}

impl GrpcConnection {
    async fn call<Req, Resp, E>(
        &self,
        kind: RaftRpc,
        rpc: &Req,
        ttl: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: StdError + DeserializeOwned,
    {
        let json = wire::encode(rpc).map_err(network_error)?;
        let mut client = self
            .channels
            .raft(&self.address)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&RpcFailure(e.to_string()))))?;
        let mut request = Request::new(proto::Json { json });
        request.set_timeout(ttl);
        let response = match kind {
            RaftRpc::AppendEntries => client.append_entries(request).await,
            RaftRpc::InstallSnapshot => client.install_snapshot(request).await,
            RaftRpc::Vote => client.vote(request).await,
        };
        let body = match response {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                let failure = RpcFailure(format!("Raft node {}: {}", self.target, status));
                return Err(RPCError::Unreachable(Unreachable::new(&failure)));
            }
            Err(status) => return Err(network_error(status)),
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            wire::decode(&body.json).map_err(network_error)?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for GrpcConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.call(RaftRpc::AppendEntries, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(RaftRpc::InstallSnapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.call(RaftRpc::Vote, &rpc, option.hard_ttl()).await
    }
}

/// The [`RaftAccess`] of a member that is not a voter: the coordinator service of the voters
/// at `voters`, one at a time. A call that reaches no answer fails with `Unavailable` and the
/// next call goes to the next voter; a follower forwards writes and reads to the Raft leader.
pub struct RemoteAccess {
    channels: Channels,
    voters: Vec<String>,
    current: AtomicUsize,
}

impl std::fmt::Debug for RemoteAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteAccess").field("voters", &self.voters).finish_non_exhaustive()
    }
}

impl RemoteAccess {
    /// Access over TCP ([`TcpConnector`]) with default settings to the voters at `voters`
    /// (`host:port`, tried in this order).
    pub fn new(voters: Vec<String>) -> Self {
        Self::with_connector(GrpcConfig::default(), voters, TcpConnector)
    }

    /// Access over TCP with waits scaled to a member's `lease_ttl`
    /// ([`GrpcConfig::for_lease_ttl`]): what `verse node` and `verse gateway` use.
    pub fn for_lease_ttl(voters: Vec<String>, lease_ttl: Duration) -> Self {
        Self::with_connector(GrpcConfig::for_lease_ttl(lease_ttl), voters, TcpConnector)
    }

    /// Access over `connector` (see [`GrpcNetwork::with_connector`]).
    pub fn with_connector<C>(config: GrpcConfig, voters: Vec<String>, connector: C) -> Self
    where
        C: Service<Uri> + Clone + Send + Sync + 'static,
        C::Response: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        C::Future: Send + 'static,
        C::Error: Into<BoxError>,
    {
        RemoteAccess {
            channels: Channels::new(config, connector),
            voters,
            current: AtomicUsize::new(0),
        }
    }

    /// The voter to call: `current` counts failures (it only grows), the voter is
    /// `current % voters`. Returns the counter as read, for [`RemoteAccess::failed`].
    fn voter(&self) -> Result<(usize, &str), CoordError> {
        if self.voters.is_empty() {
            return Err(CoordError::Unavailable("no coordinator voter configured".into()));
        }
        let turn = self.current.load(Ordering::Relaxed);
        Ok((turn, &self.voters[turn % self.voters.len()]))
    }

    /// After a failure of the call made at counter value `turn`, the next call tries the next
    /// voter (once per failed voter: concurrent failures of the same one move on once). The
    /// compare is on the counter itself, not on the voter index, so it keeps rotating after
    /// wrapping around the list.
    fn failed<T>(&self, turn: usize, result: Result<T, CoordError>) -> Result<T, CoordError> {
        if matches!(result, Err(CoordError::Unavailable(_))) {
            let _ = self.current.compare_exchange(
                turn,
                turn.wrapping_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        result
    }
}

#[async_trait]
impl RaftAccess for RemoteAccess {
    async fn propose(&self, command: Command) -> Result<Reply, CoordError> {
        if matches!(command, Command::Tick) {
            return Err(CoordError::Corrupt("only the Raft leader proposes ticks".into()));
        }
        let (index, address) = self.voter()?;
        let result = self.channels.propose(address, &command, 0).await;
        self.failed(index, result)
    }

    async fn query(&self, query: Query) -> Result<Answer, CoordError> {
        let (index, address) = self.voter()?;
        let result = self.channels.query(address, query.into(), 0).await.map(Answer::from);
        self.failed(index, result)
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream, CoordError> {
        let (index, address) = self.voter()?;
        let result = self.channels.watch(address, from).await;
        self.failed(index, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remote_access_keeps_rotating_past_the_end_of_the_voter_list() {
        let access = RemoteAccess::new(vec!["a:1".into(), "b:1".into(), "c:1".into()]);
        let unavailable = || Err::<(), _>(CoordError::Unavailable("refused".into()));
        let mut seen = Vec::new();
        for _ in 0..7 {
            let (turn, address) = access.voter().expect("voters configured");
            seen.push(address.to_owned());
            let _ = access.failed(turn, unavailable());
            // A second failure reported for the same turn (a concurrent call) moves on once.
            let _ = access.failed(turn, unavailable());
        }
        assert_eq!(seen, ["a:1", "b:1", "c:1", "a:1", "b:1", "c:1", "a:1"]);
        // Success or other errors stay on the current voter.
        let (turn, address) = access.voter().expect("voters configured");
        let _ = access.failed(turn, Ok(()));
        let _ = access.failed(turn, Err::<(), _>(CoordError::NotRegistered));
        assert_eq!(access.voter().expect("voters configured").1, address);
    }
}
