//! Three voters that lose their majority: writes fail with a clear error instead of hanging,
//! nothing acknowledged is lost, and once the voters can talk again every replica applies the
//! same history (no divergence) and writes succeed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use verse_coord_raft::{ClientOptions, LocalRouter, RaftAccess, RaftCoordinator, RaftVoter};
use verse_core::coordinator::{CoordError, Coordinator, Revision, WatchChange, WatchEvent};
use verse_core::{ShardId, SystemClock};

use crate::fixture::start_voter;

/// Every change voter `voter` applied up to `through` (its own replica's history: a voter's
/// watch is served locally, never forwarded).
async fn history(voter: &RaftVoter, through: Revision) -> Vec<WatchEvent> {
    let mut stream = voter.watch(Revision(0)).await.unwrap();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, stream.next())
            .await
            .unwrap_or_else(|_| panic!("voter {} did not apply up to {through:?}", voter.id()))
            .unwrap()
            .unwrap();
        let done = event.revision >= through;
        if !matches!(event.change, WatchChange::Progress) && event.revision <= through {
            events.push(event);
        }
        if done {
            return events;
        }
    }
}

#[tokio::test]
async fn losing_a_majority_blocks_writes_with_a_clear_error_and_no_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let router = LocalRouter::new();
    let mut voters = Vec::new();
    for id in 1..=3 {
        voters.push(Arc::new(start_voter(id, dir.path(), &router).await));
    }
    voters[0].initialize(&[1, 2, 3]).await.unwrap();
    let leader = voters[0].wait_for_leader(Duration::from_secs(10)).await.unwrap();
    let leader_voter = voters.iter().find(|v| v.id() == leader).unwrap().clone();
    let mut options = ClientOptions::new(Duration::from_secs(30));
    options.request_timeout = Duration::from_secs(2);
    let access: Arc<dyn RaftAccess> = leader_voter.clone();
    let client = RaftCoordinator::new(access, SystemClock::shared(), options);
    client.join_cluster(64).await.unwrap();
    for n in 0..10 {
        client.pin(ShardId(n), "a".into()).await.unwrap();
    }

    // Cut both followers off: no two voters can talk, so no majority exists anywhere.
    for voter in voters.iter().filter(|v| v.id() != leader) {
        router.isolate(voter.id(), true);
    }
    let start = Instant::now();
    let error = loop {
        match client.pin(ShardId(20), "a".into()).await {
            Err(CoordError::Unavailable(message)) if message.contains("majority") => break message,
            Err(CoordError::Unavailable(_)) => {}
            other => panic!("a write without a majority must fail, got {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(15), "writes kept timing out");
    };
    assert!(error.contains("writes are blocked until a majority is reachable"), "{error}");
    // Refused at once, not after the request timeout.
    let refused = Instant::now();
    assert!(client.pin(ShardId(21), "a".into()).await.is_err());
    assert!(refused.elapsed() < Duration::from_secs(1), "the refusal must not wait");

    for voter in &voters {
        router.isolate(voter.id(), false);
    }
    let start = Instant::now();
    loop {
        match client.pin(ShardId(30), "a".into()).await {
            Ok(()) => break,
            Err(CoordError::Unavailable(_)) => {}
            Err(other) => panic!("unexpected error after the heal: {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(15), "writes did not resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snapshot = client.snapshot().await.unwrap();
    for n in (0..10).chain([30]) {
        assert!(snapshot.pins.contains_key(&ShardId(n)), "acknowledged pin {n} was lost");
    }
    assert!(!snapshot.pins.contains_key(&ShardId(21)), "a refused write must never apply");
    let reference = history(&voters[0], snapshot.revision).await;
    assert!(!reference.is_empty());
    for voter in &voters[1..] {
        assert_eq!(history(voter, snapshot.revision).await, reference, "replicas diverged");
    }
    for voter in &voters {
        voter.shutdown().await;
    }
}
