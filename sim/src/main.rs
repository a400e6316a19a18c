//! `verse-sim`: runs simulation seeds and prints the failing ones with the command that
//! replays each exactly.
//!
//! - `verse-sim --seeds N [--from S] [--jobs J]`: seeds S..S+N over J threads (default: all
//!   cores); exit status 1 if any seed failed.
//! - `verse-sim --seed S [--trace]`: one seed; prints its verdict, counts and fingerprint (and
//!   its trace: the cluster timeline).
//! - `--plant skip-lease-check|skip-epoch-fence`: plant a bug (test-only switches).
//! - `--scenario churn|leader-partition|node-cut|stale-owner`: the scenario (default churn).

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use verse_sim::runner::{Plant, replay_command, run_planted, run_seeds};
use verse_sim::{Scenario, SeedReport};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PlantArg {
    SkipLeaseCheck,
    SkipEpochFence,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ScenarioArg {
    Churn,
    LeaderPartition,
    NodeCut,
    StaleOwner,
}

#[derive(Debug, Parser)]
#[command(about = "Deterministic simulation of Verse clusters")]
struct Args {
    /// Run this one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Print the trace of the seed (with --seed).
    #[arg(long)]
    trace: bool,
    /// Run this many seeds.
    #[arg(long)]
    seeds: Option<u64>,
    /// First seed of --seeds.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Worker threads (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// The scenario: the seeded churn, issue 4's Raft leader partition, the node cut from the
    /// coordinator, or the stale owner (node cut plus frequent long stalls before saves).
    #[arg(long, value_enum, default_value = "churn")]
    scenario: ScenarioArg,
    /// Plant a bug (test-only fault switch); may repeat.
    #[arg(long, value_enum)]
    plant: Vec<PlantArg>,
}

fn summary(report: &SeedReport) -> String {
    let (hash, lines) = report.fingerprint;
    format!(
        "seed {}: {} | {:?} | simulated {:.1}s in {:.2}s | fingerprint {hash:016x} lines {lines}",
        report.seed,
        if report.passed() { "ok" } else { "FAILED" },
        report.verdict.counts,
        report.simulated.as_secs_f64(),
        report.wall.as_secs_f64(),
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    let plants: Vec<Plant> = args
        .plant
        .iter()
        .map(|p| match p {
            PlantArg::SkipLeaseCheck => Plant::SkipLeaseCheck,
            PlantArg::SkipEpochFence => Plant::SkipEpochFence,
        })
        .collect();
    let scenario = match args.scenario {
        ScenarioArg::Churn => Scenario::default(),
        ScenarioArg::LeaderPartition => Scenario::leader_partition(),
        ScenarioArg::NodeCut => Scenario::node_cut_from_coordinator(),
        ScenarioArg::StaleOwner => Scenario::stale_owner(),
    };
    if let Some(seed) = args.seed {
        let report = run_planted(seed, &scenario, &plants);
        if args.trace {
            print!("{}", report.trace);
        }
        for violation in &report.verdict.violations {
            println!("violation: {violation}");
        }
        println!("{}", summary(&report));
        return if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let scenario_flag = match args.scenario {
        ScenarioArg::Churn => String::new(),
        other => other
            .to_possible_value()
            .map(|value| format!(" --scenario {}", value.get_name()))
            .unwrap_or_default(),
    };
    let count = args.seeds.unwrap_or(100);
    let jobs =
        args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let batch = run_seeds(args.from, count, jobs, &scenario, &plants, false, &|report| {
        if !report.passed() {
            println!("{}", summary(report));
            for violation in &report.verdict.violations {
                println!("  violation: {violation}");
            }
            println!("  replay: {}{scenario_flag}", replay_command(report.seed, &plants));
        }
    });
    let per_seed = batch.seed_time.as_secs_f64() / batch.seeds.max(1) as f64;
    println!(
        "{} seeds from {} on {jobs} threads: {} failed; wall {:.1}s; {per_seed:.2}s per seed \
         (one thread); {:.0}s simulated",
        batch.seeds,
        args.from,
        batch.failures.len(),
        batch.wall.as_secs_f64(),
        batch.simulated.as_secs_f64(),
    );
    if batch.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        let seeds: Vec<String> = batch.failures.iter().map(|r| r.seed.to_string()).collect();
        println!("failing seeds: {}", seeds.join(" "));
        ExitCode::FAILURE
    }
}
