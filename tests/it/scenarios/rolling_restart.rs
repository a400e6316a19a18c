//! A1 in a test: three nodes under load, a fourth joins, then every node restarts one by one
//! (SIGTERM: drain, exit 0, start again): zero failed calls (`OutcomeUnknown` counts as a
//! failure), every counter's final value equals its acknowledged increments exactly, and the
//! p99 latency is printed. On the embedded Raft coordinator (three voters and a member
//! reaching them over gRPC) and on etcd.

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Backend, Cluster, Load, check_values, free_port, wait_hosting};
use crate::support::process::{Caller, NodeSpec};

/// Bound for a restarted node to own shards again.
const HOSTING_BOUND: Duration = Duration::from_secs(60);
/// Bound for the minimum call rate checks (this many calls acknowledged within it).
const RATE_BOUND: Duration = Duration::from_secs(30);

async fn join_then_rolling_restart(backend: Backend) {
    let name = format!("rolling_restart_{backend:?}").to_lowercase();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new(dir.path(), &name);
    // Kept alive for the whole scenario.
    let mut _etcd = None;
    let specs: Vec<NodeSpec> = match backend {
        Backend::Raft => {
            let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
            let peers = ports
                .iter()
                .enumerate()
                .map(|(i, port)| format!("{}=127.0.0.1:{port}", i + 1))
                .collect::<Vec<_>>()
                .join(",");
            let endpoints =
                ports.iter().map(|port| format!("127.0.0.1:{port}")).collect::<Vec<_>>().join(",");
            let mut specs: Vec<NodeSpec> = (0..3)
                .map(|i| {
                    let mut args: Vec<String> = [
                        "--coordinator",
                        "raft-voter",
                        "--raft-id",
                        &(i + 1).to_string(),
                        "--raft-listen",
                        &format!("127.0.0.1:{}", ports[i]),
                        "--raft-peers",
                        &peers,
                    ]
                    .iter()
                    .map(|a| (*a).to_owned())
                    .collect();
                    if i == 0 {
                        args.push("--raft-init".into());
                    }
                    cluster.spec(&format!("node-{}", i + 1), &args)
                })
                .collect();
            let member = ["--coordinator", "raft", "--raft-endpoints", &endpoints];
            let member: Vec<String> = member.iter().map(|a| (*a).to_owned()).collect();
            specs.push(cluster.spec("node-4", &member));
            specs
        }
        Backend::Etcd => {
            let etcd = verse_coord_etcd::fixture::EtcdCluster::single().await;
            let endpoints = etcd.endpoints().join(",");
            _etcd = Some(etcd);
            let args: Vec<String> =
                ["--coordinator", "etcd", "--etcd-endpoints", &endpoints, "--etcd-prefix"]
                    .iter()
                    .map(|a| (*a).to_owned())
                    .chain([format!("/verse/{name}")])
                    .collect();
            (1..=4).map(|i| cluster.spec(&format!("node-{i}"), &args)).collect()
        }
    };
    cluster.start(&specs[..3]).await;
    eprintln!("{name}: three nodes ready after {:?}", started.elapsed());
    let caller =
        Arc::new(Caller::new(&cluster.nodes.values().collect::<Vec<_>>(), super::CALL_DEADLINE));
    let load = Load::start(&caller);
    load.wait_acknowledged(200, RATE_BOUND).await;

    // A fourth node joins under load.
    cluster.start(&specs[3..]).await;
    caller.set_address(&cluster.nodes["node-4"]);
    wait_hosting(&caller, "node-4", HOSTING_BOUND).await;
    load.wait_acknowledged(200, RATE_BOUND).await;
    eprintln!("{name}: node-4 joined after {:?}", started.elapsed());

    // Every node restarts, one at a time.
    for id in ["node-1", "node-2", "node-3", "node-4"] {
        let restart = Instant::now();
        cluster.terminate(id).await;
        caller.remove(id);
        load.wait_acknowledged(50, RATE_BOUND).await;
        cluster.restart(id).await;
        caller.set_address(&cluster.nodes[id]);
        wait_hosting(&caller, id, HOSTING_BOUND).await;
        load.wait_acknowledged(100, RATE_BOUND).await;
        eprintln!("{name}: {id} restarted in {:?}", restart.elapsed());
    }

    let ids = load.ids.clone();
    let outcomes = load.finish().await;
    let failed = outcomes.failed();
    let total = outcomes.total.load(Ordering::Relaxed);
    eprintln!(
        "{name}: {total} calls acknowledged, {} failed; latency p50 {:?}, p99 {:?}, max {:?}",
        failed.len(),
        outcomes.latency_quantile(0.5),
        outcomes.latency_quantile(0.99),
        outcomes.latency_quantile(1.0),
    );
    assert!(
        failed.is_empty(),
        "{name}: {} failed calls: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    check_values(&caller, &ids, &outcomes, true).await;
    cluster.stop_all().await;
    cluster.check_turns(&name);
    eprintln!("{name}: whole scenario took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_join_then_rolling_restart_fails_no_call() {
    join_then_rolling_restart(Backend::Raft).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_join_then_rolling_restart_fails_no_call() {
    join_then_rolling_restart(Backend::Etcd).await;
}
