//! A voter restarted from its data directory comes back with all state.

use std::sync::Arc;
use std::time::Duration;

use verse_coord_raft::{ClientOptions, LocalRouter, RaftCoordinator};
use verse_core::coordinator::{
    Coordinator, MemberFlags, MemberRegistration, MemberRole, TargetWrite,
};
use verse_core::{ShardId, SystemClock, TargetRecord};

use crate::fixture::start_voter;

fn registration(id: &str) -> MemberRegistration {
    MemberRegistration {
        id: id.into(),
        addresses: vec![],
        role: MemberRole::Node,
        version: "test".into(),
        start_time_unix_ms: 0,
        flags: MemberFlags::default(),
        node_local_store: false,
    }
}

#[tokio::test]
async fn restart_from_disk_keeps_state_across_snapshots_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let router = LocalRouter::new();
    let voter = Arc::new(start_voter(1, dir.path(), &router).await);
    voter.initialize(&[1]).await.unwrap();
    voter.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    let client = RaftCoordinator::new(
        voter.clone(),
        SystemClock::shared(),
        ClientOptions::new(Duration::from_secs(30)),
    );
    client.join_cluster(64).await.unwrap();
    let member = client.register(registration("a")).await.unwrap();
    let term = client.campaign().await.unwrap();
    let writes = (0..64)
        .map(|n| TargetWrite { shard: ShardId(n), target: Some(TargetRecord::planned("a")) })
        .collect();
    client.write_targets(term, writes).await.unwrap();
    // Part of the state in a snapshot, part only in the log after it.
    voter.snapshot_now().await.unwrap();
    for n in 0..10 {
        client.pin(ShardId(n), "a".into()).await.unwrap();
    }
    let before = client.snapshot().await.unwrap();
    drop(client);
    voter.shutdown().await;
    drop(voter);

    let voter = Arc::new(start_voter(1, dir.path(), &router).await);
    voter.initialize(&[1]).await.unwrap();
    voter.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    assert!(voter.snapshot_index().is_some(), "the snapshot was loaded from disk");
    let client = RaftCoordinator::new(
        voter.clone(),
        SystemClock::shared(),
        ClientOptions::new(Duration::from_secs(30)),
    );
    let after = client.snapshot().await.unwrap();
    assert_eq!(after, before, "members, leader, targets and pins survive the restart");
    assert_eq!(after.members.values().next().map(|m| m.incarnation), Some(member.incarnation));
    voter.shutdown().await;
}

#[tokio::test]
async fn a_data_file_of_another_node_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let router = LocalRouter::new();
    let voter = start_voter(1, dir.path(), &router).await;
    voter.shutdown().await;
    drop(voter);
    std::fs::rename(dir.path().join("voter-1.redb"), dir.path().join("voter-2.redb")).unwrap();
    let refused = verse_coord_raft::RaftVoter::start(
        crate::fixture::voter_config(2, dir.path()),
        &router,
        SystemClock::shared(),
        Arc::new(verse_core::TokioBlockingExecutor),
    )
    .await;
    assert!(refused.is_err(), "a data file written by voter 1 cannot serve voter 2");
}
