//! The `verse_core::testing` store suite, in both write modes, one test per case.

use verse_core::SharedClock;
use verse_core::testing::store::{self as suite, CONFORMANCE_TOMBSTONE_RETENTION};
use verse_store_redb::RedbStore;

use super::{inline_options, temp_store, writer_thread_options};

async fn writer_thread_store(clock: SharedClock) -> RedbStore {
    temp_store(writer_thread_options(clock, CONFORMANCE_TOMBSTONE_RETENTION))
}

async fn inline_store(clock: SharedClock) -> RedbStore {
    temp_store(inline_options(clock, CONFORMANCE_TOMBSTONE_RETENTION))
}

macro_rules! conformance_cases {
    ($($case:ident),+ $(,)?) => {
        mod writer_thread {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    suite::$case(&writer_thread_store).await;
                }
            )+
        }
        mod inline {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    suite::$case(&inline_store).await;
                }
            )+
        }
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
async fn whole_suite_writer_thread() {
    suite::run_store_conformance(writer_thread_store).await;
}

#[test]
fn writer_thread_store_matches_the_model() {
    suite::store_model_proptest(writer_thread_store);
}

#[test]
fn inline_store_matches_the_model() {
    suite::store_model_proptest(inline_store);
}
