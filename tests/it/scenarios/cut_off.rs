//! A node cut off from the coordinator alone (its coordinator connection goes through a TCP
//! proxy; for Raft it is a member that is not a voter). A short cut (shorter than TTL − margin
//! − two keepalive intervals) does not stop it serving: no call fails and it keeps its
//! activations. A long cut: its shards are served again elsewhere, and the turn-interval
//! checker proves its last turn (so its last successful response) ended before a new owner ran
//! a turn of the same object. After the cut heals it learns the lease is gone, registers again
//! as a new incarnation and serves again.

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use verse_core::CallError;
use verse_examples::proto::counter::{CounterResponse, GetRequest};

use super::{Backend, Cluster, LEASE_TTL_SECS, Load, check_values, wait_hosting};
use crate::support::process::{Caller, counter_ids};
use crate::support::proxy::Proxy;

/// Bound for the minimum call rate checks.
const RATE_BOUND: Duration = Duration::from_secs(30);
/// A cut this short must not stop the node serving (TTL 3 s: 3 − 0.5 − 2 × 0.83 ≈ 0.8 s).
const SHORT_CUT: Duration = Duration::from_millis(400);

async fn cut_off_from_the_coordinator(backend: Backend) {
    let name = format!("cut_off_{backend:?}").to_lowercase();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new(dir.path(), &name);
    let mut _etcd = None;
    let to_args = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<String>>();
    let proxy = match backend {
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
            let proxy = Proxy::start(raft.parse::<SocketAddr>().unwrap()).await;
            let member = to_args(&["--coordinator", "raft", "--raft-endpoints", &raft]);
            let cut = to_args(&["--coordinator", "raft", "--raft-endpoints", &proxy.address()]);
            let specs = [cluster.spec("node-2", &member), cluster.spec("node-3", &cut)];
            cluster.start(&specs).await;
            proxy
        }
        Backend::Etcd => {
            let etcd = verse_coord_etcd::fixture::EtcdCluster::single().await;
            let proxy = Proxy::start(etcd.client_addr(0)).await;
            let prefix = format!("/verse/{name}");
            let direct = etcd.endpoints().join(",");
            let through = format!("http://{}", proxy.address());
            _etcd = Some(etcd);
            let args = |endpoints: &str| {
                to_args(&[
                    "--coordinator",
                    "etcd",
                    "--etcd-endpoints",
                    endpoints,
                    "--etcd-prefix",
                    &prefix,
                ])
            };
            let specs = [
                cluster.spec("node-1", &args(&direct)),
                cluster.spec("node-2", &args(&direct)),
                cluster.spec("node-3", &args(&through)),
            ];
            cluster.start(&specs).await;
            proxy
        }
    };
    eprintln!("{name}: three nodes ready after {:?}", started.elapsed());
    let caller =
        Arc::new(Caller::new(&cluster.nodes.values().collect::<Vec<_>>(), super::CALL_DEADLINE));
    let load = Load::start(&caller);
    load.wait_acknowledged(300, RATE_BOUND).await;
    wait_hosting(&caller, "node-3", RATE_BOUND).await;

    // A short cut: node-3 keeps serving, no call fails.
    let hosted = caller.activations("node-3", "Counter").await;
    proxy.cut();
    tokio::time::sleep(SHORT_CUT).await;
    proxy.heal();
    load.wait_acknowledged(300, RATE_BOUND).await;
    let failed = load.outcomes.failed();
    assert!(failed.is_empty(), "{name}: calls failed across a short cut: {failed:?}");
    let still = caller.activations("node-3", "Counter").await;
    assert!(
        hosted.iter().any(|id| still.contains(id)),
        "{name}: node-3 dropped its activations across a short cut"
    );

    // A long cut: every counter is served again (by the others) within TTL + 5 s of the
    // node's lease running out (itself at most TTL after the cut).
    // Callers stop using node-3 as a way in (a gateway would see it unready): while cut off
    // it holds calls for the shards it believes it still owns until their deadlines.
    caller.remove("node-3");
    proxy.cut();
    let cut = Instant::now();
    let bound = Duration::from_secs(2 * LEASE_TTL_SECS + 5);
    let probe = Arc::new(Caller::new(
        &cluster.nodes.values().filter(|n| n.id != "node-3").collect::<Vec<_>>(),
        Duration::from_millis(1000),
    ));
    // Wait until node-3's shards have moved: every counter answers through node-1 and node-2
    // without node-3 (a probe that node-3 answered would not show the move).
    let mut waiting: Vec<String> = counter_ids(super::SHARDS);
    while !waiting.is_empty() {
        let mut round = tokio::task::JoinSet::new();
        for id in waiting {
            let probe = probe.clone();
            round.spawn(async move {
                let answer: Result<CounterResponse, CallError> =
                    probe.call("node-1", "Counter", &id, "Get", &GetRequest {}).await;
                answer.err().map(|_| id)
            });
        }
        waiting = round.join_all().await.into_iter().flatten().collect();
        assert!(
            waiting.is_empty() || cut.elapsed() < bound,
            "{name}: {} counters not served {bound:?} after the cut, e.g. {:?}",
            waiting.len(),
            waiting.first()
        );
    }
    eprintln!("{name}: node-3's shards served elsewhere {:?} after the cut", cut.elapsed());
    load.wait_acknowledged(300, RATE_BOUND).await;

    // Healed: node-3 learns its lease is gone, discards everything, registers again as a
    // new incarnation and serves again.
    proxy.heal();
    cluster.nodes["node-3"].wait_logged("lease lost", Duration::from_secs(60)).await;
    caller.set_address(&cluster.nodes["node-3"]);
    wait_hosting(&caller, "node-3", Duration::from_secs(60)).await;
    load.wait_acknowledged(300, RATE_BOUND).await;

    let ids = load.ids.clone();
    let outcomes = load.finish().await;
    let maybe: i64 = outcomes.maybe.iter().map(|m| m.load(Ordering::Relaxed)).sum();
    eprintln!(
        "{name}: {} calls acknowledged, {} failed ({maybe} with unknown outcome)",
        outcomes.total.load(Ordering::Relaxed),
        outcomes.failed().len(),
    );
    check_values(&caller, &ids, &outcomes, false).await;
    cluster.stop_all().await;
    cluster.check_turns(&name);
    eprintln!("{name}: whole scenario took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_member_cut_off_from_the_voters_stops_before_others_take_over() {
    cut_off_from_the_coordinator(Backend::Raft).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_node_cut_off_from_etcd_stops_before_others_take_over() {
    cut_off_from_the_coordinator(Backend::Etcd).await;
}
