//! The simulation's tests: the CI seed budget in parallel chunks, determinism across
//! processes, planted bugs the checkers must catch, the Raft leader partition (issue 4), and
//! regression seeds.

mod determinism;
mod leader_partition;
mod planted;
mod regressions;
mod seeds;
