//! Faults of etcd itself: a restart of a single member, and the loss of the leader of a
//! three-member cluster under keepalive load.

use std::time::{Duration, Instant};

use futures::StreamExt;
use verse_coord_etcd::EtcdCoordinator;
use verse_coord_etcd::fixture::{EtcdCluster, test_options};
use verse_core::coordinator::{
    Coordinator, LeaseState, MemberFlags, MemberRegistration, MemberRole, WatchChange,
};
use verse_core::shard::ShardId;

const TTL: Duration = Duration::from_secs(3);
const PATIENCE: Duration = Duration::from_secs(20);

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

async fn client(endpoints: Vec<String>) -> EtcdCoordinator {
    EtcdCoordinator::connect(test_options(endpoints, TTL)).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_keepalive_and_watch_recover() {
    let mut etcd = EtcdCluster::single().await;
    let holder = client(etcd.endpoints()).await;
    holder.join_cluster(64).await.expect("join");
    let record = holder.register(registration("n1")).await.expect("register");
    let from = holder.snapshot().await.expect("snapshot").revision.next();
    let mut stream = holder.watch(from).await.expect("watch");

    etcd.kill(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    etcd.restart(0).await;

    // The lease survived the restart (etcd persists leases): Proven again, same incarnation,
    // or else Lost is reported — never silently Proven on a dead lease.
    let before = holder.lease_status().borrow().valid_until;
    let mut status = holder.lease_status();
    let settled = tokio::time::timeout(
        PATIENCE,
        status.wait_for(|s| {
            s.state == LeaseState::Lost || (s.state == LeaseState::Proven && s.valid_until > before)
        }),
    )
    .await
    .map(|r| r.map(|s| *s));
    let settled = settled.expect("lease settled in time").expect("status kept");
    if settled.state == LeaseState::Proven {
        assert_eq!(settled.incarnation, Some(record.incarnation));
    }

    // The watch continues: a change after the restart arrives (possibly after a resync).
    let pinner = client(etcd.endpoints()).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "watch never recovered");
        if pinner.pin(ShardId(5), "n1".into()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let event = tokio::time::timeout(PATIENCE, stream.next()).await;
        let event = event.expect("an event in time").expect("stream open").expect("no error");
        match event.change {
            WatchChange::Pin { shard: ShardId(5), .. } => break,
            WatchChange::Resync(snapshot) if snapshot.pins.contains_key(&ShardId(5)) => break,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_leader_kill_loses_no_member() {
    let mut etcd = EtcdCluster::three().await;
    let endpoints = etcd.all_endpoints();
    let mut members = Vec::new();
    for i in 0..10 {
        let member = client(endpoints.clone()).await;
        member.join_cluster(64).await.expect("join");
        member.register(registration(&format!("n{i}"))).await.expect("register");
        members.push(member);
    }
    let leader = etcd.leader_index().await.expect("a leader");
    etcd.kill(leader);
    // Run well past the TTL under keepalive load.
    let start = Instant::now();
    while start.elapsed() < TTL * 2 {
        for member in &members {
            assert_ne!(member.lease_status().borrow().state, LeaseState::Lost, "a member was lost");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(list) = members[0].members().await {
            assert_eq!(list.len(), members.len(), "no member record expired");
            break;
        }
        assert!(Instant::now() < deadline, "the surviving quorum never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for member in &members {
        let mut status = member.lease_status();
        let proven =
            tokio::time::timeout(PATIENCE, status.wait_for(|s| s.state == LeaseState::Proven))
                .await
                .is_ok_and(|r| r.is_ok());
        assert!(proven, "every member is proven again");
    }
}
