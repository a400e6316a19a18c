//! The [`StateStore`] conformance suite (invariant 5: state writes are fenced).
//!
//! A backend runs it with a *factory*: an `Fn(SharedClock) -> impl Future<Output = S>` that
//! returns a fresh, empty store which reads time only from the given clock and keeps tombstones
//! for exactly [`CONFORMANCE_TOMBSTONE_RETENTION`]. The suite hands the factory a
//! [`ManualClock`] and moves it itself, so retention is checked without sleeping.
//!
//! - [`run_store_conformance`] runs every case in turn; each case is also a public function
//!   taking `&factory`, so a backend can run them as separate tests.
//! - [`store_model_proptest`] applies random sequences of fence, save, delete, load, purge and
//!   clock moves to the store and to a small reference model, and requires every result to match.
//!   It is synchronous and builds its own current-thread tokio runtime: call it from a plain
//!   `#[test]`, not from inside a runtime.
//!
//! Where a write breaks both conditions (wrong epoch *and* stale version), the suite expects
//! [`StoreError::Fenced`]: the fence is checked first.

// A test suite reports a broken promise by panicking; `unwrap` on a store result is that report.
#![allow(clippy::unwrap_used)]

mod model;

pub use model::{DEFAULT_MODEL_CASES, store_model_proptest, store_model_proptest_with};

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::clock::{ManualClock, MonoTime, SharedClock};
use crate::epoch::Epoch;
use crate::shard::ShardId;
use crate::store::{DeleteRequest, FenceKey, SaveRequest, StateStore, StoreError, StoredObject};

/// The tombstone retention a factory must give the stores it builds for the suite.
///
/// One minute: long enough that no case crosses it by accident, short enough to state plainly.
pub const CONFORMANCE_TOMBSTONE_RETENTION: Duration = Duration::from_secs(60);

/// Where the suite's manual clock starts (not zero, so "written at time zero" bugs show).
const CLOCK_START: MonoTime = MonoTime::from_nanos(1_000_000_000_000);

/// Builds fresh, empty stores for the suite (see the module docs for the contract).
///
/// Implemented for every `Fn(SharedClock) -> Fut` where `Fut` yields a [`StateStore`].
pub trait StoreFactory {
    /// The store type built.
    type Store: StateStore;
    /// The future that builds one.
    type Fut: Future<Output = Self::Store>;
    /// Builds a fresh, empty store reading time from `clock`, with tombstone retention
    /// [`CONFORMANCE_TOMBSTONE_RETENTION`].
    fn make_store(&self, clock: SharedClock) -> Self::Fut;
}

impl<F, Fut, S> StoreFactory for F
where
    F: Fn(SharedClock) -> Fut,
    Fut: Future<Output = S>,
    S: StateStore,
{
    type Store = S;
    type Fut = Fut;
    fn make_store(&self, clock: SharedClock) -> Fut {
        self(clock)
    }
}

/// Runs every case of the suite (not the model proptest, which needs its own runtime: see
/// [`store_model_proptest`]). Panics on the first broken promise.
pub async fn run_store_conformance<F: StoreFactory>(factory: F) {
    fence_is_monotonic_and_idempotent(&factory).await;
    save_below_fence_is_fenced(&factory).await;
    save_above_fence_is_fenced(&factory).await;
    delete_is_fenced_and_leaves_tombstone(&factory).await;
    delete_of_unknown_object_leaves_tombstone(&factory).await;
    older_version_is_stale(&factory).await;
    versions_never_reset_across_epochs(&factory).await;
    fence_keys_are_independent(&factory).await;
    load_returns_state_type_and_version(&factory).await;
    rejected_write_changes_nothing(&factory).await;
    tombstone_purge_respects_retention(&factory).await;
}

async fn fresh<F: StoreFactory>(factory: &F) -> (F::Store, ManualClock) {
    let clock = ManualClock::starting_at(CLOCK_START);
    let store = factory.make_store(clock.shared()).await;
    (store, clock)
}

fn shard(n: u32) -> FenceKey {
    FenceKey::Shard(ShardId(n))
}

fn epoch(counter: u64) -> Epoch {
    Epoch::new(1, counter)
}

fn save_req(key: &FenceKey, at: Epoch, id: &str, version: u64, state: &str) -> SaveRequest {
    SaveRequest {
        fence: key.clone(),
        epoch: at,
        object_id: id.to_owned(),
        object_type: "Counter".to_owned(),
        version,
        state: Bytes::copy_from_slice(state.as_bytes()),
    }
}

fn delete_req(key: &FenceKey, at: Epoch, id: &str, version: u64) -> DeleteRequest {
    DeleteRequest {
        fence: key.clone(),
        epoch: at,
        object_id: id.to_owned(),
        object_type: "Counter".to_owned(),
        version,
    }
}

fn fenced(key: &FenceKey, attempted: Epoch, current: Epoch) -> StoreError {
    StoreError::Fenced { key: key.clone(), attempted, current }
}

fn stale(id: &str, attempted: u64, stored: u64) -> StoreError {
    StoreError::StaleVersion { object_id: id.to_owned(), attempted, stored }
}

fn live(version: u64, state: &str) -> StoredObject {
    StoredObject {
        object_type: "Counter".to_owned(),
        version,
        state: Some(Bytes::copy_from_slice(state.as_bytes())),
    }
}

fn tombstone(version: u64) -> StoredObject {
    StoredObject { object_type: "Counter".to_owned(), version, state: None }
}

/// `fence` only rises, returns the fence after the call, and `current_fence` reads it.
pub async fn fence_is_monotonic_and_idempotent<F: StoreFactory>(factory: &F) {
    let (store, _clock) = fresh(factory).await;
    let key = shard(1);
    assert_eq!(store.current_fence(&key).await.unwrap(), Epoch::ZERO, "unraised fence");
    assert_eq!(store.fence(&key, epoch(5)).await.unwrap(), epoch(5), "raise to 5");
    assert_eq!(store.fence(&key, epoch(3)).await.unwrap(), epoch(5), "lower fence ignored");
    assert_eq!(store.fence(&key, epoch(5)).await.unwrap(), epoch(5), "same fence idempotent");
    assert_eq!(store.current_fence(&key).await.unwrap(), epoch(5));
    // Epochs order by generation first: a new generation beats any counter.
    assert_eq!(store.fence(&key, Epoch::new(2, 0)).await.unwrap(), Epoch::new(2, 0));
    assert_eq!(store.fence(&key, Epoch::new(1, 99)).await.unwrap(), Epoch::new(2, 0));
    assert_eq!(store.current_fence(&key).await.unwrap(), Epoch::new(2, 0));
}

/// After `fence(6)`, a save at 5 is refused even though nothing was ever written at 6.
pub async fn save_below_fence_is_fenced<F: StoreFactory>(factory: &F) {
    let (store, _clock) = fresh(factory).await;
    let key = shard(1);
    store.fence(&key, epoch(5)).await.unwrap();
    store.save(save_req(&key, epoch(5), "a", 1, "one")).await.unwrap();
    store.fence(&key, epoch(6)).await.unwrap();
    let err = store.save(save_req(&key, epoch(5), "a", 2, "two")).await.unwrap_err();
    assert_eq!(err, fenced(&key, epoch(5), epoch(6)));
    assert!(!err.is_retryable());
    let err = store.save(save_req(&key, epoch(5), "b", 1, "new")).await.unwrap_err();
    assert_eq!(err, fenced(&key, epoch(5), epoch(6)), "fenced for a new object too");
    assert_eq!(store.load("a").await.unwrap(), Some(live(1, "one")));
    assert_eq!(store.load("b").await.unwrap(), None);
}

/// A save at an epoch above the fence (before the owner fenced) is refused.
pub async fn save_above_fence_is_fenced<F: StoreFactory>(factory: &F) {
    let (store, _clock) = fresh(factory).await;
    let key = shard(1);
    store.fence(&key, epoch(6)).await.unwrap();
    let err = store.save(save_req(&key, epoch(7), "a", 1, "one")).await.unwrap_err();
    assert_eq!(err, fenced(&key, epoch(7), epoch(6)));
    let err = store.delete(delete_req(&key, epoch(7), "a", 1)).await.unwrap_err();
    assert_eq!(err, fenced(&key, epoch(7), epoch(6)));
    assert_eq!(store.load("a").await.unwrap(), None);
    store.fence(&key, epoch(7)).await.unwrap();
    store.save(save_req(&key, epoch(7), "a", 1, "one")).await.unwrap();
    assert_eq!(store.load("a").await.unwrap(), Some(live(1, "one")));
}

/// A delete is fenced like a save and leaves a tombstone that `load` returns; a later save
/// must be above the tombstone's version, and a stale owner cannot resurrect the object.
pub async fn delete_is_fenced_and_leaves_tombstone<F: StoreFactory>(factory: &F) {
    let (store, _clock) = fresh(factory).await;
    let key = shard(1);
    store.fence(&key, epoch(5)).await.unwrap();
    store.save(save_req(&key, epoch(5), "a", 2, "two")).await.unwrap();
    store.fence(&key, epoch(6)).await.unwrap();
    store.delete(delete_req(&key, epoch(6), "a", 3)).await.unwrap();
    let loaded = store.load("a").await.unwrap().expect("tombstone is kept");
    assert!(loaded.is_tombstone());
    assert_eq!(loaded, tombstone(3), "tombstone keeps version and type");

    // The old owner (epoch 5) can neither resurrect nor delete.
    let err = store.save(save_req(&key, epoch(5), "a", 9, "zombie")).await.unwrap_err();
    assert_eq!(err, fenced(&key, epoch(5), epoch(6)));
    let err = store.delete(delete_req(&key, epoch(5), "a", 9)).await.unwrap_err();
    assert_eq!(err, fenced(&key, epoch(5), epoch(6)));

    // The owner must go above the tombstone.
    let err = store.save(save_req(&key, epoch(6), "a", 3, "again")).await.unwrap_err();
    assert_eq!(err, stale("a", 3, 3));
    let err = store.delete(delete_req(&key, epoch(6), "a", 2)).await.unwrap_err();
    assert_eq!(err, stale("a", 2, 3));
    store.save(save_req(&key, epoch(6), "a", 4, "again")).await.unwrap();
    assert_eq!(store.load("a").await.unwrap(), Some(live(4, "again")));
}

/// Deleting an object never stored writes a tombstone, so it cannot be created below it.
pub async fn delete_of_unknown_object_leaves_tombstone<F: StoreFactory>(factory: &F) {
    let (store, _clock) = fresh(factory).await;
    let key = shard(1);
    store.fence(&key, epoch(1)).await.unwrap();
    store.delete(delete_req(&key, epoch(1), "ghost", 5)).await.unwrap();
    assert_eq!(store.load("ghost").await.unwrap(), Some(tombstone(5)));
    let err = store.save(save_req(&key, epoch(1), "ghost", 5, "x")).await.unwrap_err();
    assert_eq!(err, stale("ghost", 5, 5));
    store.save(save_req(&key, epoch(1), "ghost", 6, "x")).await.unwrap();
}

/// Two saves at the same epoch arriving out of order: the older one is refused.
pub async fn older_version_is_stale<F: StoreFactory>(factory: &F) {
    let (store, _clock) = fresh(factory).await;
    let key = shard(1);
    store.fence(&key, epoch(6)).await.unwrap();
    store.save(save_req(&key, epoch(6), "a", 3, "three")).await.unwrap();
    let err = store.save(save_req(&key, epoch(6), "a", 2, "two")).await.unwrap_err();
    assert_eq!(err, stale("a", 2, 3));
    assert!(!err.is_retryable());
    let err = store.save(save_req(&key, epoch(6), "a", 3, "three again")).await.unwrap_err();
    assert_eq!(err, stale("a", 3, 3), "an equal version is stale too");
    assert_eq!(store.load("a").await.unwrap(), Some(live(3, "three")));
    // Versions need not be consecutive.
    store.save(save_req(&key, epoch(6), "a", 10, "ten")).await.unwrap();
    assert_eq!(store.load("a").await.unwrap(), Some(live(10, "ten")));
}

/// Versions never reset when the epoch rises.
pub async fn versions_never_reset_across_epochs<F: StoreFactory>(factory: &F) {
    let (store, _clock) = fresh(factory).await;
    let key = shard(1);
    store.fence(&key, epoch(6)).await.unwrap();
    store.save(save_req(&key, epoch(6), "a", 5, "five")).await.unwrap();
    store.fence(&key, epoch(7)).await.unwrap();
    let err = store.save(save_req(&key, epoch(7), "a", 1, "one")).await.unwrap_err();
    assert_eq!(err, stale("a", 1, 5));
    store.save(save_req(&key, epoch(7), "a", 6, "six")).await.unwrap();
    assert_eq!(store.load("a").await.unwrap(), Some(live(6, "six")));
}

/// Fences of different keys (shards, pinned nodes) do not affect each other.
pub async fn fence_keys_are_independent<F: StoreFactory>(factory: &F) {
    let (store, _clock) = fresh(factory).await;
    let (one, two) = (shard(1), shard(2));
    let (node_a, node_b) =
        (FenceKey::Node("node-a".to_owned()), FenceKey::Node("node-b".to_owned()));
    assert_eq!(store.fence(&one, epoch(6)).await.unwrap(), epoch(6));
    assert_eq!(store.current_fence(&two).await.unwrap(), Epoch::ZERO);
    assert_eq!(store.current_fence(&node_a).await.unwrap(), Epoch::ZERO);
    assert_eq!(store.fence(&node_a, epoch(3)).await.unwrap(), epoch(3));
    assert_eq!(store.current_fence(&node_b).await.unwrap(), Epoch::ZERO);
    assert_eq!(store.current_fence(&one).await.unwrap(), epoch(6));
    // A shard key and a node key that could share an encoding stay apart.
    let numeric_node = FenceKey::Node("1".to_owned());
    assert_eq!(store.current_fence(&numeric_node).await.unwrap(), Epoch::ZERO);

    let err = store.save(save_req(&two, epoch(6), "x", 1, "x")).await.unwrap_err();
    assert_eq!(err, fenced(&two, epoch(6), Epoch::ZERO));
    store.save(save_req(&node_a, epoch(3), "y", 1, "y")).await.unwrap();
    let err = store.save(save_req(&node_b, epoch(3), "z", 1, "z")).await.unwrap_err();
    assert_eq!(err, fenced(&node_b, epoch(3), Epoch::ZERO));
    store.save(save_req(&one, epoch(6), "x", 1, "x")).await.unwrap();
}

/// `load` returns state, type and version of the last write; an unknown id gives `None`.
pub async fn load_returns_state_type_and_version<F: StoreFactory>(factory: &F) {
    let (store, _clock) = fresh(factory).await;
    let key = shard(1);
    assert_eq!(store.load("nobody").await.unwrap(), None);
    store.fence(&key, epoch(1)).await.unwrap();
    let mut req = save_req(&key, epoch(1), "chat/room-1", 1, "");
    req.object_type = "ChatRoom".to_owned();
    req.state = Bytes::from_static(&[0, 1, 2, 255, 0]);
    store.save(req).await.unwrap();
    let expected = StoredObject {
        object_type: "ChatRoom".to_owned(),
        version: 1,
        state: Some(Bytes::from_static(&[0, 1, 2, 255, 0])),
    };
    assert_eq!(store.load("chat/room-1").await.unwrap(), Some(expected));
    // Empty state is state, not a tombstone.
    store.save(save_req(&key, epoch(1), "empty", 1, "")).await.unwrap();
    let empty = store.load("empty").await.unwrap().expect("saved");
    assert!(!empty.is_tombstone());
    assert_eq!(empty, live(1, ""));
    // Ids are exact: no prefix or case matching.
    assert_eq!(store.load("chat/room").await.unwrap(), None);
    assert_eq!(store.load("Chat/room-1").await.unwrap(), None);
    // A larger state round-trips whole.
    let big = Bytes::from(vec![7u8; 256 * 1024]);
    let mut req = save_req(&key, epoch(1), "big", 1, "");
    req.state = big.clone();
    store.save(req).await.unwrap();
    assert_eq!(store.load("big").await.unwrap().expect("saved").state, Some(big));
}

/// A refused write leaves the record and the fence exactly as they were.
pub async fn rejected_write_changes_nothing<F: StoreFactory>(factory: &F) {
    let (store, clock) = fresh(factory).await;
    let key = shard(1);
    store.fence(&key, epoch(2)).await.unwrap();
    store.delete(delete_req(&key, epoch(2), "a", 4)).await.unwrap();
    clock.advance(CONFORMANCE_TOMBSTONE_RETENTION / 2);
    // Refused writes must not refresh the tombstone's write time either.
    assert!(store.save(save_req(&key, epoch(2), "a", 4, "x")).await.is_err());
    assert!(store.delete(delete_req(&key, epoch(1), "a", 9)).await.is_err());
    assert_eq!(store.load("a").await.unwrap(), Some(tombstone(4)));
    assert_eq!(store.current_fence(&key).await.unwrap(), epoch(2));
    clock.advance(CONFORMANCE_TOMBSTONE_RETENTION / 2);
    assert_eq!(store.purge_tombstones().await.unwrap(), 1);
}

/// Tombstones survive purges until they are [`CONFORMANCE_TOMBSTONE_RETENTION`] old; live
/// records are never purged.
pub async fn tombstone_purge_respects_retention<F: StoreFactory>(factory: &F) {
    let (store, clock) = fresh(factory).await;
    let key = shard(1);
    let second = Duration::from_secs(1);
    store.fence(&key, epoch(1)).await.unwrap();
    store.save(save_req(&key, epoch(1), "live", 1, "x")).await.unwrap();
    store.save(save_req(&key, epoch(1), "revived", 1, "x")).await.unwrap();
    store.delete(delete_req(&key, epoch(1), "old", 1)).await.unwrap();
    store.delete(delete_req(&key, epoch(1), "revived", 2)).await.unwrap();
    assert_eq!(store.purge_tombstones().await.unwrap(), 0, "fresh tombstones stay");

    clock.advance(CONFORMANCE_TOMBSTONE_RETENTION - 10 * second);
    store.delete(delete_req(&key, epoch(1), "young", 1)).await.unwrap();
    store.save(save_req(&key, epoch(1), "revived", 3, "back")).await.unwrap();
    clock.advance(9 * second);
    assert_eq!(store.purge_tombstones().await.unwrap(), 0, "one second before retention");
    assert_eq!(store.load("old").await.unwrap(), Some(tombstone(1)));

    clock.advance(2 * second);
    assert_eq!(store.purge_tombstones().await.unwrap(), 1, "only the old tombstone goes");
    assert_eq!(store.load("old").await.unwrap(), None);
    assert_eq!(store.load("young").await.unwrap(), Some(tombstone(1)));
    assert_eq!(store.load("revived").await.unwrap(), Some(live(3, "back")));
    assert_eq!(store.purge_tombstones().await.unwrap(), 0, "purge is idempotent");

    clock.advance(CONFORMANCE_TOMBSTONE_RETENTION * 100);
    assert_eq!(store.purge_tombstones().await.unwrap(), 1, "the young tombstone ages out");
    assert_eq!(store.load("young").await.unwrap(), None);
    assert_eq!(store.load("live").await.unwrap(), Some(live(1, "x")), "live data never purged");
    // Once purged, the id is unknown again and can be written from any version.
    store.save(save_req(&key, epoch(1), "old", 1, "new life")).await.unwrap();
}
