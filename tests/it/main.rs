//! Verse's cross-crate integration tests: one binary, one module per concern.

mod dependency_rules;
