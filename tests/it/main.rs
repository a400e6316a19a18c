//! Verse's cross-crate integration tests: one binary, one module per concern.

mod chat_example;
mod cluster;
mod counter_example;
mod dependency_rules;
mod gateway;
mod node_process;
