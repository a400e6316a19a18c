//! A2 in a test: SIGKILL of one node under load. Every counter (one per shard, so every
//! shard the killed node owned) answers again within TTL + 5 s; final values are at least the
//! acknowledged increments and at most those plus the calls whose outcome is unknown. On the
//! embedded Raft coordinator (the killed node is a member, not the voter) and on etcd.

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use verse_core::CallError;
use verse_examples::proto::counter::{CounterResponse, GetRequest};

use super::{Backend, Cluster, LEASE_TTL_SECS, Load, check_values};
use crate::support::process::{Caller, NodeSpec, counter_ids};

/// Bound for the minimum call rate checks.
const RATE_BOUND: Duration = Duration::from_secs(30);

async fn sigkill_under_load(backend: Backend) {
    let name = format!("sigkill_{backend:?}").to_lowercase();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new(dir.path(), &name);
    let mut _etcd = None;
    let to_args = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<String>>();
    match backend {
        Backend::Raft => {
            let voter = to_args(&[
                "--coordinator",
                "raft-voter",
                "--raft-id",
                "1",
                "--raft-listen",
                "127.0.0.1:0",
                "--raft-init",
            ]);
            let spec = cluster.spec("node-1", &voter);
            cluster.start(&[spec]).await;
            let raft = cluster.nodes["node-1"].field("raft_address").to_owned();
            let member = to_args(&["--coordinator", "raft", "--raft-endpoints", &raft]);
            let specs: Vec<NodeSpec> =
                ["node-2", "node-3"].iter().map(|id| cluster.spec(id, &member)).collect();
            cluster.start(&specs).await;
        }
        Backend::Etcd => {
            let etcd = verse_coord_etcd::fixture::EtcdCluster::single().await;
            let endpoints = etcd.endpoints().join(",");
            _etcd = Some(etcd);
            let prefix = format!("/verse/{name}");
            let args = to_args(&[
                "--coordinator",
                "etcd",
                "--etcd-endpoints",
                &endpoints,
                "--etcd-prefix",
                &prefix,
            ]);
            let specs: Vec<NodeSpec> =
                ["node-1", "node-2", "node-3"].iter().map(|id| cluster.spec(id, &args)).collect();
            cluster.start(&specs).await;
        }
    }
    eprintln!("{name}: three nodes ready after {:?}", started.elapsed());
    let caller =
        Arc::new(Caller::new(&cluster.nodes.values().collect::<Vec<_>>(), super::CALL_DEADLINE));
    let load = Load::start(&caller);
    load.wait_acknowledged(300, RATE_BOUND).await;
    super::wait_hosting(&caller, "node-3", RATE_BOUND).await;

    // SIGKILL node-3; every counter must answer again within TTL + 5 s.
    cluster.kill("node-3").await;
    let killed = Instant::now();
    caller.remove("node-3");
    let bound = Duration::from_secs(LEASE_TTL_SECS + 5);
    let probe = Arc::new(Caller::new(
        &cluster.nodes.values().collect::<Vec<_>>(),
        Duration::from_millis(1000),
    ));
    let mut waiting: Vec<String> = counter_ids(super::SHARDS);
    while !waiting.is_empty() {
        let mut round = tokio::task::JoinSet::new();
        for id in waiting {
            let probe = probe.clone();
            round.spawn(async move {
                let nodes = probe.nodes();
                let answer: Result<CounterResponse, CallError> =
                    probe.call(&nodes[0], "Counter", &id, "Get", &GetRequest {}).await;
                answer.err().map(|_| id)
            });
        }
        waiting = round.join_all().await.into_iter().flatten().collect();
        assert!(
            waiting.is_empty() || killed.elapsed() < bound,
            "{name}: {} counters not served {bound:?} after the kill, e.g. {:?}",
            waiting.len(),
            waiting.first()
        );
    }
    let served_again = killed.elapsed();
    eprintln!("{name}: every shard served again {served_again:?} after SIGKILL");
    load.wait_acknowledged(300, RATE_BOUND).await;

    let ids = load.ids.clone();
    let outcomes = load.finish().await;
    let failed = outcomes.failed();
    let maybe: i64 = outcomes.maybe.iter().map(|m| m.load(Ordering::Relaxed)).sum();
    eprintln!(
        "{name}: {} calls acknowledged, {} failed ({maybe} with unknown outcome); p99 {:?}",
        outcomes.total.load(Ordering::Relaxed),
        failed.len(),
        outcomes.latency_quantile(0.99)
    );
    check_values(&caller, &ids, &outcomes, false).await;
    cluster.stop_all().await;
    cluster.check_turns(&name);
    eprintln!("{name}: whole scenario took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_sigkill_under_load_is_served_again_within_the_ttl_bound() {
    sigkill_under_load(Backend::Raft).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_sigkill_under_load_is_served_again_within_the_ttl_bound() {
    sigkill_under_load(Backend::Etcd).await;
}
