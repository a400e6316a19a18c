//! Verse's cross-crate integration tests: one binary, one module per concern.

mod cluster;
mod counter_example;
mod dependency_rules;
mod node_process;
mod scenarios;
mod support;
