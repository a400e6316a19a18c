//! Shared helpers of Verse's integration tests (fixtures arrive with the tests that need them).
