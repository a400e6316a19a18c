//! A3 in a test: the coordinator's leader is killed under load — the leader of a three-member
//! etcd, and the Raft leader of a three-voter group of `verse coord` processes (voters that
//! host no objects; the nodes reach them over gRPC). Shard epochs are the same before and
//! after (no shard changed owner), and no call fails.

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use verse_coord_etcd::EtcdCoordinator;
use verse_coord_etcd::fixture::{EtcdCluster, test_options};
use verse_core::coordinator::Coordinator;

use super::{Cluster, Load, check_values, free_port, wait_hosting};
use crate::support::process::{Caller, NodeProcess, NodeSpec, http_get, wait_ready};

/// Bound for the minimum call rate checks.
const RATE_BOUND: Duration = Duration::from_secs(30);

/// Each shard's owner and epoch.
async fn owners(coordinator: &dyn Coordinator) -> BTreeMap<u32, (String, u64, u64)> {
    // A client may first try the member that was just killed: retry for a while.
    let started = Instant::now();
    let snapshot = loop {
        match coordinator.snapshot().await {
            Ok(snapshot) => break snapshot,
            Err(error) => {
                assert!(started.elapsed() < Duration::from_secs(20), "snapshot: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    snapshot
        .map
        .iter()
        .filter_map(|entry| {
            let owner = entry.owner.as_ref()?;
            Some((
                entry.shard.0,
                (owner.node.to_string(), owner.epoch.generation, owner.epoch.counter),
            ))
        })
        .collect()
}

/// Waits until every shard has an owner and the map stops changing for a while.
async fn settled(coordinator: &dyn Coordinator) -> BTreeMap<u32, (String, u64, u64)> {
    let started = Instant::now();
    let mut last = owners(coordinator).await;
    let mut stable_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = owners(coordinator).await;
        if now != last || now.len() != super::SHARDS as usize {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= Duration::from_secs(3) {
            return now;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the shard map never settled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_leader_killed_under_load_changes_no_epoch_and_fails_no_call() {
    let name = "etcd_leader_kill";
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = EtcdCluster::three().await;
    let mut cluster = Cluster::new(dir.path(), name);
    let prefix = format!("/verse/{name}");
    let endpoints = etcd.all_endpoints().join(",");
    let args: Vec<String> =
        ["--coordinator", "etcd", "--etcd-endpoints", &endpoints, "--etcd-prefix", &prefix]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
    let specs: Vec<NodeSpec> =
        ["node-1", "node-2", "node-3"].iter().map(|id| cluster.spec(id, &args)).collect();
    cluster.start(&specs).await;
    let mut options = test_options(etcd.all_endpoints(), Duration::from_secs(3));
    options.prefix = prefix.clone();
    let observer = EtcdCoordinator::connect(options).await.unwrap();

    let caller =
        Arc::new(Caller::new(&cluster.nodes.values().collect::<Vec<_>>(), super::CALL_DEADLINE));
    let load = Load::start(&caller);
    for id in ["node-1", "node-2", "node-3"] {
        wait_hosting(&caller, id, RATE_BOUND).await;
    }
    let before = settled(&observer).await;
    load.wait_acknowledged(300, RATE_BOUND).await;

    let leader = etcd.leader_index().await.expect("an etcd leader");
    etcd.kill(leader);
    eprintln!("{name}: killed etcd member {leader} (the leader)");
    load.wait_acknowledged(500, RATE_BOUND).await;
    let after = owners(&observer).await;
    assert_eq!(before, after, "{name}: shard owners or epochs changed");

    let ids = load.ids.clone();
    let outcomes = load.finish().await;
    let failed = outcomes.failed();
    eprintln!(
        "{name}: {} calls acknowledged, {} failed; p99 {:?}",
        outcomes.total.load(Ordering::Relaxed),
        failed.len(),
        outcomes.latency_quantile(0.99)
    );
    assert!(
        failed.is_empty(),
        "{name}: {} failed calls: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    check_values(&caller, &ids, &outcomes, true).await;
    cluster.stop_all().await;
    cluster.check_turns(name);
    eprintln!("{name}: whole scenario took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_leader_hosting_no_objects_killed_under_load_changes_no_epoch_and_fails_no_call() {
    use verse_coord_raft::{ClientOptions, RaftAccess, RaftCoordinator, RemoteAccess};
    use verse_core::SystemClock;

    let name = "raft_leader_kill";
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("{}=127.0.0.1:{port}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let endpoints: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let voters: Vec<(String, std::path::PathBuf, Vec<String>)> = (0..3)
        .map(|i| {
            let id = format!("coord-{}", i + 1);
            let mut raft: Vec<String> = [
                "--raft-id",
                &(i + 1).to_string(),
                "--raft-listen",
                &endpoints[i],
                "--raft-peers",
                &peers,
            ]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
            if i == 0 {
                raft.push("--raft-init".into());
            }
            (id.clone(), dir.path().join(&id), raft)
        })
        .collect();
    let mut coords: Vec<Option<NodeProcess>> = tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            let started: Vec<_> = voters
                .iter()
                .map(|(id, data, raft)| scope.spawn(move || NodeProcess::coord(id, data, raft)))
                .collect();
            started.into_iter().map(|s| Some(s.join().expect("a voter failed to start"))).collect()
        })
    })
    .await
    .unwrap();

    let mut cluster = Cluster::new(dir.path(), name);
    let member: Vec<String> = ["--coordinator", "raft", "--raft-endpoints", &endpoints.join(",")]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    let specs: Vec<NodeSpec> =
        ["node-1", "node-2", "node-3"].iter().map(|id| cluster.spec(id, &member)).collect();
    cluster.start(&specs).await;
    // Each voter's ops port reports it ready once it knows the group's leader.
    for coord in coords.iter().flatten() {
        wait_ready(coord).await;
        let ops = coord.ops_address();
        let metrics = tokio::task::spawn_blocking(move || http_get(&ops, "/metrics"));
        let (code, text) = metrics.await.unwrap().expect("the voter's /metrics answers");
        assert!(code == 200 && text.contains("verse_raft_term"), "{}: {code} {text}", coord.id);
    }
    let access: Arc<dyn RaftAccess> = Arc::new(RemoteAccess::new(endpoints.clone()));
    let observer = RaftCoordinator::new(
        access,
        SystemClock::shared(),
        ClientOptions::new(Duration::from_secs(super::LEASE_TTL_SECS)),
    );

    let caller =
        Arc::new(Caller::new(&cluster.nodes.values().collect::<Vec<_>>(), super::CALL_DEADLINE));
    let load = Load::start(&caller);
    for id in ["node-1", "node-2", "node-3"] {
        wait_hosting(&caller, id, RATE_BOUND).await;
    }
    let before = settled(&observer).await;
    load.wait_acknowledged(300, RATE_BOUND).await;

    // The Raft leader, as the voters last reported it.
    let leader: usize = coords
        .iter()
        .flatten()
        .filter_map(|c| c.logged("Raft leader").last().cloned())
        .filter_map(|line| {
            let fields = crate::support::process::parse_fields(&line);
            fields.get("leader").and_then(|l| l.parse().ok())
        })
        .find(|leader| *leader != 0)
        .expect("a Raft leader");
    let mut killed = coords[leader - 1].take().unwrap();
    tokio::task::spawn_blocking(move || killed.kill()).await.unwrap();
    eprintln!("{name}: killed coord-{leader} (the Raft leader)");
    load.wait_acknowledged(500, RATE_BOUND).await;
    let after = owners(&observer).await;
    assert_eq!(before, after, "{name}: shard owners or epochs changed");

    let ids = load.ids.clone();
    let outcomes = load.finish().await;
    let failed = outcomes.failed();
    eprintln!(
        "{name}: {} calls acknowledged, {} failed; p99 {:?}",
        outcomes.total.load(Ordering::Relaxed),
        failed.len(),
        outcomes.latency_quantile(0.99)
    );
    assert!(
        failed.is_empty(),
        "{name}: {} failed calls: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    check_values(&caller, &ids, &outcomes, true).await;
    cluster.stop_all().await;
    cluster.check_turns(name);
    drop(coords);
    eprintln!("{name}: whole scenario took {:?}", started.elapsed());
}
