//! Batches larger than one etcd transaction: split, fenced and answered per shard.

use std::time::Duration;

use verse_coord_etcd::EtcdCoordinator;
use verse_coord_etcd::fixture::{EtcdCluster, test_options};
use verse_core::TargetRecord;
use verse_core::coordinator::{
    ClaimRequest, Coordinator, MemberFlags, MemberRegistration, MemberRole, ReleaseRequest,
    TargetWrite,
};
use verse_core::shard::ShardId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_span_several_transactions() {
    const SHARDS: u32 = 1000;
    let etcd = EtcdCluster::single().await;
    let client = EtcdCoordinator::connect(test_options(etcd.endpoints(), Duration::from_secs(3)))
        .await
        .expect("connect");
    client.join_cluster(SHARDS).await.expect("join");
    client
        .register(MemberRegistration {
            id: "n1".into(),
            addresses: vec![],
            role: MemberRole::Node,
            version: "test".into(),
            start_time_unix_ms: 0,
            flags: MemberFlags::default(),
            node_local_store: false,
        })
        .await
        .expect("register");
    let term = client.campaign().await.expect("lead");
    let writes = (0..SHARDS)
        .map(|n| TargetWrite { shard: ShardId(n), target: Some(TargetRecord::planned("n1")) });
    client.write_targets(term, writes.collect()).await.expect("targets");
    let claims = (0..SHARDS).map(|n| ClaimRequest {
        shard: ShardId(n),
        expected_target: TargetRecord::planned("n1"),
        expected_owner: None,
    });
    let outcomes = client.claim(claims.collect()).await.expect("claims");
    assert_eq!(outcomes.len(), SHARDS as usize);
    assert!(outcomes.iter().enumerate().all(|(i, o)| o.shard.0 as usize == i && o.result.is_ok()));
    let releases = outcomes.iter().map(|o| ReleaseRequest {
        shard: o.shard,
        epoch: o.result.as_ref().expect("claimed").epoch,
    });
    let released = client.release(releases.collect()).await.expect("releases");
    assert!(released.iter().all(|o| o.result.as_ref().is_ok_and(|r| r.released)));
    let snapshot = client.snapshot().await.expect("snapshot");
    assert!(snapshot.map.iter().all(|e| e.owner.as_ref().is_some_and(|o| o.released)));
}
