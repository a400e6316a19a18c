//! The coordinator conformance suite, one test per case, each on its own single-member etcd.

use verse_coord_etcd::fixture::EtcdFactory;
use verse_core::testing::coordinator as suite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_create_if_absent() {
    suite::registration_is_create_if_absent(&EtcdFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_waits_for_expiry() {
    suite::registration_waits_for_expiry(&EtcdFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_keeps_member() {
    suite::keepalive_keeps_member(&EtcdFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_is_unproven_before_record_disappears() {
    suite::holder_is_unproven_before_record_disappears(&EtcdFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_blip_keeps_lease() {
    suite::short_blip_keeps_lease(&EtcdFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_delivers_member_changes_in_order() {
    suite::watch_delivers_member_changes_in_order(&EtcdFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_from_revision() {
    suite::watch_resumes_from_revision(&EtcdFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resyncs_after_compaction() {
    suite::watch_resyncs_after_compaction(&EtcdFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_campaigner_leads_and_terms_fence_targets() {
    suite::one_campaigner_leads_and_terms_fence_targets(&EtcdFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_rule() {
    suite::claim_rule(&EtcdFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_after_owner_expiry_and_new_incarnation() {
    suite::claim_after_owner_expiry_and_new_incarnation(&EtcdFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimants_one_wins() {
    suite::concurrent_claimants_one_wins(&EtcdFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_conflict_fails_only_its_shard() {
    suite::batch_conflict_fails_only_its_shard(&EtcdFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_only_by_owner() {
    suite::release_only_by_owner(&EtcdFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_by_lost_lease_is_rejected() {
    suite::claim_by_lost_lease_is_rejected(&EtcdFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_initialise_once() {
    suite::shards_initialise_once(&EtcdFactory).await;
}
