//! [`VoterServer`]: what every voter serves over gRPC — Raft RPC for the other voters, and the
//! coordinator service (proposals, reads, watch, membership) for members that are not voters
//! and for voters forwarding to the Raft leader — over an injected stream of connections.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use verse_core::coordinator::CoordError;

use crate::command::Command;
use crate::net::ServerIo;
use crate::proto;
use crate::proto::coordinator_server::{Coordinator, CoordinatorServer};
use crate::proto::raft_server::{Raft as RaftProtocol, RaftServer};
use crate::types::{NodeId, TypeConfig};
use crate::voter::{RaftVoter, VoterInner};
use crate::wire::{self, AnswerRec, ErrorRec, MembershipChange, QueryRec};

/// The server failed (not a request error: those travel in the answers).
#[derive(Debug, thiserror::Error)]
#[error("coordinator server failed: {0}")]
pub struct ServeError(#[from] tonic::transport::Error);

/// Serves one voter's Raft RPC and coordinator service.
#[derive(Clone)]
pub struct VoterServer {
    voter: Arc<VoterInner>,
    max_message_bytes: usize,
    stop: CancellationToken,
}

impl std::fmt::Debug for VoterServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoterServer").finish_non_exhaustive()
    }
}

impl VoterServer {
    /// A server for `voter`, accepting messages up to 64 MiB.
    pub fn new(voter: &RaftVoter) -> Self {
        VoterServer {
            voter: Arc::clone(voter.inner()),
            max_message_bytes: 64 << 20,
            stop: CancellationToken::new(),
        }
    }

    /// Sets the largest message accepted or sent (keep it equal to the clients'
    /// `GrpcConfig::max_message_bytes`).
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Serves connections from `incoming` until `shutdown` completes; then ends the watch
    /// streams, stops accepting, and returns once every request in flight is answered. Errors
    /// of single accepts are skipped.
    pub async fn serve<I, IO, F>(self, incoming: I, shutdown: F) -> Result<(), ServeError>
    where
        I: Stream<Item = io::Result<IO>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        F: Future<Output = ()> + Send,
    {
        let stop = self.stop.clone();
        let signal = async move {
            shutdown.await;
            // Watch streams never end by themselves: end them, or draining would wait forever.
            stop.cancel();
        };
        let limit = self.max_message_bytes;
        let raft = RaftServer::new(RaftService { voter: Arc::clone(&self.voter) })
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        let coordinator = CoordinatorServer::new(CoordinatorService {
            voter: Arc::clone(&self.voter),
            stop: self.stop.clone(),
        })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
        tonic::transport::Server::builder()
            .add_service(raft)
            .add_service(coordinator)
            .serve_with_incoming_shutdown(incoming.map(|io| io.map(ServerIo)), signal)
            .await?;
        Ok(())
    }
}

fn json<T: Serialize>(value: &T) -> Result<Response<proto::Json>, Status> {
    let json = wire::encode(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(proto::Json { json }))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    wire::decode(bytes).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn forwards(hops: u32) -> u8 {
    u8::try_from(hops).unwrap_or(u8::MAX)
}

/// Raft RPC: the request and the answer are openraft's own types.
struct RaftService {
    voter: Arc<VoterInner>,
}

#[tonic::async_trait]
impl RaftProtocol for RaftService {
    async fn append_entries(
        &self,
        request: Request<proto::Json>,
    ) -> Result<Response<proto::Json>, Status> {
        let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> =
            decode(&request.into_inner().json)?;
        json(&self.voter.raft().append_entries(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<proto::Json>,
    ) -> Result<Response<proto::Json>, Status> {
        let rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> =
            decode(&request.into_inner().json)?;
        json(&self.voter.raft().install_snapshot(rpc).await)
    }

    async fn vote(&self, request: Request<proto::Json>) -> Result<Response<proto::Json>, Status> {
        let rpc: openraft::raft::VoteRequest<NodeId> = decode(&request.into_inner().json)?;
        json(&self.voter.raft().vote(rpc).await)
    }
}

/// The coordinator service of one voter.
struct CoordinatorService {
    voter: Arc<VoterInner>,
    stop: CancellationToken,
}

type WatchResponseStream = Pin<Box<dyn Stream<Item = Result<proto::Json, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn propose(
        &self,
        request: Request<proto::Forwarded>,
    ) -> Result<Response<proto::Json>, Status> {
        let request = request.into_inner();
        let command: Command = decode(&request.json)?;
        if matches!(command, Command::Tick) {
            return Err(Status::invalid_argument("only the Raft leader proposes ticks"));
        }
        let reply = self.voter.propose(command, forwards(request.forwards)).await;
        json(&reply.map_err(ErrorRec::from))
    }

    async fn query(
        &self,
        request: Request<proto::Forwarded>,
    ) -> Result<Response<proto::Json>, Status> {
        let request = request.into_inner();
        let query: QueryRec = decode(&request.json)?;
        let answer: Result<AnswerRec, CoordError> =
            self.voter.query(query, forwards(request.forwards)).await;
        json(&answer.map_err(ErrorRec::from))
    }

    type WatchStream = WatchResponseStream;

    async fn watch(
        &self,
        request: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let from = request.into_inner().from_revision;
        let events =
            self.voter.watch_records(from).take_until(self.stop.clone().cancelled_owned()).map(
                |event| {
                    let event = event.map_err(ErrorRec::from);
                    wire::encode(&event)
                        .map(|json| proto::Json { json })
                        .map_err(|e| Status::internal(e.to_string()))
                },
            );
        Ok(Response::new(Box::pin(events)))
    }

    async fn change_membership(
        &self,
        request: Request<proto::Forwarded>,
    ) -> Result<Response<proto::Json>, Status> {
        let request = request.into_inner();
        let change: MembershipChange = decode(&request.json)?;
        json(&self.voter.change_membership(change, forwards(request.forwards)).await)
    }

    async fn membership(
        &self,
        _request: Request<proto::Json>,
    ) -> Result<Response<proto::Json>, Status> {
        json(&self.voter.membership_view())
    }
}
