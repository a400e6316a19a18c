//! The node's gRPC server: the node protocol served from a [`verse_core::Node`], over an
//! injected stream of incoming connections, with graceful shutdown.
//!
//! Graceful shutdown answers every admitted call: when the shutdown signal fires the server
//! stops accepting connections, sends GOAWAY on each (so clients send new calls elsewhere or
//! reconnect), ends the push streams, and returns once every call in flight has its response.
//! Shut the node down only after [`NodeServer::serve`] has returned.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::{Request, Response, Status};
use verse_core::{CallError, Node};

use crate::net::ServerIo;
use crate::proto::node_server::{Node as NodeProtocol, NodeServer as ProtocolServer};
use crate::push::{PushError, PushHub};
use crate::status::to_status;
use crate::{proto, wire};

/// Server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// HTTP/2 keepalive ping interval (`None`: no pings from the server).
    pub keepalive_interval: Option<Duration>,
    /// How long a keepalive ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Concurrent calls per connection (HTTP/2 streams); more wait in the client.
    pub max_concurrent_streams: u32,
    /// Most activations one `ListActivations` returns.
    pub list_limit: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            keepalive_interval: Some(Duration::from_secs(10)),
            keepalive_timeout: Duration::from_secs(20),
            max_concurrent_streams: 1024,
            list_limit: 10_000,
        }
    }
}

/// The server failed (not a call error: those travel as statuses).
#[derive(Debug, thiserror::Error)]
#[error("node server failed: {0}")]
pub struct ServeError(#[from] tonic::transport::Error);

/// Serves the node protocol for one node.
#[derive(Debug, Clone)]
pub struct NodeServer {
    service: NodeService,
    config: ServerConfig,
}

impl NodeServer {
    /// A server for `node` with the default configuration and a new push hub.
    pub fn new(node: Arc<Node>) -> Self {
        NodeServer {
            service: NodeService { node, push: PushHub::default(), list_limit: 10_000 },
            config: ServerConfig::default(),
        }
    }

    /// Replaces the configuration.
    pub fn with_config(mut self, config: ServerConfig) -> Self {
        self.service.list_limit = config.list_limit;
        self.config = config;
        self
    }

    /// Uses `hub` for push streams (to share it with the code that pushes).
    pub fn with_push_hub(mut self, hub: PushHub) -> Self {
        self.service.push = hub;
        self
    }

    /// The push hub gateways' streams register in.
    pub fn push_hub(&self) -> &PushHub {
        &self.service.push
    }

    /// The tonic service, to be added to a server of the caller's own.
    pub fn service(&self) -> ProtocolServer<NodeService> {
        ProtocolServer::new(self.service.clone())
    }

    /// Serves connections from `incoming` until `shutdown` completes, then shuts down
    /// gracefully: returns once every admitted call has been answered (see the module docs).
    /// Errors of single accepts are skipped.
    pub async fn serve<I, IO, F>(self, incoming: I, shutdown: F) -> Result<(), ServeError>
    where
        I: Stream<Item = io::Result<IO>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        F: Future<Output = ()> + Send,
    {
        let hub = self.service.push.clone();
        let signal = async move {
            shutdown.await;
            // Push streams never end by themselves: end them, or draining would wait forever.
            hub.close();
        };
        let incoming = incoming.map(|io| io.map(ServerIo));
        let config = &self.config;
        tonic::transport::Server::builder()
            .http2_keepalive_interval(config.keepalive_interval)
            .http2_keepalive_timeout(Some(config.keepalive_timeout))
            .max_concurrent_streams(Some(config.max_concurrent_streams))
            .add_service(self.service())
            .serve_with_incoming_shutdown(incoming, signal)
            .await?;
        Ok(())
    }
}

/// The node protocol's handlers (the tonic service around a node).
#[derive(Debug, Clone)]
pub struct NodeService {
    node: Arc<Node>,
    push: PushHub,
    list_limit: usize,
}

type PushResponseStream = Pin<Box<dyn Stream<Item = Result<proto::PushMessage, Status>> + Send>>;

#[tonic::async_trait]
impl NodeProtocol for NodeService {
    async fn call(
        &self,
        request: Request<proto::CallRequest>,
    ) -> Result<Response<proto::CallResponse>, Status> {
        let call = wire::incoming_call(request.into_inner()).map_err(|e| to_status(&e))?;
        match self.node.serve_incoming(call).await {
            Ok(response) => Ok(Response::new(proto::CallResponse {
                response: Some(wire::payload_to(response)),
            })),
            Err(error) => Err(to_status(&error)),
        }
    }

    async fn create(
        &self,
        request: Request<proto::CreateRequest>,
    ) -> Result<Response<proto::CreateResponse>, Status> {
        let request = request.into_inner();
        let create = self.node.serve_create(&request.object_type, &request.object_id);
        match within(request.remaining_micros, &request.object_id, create).await {
            Ok(()) => Ok(Response::new(proto::CreateResponse {})),
            Err(error) => Err(to_status(&error)),
        }
    }

    async fn delete(
        &self,
        request: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        let request = request.into_inner();
        let delete = self.node.serve_delete(&request.object_type, &request.object_id);
        match within(request.remaining_micros, &request.object_id, delete).await {
            Ok(()) => Ok(Response::new(proto::DeleteResponse {})),
            Err(error) => Err(to_status(&error)),
        }
    }

    type OpenPushStreamStream = PushResponseStream;

    async fn open_push_stream(
        &self,
        request: Request<proto::OpenPushStreamRequest>,
    ) -> Result<Response<Self::OpenPushStreamStream>, Status> {
        let gateway_id = request.into_inner().gateway_id;
        if gateway_id.is_empty() {
            return Err(Status::invalid_argument("a push stream names its gateway"));
        }
        match self.push.register(&gateway_id) {
            Ok(stream) => Ok(Response::new(Box::pin(stream.map(Ok)))),
            Err(PushError::Closed) => Err(Status::unavailable("the node is shutting down")),
            Err(other) => Err(Status::internal(other.to_string())),
        }
    }

    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        Ok(Response::new(proto::StatusResponse {
            node_id: self.node.id().to_owned(),
            activations: self.node.activation_count() as u64,
        }))
    }

    async fn list_activations(
        &self,
        request: Request<proto::ListActivationsRequest>,
    ) -> Result<Response<proto::ListActivationsResponse>, Status> {
        let asked = request.into_inner().limit as usize;
        let limit = if asked == 0 { self.list_limit } else { asked.min(self.list_limit) };
        // One more than asked tells whether the list was cut.
        let mut listed = self.node.activations(limit.saturating_add(1));
        let truncated = listed.len() > limit;
        listed.truncate(limit);
        let activations = listed
            .into_iter()
            .map(|(object_type, object_id)| proto::Activation { object_type, object_id })
            .collect();
        Ok(Response::new(proto::ListActivationsResponse { activations, truncated }))
    }

    async fn describe_type(
        &self,
        request: Request<proto::DescribeTypeRequest>,
    ) -> Result<Response<proto::DescribeTypeResponse>, Status> {
        describe(&self.node, &request.into_inner().object_type).map(Response::new)
    }
}

/// The `DescribeType` answer for `object_type` (an `UnknownType` status when it is not
/// registered on `node`).
fn describe(node: &Node, object_type: &str) -> Result<proto::DescribeTypeResponse, Status> {
    let Some(description) = node.describe_type(object_type) else {
        return Err(to_status(&CallError::UnknownType { object_type: object_type.to_owned() }));
    };
    let methods = description
        .methods
        .iter()
        .map(|method| proto::MethodDescription {
            name: method.name.to_owned(),
            request_type: method.request_type.clone(),
            response_type: method.response_type.clone(),
            idempotent: method.idempotent,
        })
        .collect();
    Ok(proto::DescribeTypeResponse {
        object_type: description.name.to_owned(),
        methods,
        file_descriptor_set: bytes::Bytes::from_static(description.file_descriptor_set),
    })
}

/// Bounds a create or delete by the caller's remaining time (0: the node's default deadline
/// only). The node's own control path has no per-call deadline yet, so this uses tokio time at
/// the network edge; both operations are idempotent, so giving up on one early is harmless.
async fn within(
    remaining_micros: u64,
    id: &str,
    operation: impl Future<Output = Result<(), CallError>>,
) -> Result<(), CallError> {
    if remaining_micros == 0 {
        return operation.await;
    }
    tokio::time::timeout(Duration::from_micros(remaining_micros), operation)
        .await
        .unwrap_or_else(|_| Err(CallError::DeadlineExceeded { id: id.to_owned() }))
}
