//! The Rust gateway client: a program outside the cluster calls objects through one or more
//! gateways over `gate.GateService` with the same typed references as inside the cluster
//! (`client.get::<Counter>(id).increment(req)`), and receives its session's pushes.
//!
//! The client is a [`RemoteBackend`] of [`RawRef`]: the references `#[verse::object]`
//! generates call through it unchanged (each call becomes a `CallObject` with the method's
//! wire name and the request packed in `Any`). Failures come back as the [`CallError`] the
//! gateway's status stands for ([`crate::status::call_error`], the inverse of its table).
//!
//! One background task keeps the session: it opens one HTTP/2 connection to a gateway, opens
//! `RegisterWithResume` on it (calls carry the session's client id on the same connection, as
//! the binding rule requires) and forwards pushes to [`Pushes`] in order. When the stream or
//! the connection ends it reconnects with exponential backoff: first to the same gateway,
//! resuming the session with the last sequence number it received (pushes buffered by the
//! gateway meanwhile are replayed, none twice), then rotating over the other gateways (a
//! session lives on one gateway, so another gateway opens a new session; pushes of the old
//! one are lost and the new client id is reported by [`GatewayClient::client_id`]).
//!
//! Calls are never resent by the client, with one exception that provably did not start: a
//! call refused by the binding rule because the connection changed under it is sent again on
//! the new connection.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use prost::Message;
use prost_types::Any;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::metadata::{Ascii, MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use verse_core::{CallError, EncodedMessage, Object, RawRef, RemoteBackend, RemoteFuture};

use crate::grpc::NOT_BOUND;
use crate::proto::gate_service_client::GateServiceClient;
use crate::proto::{
    CallObjectRequest, CreateObjectRequest, DeleteObjectRequest, RegisterResponse, ResumeRequest,
};
use crate::status::{CallSite, call_error};

/// How a [`GatewayClient`] connects, calls and reconnects.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Gateway gRPC addresses (`host:port`, or `http://host:port`), tried in order.
    pub gateways: Vec<String>,
    /// Bound on connecting and registering with one gateway.
    pub connect_timeout: Duration,
    /// Deadline of each call, create and delete (sent as `grpc-timeout`); also how long a call
    /// waits for a connection while the client reconnects.
    pub call_timeout: Duration,
    /// First reconnection delay; doubled after each failed attempt.
    pub backoff_initial: Duration,
    /// Longest reconnection delay.
    pub backoff_max: Duration,
    /// Pushes held for the application before the client stops reading the stream (the
    /// gateway's bounded session queue then applies its overflow policy).
    pub push_buffer: usize,
    /// gRPC metadata sent with every request, for the gateway's authentication hook (for
    /// example `("authorization", "Bearer …")`). Keys are lowercase ASCII; values ASCII.
    pub headers: Vec<(String, String)>,
}

impl ClientConfig {
    /// Defaults for these gateways.
    pub fn new<I, S>(gateways: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientConfig {
            gateways: gateways.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            push_buffer: 1024,
            headers: Vec::new(),
        }
    }
}

/// Why [`GatewayClient::connect`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The configuration names no gateway.
    #[error("no gateway address given")]
    NoGateway,
    /// A gateway address is not a valid URI.
    #[error("invalid gateway address {address:?}: {reason}")]
    InvalidAddress {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// A header is not valid gRPC ASCII metadata.
    #[error("invalid header {key:?}: {reason}")]
    InvalidHeader {
        /// The header's key.
        key: String,
        /// Why.
        reason: String,
    },
    /// No gateway accepted a session within the connect timeout (unreachable, or its
    /// authentication hook refused the headers).
    #[error("no gateway reachable within {0:?}")]
    Unreachable(Duration),
}

/// A push the session received: its sequence number (1, 2, … within a session) and the
/// message as the object sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Sequence number within the session.
    pub seq: u64,
    /// The pushed message.
    pub message: EncodedMessage,
}

impl Push {
    /// Decodes the message as `M`, checking its type name.
    pub fn unpack<M: prost::Message + prost::Name + Default>(&self) -> Result<M, CallError> {
        self.message.unpack()
    }
}

/// The session's pushes, in order, across reconnections; ends when the client shuts down.
#[derive(Debug)]
pub struct Pushes(mpsc::Receiver<Push>);

impl Pushes {
    /// The next push (`None` once the client has shut down).
    pub async fn next(&mut self) -> Option<Push> {
        self.0.recv().await
    }
}

impl Stream for Pushes {
    type Item = Push;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Push>> {
        self.0.poll_recv(cx)
    }
}

/// The current connection and the session bound to it.
#[derive(Clone)]
struct Link {
    grpc: GateServiceClient<Channel>,
    client_id: Arc<str>,
    gateway: Arc<str>,
    /// Increases with every new connection.
    generation: u64,
}

struct Shared {
    config: ClientConfig,
    metadata: MetadataMap,
    link: watch::Receiver<Option<Link>>,
    stop: CancellationToken,
    pushes: Mutex<Option<Pushes>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A client of Verse gateways (see the module docs). Cheap to clone; the session ends when
/// the last clone and the last reference made from it are dropped, or at
/// [`GatewayClient::shutdown`].
#[derive(Clone)]
pub struct GatewayClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayClient")
            .field("gateways", &self.shared.config.gateways)
            .field("client_id", &self.client_id())
            .finish()
    }
}

fn metadata(headers: &[(String, String)]) -> Result<MetadataMap, ClientError> {
    let mut map = MetadataMap::new();
    for (key, value) in headers {
        let invalid = |reason: String| ClientError::InvalidHeader { key: key.clone(), reason };
        let name =
            MetadataKey::<Ascii>::from_bytes(key.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let value =
            MetadataValue::<Ascii>::try_from(value.as_str()).map_err(|e| invalid(e.to_string()))?;
        map.append(name, value);
    }
    Ok(map)
}

/// A request carrying the configured metadata and a deadline.
fn outgoing<T>(message: T, metadata: &MetadataMap, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    *request.metadata_mut() = metadata.clone();
    request.set_timeout(timeout);
    request
}

fn endpoint(address: &str) -> Result<Endpoint, ClientError> {
    let uri =
        if address.contains("://") { address.to_owned() } else { format!("http://{address}") };
    Endpoint::from_shared(uri).map_err(|e| ClientError::InvalidAddress {
        address: address.to_owned(),
        reason: e.to_string(),
    })
}

impl GatewayClient {
    /// Connects to the first gateway that accepts a session (trying them in order, with
    /// backoff) and returns once the session is open, or fails after `connect_timeout` per
    /// gateway.
    pub async fn connect(config: ClientConfig) -> Result<GatewayClient, ClientError> {
        if config.gateways.is_empty() {
            return Err(ClientError::NoGateway);
        }
        let endpoints = config
            .gateways
            .iter()
            .map(|address| endpoint(address))
            .collect::<Result<Vec<_>, _>>()?;
        let metadata = metadata(&config.headers)?;
        let (link_tx, link_rx) = watch::channel(None);
        let (push_tx, push_rx) = mpsc::channel(config.push_buffer.max(1));
        let stop = CancellationToken::new();
        let task = SessionTask {
            config: config.clone(),
            endpoints,
            metadata: metadata.clone(),
            link: link_tx,
            pushes: push_tx,
            stop: stop.clone(),
        };
        tokio::spawn(task.run());
        let bound = config.connect_timeout * u32::try_from(config.gateways.len()).unwrap_or(1);
        let client = GatewayClient {
            shared: Arc::new(Shared {
                config,
                metadata,
                link: link_rx,
                stop,
                pushes: Mutex::new(Some(Pushes(push_rx))),
            }),
        };
        match client.shared.wait_link(0, Instant::now() + bound).await {
            Some(_) => Ok(client),
            None => Err(ClientError::Unreachable(bound)),
        }
    }

    /// A typed reference to object `id` of type `T`, calling through the gateways.
    pub fn get<T: Object>(&self, id: impl Into<String>) -> T::Ref {
        T::Ref::from(self.raw(T::TYPE_NAME, id))
    }

    /// An untyped reference (the dynamic path: calls by wire name).
    pub fn raw(&self, object_type: &str, id: impl Into<String>) -> RawRef {
        RawRef::remote(self.shared.clone(), object_type, id)
    }

    /// Creates object `id` of `object_type` (`CreateObject`).
    pub async fn create(&self, object_type: &str, id: &str) -> Result<(), CallError> {
        let site = CallSite { object_type, id, method: "" };
        self.shared
            .unary(site, |mut grpc, metadata, timeout| async move {
                let create =
                    CreateObjectRequest { r#type: object_type.to_owned(), id: id.to_owned() };
                grpc.create_object(outgoing(create, &metadata, timeout)).await.map(drop)
            })
            .await
    }

    /// Deletes object `id` of `object_type` (`DeleteObject`).
    pub async fn delete(&self, object_type: &str, id: &str) -> Result<(), CallError> {
        let site = CallSite { object_type, id, method: "" };
        self.shared
            .unary(site, |mut grpc, metadata, timeout| async move {
                let delete =
                    DeleteObjectRequest { r#type: object_type.to_owned(), id: id.to_owned() };
                grpc.delete_object(outgoing(delete, &metadata, timeout)).await.map(drop)
            })
            .await
    }

    /// The session's pushes; `None` after the first call (there is one consumer).
    pub fn pushes(&self) -> Option<Pushes> {
        self.shared.pushes.lock().expect("pushes lock poisoned").take()
    }

    /// The current session's client id (`None` while reconnecting).
    pub fn client_id(&self) -> Option<String> {
        self.shared.link.borrow().as_ref().map(|link| link.client_id.to_string())
    }

    /// The gateway the client is connected to (`None` while reconnecting).
    pub fn gateway(&self) -> Option<String> {
        self.shared.link.borrow().as_ref().map(|link| link.gateway.to_string())
    }

    /// Waits until the client has a session, up to `within`; returns its client id.
    pub async fn connected(&self, within: Duration) -> Option<String> {
        let link = self.shared.wait_link(0, Instant::now() + within).await?;
        Some(link.client_id.to_string())
    }

    /// Ends the session's stream and stops reconnecting; calls fail from now on.
    pub fn shutdown(&self) {
        self.shared.stop.cancel();
    }
}

impl Shared {
    /// The first link newer than `after_generation`, or `None` at `until` or on shutdown.
    async fn wait_link(&self, after_generation: u64, until: Instant) -> Option<Link> {
        let mut link = self.link.clone();
        let wait = link.wait_for(|l| l.as_ref().is_some_and(|l| l.generation > after_generation));
        tokio::select! {
            // Shutdown wins over a link still published.
            biased;
            () = self.stop.cancelled() => None,
            found = tokio::time::timeout_at(until, wait) => match found {
                Ok(Ok(found)) => found.clone(),
                _ => None,
            },
        }
    }

    /// Runs one unary RPC on the current connection; resends it once per new connection when
    /// the binding rule refused it (it did not start).
    async fn unary<'a, F, Fut>(&self, site: CallSite<'a>, rpc: F) -> Result<(), CallError>
    where
        F: Fn(GateServiceClient<Channel>, MetadataMap, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<(), tonic::Status>>,
    {
        let metadata = &self.metadata;
        self.with_link(site, |link, timeout| rpc(link.grpc.clone(), metadata.clone(), timeout))
            .await
    }

    async fn with_link<'a, T, F, Fut>(&self, site: CallSite<'a>, rpc: F) -> Result<T, CallError>
    where
        F: Fn(&Link, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + self.config.call_timeout;
        let mut after = 0;
        loop {
            let Some(link) = self.wait_link(after, deadline).await else {
                return Err(if self.stop.is_cancelled() {
                    CallError::ShuttingDown
                } else {
                    CallError::NotDelivered {
                        peer: self.config.gateways.join(","),
                        reason: "no gateway session".into(),
                    }
                });
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            match rpc(&link, remaining.max(Duration::from_millis(1))).await {
                Ok(value) => return Ok(value),
                Err(status)
                    if status.code() == Code::PermissionDenied && status.message() == NOT_BOUND =>
                {
                    // The connection changed under the call; it did not start.
                    after = link.generation;
                }
                Err(status) => return Err(call_error(&status, site, &link.gateway)),
            }
        }
    }
}

impl RemoteBackend for Shared {
    fn call<'a>(
        &'a self,
        object_type: &'a str,
        id: &'a str,
        method: &'a str,
        request: EncodedMessage,
    ) -> RemoteFuture<'a> {
        Box::pin(async move {
            let site = CallSite { object_type, id, method };
            let any = Any { type_url: request.type_url, value: request.value.to_vec() };
            let response = self
                .with_link(site, |link, timeout| {
                    let mut grpc = link.grpc.clone();
                    let call = CallObjectRequest {
                        client_id: link.client_id.to_string(),
                        r#type: object_type.to_owned(),
                        id: id.to_owned(),
                        method: method.to_owned(),
                        request: Some(any.clone()),
                    };
                    let call = outgoing(call, &self.metadata, timeout);
                    async move { grpc.call_object(call).await }
                })
                .await?;
            let any = response.into_inner().response.ok_or_else(|| CallError::InvalidArgument {
                message: "the gateway answered without a response message".into(),
            })?;
            Ok(EncodedMessage { type_url: any.type_url, value: any.value.into() })
        })
    }
}

/// How one connection ended.
enum Ended {
    /// Registered, then the stream ended: retry the same gateway first.
    AfterSession,
    /// Could not connect or register.
    Failed,
    /// Shutdown.
    Stopped,
}

/// The session as the background task keeps it.
struct SessionState {
    client_id: String,
    last_seq: u64,
    generation: u64,
}

/// The background task keeping the session.
struct SessionTask {
    config: ClientConfig,
    endpoints: Vec<Endpoint>,
    metadata: MetadataMap,
    link: watch::Sender<Option<Link>>,
    pushes: mpsc::Sender<Push>,
    stop: CancellationToken,
}

impl SessionTask {
    async fn run(self) {
        let mut state = SessionState { client_id: String::new(), last_seq: 0, generation: 0 };
        let mut index = 0;
        let mut backoff = self.config.backoff_initial;
        loop {
            let ended = tokio::select! {
                ended = self.session(index, &mut state) => ended,
                () = self.stop.cancelled() => Ended::Stopped,
            };
            self.link.send_replace(None);
            let delay = match ended {
                Ended::Stopped => return,
                // Retry the same gateway (the session is resumable only there), after a short
                // pause so a gateway that ends streams at once is not hammered.
                Ended::AfterSession => {
                    backoff = self.config.backoff_initial;
                    backoff
                }
                Ended::Failed => {
                    index = (index + 1) % self.endpoints.len();
                    let delay = backoff;
                    backoff = (backoff * 2).min(self.config.backoff_max);
                    delay
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.stop.cancelled() => return,
            }
        }
    }

    /// One connection: connect, register (resuming), publish the link, forward pushes until
    /// the stream ends.
    async fn session(&self, index: usize, state: &mut SessionState) -> Ended {
        let config = &self.config;
        let endpoint = self.endpoints[index].clone().connect_timeout(config.connect_timeout);
        let gateway: Arc<str> = Arc::from(endpoint.uri().to_string());
        let registered = tokio::time::timeout(config.connect_timeout, async {
            let channel = endpoint.connect().await.ok()?;
            let mut grpc = GateServiceClient::new(channel);
            let resume =
                ResumeRequest { client_id: state.client_id.clone(), last_seq: state.last_seq };
            let mut register = tonic::Request::new(resume);
            *register.metadata_mut() = self.metadata.clone();
            let mut stream = grpc.register_with_resume(register).await.ok()?.into_inner();
            let first = stream.next().await?.ok()?;
            let id = RegisterResponse::decode(first.item?.value.as_slice()).ok()?.client_id;
            Some((grpc, stream, id))
        })
        .await;
        let Ok(Some((grpc, mut stream, client_id))) = registered else {
            tracing::debug!(%gateway, "gateway client: connection or registration failed");
            return Ended::Failed;
        };
        if client_id != state.client_id {
            if !state.client_id.is_empty() {
                tracing::warn!(%gateway, "gateway client: session not resumable; a new one began");
            }
            state.client_id = client_id.clone();
            state.last_seq = 0;
        }
        state.generation += 1;
        self.link.send_replace(Some(Link {
            grpc,
            client_id: Arc::from(client_id),
            gateway: gateway.clone(),
            generation: state.generation,
        }));
        while let Some(item) = stream.next().await {
            let Ok(item) = item else { break };
            if item.seq <= state.last_seq {
                continue;
            }
            state.last_seq = item.seq;
            let Some(any) = item.item else { continue };
            let push = Push {
                seq: item.seq,
                message: EncodedMessage { type_url: any.type_url, value: any.value.into() },
            };
            tokio::select! {
                // The application dropped its `Pushes`: keep the session, drop the pushes.
                _ = self.pushes.send(push) => {}
                () = self.stop.cancelled() => return Ended::Stopped,
            }
        }
        Ended::AfterSession
    }
}
