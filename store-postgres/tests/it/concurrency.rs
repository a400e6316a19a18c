//! Fence raises racing saves: a save at the old epoch either lands before the raise returns or
//! is refused; none lands afterwards.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;
use verse_core::store::{FenceKey, SaveRequest, StateStore, StoreError};
use verse_core::{Epoch, ManualClock, ShardId};
use verse_store_postgres::PostgresStore;
use verse_store_postgres::fixture::PostgresServer;

use super::fresh_store;

const WRITERS: usize = 8;

fn save(key: &FenceKey, epoch: Epoch, id: String, version: u64) -> SaveRequest {
    SaveRequest {
        fence: key.clone(),
        epoch,
        object_id: id,
        object_type: "Counter".to_owned(),
        version,
        state: Bytes::from_static(b"x"),
    }
}

/// A plain client of the shared server's test database, for reading the tables directly.
async fn direct_client() -> (tokio_postgres::Client, tokio::task::JoinHandle<()>) {
    let (client, connection) =
        PostgresServer::shared().config().connect(tokio_postgres::NoTls).await.unwrap();
    (client, tokio::spawn(async move { connection.await.unwrap() }))
}

/// The ids of every record in `schema` with `prefix`, read in one statement (one snapshot).
async fn stored_ids(
    client: &tokio_postgres::Client,
    schema: &str,
    prefix: &str,
) -> BTreeSet<String> {
    let sql = format!("SELECT id FROM \"{schema}\".objects WHERE starts_with(id, $1)");
    let rows = client.query(&sql, &[&prefix]).await.unwrap();
    rows.iter().map(|row| row.get::<_, String>(0)).collect()
}

/// One writer: saves new objects of the shard at the old epoch, one after another, until one is
/// refused; returns the ids acknowledged and the refusal.
async fn write_until_fenced(
    store: PostgresStore,
    key: FenceKey,
    old: Epoch,
    prefix: String,
) -> (Vec<String>, StoreError) {
    let mut acknowledged = Vec::new();
    for n in 0.. {
        let id = format!("{prefix}{n}");
        match store.save(save(&key, old, id.clone(), 1)).await {
            Ok(()) => acknowledged.push(id),
            Err(error) => return (acknowledged, error),
        }
    }
    unreachable!("the loop ends only by a refusal")
}

/// Rounds of the race, each at the next epoch (a lost race shows in some rounds, not all).
const ROUNDS: u64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_save_at_the_old_epoch_lands_after_the_fence_rose() {
    let store = fresh_store("race", ManualClock::new().shared(), Duration::from_secs(60)).await;
    let schema = store.schema().as_str().to_owned();
    let (client, driver) = direct_client().await;
    let key = FenceKey::Shard(ShardId(7));
    for round in 1..=ROUNDS {
        let (old, new) = (Epoch::new(1, round), Epoch::new(1, round + 1));
        let round_prefix = format!("r{round}-");
        assert_eq!(store.fence(&key, old).await.unwrap(), old);

        let mut writers = JoinSet::new();
        for writer in 0..WRITERS {
            let prefix = format!("{round_prefix}w{writer}-");
            writers.spawn(write_until_fenced(store.clone(), key.clone(), old, prefix));
        }
        // Let the writers get going (a condition with a deadline, not a sleep).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while stored_ids(&client, &schema, &round_prefix).await.len() < 2 * WRITERS {
            assert!(tokio::time::Instant::now() < deadline, "writers made no progress");
        }

        // Raise, then read what is stored at once, on a connection already open.
        assert_eq!(store.fence(&key, new).await.unwrap(), new);
        let at_raise = stored_ids(&client, &schema, &round_prefix).await;

        let mut acknowledged = BTreeSet::new();
        while let Some(result) = writers.join_next().await {
            let (ids, refusal) = result.unwrap();
            let expected = StoreError::Fenced { key: key.clone(), attempted: old, current: new };
            assert_eq!(refusal, expected);
            acknowledged.extend(ids);
        }
        let at_end = stored_ids(&client, &schema, &round_prefix).await;
        assert_eq!(at_end, at_raise, "round {round}: saves at {old} landed after the raise");
        assert_eq!(at_end, acknowledged, "round {round}: stored != acknowledged");
        assert!(acknowledged.len() >= 2 * WRITERS);

        // The new owner writes at the new epoch, above what the old one left.
        let id = acknowledged.first().unwrap().clone();
        let err = store.save(save(&key, new, id.clone(), 1)).await.unwrap_err();
        assert!(matches!(err, StoreError::StaleVersion { stored: 1, .. }), "{err}");
        store.save(save(&key, new, id, 2)).await.unwrap();
    }
    drop(client);
    driver.await.unwrap();
}
