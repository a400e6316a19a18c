//! The embedded Raft coordinator: a [`verse_core::Coordinator`] on an openraft group whose log
//! and state machine live on redb.
//!
//! - [`state`]: the replicated state machine (pure, deterministic, unit-tested).
//! - [`command`] and [`records`]: what the log carries and the state machine answers.
//! - [`voter`]: one voter ([`RaftVoter`]); [`client`]: the `Coordinator` of one process
//!   ([`RaftCoordinator`]) over a [`RaftAccess`].
//! - [`network`]: voters of one process ([`LocalRouter`]); [`grpc`] and [`server`]: voters in
//!   separate processes and members that are not voters, over tonic ([`GrpcNetwork`],
//!   [`VoterServer`], [`RemoteAccess`]); [`net`]: the default TCP listener and connector.
//! - [`runtime`]: openraft's runtime with seeded election randomness.
//!
//! openraft types stay inside this crate; the rest of Verse sees only the `Coordinator` trait.

pub mod access;
pub mod client;
pub mod command;
pub mod grpc;
pub mod net;
pub mod network;
pub(crate) mod peers;
pub mod records;
pub mod runtime;
pub mod server;
pub mod state;
pub(crate) mod storage;
pub(crate) mod types;
pub mod voter;
pub(crate) mod wire;

/// The coordinator protocol (generated from `proto/coordinator.proto`).
#[allow(missing_docs, clippy::all)]
pub(crate) mod proto {
    tonic::include_proto!("verse.coordinator.v1");
}

pub use access::RaftAccess;
pub use client::{ClientOptions, RaftCoordinator};
pub use grpc::{GrpcConfig, GrpcNetwork, RemoteAccess};
pub use net::{TcpConnector, TcpIncoming};
pub use network::LocalRouter;
pub use runtime::{SeededRuntime, seed_election_randomness};
pub use server::{ServeError, VoterServer};
pub use storage::{DatabaseSource, DiskError};
pub use voter::{MembershipError, RaftVoter, VoterConfig, VoterError, VoterStatus};
pub use wire::MembershipView;
