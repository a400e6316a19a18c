//! The coordinator conformance suite against one and three in-process voters.

use verse_core::testing::coordinator as suite;

use crate::fixture::{GrpcVoters, Voters};

macro_rules! cases {
    ($factory:expr; $($case:ident)*) => {
        $(
            #[tokio::test]
            async fn $case() {
                suite::$case(&$factory).await;
            }
        )*
    };
}

/// One voter: the `verse dev` case.
mod one_voter {
    use super::*;
    cases!(Voters(1); registration_is_create_if_absent registration_waits_for_expiry keepalive_keeps_member holder_is_unproven_before_record_disappears short_blip_keeps_lease watch_delivers_member_changes_in_order watch_resumes_from_revision watch_resyncs_after_compaction one_campaigner_leads_and_terms_fence_targets claim_rule claim_after_owner_expiry_and_new_incarnation concurrent_claimants_one_wins batch_conflict_fails_only_its_shard release_only_by_owner claim_by_lost_lease_is_rejected shards_initialise_once);
}

/// Three voters; clients connect to each voter in turn.
mod three_voters {
    use super::*;
    cases!(Voters(3); registration_is_create_if_absent registration_waits_for_expiry keepalive_keeps_member holder_is_unproven_before_record_disappears short_blip_keeps_lease watch_delivers_member_changes_in_order watch_resumes_from_revision watch_resyncs_after_compaction one_campaigner_leads_and_terms_fence_targets claim_rule claim_after_owner_expiry_and_new_incarnation concurrent_claimants_one_wins batch_conflict_fails_only_its_shard release_only_by_owner claim_by_lost_lease_is_rejected shards_initialise_once);
}

/// Three voters over gRPC on loopback TCP; every client is a member that is not a voter,
/// reaching the group through the coordinator service (of each voter in turn, so followers
/// forward over gRPC).
mod three_voters_grpc {
    use super::*;
    cases!(GrpcVoters(3); registration_is_create_if_absent registration_waits_for_expiry keepalive_keeps_member holder_is_unproven_before_record_disappears short_blip_keeps_lease watch_delivers_member_changes_in_order watch_resumes_from_revision watch_resyncs_after_compaction one_campaigner_leads_and_terms_fence_targets claim_rule claim_after_owner_expiry_and_new_incarnation concurrent_claimants_one_wins batch_conflict_fails_only_its_shard release_only_by_owner claim_by_lost_lease_is_rejected shards_initialise_once);
}
