//! What is acknowledged survives closing and reopening the file.

use bytes::Bytes;
use verse_core::store::{DeleteRequest, FenceKey, SaveRequest, StateStore, StoredObject};
use verse_core::{Epoch, ShardId};
use verse_store_redb::{DEFAULT_TOMBSTONE_RETENTION, RedbStore};

use super::{inline_options, manual_clock, writer_thread_options};

fn save(version: u64, state: &'static str) -> SaveRequest {
    SaveRequest {
        fence: FenceKey::Shard(ShardId(3)),
        epoch: Epoch::new(1, 4),
        object_id: "counter-1".to_owned(),
        object_type: "Counter".to_owned(),
        version,
        state: Bytes::from_static(state.as_bytes()),
    }
}

#[tokio::test]
async fn data_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let shard = FenceKey::Shard(ShardId(3));
    let node = FenceKey::Node("node-a".to_owned());
    {
        let store = RedbStore::open(
            &path,
            writer_thread_options(manual_clock(), DEFAULT_TOMBSTONE_RETENTION),
        )
        .unwrap();
        store.fence(&shard, Epoch::new(1, 4)).await.unwrap();
        store.fence(&node, Epoch::new(1, 2)).await.unwrap();
        store.save(save(1, "one")).await.unwrap();
        store.save(save(2, "two")).await.unwrap();
        store
            .delete(DeleteRequest {
                fence: node.clone(),
                epoch: Epoch::new(1, 2),
                object_id: "node-a/pinned".to_owned(),
                object_type: "Pinned".to_owned(),
                version: 7,
            })
            .await
            .unwrap();
        store.shutdown().unwrap();
    }
    // Reopen in the other mode: the file format does not depend on it.
    let store = RedbStore::open(&path, inline_options(manual_clock(), DEFAULT_TOMBSTONE_RETENTION))
        .unwrap();
    assert_eq!(store.current_fence(&shard).await.unwrap(), Epoch::new(1, 4));
    assert_eq!(store.current_fence(&node).await.unwrap(), Epoch::new(1, 2));
    let expected = StoredObject {
        object_type: "Counter".to_owned(),
        version: 2,
        state: Some(Bytes::from_static(b"two")),
    };
    assert_eq!(store.load("counter-1").await.unwrap(), Some(expected));
    let tombstone = StoredObject { object_type: "Pinned".to_owned(), version: 7, state: None };
    assert_eq!(store.load("node-a/pinned").await.unwrap(), Some(tombstone));
    // The fence and version checks hold after reopening too.
    assert!(store.save(save(2, "again")).await.is_err());
    store.save(save(3, "three")).await.unwrap();
    drop(store);

    // Dropping (not only shutdown) flushes and closes: the file opens again at once.
    let store = RedbStore::open(&path, inline_options(manual_clock(), DEFAULT_TOMBSTONE_RETENTION))
        .unwrap();
    assert_eq!(store.load("counter-1").await.unwrap().unwrap().version, 3);
}

#[test]
fn a_file_is_opened_by_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let options = || inline_options(manual_clock(), DEFAULT_TOMBSTONE_RETENTION);
    let first = RedbStore::open(&path, options()).unwrap();
    let second = RedbStore::open(&path, options()).unwrap_err();
    assert!(second.is_retryable(), "{second}");
    drop(first);
    RedbStore::open(&path, options()).unwrap();
}
