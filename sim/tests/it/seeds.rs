//! The CI seed budget: 200 seeds of the churn scenario in 8 chunks of 25, which the test
//! runner runs in parallel (about 1.3 s per seed on one core here: see docs/SIMULATION.md).
//! Every seed must pass every checker, minimum event counts included.

use verse_sim::Scenario;
use verse_sim::runner::{replay_command, run_seeds};

const CHUNK: u64 = 25;

fn chunk(index: u64) {
    let from = index * CHUNK;
    let batch = run_seeds(from, CHUNK, 1, &Scenario::default(), &[], false, &|_| {});
    assert_eq!(batch.seeds, CHUNK);
    let failures: Vec<String> = batch
        .failures
        .iter()
        .map(|report| {
            format!(
                "seed {}: {:#?}\n  replay: {}",
                report.seed,
                report.verdict.violations,
                replay_command(report.seed, &[])
            )
        })
        .collect();
    assert!(failures.is_empty(), "failing seeds:\n{}", failures.join("\n"));
}

#[test]
fn seeds_000_to_024() {
    chunk(0);
}

#[test]
fn seeds_025_to_049() {
    chunk(1);
}

#[test]
fn seeds_050_to_074() {
    chunk(2);
}

#[test]
fn seeds_075_to_099() {
    chunk(3);
}

#[test]
fn seeds_100_to_124() {
    chunk(4);
}

#[test]
fn seeds_125_to_149() {
    chunk(5);
}

#[test]
fn seeds_150_to_174() {
    chunk(6);
}

#[test]
fn seeds_175_to_199() {
    chunk(7);
}
