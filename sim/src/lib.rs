//! `verse-sim`: deterministic simulation of whole Verse clusters on turmoil (issue 6).
//!
//! The real node runtime, the real gateway, the real tonic transport and the real openraft
//! coordinator run as simulated hosts over turmoil's simulated TCP, with simulated time,
//! per-host skewed clocks, a shared in-memory state store outside the hosts and a simulated
//! disk under each voter.
//! Faults come from the seed; checkers judge the recorded history. See `docs/SIMULATION.md`.
//!
//! - [`net`], [`clock`], [`disk`], [`store`]: the simulated parts injected into real code;
//! - [`hosts`]: voters, nodes, a gateway and clients assembled as `verse node` and `verse
//!   gateway` assemble them;
//! - [`faults`]: the seed's fault schedule; [`stalls`]: the seeded stall points;
//!   [`scenario`]: one seed, end to end;
//! - [`history`]: what a run records (and its trace), [`timeline`]: the real code's log events
//!   on it, by host; [`checkers`]: the invariants;
//! - [`runner`]: many seeds over threads, planted bugs, replay commands.

pub mod checkers;
pub mod clock;
pub mod disk;
pub mod faults;
pub mod history;
pub mod hosts;
pub mod net;
pub mod runner;
pub mod scenario;
pub mod stalls;
pub mod store;
pub mod timeline;

pub use scenario::{Scenario, SeedReport, run_seed};
