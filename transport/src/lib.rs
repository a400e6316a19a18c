//! `verse-transport`: the node protocol over gRPC (tonic).
//!
//! - [`proto`]: the protocol's messages and service (`proto/node.proto`, package
//!   `verse.node.v1`);
//! - [`NodeServer`]: serves a [`verse_core::Node`] over an injected stream of connections, with
//!   graceful shutdown that answers every admitted call;
//! - [`NodeClient`]: pooled clients (one HTTP/2 channel per peer) over an injected connector,
//!   carrying the remaining deadline, the call chain and the caller identity;
//! - [`status`]: the one table mapping [`verse_core::CallError`] to gRPC statuses and back, and
//!   the retry rule's classification of transport failures;
//! - [`PushHub`]: bounded queues behind the gateways' push streams;
//! - [`net`]: the default tokio TCP listener and connector (the only use of `tokio::net`).

pub mod client;
pub mod net;
pub mod push;
pub mod server;
pub mod status;
mod watchdog;
mod wire;

/// The node protocol (generated from `proto/node.proto`).
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("verse.node.v1");
}

pub use client::{ClientConfig, NodeClient, OutgoingCall, PeerStatus};
pub use net::{TcpConnector, TcpIncoming};
pub use push::{PushError, PushHub, PushStream};
pub use server::{NodeServer, NodeService, ServeError, ServerConfig};
