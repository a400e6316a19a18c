//! P7 on the embedded Raft coordinator: the initial 8192-shard map written, and a half-map
//! rebalance, against one voter whose log and snapshots are on disk (redb in a temp dir).
//!
//! - Initial map: `join_cluster(8192)`, then the leader writes a target for every shard in
//!   batches of `--batch` shards, each batch fenced by its term. Target ≤ 0.5 s.
//! - Half-map rebalance (after every shard was claimed by member `a`): the leader writes new
//!   targets (member `b`) for 4096 shards, `a` releases them, `b` claims them, in batches.
//!
//! `cargo run --release -p verse-bench --bin shard_map_raft -- --runs 5`

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use verse_bench::median;
use verse_coord_raft::{ClientOptions, LocalRouter, RaftCoordinator, RaftVoter, VoterConfig};
use verse_core::coordinator::{
    ClaimRequest, Coordinator, MemberFlags, MemberRegistration, MemberRole, ReleaseRequest,
    TargetWrite, Term,
};
use verse_core::{OwnerRecord, ShardId, SystemClock, TargetRecord, TokioBlockingExecutor};

#[derive(Parser)]
struct Args {
    /// Number of shards.
    #[arg(long, default_value_t = 8192)]
    shards: u32,
    /// Shards per batch (one Raft log entry each).
    #[arg(long, default_value_t = 1024)]
    batch: u32,
    /// Runs (each on a fresh voter and data directory); medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

fn registration(id: &str) -> MemberRegistration {
    MemberRegistration {
        id: id.into(),
        addresses: vec![],
        role: MemberRole::Node,
        version: "bench".into(),
        start_time_unix_ms: 0,
        flags: MemberFlags::default(),
    }
}

fn batches(shards: std::ops::Range<u32>, batch: u32) -> Vec<std::ops::Range<u32>> {
    let mut out = Vec::new();
    let mut start = shards.start;
    while start < shards.end {
        let end = (start + batch).min(shards.end);
        out.push(start..end);
        start = end;
    }
    out
}

async fn write_targets(
    leader: &RaftCoordinator,
    term: Term,
    shards: std::ops::Range<u32>,
    node: &str,
    batch: u32,
) -> anyhow::Result<()> {
    for range in batches(shards, batch) {
        let writes = range
            .map(|n| TargetWrite { shard: ShardId(n), target: Some(TargetRecord::planned(node)) })
            .collect();
        leader.write_targets(term, writes).await?;
    }
    Ok(())
}

async fn claim(
    client: &RaftCoordinator,
    shards: std::ops::Range<u32>,
    node: &str,
    expected_owner: impl Fn(u32) -> Option<OwnerRecord>,
    batch: u32,
) -> anyhow::Result<Vec<OwnerRecord>> {
    let mut owners = Vec::new();
    for range in batches(shards, batch) {
        let claims = range
            .map(|n| ClaimRequest {
                shard: ShardId(n),
                expected_target: TargetRecord::planned(node),
                expected_owner: expected_owner(n),
            })
            .collect();
        for outcome in client.claim(claims).await? {
            owners.push(outcome.result.map_err(|e| anyhow::anyhow!("claim refused: {e}"))?);
        }
    }
    Ok(owners)
}

struct Figures {
    initial: Duration,
    rebalance_targets: Duration,
    rebalance_releases: Duration,
    rebalance_claims: Duration,
    data_bytes: u64,
}

async fn run(args: &Args) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("voter-1.redb");
    let router = LocalRouter::new();
    let voter = Arc::new(
        RaftVoter::start(
            VoterConfig::new(1, &path),
            &router,
            SystemClock::shared(),
            Arc::new(TokioBlockingExecutor),
        )
        .await?,
    );
    voter.initialize(&[1]).await?;
    voter.wait_for_leader(Duration::from_secs(10)).await?;
    let options = ClientOptions::new(Duration::from_secs(30));
    let a = RaftCoordinator::new(voter.clone(), SystemClock::shared(), options.clone());
    let b = RaftCoordinator::new(voter.clone(), SystemClock::shared(), options);
    a.register(registration("a")).await?;
    b.register(registration("b")).await?;
    let term = a.campaign().await?;
    let shards = args.shards;

    // Initial map: the configuration and every shard's target.
    let start = Instant::now();
    a.join_cluster(shards).await?;
    write_targets(&a, term, 0..shards, "a", args.batch).await?;
    let initial = start.elapsed();

    // Setup (not timed): `a` owns every shard.
    let owners = claim(&a, 0..shards, "a", |_| None, args.batch).await?;

    // Half-map rebalance: 4096 shards move from `a` to `b`.
    let half = shards / 2;
    let start = Instant::now();
    write_targets(&a, term, 0..half, "b", args.batch).await?;
    let rebalance_targets = start.elapsed();
    let start = Instant::now();
    for range in batches(0..half, args.batch) {
        let releases = range
            .map(|n| ReleaseRequest { shard: ShardId(n), epoch: owners[n as usize].epoch })
            .collect();
        for outcome in a.release(releases).await? {
            outcome.result.map_err(|e| anyhow::anyhow!("release refused: {e}"))?;
        }
    }
    let rebalance_releases = start.elapsed();
    let start = Instant::now();
    let released = |n: u32| {
        let mut owner = owners[n as usize].clone();
        owner.released = true;
        Some(owner)
    };
    claim(&b, 0..half, "b", released, args.batch).await?;
    let rebalance_claims = start.elapsed();

    let snapshot = a.snapshot().await?;
    anyhow::ensure!(
        snapshot.map.iter().filter(|e| e.target.is_some()).count() == shards as usize,
        "every shard has a target"
    );
    drop((a, b));
    voter.shutdown().await;
    let data_bytes = std::fs::metadata(&path)?.len();
    Ok(Figures { initial, rebalance_targets, rebalance_releases, rebalance_claims, data_bytes })
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut initial = Vec::new();
    let mut targets = Vec::new();
    let mut releases = Vec::new();
    let mut claims = Vec::new();
    let mut totals = Vec::new();
    let mut bytes = 0;
    for _ in 0..args.runs {
        let figures = run(&args).await?;
        initial.push(ms(figures.initial));
        targets.push(ms(figures.rebalance_targets));
        releases.push(ms(figures.rebalance_releases));
        claims.push(ms(figures.rebalance_claims));
        totals.push(ms(figures.rebalance_targets
            + figures.rebalance_releases
            + figures.rebalance_claims));
        bytes = figures.data_bytes;
    }
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!(
        "\nP7 shard map, embedded Raft (one voter on redb; profile {profile}; {} shards, \
         batches of {}; median of {} runs)",
        args.shards, args.batch, args.runs
    );
    println!("{:<44} {:>10}", "case", "ms");
    let half = args.shards / 2;
    println!(
        "{:<44} {:>10.1}",
        format!("initial map ({} targets)", args.shards),
        median(&mut initial)
    );
    println!(
        "{:<44} {:>10.1}",
        format!("rebalance: targets ({half} shards)"),
        median(&mut targets)
    );
    println!(
        "{:<44} {:>10.1}",
        format!("rebalance: releases ({half} shards)"),
        median(&mut releases)
    );
    println!("{:<44} {:>10.1}", format!("rebalance: claims ({half} shards)"), median(&mut claims));
    println!("{:<44} {:>10.1}", "rebalance: total", median(&mut totals));
    println!("data file after the last run: {} KiB", bytes / 1024);
    let met = median(&mut initial) <= 500.0;
    println!("target initial map <= 500 ms: {}", if met { "met" } else { "MISSED" });
    Ok(())
}
