//! What is acknowledged survives a new store (new connections) on the same schema, and
//! tombstones age by the database's clock in production mode.

use std::time::Duration;

use bytes::Bytes;
use verse_core::store::{DeleteRequest, FenceKey, SaveRequest, StateStore, StoredObject};
use verse_core::{Epoch, ManualClock, ShardId};
use verse_store_postgres::fixture::PostgresServer;
use verse_store_postgres::{DEFAULT_TOMBSTONE_RETENTION, PostgresOptions, PostgresStore};

use super::options;

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

fn delete_pinned(version: u64) -> DeleteRequest {
    DeleteRequest {
        fence: FenceKey::Node("node-a".to_owned()),
        epoch: Epoch::new(1, 2),
        object_id: "node-a/pinned".to_owned(),
        object_type: "Pinned".to_owned(),
        version,
    }
}

#[tokio::test]
async fn data_survives_reconnecting() {
    let schema = PostgresServer::shared().unique_schema("durability");
    let open = || async {
        let clock = ManualClock::new().shared();
        PostgresStore::connect(options(schema.clone(), clock, DEFAULT_TOMBSTONE_RETENTION))
            .await
            .unwrap()
    };
    let shard = FenceKey::Shard(ShardId(3));
    let node = FenceKey::Node("node-a".to_owned());
    {
        let store = open().await;
        store.fence(&shard, Epoch::new(1, 4)).await.unwrap();
        store.fence(&node, Epoch::new(1, 2)).await.unwrap();
        store.save(save(1, "one")).await.unwrap();
        store.save(save(2, "two")).await.unwrap();
        store.delete(delete_pinned(7)).await.unwrap();
    }
    // A new store: new pool, new connections, tables already there.
    let store = open().await;
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
    // The fence and version checks hold after reconnecting too.
    assert!(store.save(save(2, "again")).await.is_err());
    store.save(save(3, "three")).await.unwrap();
    assert!(!store.is_node_local());
}

#[tokio::test]
async fn database_time_dates_tombstones() {
    let schema = PostgresServer::shared().unique_schema("database_time");
    let connect = |retention: Duration| {
        let mut options = PostgresOptions::new(PostgresServer::shared().config());
        options.schema = schema.clone();
        options.tombstone_retention = retention;
        PostgresStore::connect(options)
    };
    let keeping = connect(Duration::from_secs(3600)).await.unwrap();
    let node = FenceKey::Node("node-a".to_owned());
    keeping.fence(&node, Epoch::new(1, 2)).await.unwrap();
    keeping.delete(delete_pinned(1)).await.unwrap();
    assert_eq!(keeping.purge_tombstones().await.unwrap(), 0, "an hour has not passed");
    // A store sharing the tables with no retention: every tombstone is old enough.
    let purging = connect(Duration::ZERO).await.unwrap();
    assert_eq!(purging.purge_tombstones().await.unwrap(), 1);
    assert_eq!(keeping.load("node-a/pinned").await.unwrap(), None);
}
