//! Conformance suites for the core traits, shared by every implementation.
//!
//! Each backend crate runs the suite of the trait it implements from its own tests (openraft
//! ships its storage test suite the same way), so every implementation keeps the same promises.
//! Available with the crate feature `testing` (which also brings in `proptest` for the
//! model-based checks) and in this crate's own tests.

pub mod coordinator;
pub mod store;
