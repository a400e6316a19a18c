//! A stale owner: node-3 is paused with SIGSTOP under load past its lease, the others take
//! its shards over (new epochs, fences raised), then it is resumed with SIGCONT. It cannot
//! overwrite newer state: the write it would issue for the object it served last, at its
//! epoch, is replayed by the test against the store and rejected by the fence (`Fenced`);
//! any save node-3 itself still tries after the resume must fail the same way (the count is
//! printed: whether the pause caught a turn between its check and its save is up to timing);
//! every counter ends within [acknowledged, acknowledged + unknown], and the turn-interval
//! checker finds no overlap and no epoch going back. Then it learns its lease is lost and registers again. On the embedded Raft coordinator.

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use verse_core::CallError;
use verse_examples::proto::counter::{CounterResponse, GetRequest};

use verse_core::store::{FenceKey, SaveRequest, StoreError};
use verse_core::{Epoch, StateStore};
use verse_store_postgres::{PostgresOptions, PostgresStore, SchemaName};

use super::{Cluster, LEASE_TTL_SECS, Load, check_values, wait_hosting};
use crate::support::process::{Caller, counter_ids};

/// Bound for the minimum call rate checks.
const RATE_BOUND: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_stale_owner_resumed_after_its_lease_cannot_overwrite_newer_state() {
    let name = "stale_owner_raft";
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new(dir.path(), name);
    let to_args = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<String>>();
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
    let specs = [cluster.spec("node-2", &member), cluster.spec("node-3", &member)];
    cluster.start(&specs).await;
    let caller =
        Arc::new(Caller::new(&cluster.nodes.values().collect::<Vec<_>>(), super::CALL_DEADLINE));
    let load = Load::start(&caller);
    load.wait_acknowledged(300, RATE_BOUND).await;
    wait_hosting(&caller, "node-3", RATE_BOUND).await;

    // Pause node-3 in the middle of its turns; callers stop using it (a paused peer would
    // only time out), and the others take its shards over.
    caller.remove("node-3");
    cluster.pause("node-3");
    let paused = Instant::now();
    let probe = Arc::new(Caller::new(
        &cluster.nodes.values().filter(|n| n.id != "node-3").collect::<Vec<_>>(),
        Duration::from_millis(1000),
    ));
    let bound = Duration::from_secs(LEASE_TTL_SECS + 5);
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
            waiting.is_empty() || paused.elapsed() < bound,
            "{name}: {} counters not served {bound:?} after the pause",
            waiting.len()
        );
    }
    // Newer state is written by the new owners.
    load.wait_acknowledged(500, RATE_BOUND).await;

    // The write node-3 would issue for the object it served last, at its epoch, replayed by
    // the test against the cluster's own store: the fence the new owner raised rejects it.
    let last = cluster
        .turns_of("node-3")
        .into_iter()
        .max_by_key(|turn| turn.start)
        .expect("node-3 ran turns before the pause");
    let store = {
        let (url, schema) = cluster.postgres();
        let mut options =
            PostgresOptions::new(url.parse::<verse_store_postgres::Config>().unwrap());
        options.schema = SchemaName::new(schema.as_str()).unwrap();
        PostgresStore::connect(options).await.unwrap()
    };
    let shard = verse_core::shard::hash_shard(&last.object, super::SHARDS);
    let stale_epoch = Epoch::new(last.epoch.0, last.epoch.1);
    let stale = SaveRequest {
        fence: FenceKey::Shard(shard),
        epoch: stale_epoch,
        object_id: last.object.clone(),
        object_type: "Counter".into(),
        version: u64::MAX >> 1,
        state: prost::bytes::Bytes::from_static(b"stale"),
    };
    match store.save(stale).await {
        Err(StoreError::Fenced { attempted, current, .. }) => {
            assert_eq!(attempted, stale_epoch);
            assert!(current > stale_epoch, "{name}: fence {current} not above {stale_epoch}");
            eprintln!(
                "{name}: the stale write of {} at {stale_epoch} was fenced (fence {current})",
                last.object
            );
        }
        other => panic!("{name}: a stale owner's write was not fenced: {other:?}"),
    }

    // Resumed, node-3 finds its lease gone: it may try the effects it was about to issue; the
    // store fence rejects its writes. It then discards everything and registers again.
    cluster.nodes["node-3"].resume();
    cluster.nodes["node-3"].wait_logged("lease lost", Duration::from_secs(60)).await;
    caller.set_address(&cluster.nodes["node-3"]);
    let rejected = cluster.nodes["node-3"].logged("state save failed");
    eprintln!("{name}: the stale owner logged {} rejected saves", rejected.len());
    for line in &rejected {
        assert!(line.contains("fence"), "{name}: a save failed for another reason: {line}");
    }
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
    cluster.check_turns(name);
    eprintln!("{name}: whole scenario took {:?}", started.elapsed());
}
