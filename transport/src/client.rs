//! Pooled clients of the node protocol: one HTTP/2 channel per peer address, reused by every
//! call to that peer, with keepalive on, over an injected `tower` connector.
//!
//! Every call carries the time left before the caller's deadline, measured on the caller's
//! [`Clock`](verse_core::Clock) right before sending (`remaining_micros`); the callee enforces
//! it on its node's timing wheel, so method calls carry no `grpc-timeout` header (which would
//! make tonic's server arm a tokio timer per call). The client waits at most that long plus a
//! small grace (tokio time, at the network edge, swept by a [`Watchdog`] rather than a timer
//! per call, so within one sweep of 20 ms), so the callee's typed `DeadlineExceeded` normally
//! arrives first and a hung peer cannot hold a caller past its deadline. Creates,
//! deletes and the other RPCs also send the bound as their gRPC timeout. Failures are classified by
//! [`crate::status::classify`]: only errors that prove the call did not start may be resent.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Response, Status};
use tower_service::Service;
use verse_core::{CallError, CallerIdentity, EncodedMessage, MonoTime, SharedClock};

use crate::net::{BoxError, HyperConnector, TcpConnector};
use crate::proto::node_client::NodeClient as ProtocolClient;
use crate::status::{CallSite, classify};
use crate::watchdog::Watchdog;
use crate::{proto, wire};

/// Client settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// HTTP/2 keepalive ping interval.
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection counts as broken.
    pub keepalive_timeout: Duration,
    /// Longest wait for a connection to be established.
    pub connect_timeout: Duration,
    /// Added to the remaining time for the gRPC timeout and the client's own wait, so the
    /// callee's typed deadline error (sent at the deadline) wins the race.
    pub deadline_grace: Duration,
    /// Timeout of requests that carry no caller deadline (status, listing).
    pub default_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            deadline_grace: Duration::from_millis(100),
            default_timeout: Duration::from_secs(5),
        }
    }
}

/// A call to send to another node.
#[derive(Debug, Clone)]
pub struct OutgoingCall {
    /// Object type name.
    pub object_type: String,
    /// Object id.
    pub id: String,
    /// Method wire name.
    pub method: String,
    /// The encoded request.
    pub request: EncodedMessage,
    /// The caller's deadline, on the client's clock (the remaining time is measured from it
    /// when the call is sent).
    pub deadline: MonoTime,
    /// The awaited call chain, root first: `(object id, shard)` of each waiting object.
    pub chain: Vec<(String, u32)>,
    /// Who called.
    pub identity: Option<CallerIdentity>,
    /// The call id of a reliable call.
    pub call_id: Option<String>,
    /// One way (the response is empty; the callee answers once the call is queued).
    pub one_way: bool,
}

/// A node's status as another node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's node id.
    pub node_id: String,
    /// Its activation count.
    pub activations: u64,
}

type MakeChannel = Box<dyn Fn(Endpoint) -> Channel + Send + Sync>;

/// Clients of the node protocol, one HTTP/2 channel per peer address.
pub struct NodeClient {
    clock: SharedClock,
    config: ClientConfig,
    make_channel: MakeChannel,
    // A std mutex: held only to look up or insert a channel, never across an await.
    channels: Mutex<HashMap<String, Channel>>,
    /// Bounds each call's wait (no tokio timer per call).
    watchdog: Arc<Watchdog>,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient").field("config", &self.config).finish_non_exhaustive()
    }
}

impl NodeClient {
    /// A client over TCP ([`TcpConnector`]) with the default configuration, measuring
    /// deadlines on `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Self::with_connector(clock, ClientConfig::default(), TcpConnector)
    }

    /// A client over `connector`: a `tower` service from the peer's URI
    /// (`http://<peer address>`) to a connected byte stream.
    pub fn with_connector<C>(clock: SharedClock, config: ClientConfig, connector: C) -> Self
    where
        C: Service<Uri> + Clone + Send + Sync + 'static,
        C::Response: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        C::Future: Send + 'static,
        C::Error: Into<BoxError>,
    {
        let make_channel: MakeChannel = Box::new(move |endpoint: Endpoint| {
            endpoint.connect_with_connector_lazy(HyperConnector(connector.clone()))
        });
        NodeClient {
            clock,
            config,
            make_channel,
            channels: Mutex::new(HashMap::new()),
            watchdog: Watchdog::new(),
        }
    }

    fn channels(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The channel to `peer` (`host:port`), made on first use and reused afterwards. It
    /// connects lazily and reconnects after the connection breaks.
    pub fn channel(&self, peer: &str) -> Result<Channel, CallError> {
        if let Some(channel) = self.channels().get(peer) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{peer}"))
            .map_err(|e| CallError::NotDelivered {
                peer: peer.to_owned(),
                reason: format!("invalid peer address: {e}"),
            })?
            .http2_keep_alive_interval(self.config.keepalive_interval)
            .keep_alive_timeout(self.config.keepalive_timeout)
            .keep_alive_while_idle(true)
            .connect_timeout(self.config.connect_timeout);
        let mut channels = self.channels();
        let channel = channels
            .entry(peer.to_owned())
            .or_insert_with(|| (self.make_channel)(endpoint))
            .clone();
        Ok(channel)
    }

    /// Drops the channel to `peer` (e.g. when it left the cluster); calls in flight finish.
    pub fn forget(&self, peer: &str) {
        self.channels().remove(peer);
    }

    /// Number of peers with a channel.
    pub fn peer_count(&self) -> usize {
        self.channels().len()
    }

    /// Sends `call` to `peer` and waits for its response, at most until the call's deadline
    /// (plus the grace). Errors: the callee's typed error, or the transport's classification
    /// (`NotDelivered` when the call provably did not start, else `OutcomeUnknown` or
    /// `DeadlineExceeded`). Cancel safe in the sense that dropping the future cancels the
    /// HTTP/2 stream; whether the call ran is then unknown.
    pub async fn call(&self, peer: &str, call: OutgoingCall) -> Result<EncodedMessage, CallError> {
        let remaining = self.remaining(call.deadline, &call.id)?;
        let mut client = ProtocolClient::new(self.channel(peer)?);
        let id = call.id;
        let message = proto::CallRequest {
            object_type: call.object_type,
            object_id: id.clone(),
            method: call.method,
            request: Some(wire::payload_to(call.request)),
            remaining_micros: wire::micros(remaining),
            chain: call
                .chain
                .into_iter()
                .map(|(object_id, shard)| proto::ChainLink { object_id, shard })
                .collect(),
            identity: call.identity.map(wire::identity_to),
            call_id: call.call_id.unwrap_or_default(),
            one_way: call.one_way,
        };
        let budget = remaining + self.config.deadline_grace;
        // No `set_timeout`: the callee's wheel enforces `remaining_micros` (module docs).
        let request = Request::new(message);
        let response =
            self.finish(peer, &id, Some(call.deadline), budget, client.call(request)).await?;
        Ok(wire::payload_from(response.response))
    }

    /// Creates object `id` of `object_type` on `peer` (idempotent: safe to resend).
    pub async fn create(
        &self,
        peer: &str,
        object_type: &str,
        id: &str,
        deadline: MonoTime,
    ) -> Result<(), CallError> {
        let remaining = self.remaining(deadline, id)?;
        let mut client = ProtocolClient::new(self.channel(peer)?);
        let budget = remaining + self.config.deadline_grace;
        let mut request = Request::new(proto::CreateRequest {
            object_type: object_type.to_owned(),
            object_id: id.to_owned(),
            remaining_micros: wire::micros(remaining),
        });
        request.set_timeout(budget);
        self.finish(peer, id, Some(deadline), budget, client.create(request)).await?;
        Ok(())
    }

    /// Deletes object `id` of `object_type` on `peer` (idempotent: safe to resend).
    pub async fn delete(
        &self,
        peer: &str,
        object_type: &str,
        id: &str,
        deadline: MonoTime,
    ) -> Result<(), CallError> {
        let remaining = self.remaining(deadline, id)?;
        let mut client = ProtocolClient::new(self.channel(peer)?);
        let budget = remaining + self.config.deadline_grace;
        let mut request = Request::new(proto::DeleteRequest {
            object_type: object_type.to_owned(),
            object_id: id.to_owned(),
            remaining_micros: wire::micros(remaining),
        });
        request.set_timeout(budget);
        self.finish(peer, id, Some(deadline), budget, client.delete(request)).await?;
        Ok(())
    }

    /// The peer's node id and activation count.
    pub async fn status(&self, peer: &str) -> Result<PeerStatus, CallError> {
        let mut client = ProtocolClient::new(self.channel(peer)?);
        let budget = self.config.default_timeout;
        let mut request = Request::new(proto::StatusRequest {});
        request.set_timeout(budget);
        let status = self.finish(peer, "", None, budget, client.status(request)).await?;
        Ok(PeerStatus { node_id: status.node_id, activations: status.activations })
    }

    /// Up to `limit` activations of the peer as `(object type, object id)`, and whether more
    /// exist.
    pub async fn list_activations(
        &self,
        peer: &str,
        limit: u32,
    ) -> Result<(Vec<(String, String)>, bool), CallError> {
        let mut client = ProtocolClient::new(self.channel(peer)?);
        let budget = self.config.default_timeout;
        let mut request = Request::new(proto::ListActivationsRequest { limit });
        request.set_timeout(budget);
        let listed = self.finish(peer, "", None, budget, client.list_activations(request)).await?;
        let activations =
            listed.activations.into_iter().map(|a| (a.object_type, a.object_id)).collect();
        Ok((activations, listed.truncated))
    }

    /// The method table and message descriptors of `object_type` as `peer` registers it,
    /// within `deadline` (at most the default timeout). Errors: `UnknownType` when `peer`
    /// does not register the type, else the transport's classification.
    pub async fn describe_type(
        &self,
        peer: &str,
        object_type: &str,
        deadline: MonoTime,
    ) -> Result<proto::DescribeTypeResponse, CallError> {
        let remaining = self.remaining(deadline, object_type)?;
        let mut client = ProtocolClient::new(self.channel(peer)?);
        // The caller's deadline, unless the default timeout comes first (then a late answer
        // is the peer's failure, not the deadline's).
        let (bound, deadline) = if remaining <= self.config.default_timeout {
            (remaining, Some(deadline))
        } else {
            (self.config.default_timeout, None)
        };
        let budget = bound + self.config.deadline_grace;
        let mut request =
            Request::new(proto::DescribeTypeRequest { object_type: object_type.to_owned() });
        request.set_timeout(budget);
        self.finish(peer, object_type, deadline, budget, client.describe_type(request)).await
    }

    /// Opens the push stream of gateway `gateway_id` on `peer`.
    pub async fn open_push_stream(
        &self,
        peer: &str,
        gateway_id: &str,
    ) -> Result<tonic::Streaming<proto::PushMessage>, CallError> {
        let mut client = ProtocolClient::new(self.channel(peer)?);
        let request = proto::OpenPushStreamRequest { gateway_id: gateway_id.to_owned() };
        let budget = self.config.default_timeout;
        self.finish(peer, gateway_id, None, budget, client.open_push_stream(request)).await
    }

    fn remaining(&self, deadline: MonoTime, id: &str) -> Result<Duration, CallError> {
        let remaining = deadline.saturating_duration_since(self.clock.now());
        if remaining.is_zero() {
            return Err(CallError::DeadlineExceeded { id: id.to_owned() });
        }
        Ok(remaining)
    }

    async fn finish<T>(
        &self,
        peer: &str,
        id: &str,
        deadline: Option<MonoTime>,
        budget: Duration,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, CallError> {
        let call = std::pin::pin!(call);
        match self.watchdog.bound(budget, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => {
                let deadline_passed = deadline.is_some_and(|d| self.clock.now() >= d);
                Err(classify(&status, CallSite { peer, id, deadline_passed }))
            }
            // The deadline (with its grace) passed without an answer: the call may have run.
            Err(_) => match deadline {
                Some(_) => Err(CallError::DeadlineExceeded { id: id.to_owned() }),
                None => Err(CallError::OutcomeUnknown {
                    id: id.to_owned(),
                    reason: format!("no answer from {peer} within {budget:?}"),
                }),
            },
        }
    }
}

/// The core's [`Transport`](verse_core::Transport): remote calls, creates and deletes through
/// the pooled channels, classified by the retry rule as [`NodeClient::call`] documents.
#[async_trait::async_trait]
impl verse_core::Transport for NodeClient {
    async fn call(
        &self,
        peer: &str,
        call: verse_core::RemoteCall,
    ) -> Result<EncodedMessage, CallError> {
        let outgoing = OutgoingCall {
            object_type: call.object_type,
            id: call.id,
            method: call.method,
            request: call.request,
            deadline: call.deadline,
            chain: call.chain,
            identity: call.identity,
            call_id: None,
            one_way: call.one_way,
        };
        NodeClient::call(self, peer, outgoing).await
    }

    async fn create(
        &self,
        peer: &str,
        object_type: &str,
        id: &str,
        deadline: MonoTime,
    ) -> Result<(), CallError> {
        NodeClient::create(self, peer, object_type, id, deadline).await
    }

    async fn delete(
        &self,
        peer: &str,
        object_type: &str,
        id: &str,
        deadline: MonoTime,
    ) -> Result<(), CallError> {
        NodeClient::delete(self, peer, object_type, id, deadline).await
    }
}
