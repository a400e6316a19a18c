//! Integration tests of the Raft coordinator.
