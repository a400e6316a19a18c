//! Helpers shared by the process-level tests: `verse node` processes, an external caller,
//! a TCP proxy that cuts connections, and the turn-interval checker.

pub mod process;
pub mod proxy;
pub mod turns;
