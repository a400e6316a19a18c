//! Integration tests of the Raft coordinator: the conformance suite against one voter, and
//! restart from disk.

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

mod compaction;
mod conformance;
mod failover;
mod fixture;
mod majority_loss;
mod membership;
mod restart;
