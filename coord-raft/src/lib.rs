//! The embedded Raft coordinator: a [`verse_core::Coordinator`] on an openraft group whose log
//! and state machine live on redb.
//!
//! - [`state`]: the replicated state machine (pure, deterministic, unit-tested).
//! - [`command`] and [`records`]: what the log carries and the state machine answers.
//!
//! openraft types stay inside this crate; the rest of Verse sees only the `Coordinator` trait.

pub mod command;
pub mod network;
pub mod records;
pub mod state;
pub(crate) mod storage;
pub(crate) mod types;

pub use network::LocalRouter;
pub use storage::DiskError;
pub mod access;
pub mod voter;

pub use access::RaftAccess;
pub use voter::{RaftVoter, VoterConfig, VoterError};
pub mod client;

pub use client::{ClientOptions, RaftCoordinator};
