//! Membership changes through the crate's API over gRPC, and the refusal of a voter whose data
//! directory is missing while the group still lists its id (with the operator path back).

use std::time::Duration;

use verse_coord_raft::{MembershipView, RaftVoter, VoterError};
use verse_core::coordinator::Coordinator;

use crate::fixture::{GrpcCluster, start_grpc_voter};

/// The membership as `voter` has applied it, once `settled` holds (a change committed through
/// another voter reaches this one's state machine a moment later), or as it is after 10 s.
async fn membership_once(
    voter: &RaftVoter,
    settled: impl Fn(&MembershipView) -> bool,
) -> MembershipView {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let view = voter.membership();
        if settled(&view) || tokio::time::Instant::now() >= deadline {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn add_learner_promote_and_remove() {
    let cluster = GrpcCluster::start(3).await;
    let (voter, address) =
        start_grpc_voter(4, cluster.dir.path(), cluster.addresses.clone(), &cluster.stop)
            .await
            .unwrap();

    // Run on a voter that is not necessarily the Raft leader: the change is forwarded.
    cluster.voters[1].add_learner(4, &address).await.unwrap();
    let view = membership_once(&cluster.voters[0], |v| v.learners.contains_key(&4)).await;
    assert_eq!(view.learners.get(&4), Some(&address));
    assert!(!view.voters.contains_key(&4));

    cluster.voters[2].promote(&[4]).await.unwrap();
    let view = membership_once(&cluster.voters[0], |v| v.voters.contains_key(&4)).await;
    assert_eq!(view.voters.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert!(view.learners.is_empty());
    assert_eq!(voter.wait_for_leader(Duration::from_secs(10)).await.unwrap(), {
        cluster.voters[0].current_leader().unwrap()
    });

    cluster.voters[0].remove(&[4]).await.unwrap();
    let view = membership_once(&cluster.voters[1], |v| !v.voters.contains_key(&4)).await;
    assert_eq!(view.voters.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(view.learners.is_empty());

    // The group still serves.
    let (client, _) = cluster.client_of(0, Duration::from_secs(5)).await;
    client.join_cluster(16).await.unwrap();
    voter.shutdown().await;
}

#[tokio::test]
async fn a_voter_without_its_data_directory_refuses_its_old_id_until_removed_and_re_added() {
    let cluster = GrpcCluster::start(3).await;
    let leader = cluster.voters[0].current_leader().unwrap();
    let lost = cluster.voters.iter().position(|v| v.id() != leader).unwrap();
    let lost_id = cluster.voters[lost].id();
    let (client, _) = cluster
        .client_of(
            cluster.voters.iter().position(|v| v.id() == leader).unwrap(),
            Duration::from_secs(5),
        )
        .await;
    client.join_cluster(16).await.unwrap();

    cluster.voters[lost].shutdown().await;
    std::fs::remove_file(cluster.dir.path().join(format!("voter-{lost_id}.redb"))).unwrap();
    let seeds: Vec<String> =
        (0..3).filter(|&i| i != lost).map(|i| cluster.addresses[i].clone()).collect();

    let refused = start_grpc_voter(lost_id, cluster.dir.path(), seeds.clone(), &cluster.stop).await;
    assert!(
        matches!(refused, Err(VoterError::DataMissing(id)) if id == lost_id),
        "a voter that lost its data cannot rejoin under its old id: {refused:?}"
    );

    // The operator path: remove the id, start the voter empty, add it back as a learner,
    // promote it.
    let survivor = (0..3).find(|&i| i != lost).unwrap();
    cluster.voters[survivor].remove(&[lost_id]).await.unwrap();
    let (voter, address) =
        start_grpc_voter(lost_id, cluster.dir.path(), seeds, &cluster.stop).await.unwrap();
    cluster.voters[survivor].add_learner(lost_id, &address).await.unwrap();
    cluster.voters[survivor].promote(&[lost_id]).await.unwrap();
    let view = cluster.voters[survivor].membership();
    assert!(view.voters.contains_key(&lost_id));
    // The re-added voter caught up with the state (the configuration written before).
    let snapshot = client.snapshot().await.unwrap();
    assert_eq!(snapshot.config.shard_count, 16);
    let mut caught_up = false;
    for _ in 0..100 {
        if voter.membership().voters.contains_key(&lost_id) {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(caught_up, "the re-added voter sees itself as a voter");
    voter.shutdown().await;
}
