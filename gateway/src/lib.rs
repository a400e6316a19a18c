//! `verse-gateway`: the cluster member clients talk to.
//!
//! A gateway registers with the coordinator as a `Gateway` member (it keeps a lease, is never
//! a placement candidate and hosts no objects), follows the cluster view, and routes clients'
//! calls, creates and deletes to the owning node over `verse-transport` with the nodes' own
//! route choice and retry rule ([`verse_core::cluster::Router`]). It keeps one push stream
//! open to every live node and delivers pushes to client sessions ([`session`]).
//!
//! Its client API is GoVerse's `gate.GateService` over gRPC ([`grpc`], `proto/gate.proto`,
//! `client-protocol.md`), plus `RegisterWithResume`, and GoVerse's HTTP routes with
//! server-sent events ([`http`]), and Verse's JSON route `POST /v1/objects/{type}/{id}/{method}`
//! ([`transcode`]: protobuf JSON from the method tables and message descriptors the object
//! types register, learnt from nodes with `DescribeType` and cached by `catalog`); the wire
//! rules Verse adds are in `docs/PROTOCOL.md`. Errors map to gRPC statuses in one table
//! ([`status`]).
//!
//! Readiness ([`Gateway::readiness`]): the view is younger than `view_stale_after`, at least
//! one node is live, and the gateway is not stopping.

mod catalog;
pub mod client;
pub mod grpc;
pub mod http;
mod member;
pub mod session;
pub mod status;
pub mod transcode;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use verse_core::cluster::Router;
use verse_core::coordinator::Coordinator;
use verse_core::{CallError, MemberId, MonoTime, RandomSource, SharedClock};
use verse_transport::NodeClient;

use crate::catalog::Catalog;
use crate::member::{Member, ViewSeen};
use crate::session::{AllowAnonymous, AuthHook, Sessions};
use crate::transcode::TypeSchema;

/// The gate protocol (generated from `proto/gate.proto`, package `gate`).
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("gate");
}

/// How a non-empty `CallObjectRequest.client_id` is checked (`client-protocol.md`, binding
/// rules; `gateway.bind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bind {
    /// The session's `Register` stream is open on the call's HTTP/2 connection (the default;
    /// GoVerse's clients use one channel, hence one connection).
    #[default]
    Connection,
    /// The call authenticates (its metadata, through the [`session::AuthHook`]) as the
    /// session's principal, and the session is live: for gateways behind an L7 proxy, which
    /// spreads one client's calls over several connections.
    Principal,
}

/// How a gateway behaves. Numbers are defaults; tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// The gateway's member id (no `/`; it prefixes its client ids).
    pub gateway_id: String,
    /// The client-facing gRPC address recorded in its member record.
    pub address: String,
    /// Calls without a deadline get this one.
    pub default_deadline: Duration,
    /// Calls need a client session (no anonymous calls).
    pub require_session: bool,
    /// The gRPC binding rule of client ids ([`Bind`]).
    pub bind: Bind,
    /// Pushes kept per session (its queue and replay buffer; the oldest drop when full).
    pub session_buffer: usize,
    /// How long a disconnected session stays resumable.
    pub session_grace: Duration,
    /// Readiness needs a view (a watch event, progress included) younger than this.
    pub view_stale_after: Duration,
    /// How long registration waits for an earlier record of this id to expire.
    pub register_wait: Duration,
    /// An idle SSE stream gets a `heartbeat` event this often.
    pub heartbeat_interval: Duration,
    /// The largest HTTP request body read (bytes; 4 MiB): a larger call body is 400
    /// `INVALID_BODY`.
    pub http_body_limit: usize,
    /// The largest gRPC request message decoded (bytes; 4 MiB): a larger one is
    /// `OUT_OF_RANGE`.
    pub grpc_max_message: usize,
    /// Object types whose method tables and descriptors the JSON route keeps (256).
    pub type_cache_capacity: usize,
    /// How long a type learnt from a node is kept before it is asked again (60 s).
    pub type_cache_ttl: Duration,
    /// How long a type no node registers stays known as unknown (5 s).
    pub unknown_type_ttl: Duration,
}

impl GatewayConfig {
    /// Defaults for gateway `gateway_id` reachable at `address`.
    pub fn new(gateway_id: impl Into<String>, address: impl Into<String>) -> Self {
        GatewayConfig {
            gateway_id: gateway_id.into(),
            address: address.into(),
            default_deadline: Duration::from_secs(30),
            require_session: false,
            bind: Bind::Connection,
            session_buffer: 1024,
            session_grace: Duration::from_secs(30),
            view_stale_after: Duration::from_secs(10),
            register_wait: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(30),
            http_body_limit: 4 * 1024 * 1024,
            grpc_max_message: 4 * 1024 * 1024,
            type_cache_capacity: 256,
            type_cache_ttl: Duration::from_secs(60),
            unknown_type_ttl: Duration::from_secs(5),
        }
    }
}

/// Why a gateway could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration is invalid.
    #[error("invalid gateway configuration: {0}")]
    Config(String),
    /// Registration failed.
    #[error(transparent)]
    Coordinator(#[from] verse_core::CoordError),
    /// The gRPC server failed.
    #[error("gateway server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// What the service and the member tasks share.
pub(crate) struct GatewayShared {
    pub(crate) config: GatewayConfig,
    pub(crate) router: Arc<Router>,
    /// The node-protocol client (the router's transport; `DescribeType` for the catalog).
    pub(crate) client: Arc<NodeClient>,
    /// Object types learnt from nodes (the JSON route).
    pub(crate) catalog: Catalog,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) auth: Arc<dyn AuthHook>,
    pub(crate) clock: SharedClock,
    pub(crate) rng: RandomSource,
    pub(crate) stopping: CancellationToken,
    /// `verse_gateway_anonymous_calls_total`, resolved once (counted on every anonymous call).
    pub(crate) anonymous_calls: metrics::Counter,
    seen: Arc<ViewSeen>,
}

impl GatewayShared {
    /// Whether calls of `method` on `object_type` may be resent after an unknown outcome (the
    /// method is `#[idempotent]`), for the routes whose calls carry an `Any` and need no
    /// method table: read from the learnt types only, never waiting. A type not learnt yet
    /// counts as not idempotent (the safe answer) and is learnt in the background, so later
    /// calls know.
    pub(crate) fn idempotent(self: &Arc<Self>, object_type: &str, method: &str) -> bool {
        if let Some(idempotent) = self.catalog.idempotent(object_type, method, self.clock.now()) {
            return idempotent;
        }
        if !self.catalog.is_learning(object_type) {
            let shared = self.clone();
            let object_type = object_type.to_owned();
            tokio::spawn(async move {
                let deadline = shared.clock.now() + shared.config.default_deadline;
                if let Err(error) = shared.describe(&object_type, deadline).await {
                    tracing::debug!(%error, object_type, "learning a type in the background failed");
                }
            });
        }
        false
    }

    /// The method table and descriptors of `object_type`, cached or learnt from a live node
    /// (see `catalog`), within `deadline`.
    pub(crate) async fn describe(
        &self,
        object_type: &str,
        deadline: MonoTime,
    ) -> Result<Arc<TypeSchema>, CallError> {
        let peers: Vec<String> =
            self.router.live_nodes().into_iter().map(|(_, address)| address).collect();
        let client = &self.client;
        self.catalog
            .learn(
                object_type,
                || self.clock.now(),
                &peers,
                |peer| async move { client.describe_type(&peer, object_type, deadline).await },
            )
            .await
    }
}

impl std::fmt::Debug for GatewayShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayShared").field("config", &self.config).finish_non_exhaustive()
    }
}

/// A running gateway member (see the crate docs).
pub struct Gateway {
    shared: Arc<GatewayShared>,
    coordinator: Arc<dyn Coordinator>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// Builds a [`Gateway`].
pub struct GatewayBuilder {
    config: GatewayConfig,
    coordinator: Arc<dyn Coordinator>,
    clock: SharedClock,
    rng: Option<RandomSource>,
    auth: Arc<dyn AuthHook>,
    client: Option<Arc<NodeClient>>,
}

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder").field("config", &self.config).finish_non_exhaustive()
    }
}

impl GatewayBuilder {
    /// A builder for `config` joining through `coordinator`, on `clock`.
    pub fn new(
        config: GatewayConfig,
        coordinator: Arc<dyn Coordinator>,
        clock: SharedClock,
    ) -> Self {
        GatewayBuilder {
            config,
            coordinator,
            clock,
            rng: None,
            auth: Arc::new(AllowAnonymous),
            client: None,
        }
    }

    /// Injects the random source of client ids (default: the operating system's).
    pub fn rng(mut self, rng: RandomSource) -> Self {
        self.rng = Some(rng);
        self
    }

    /// Injects the authentication hook (default: [`AllowAnonymous`]).
    pub fn auth(mut self, auth: Arc<dyn AuthHook>) -> Self {
        self.auth = auth;
        self
    }

    /// Injects the node-protocol client (default: TCP).
    pub fn node_client(mut self, client: Arc<NodeClient>) -> Self {
        self.client = Some(client);
        self
    }

    /// Registers the gateway and starts its member tasks (view, lease, push streams, session
    /// sweeper). Serve clients with [`Gateway::serve`].
    ///
    /// Errors: [`GatewayError::Config`], the coordinator's (registration).
    pub async fn start(self) -> Result<Gateway, GatewayError> {
        let config = self.config;
        if config.gateway_id.is_empty() || config.gateway_id.contains('/') {
            return Err(GatewayError::Config("gateway_id must be non-empty without '/'".into()));
        }
        let rng = self.rng.unwrap_or_else(RandomSource::from_os);
        let client = self.client.unwrap_or_else(|| Arc::new(NodeClient::new(self.clock.clone())));
        let router = Arc::new(Router::new(
            MemberId::from(config.gateway_id.as_str()),
            client.clone(),
            self.coordinator.clone(),
            self.clock.clone(),
        ));
        let sessions = Arc::new(Sessions::new(
            &config.gateway_id,
            rng.fork(),
            config.session_buffer,
            config.session_grace,
        ));
        let seen = Arc::new(ViewSeen::default());
        let member = Arc::new(Member {
            id: config.gateway_id.clone(),
            address: config.address.clone(),
            coordinator: self.coordinator.clone(),
            router: router.clone(),
            client: client.clone(),
            sessions: sessions.clone(),
            clock: self.clock.clone(),
            seen: seen.clone(),
            register_wait: config.register_wait,
        });
        member.register().await?;
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (nodes_tx, nodes_rx) = watch::channel(Default::default());
        tasks.spawn(member.clone().keep_lease(cancel.clone()));
        tasks.spawn(member.clone().follow_view(nodes_tx, cancel.clone()));
        tasks.spawn(member.clone().push_streams(nodes_rx, cancel.clone()));
        tasks.spawn(member.sweep_sessions(cancel.clone()));
        let catalog = Catalog::new(
            config.type_cache_capacity,
            config.type_cache_ttl,
            config.unknown_type_ttl,
        );
        let shared = Arc::new(GatewayShared {
            config,
            router,
            client,
            catalog,
            sessions,
            auth: self.auth,
            clock: self.clock,
            rng,
            stopping: CancellationToken::new(),
            anonymous_calls: metrics::counter!("verse_gateway_anonymous_calls_total"),
            seen,
        });
        Ok(Gateway { shared, coordinator: self.coordinator, cancel, tasks })
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("id", &self.shared.config.gateway_id)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// The gateway's id.
    pub fn id(&self) -> &str {
        &self.shared.config.gateway_id
    }

    /// The tonic service (`gate.GateService`), to add to a server of the caller's own. The
    /// binding rule needs each connection tagged ([`grpc::TaggedIo`]); untagged connections
    /// can make anonymous calls only.
    pub fn grpc_service(&self) -> proto::gate_service_server::GateServiceServer<grpc::GateGrpc> {
        proto::gate_service_server::GateServiceServer::new(grpc::GateGrpc {
            shared: self.shared.clone(),
        })
        .max_decoding_message_size(self.shared.config.grpc_max_message)
    }

    /// Serves `gate.GateService` on connections from `incoming` (each tagged with a
    /// connection id) until `shutdown` completes; then stops accepting and answers the calls
    /// in flight (push streams end). HTTP/2 keepalive pings from clients are accepted.
    pub async fn serve<I, IO, F>(&self, incoming: I, shutdown: F) -> Result<(), GatewayError>
    where
        I: Stream<Item = io::Result<IO>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        F: Future<Output = ()> + Send,
    {
        let stopping = self.shared.stopping.clone();
        let signal = async move {
            shutdown.await;
            stopping.cancel();
        };
        let incoming = incoming.map(|io| io.map(grpc::TaggedIo::new));
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(self.grpc_service())
            .serve_with_incoming_shutdown(incoming, signal)
            .await?;
        Ok(())
    }

    /// The HTTP routes of GoVerse's protocol ([`http`]), to merge with the ops routes and
    /// serve with `axum::serve`.
    pub fn http_router(&self) -> axum::Router {
        http::router(self.shared.clone())
    }

    /// The gateway's readiness: `Ok` when the view is younger than `view_stale_after`, at
    /// least one node is live and the gateway is not stopping; else why not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.shared.stopping.is_cancelled() || self.cancel.is_cancelled() {
            return Err("stopping".into());
        }
        let now = self.shared.clock.now();
        if !self.shared.seen.current(now, self.shared.config.view_stale_after) {
            return Err("cluster view stale".into());
        }
        if self.shared.router.live_nodes().is_empty() {
            return Err("no live node".into());
        }
        Ok(())
    }

    /// Live sessions (connected or within their grace).
    pub fn sessions(&self) -> usize {
        self.shared.sessions.len()
    }

    /// Turns unready and refuses new calls (`UNAVAILABLE`); serving continues until the
    /// server's shutdown signal.
    pub fn stop_accepting(&self) {
        self.shared.stopping.cancel();
    }

    /// Stops the member tasks and deregisters (the record and lease go). Stop the server
    /// first.
    pub async fn shutdown(&self) {
        self.shared.stopping.cancel();
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Err(error) = self.coordinator.deregister().await {
            tracing::warn!(%error, "gateway deregistration failed; the lease will expire");
        }
    }
}
