//! The `verse_core::testing` store suite against the real server, one test per case.

use verse_core::SharedClock;
use verse_core::testing::store::{self as suite, CONFORMANCE_TOMBSTONE_RETENTION};
use verse_store_postgres::PostgresStore;

use super::fresh_store;

async fn conformance_store(clock: SharedClock) -> PostgresStore {
    fresh_store("conformance", clock, CONFORMANCE_TOMBSTONE_RETENTION).await
}

macro_rules! conformance_cases {
    ($($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                suite::$case(&conformance_store).await;
            }
        )+
    };
}

conformance_cases!(
    fence_is_monotonic_and_idempotent,
    save_below_fence_is_fenced,
    save_above_fence_is_fenced,
    delete_is_fenced_and_leaves_tombstone,
    delete_of_unknown_object_leaves_tombstone,
    older_version_is_stale,
    versions_never_reset_across_epochs,
    fence_keys_are_independent,
    load_returns_state_type_and_version,
    rejected_write_changes_nothing,
    tombstone_purge_respects_retention,
);

/// The whole suite in one go, so a case added to it but not to the list above still runs.
#[tokio::test]
async fn whole_suite() {
    suite::run_store_conformance(conformance_store).await;
}

#[test]
fn postgres_store_matches_the_model() {
    suite::store_model_proptest(conformance_store);
}
