//! The coordinator conformance suite against one in-process voter.

use verse_core::testing::coordinator as suite;

use crate::fixture::OneVoter;

#[tokio::test]
async fn registration_is_create_if_absent() {
    suite::registration_is_create_if_absent(&OneVoter).await;
}

#[tokio::test]
async fn registration_waits_for_expiry() {
    suite::registration_waits_for_expiry(&OneVoter).await;
}

#[tokio::test]
async fn keepalive_keeps_member() {
    suite::keepalive_keeps_member(&OneVoter).await;
}

#[tokio::test]
async fn holder_is_unproven_before_record_disappears() {
    suite::holder_is_unproven_before_record_disappears(&OneVoter).await;
}

#[tokio::test]
async fn short_blip_keeps_lease() {
    suite::short_blip_keeps_lease(&OneVoter).await;
}

#[tokio::test]
async fn watch_delivers_member_changes_in_order() {
    suite::watch_delivers_member_changes_in_order(&OneVoter).await;
}

#[tokio::test]
async fn watch_resumes_from_revision() {
    suite::watch_resumes_from_revision(&OneVoter).await;
}

#[tokio::test]
async fn watch_resyncs_after_compaction() {
    suite::watch_resyncs_after_compaction(&OneVoter).await;
}

#[tokio::test]
async fn one_campaigner_leads_and_terms_fence_targets() {
    suite::one_campaigner_leads_and_terms_fence_targets(&OneVoter).await;
}

#[tokio::test]
async fn claim_rule() {
    suite::claim_rule(&OneVoter).await;
}

#[tokio::test]
async fn claim_after_owner_expiry_and_new_incarnation() {
    suite::claim_after_owner_expiry_and_new_incarnation(&OneVoter).await;
}

#[tokio::test]
async fn concurrent_claimants_one_wins() {
    suite::concurrent_claimants_one_wins(&OneVoter).await;
}

#[tokio::test]
async fn batch_conflict_fails_only_its_shard() {
    suite::batch_conflict_fails_only_its_shard(&OneVoter).await;
}

#[tokio::test]
async fn release_only_by_owner() {
    suite::release_only_by_owner(&OneVoter).await;
}

#[tokio::test]
async fn claim_by_lost_lease_is_rejected() {
    suite::claim_by_lost_lease_is_rejected(&OneVoter).await;
}

#[tokio::test]
async fn shards_initialise_once() {
    suite::shards_initialise_once(&OneVoter).await;
}
