//! P7: the shard map on both coordinators in one run, round by round (etcd, then the embedded
//! Raft group, alternating). The initial 8192-shard map (configuration and shard
//! initialisation, then the leader's targets for every shard, then the nodes' claims), and a
//! half-map rebalance (4096 shards re-targeted to a new node, released by the old owner,
//! claimed by the new one), through the `Coordinator` trait with the same calls on both.
//! Each etcd round starts its own single-member etcd (the test fixture: Debian's
//! `etcd-server`, fsync on, `--heartbeat-interval=10 --election-timeout=100`); each Raft round
//! its own single voter with its log on redb in a temp dir (every append fsynced), clients in
//! the same process.
//!
//! `cargo run --release -p verse-bench --bin shard_map -- --rounds 5`

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde::Serialize;
use verse_coord_etcd::EtcdCoordinator;
use verse_coord_etcd::fixture::{EtcdCluster, test_options};
use verse_coord_raft::{ClientOptions, LocalRouter, RaftCoordinator, RaftVoter, VoterConfig};
use verse_core::coordinator::{
    ClaimRequest, Coordinator, MemberFlags, MemberRegistration, MemberRole, ReleaseRequest,
    TargetWrite,
};
use verse_core::shard::{DEFAULT_SHARD_COUNT, ShardId};
use verse_core::{ShardMap, SystemClock, TargetRecord, TokioBlockingExecutor};

/// Which coordinators to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Both,
    Etcd,
    Raft,
}

/// A coordinator backend for one round: a fresh server and its clients.
enum Backend {
    Etcd(EtcdCluster),
    Raft { voter: Arc<RaftVoter>, _dir: tempfile::TempDir },
}

impl Backend {
    async fn etcd() -> Backend {
        Backend::Etcd(EtcdCluster::single().await)
    }

    async fn raft() -> anyhow::Result<Backend> {
        let dir = tempfile::tempdir()?;
        let voter = RaftVoter::start(
            VoterConfig::new(1, dir.path().join("voter-1.redb")),
            &LocalRouter::new(),
            SystemClock::shared(),
            Arc::new(TokioBlockingExecutor),
        )
        .await?;
        voter.initialize(&[1]).await?;
        voter.wait_for_leader(Duration::from_secs(10)).await?;
        Ok(Backend::Raft { voter: Arc::new(voter), _dir: dir })
    }

    /// A new client (one per member, as in a cluster).
    async fn client(&self) -> anyhow::Result<Arc<dyn Coordinator>> {
        let ttl = Duration::from_secs(10);
        Ok(match self {
            Backend::Etcd(etcd) => {
                Arc::new(EtcdCoordinator::connect(test_options(etcd.endpoints(), ttl)).await?)
            }
            Backend::Raft { voter, .. } => Arc::new(RaftCoordinator::new(
                voter.clone(),
                SystemClock::shared(),
                ClientOptions::new(ttl),
            )),
        })
    }

    async fn stop(self) {
        if let Backend::Raft { voter, .. } = self {
            voter.shutdown().await;
        }
    }
}

#[derive(Parser)]
struct Args {
    /// Rounds per coordinator (each on a fresh server); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Which coordinators to measure.
    #[arg(long, value_enum, default_value_t = Which::Both)]
    coordinator: Which,
    /// Write the per-round figures as JSON here.
    #[arg(long)]
    json: Option<String>,
}

/// Seconds of each phase of one round.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Round {
    init: f64,
    initial_targets: f64,
    initial_claims: f64,
    rebalance_targets: f64,
    rebalance_releases: f64,
    rebalance_claims: f64,
}

async fn member(backend: &Backend, id: &str) -> anyhow::Result<Arc<dyn Coordinator>> {
    let client = backend.client().await?;
    client.join_cluster(DEFAULT_SHARD_COUNT).await?;
    client
        .register(MemberRegistration {
            id: id.into(),
            addresses: vec![],
            role: MemberRole::Node,
            version: "bench".into(),
            start_time_unix_ms: 0,
            flags: MemberFlags::default(),
            node_local_store: false,
        })
        .await?;
    Ok(client)
}

fn targets(shards: &[u32], node: &str) -> Vec<TargetWrite> {
    shards
        .iter()
        .map(|&n| TargetWrite { shard: ShardId(n), target: Some(TargetRecord::planned(node)) })
        .collect()
}

fn claims(map: &ShardMap, shards: &[u32]) -> Vec<ClaimRequest> {
    shards
        .iter()
        .map(|&n| {
            let entry = map.entry(ShardId(n));
            ClaimRequest {
                shard: entry.shard,
                expected_target: entry.target.clone().expect("targeted"),
                expected_owner: entry.owner.clone(),
            }
        })
        .collect()
}

async fn claim_all(
    client: &Arc<dyn Coordinator>,
    requests: Vec<ClaimRequest>,
) -> anyhow::Result<()> {
    let count = requests.len();
    let won = client.claim(requests).await?.iter().filter(|o| o.result.is_ok()).count();
    anyhow::ensure!(won == count, "{won} of {count} claims won");
    Ok(())
}

async fn round(backend: &Backend) -> anyhow::Result<Round> {
    let mut figures = Round::default();
    let leader = backend.client().await?;
    let start = Instant::now();
    leader.join_cluster(DEFAULT_SHARD_COUNT).await?;
    figures.init = start.elapsed().as_secs_f64();
    leader
        .register(MemberRegistration {
            id: "leader".into(),
            addresses: vec![],
            role: MemberRole::Node,
            version: "bench".into(),
            start_time_unix_ms: 0,
            flags: MemberFlags::default(),
            node_local_store: false,
        })
        .await?;
    let term = leader.campaign().await?;
    let (n1, n2, n3) =
        tokio::try_join!(member(backend, "n1"), member(backend, "n2"), member(backend, "n3"))?;
    let even: Vec<u32> = (0..DEFAULT_SHARD_COUNT).filter(|n| n % 2 == 0).collect();
    let odd: Vec<u32> = (0..DEFAULT_SHARD_COUNT).filter(|n| n % 2 == 1).collect();

    let start = Instant::now();
    let mut writes = targets(&even, "n1");
    writes.extend(targets(&odd, "n2"));
    leader.write_targets(term, writes).await?;
    figures.initial_targets = start.elapsed().as_secs_f64();

    let map = leader.snapshot().await?.map;
    let start = Instant::now();
    tokio::try_join!(claim_all(&n1, claims(&map, &even)), claim_all(&n2, claims(&map, &odd)))?;
    figures.initial_claims = start.elapsed().as_secs_f64();

    // Half the map moves from n1 to n3.
    let start = Instant::now();
    leader.write_targets(term, targets(&even, "n3")).await?;
    figures.rebalance_targets = start.elapsed().as_secs_f64();
    let map = leader.snapshot().await?.map;
    let releases: Vec<ReleaseRequest> = even
        .iter()
        .map(|&n| {
            let owner = map.entry(ShardId(n)).owner.as_ref().expect("owned");
            ReleaseRequest { shard: ShardId(n), epoch: owner.epoch }
        })
        .collect();
    let start = Instant::now();
    let released = n1.release(releases).await?.iter().filter(|o| o.result.is_ok()).count();
    anyhow::ensure!(released == even.len(), "{released} releases");
    figures.rebalance_releases = start.elapsed().as_secs_f64();
    let map = leader.snapshot().await?.map;
    let start = Instant::now();
    claim_all(&n3, claims(&map, &even)).await?;
    figures.rebalance_claims = start.elapsed().as_secs_f64();
    Ok(figures)
}

fn median(mut values: Vec<f64>) -> f64 {
    verse_bench::median(&mut values)
}

fn report(name: &str, rounds: &[Round]) -> f64 {
    let col = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!(
        "\nP7 shard map on {name} ({} shards, median of {} rounds, profile {profile})",
        DEFAULT_SHARD_COUNT,
        rounds.len()
    );
    let initial = col(|r| r.init + r.initial_targets);
    let rows = [
        ("config + shard initialisation", col(|r| r.init)),
        ("initial targets (8192, fenced)", col(|r| r.initial_targets)),
        ("initial map written (init + targets)", initial),
        ("initial claims (2 nodes x 4096)", col(|r| r.initial_claims)),
        ("rebalance: targets (4096)", col(|r| r.rebalance_targets)),
        ("rebalance: releases (4096)", col(|r| r.rebalance_releases)),
        ("rebalance: claims (4096)", col(|r| r.rebalance_claims)),
        (
            "rebalance: total",
            col(|r| r.rebalance_targets + r.rebalance_releases + r.rebalance_claims),
        ),
    ];
    for (case, seconds) in rows {
        println!("{case:<40} {:>8.1} ms", seconds * 1000.0);
    }
    initial
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mut etcd, mut raft) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        if args.coordinator != Which::Raft {
            let backend = Backend::etcd().await;
            etcd.push(round(&backend).await?);
            backend.stop().await;
        }
        if args.coordinator != Which::Etcd {
            let backend = Backend::raft().await?;
            raft.push(round(&backend).await?);
            backend.stop().await;
        }
    }
    if !etcd.is_empty() {
        let initial = report("etcd", &etcd);
        let target = if initial <= 2.0 { "met" } else { "MISSED" };
        println!("target: initial map written in <= 2 s (etcd): {target}");
    }
    if !raft.is_empty() {
        let initial = report("the embedded Raft coordinator", &raft);
        let target = if initial <= 0.5 { "met" } else { "MISSED" };
        println!("target: initial map written in <= 0.5 s (Raft): {target}");
    }
    if let Some(path) = args.json {
        #[derive(Serialize)]
        struct Out<'a> {
            etcd: &'a [Round],
            raft: &'a [Round],
        }
        std::fs::write(&path, serde_json::to_string_pretty(&Out { etcd: &etcd, raft: &raft })?)?;
        println!("wrote {path}");
    }
    Ok(())
}
