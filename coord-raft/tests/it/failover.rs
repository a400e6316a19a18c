//! Three voters: killing the Raft leader elects another, loses no acknowledged write, and
//! expires no live member's lease.

use std::time::{Duration, Instant};

use verse_core::ShardId;
use verse_core::coordinator::{
    Coordinator, LeaseState, MemberFlags, MemberRegistration, MemberRole,
};

use crate::fixture::VoterCluster;

#[tokio::test]
async fn leader_kill_elects_a_new_leader_and_keeps_live_leases() {
    let cluster = VoterCluster::start(3).await;
    let old_leader = cluster.voters[0].current_leader().unwrap();
    let survivor = cluster.voters.iter().position(|v| v.id() != old_leader).unwrap();
    let (client, _) = cluster.client_of(survivor, Duration::from_secs(3)).await;
    client.join_cluster(64).await.unwrap();
    let registration = MemberRegistration {
        id: "n1".into(),
        addresses: vec![],
        role: MemberRole::Node,
        version: "test".into(),
        start_time_unix_ms: 0,
        flags: MemberFlags::default(),
        node_local_store: false,
    };
    let record = client.register(registration).await.unwrap();
    for n in 0..20 {
        client.pin(ShardId(n), "n1".into()).await.unwrap();
    }
    let mut status = client.lease_status();
    let watch_lost =
        tokio::spawn(async move { status.wait_for(|s| s.state == LeaseState::Lost).await.is_ok() });

    let leader_index = cluster.voters.iter().position(|v| v.id() == old_leader).unwrap();
    cluster.voters[leader_index].shutdown().await;
    let start = Instant::now();
    let new_leader = loop {
        let leader = cluster.voters[survivor].current_leader();
        if let Some(leader) = leader.filter(|&l| l != old_leader) {
            break leader;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no new Raft leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(new_leader, old_leader);

    // Well past the TTL: the member stays, on the same incarnation, with a proven lease.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let members = client.members().await.unwrap();
    assert_eq!(members, vec![record.clone()], "the live member's lease did not expire");
    assert_eq!(client.lease_status().borrow().state, LeaseState::Proven);
    assert!(!watch_lost.is_finished(), "the lease was never lost");
    let pins = client.snapshot().await.unwrap().pins;
    assert_eq!(pins.len(), 20, "no acknowledged write was lost");
}
