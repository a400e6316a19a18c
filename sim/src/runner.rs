//! Running many seeds: over worker threads (one simulation per thread at a time, since a
//! turmoil simulation lives on its thread), with optional planted bugs, collecting reports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use verse_core::fault::{self, FaultSwitch};

use crate::scenario::{Scenario, SeedReport, run_seed};

/// A bug to plant in every simulated host of a run (test-only switches of `verse-core`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plant {
    /// Nodes admit turns without a proven lease.
    SkipLeaseCheck,
    /// The shared store accepts writes at any epoch.
    SkipEpochFence,
}

impl Plant {
    fn switch(self) -> FaultSwitch {
        match self {
            Plant::SkipLeaseCheck => FaultSwitch::SkipLeaseCheck,
            Plant::SkipEpochFence => FaultSwitch::SkipEpochFence,
        }
    }
}

/// Runs one seed with `plants` switched on for its thread (and off again afterwards).
pub fn run_planted(seed: u64, scenario: &Scenario, plants: &[Plant]) -> SeedReport {
    for plant in plants {
        fault::set(plant.switch(), true);
    }
    let report = run_seed(seed, scenario);
    for plant in plants {
        fault::set(plant.switch(), false);
    }
    report
}

/// What a batch of seeds did.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Reports of the failing seeds, by seed.
    pub failures: Vec<SeedReport>,
    /// Seeds run.
    pub seeds: u64,
    /// Wall-clock time of the batch.
    pub wall: Duration,
    /// Sum of the seeds' own wall-clock times (CPU-bound: about the CPU time).
    pub seed_time: Duration,
    /// Simulated time, summed.
    pub simulated: Duration,
}

/// Runs seeds `from..from + count` on `jobs` threads; `on_done` sees each report as it ends.
/// Stops taking new seeds after the first failure when `stop_at_first` is set.
pub fn run_seeds(
    from: u64,
    count: u64,
    jobs: usize,
    scenario: &Scenario,
    plants: &[Plant],
    stop_at_first: bool,
    on_done: &(dyn Fn(&SeedReport) + Sync),
) -> Batch {
    let wall = Instant::now();
    let next = AtomicU64::new(from);
    let end = from.saturating_add(count);
    let results: Mutex<Vec<SeedReport>> = Mutex::new(Vec::new());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            let (next, results, stop) = (&next, &results, stop.clone());
            std::thread::Builder::new()
                .stack_size(64 << 20)
                .spawn_scoped(scope, move || {
                    loop {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let seed = next.fetch_add(1, Ordering::SeqCst);
                        if seed >= end {
                            return;
                        }
                        let mut report = run_planted(seed, scenario, plants);
                        on_done(&report);
                        if !report.passed() && stop_at_first {
                            stop.store(true, Ordering::SeqCst);
                        }
                        if report.passed() {
                            report.trace = String::new();
                            report.calls = Vec::new();
                            report.events = Vec::new();
                        }
                        results.lock().unwrap_or_else(|e| e.into_inner()).push(report);
                    }
                })
                .expect("spawning a simulation worker thread");
        }
    });
    let reports = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let seeds = reports.len() as u64;
    let seed_time = reports.iter().map(|r| r.wall).sum();
    let simulated = reports.iter().map(|r| r.simulated).sum();
    let mut failures: Vec<SeedReport> = reports.into_iter().filter(|r| !r.passed()).collect();
    failures.sort_by_key(|r| r.seed);
    Batch { failures, seeds, wall: wall.elapsed(), seed_time, simulated }
}

/// The command that replays `seed` exactly (with its trace).
pub fn replay_command(seed: u64, plants: &[Plant]) -> String {
    let mut command = format!("cargo run --release -p verse-sim -- --seed {seed} --trace");
    for plant in plants {
        command.push_str(match plant {
            Plant::SkipLeaseCheck => " --plant skip-lease-check",
            Plant::SkipEpochFence => " --plant skip-epoch-fence",
        });
    }
    command
}
