//! The openraft type configuration of the coordinator group (crate-private: openraft types
//! never leave this crate).

use std::io::Cursor;

use crate::command::{Proposal, Response};

openraft::declare_raft_types!(
    /// The Raft types of the coordinator group: log entries carry [`Proposal`]s, the state
    /// machine answers [`Response`]s, nodes are numbered, snapshots are byte buffers.
    pub TypeConfig:
        D = Proposal,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = crate::runtime::SeededRuntime,
);

/// A Raft node id.
pub type NodeId = u64;
/// A log id of this group.
pub type LogId = openraft::LogId<NodeId>;
/// A storage error of this group.
pub type StorageError = openraft::StorageError<NodeId>;
/// A log entry of this group.
pub type Entry = openraft::Entry<TypeConfig>;
/// The Raft handle of this group.
pub type Raft = openraft::Raft<TypeConfig>;
