//! Group commit: concurrent writes share transactions, each checked on its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use verse_core::store::{FenceKey, SaveRequest, StateStore, StoreError};
use verse_core::{Epoch, ShardId};
use verse_store_redb::{DEFAULT_TOMBSTONE_RETENTION, RedbStore, WriteMode, WriteStats};

use super::{inline_options, manual_clock, temp_store, writer_thread_options};

const EPOCH: Epoch = Epoch::new(1, 1);

fn key() -> FenceKey {
    FenceKey::Shard(ShardId(9))
}

fn save(id: usize, version: u64) -> SaveRequest {
    SaveRequest {
        fence: key(),
        epoch: EPOCH,
        object_id: format!("object-{id}"),
        object_type: "Counter".to_owned(),
        version,
        state: Bytes::from(format!("state of {id} at {version}")),
    }
}

async fn fenced_store() -> Arc<RedbStore> {
    let store = temp_store(writer_thread_options(manual_clock(), DEFAULT_TOMBSTONE_RETENTION));
    store.fence(&key(), EPOCH).await.unwrap();
    Arc::new(store)
}

/// Waits (without sleeping blind) until `cond` holds, failing after a generous deadline.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_commit_together_and_each_is_checked() {
    let store = fenced_store().await;
    let before = store.write_stats();
    let pause = store.pause_writes();
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..64 {
        let store = store.clone();
        tasks.spawn(async move { (id, store.save(save(id, 1)).await) });
    }
    // Two requests that must be refused inside the same batch without harming the others:
    // a stale version of object 0 (its version-1 save is ahead of it in the queue) and a save
    // at an epoch the fence has not reached.
    let stale = {
        let store = store.clone();
        tokio::spawn(async move {
            wait_for_submitted(&store, before.submitted + 64).await;
            store.save(save(0, 1)).await
        })
    };
    let early = {
        let store = store.clone();
        tokio::spawn(async move {
            wait_for_submitted(&store, before.submitted + 65).await;
            let mut req = save(999, 1);
            req.epoch = EPOCH.next();
            store.save(req).await
        })
    };
    wait_for_submitted(&store, before.submitted + 66).await;
    assert_eq!(store.write_stats().transactions, before.transactions, "writer is paused");
    drop(pause);

    while let Some(done) = tasks.join_next().await {
        let (id, result) = done.unwrap();
        result.unwrap_or_else(|e| panic!("save of object {id} failed: {e}"));
    }
    assert_eq!(
        stale.await.unwrap(),
        Err(StoreError::StaleVersion { object_id: "object-0".to_owned(), attempted: 1, stored: 1 })
    );
    assert!(matches!(early.await.unwrap(), Err(StoreError::Fenced { .. })));

    let after = store.write_stats();
    assert_eq!(after.submitted - before.submitted, 66);
    assert_eq!(after.transactions - before.transactions, 1, "one batch: {after:?}");
    assert_eq!(after.commits - before.commits, 1, "one fsync for 64 saves: {after:?}");
    for id in 0..64 {
        assert_eq!(store.load(&format!("object-{id}")).await.unwrap().unwrap().version, 1);
    }
    assert_eq!(store.load("object-999").await.unwrap(), None);
}

async fn wait_for_submitted(store: &RedbStore, count: u64) {
    wait_for("requests to queue", || store.write_stats().submitted >= count).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_writers_all_succeed() {
    let store = fenced_store().await;
    let before = store.write_stats();
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..64 {
        let store = store.clone();
        tasks.spawn(async move {
            for version in 1..=4 {
                store.save(save(id, version)).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let after = store.write_stats();
    assert_eq!(after.submitted - before.submitted, 256);
    assert!(after.commits - before.commits <= 256, "{after:?}");
    for id in 0..64 {
        assert_eq!(store.load(&format!("object-{id}")).await.unwrap().unwrap().version, 4);
    }
}

#[tokio::test]
async fn batches_respect_the_size_limit() {
    let mut options = writer_thread_options(manual_clock(), DEFAULT_TOMBSTONE_RETENTION);
    options.mode = WriteMode::WriterThread { queue_capacity: 64, max_batch: 8 };
    let store = Arc::new(temp_store(options));
    store.fence(&key(), EPOCH).await.unwrap();
    let before = store.write_stats();
    let pause = store.pause_writes();
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..32 {
        let store = store.clone();
        tasks.spawn(async move { store.save(save(id, 1)).await });
    }
    wait_for_submitted(&store, before.submitted + 32).await;
    drop(pause);
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    let after = store.write_stats();
    assert_eq!(after.transactions - before.transactions, 4, "32 requests in batches of 8");
}

#[tokio::test]
async fn refused_only_batches_do_not_commit() {
    let store = fenced_store().await;
    store.save(save(1, 5)).await.unwrap();
    let before = store.write_stats();
    assert!(store.save(save(1, 5)).await.is_err());
    assert_eq!(store.fence(&key(), Epoch::ZERO).await.unwrap(), EPOCH, "no-op fence");
    let after = store.write_stats();
    assert_eq!(after.transactions - before.transactions, 2);
    assert_eq!(after.commits, before.commits, "nothing changed: no fsync");
}

#[tokio::test]
async fn inline_mode_ignores_pauses_and_counts_one_transaction_per_write() {
    let store = temp_store(inline_options(manual_clock(), DEFAULT_TOMBSTONE_RETENTION));
    let _pause = store.pause_writes();
    store.fence(&key(), EPOCH).await.unwrap();
    store.save(save(1, 1)).await.unwrap();
    assert_eq!(store.write_stats(), WriteStats { submitted: 2, transactions: 2, commits: 2 });
    assert!(store.is_node_local());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_applies_queued_writes_even_while_paused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let options = || writer_thread_options(manual_clock(), DEFAULT_TOMBSTONE_RETENTION);
    let store = RedbStore::open(&path, options()).unwrap();
    store.fence(&key(), EPOCH).await.unwrap();
    let submitted = store.write_stats().submitted;
    let pause = store.pause_writes();
    // Queue a save, then stop waiting for its answer: the request stays queued.
    tokio::select! {
        biased;
        result = store.save(save(7, 1)) => panic!("answered while paused: {result:?}"),
        () = wait_for_submitted(&store, submitted + 1) => {}
    }
    // Dropping the store with the pause still held must not hang: closing overrides pauses.
    let closing = tokio::task::spawn_blocking(move || drop(store));
    tokio::time::timeout(Duration::from_secs(30), closing).await.unwrap().unwrap();
    drop(pause);
    let store = RedbStore::open(&path, options()).unwrap();
    assert_eq!(store.load("object-7").await.unwrap().unwrap().version, 1);
}
