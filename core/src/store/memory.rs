//! An in-memory [`StateStore`]: the reference implementation, used by unit tests, by the
//! simulation's shared store (outside the simulated hosts) and for ephemeral development.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::{DeleteRequest, FenceKey, SaveRequest, StateStore, StoreError, StoredObject};
use crate::clock::{MonoTime, SharedClock};
use crate::epoch::Epoch;

/// Default time a tombstone is kept before [`StateStore::purge_tombstones`] may remove it.
pub const DEFAULT_TOMBSTONE_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// A [`StateStore`] in process memory. Cloning shares the data.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    clock: SharedClock,
    tombstone_retention: Duration,
    node_local: bool,
}

#[derive(Debug, Default)]
struct Inner {
    fences: BTreeMap<FenceKey, Epoch>,
    objects: HashMap<String, (StoredObject, MonoTime)>,
}

impl MemoryStore {
    /// A store whose tombstones are kept for `tombstone_retention` of `clock` time.
    ///
    /// `node_local` says whether it stands for a node-local store (true for an embedded store in
    /// one process) or a shared one (the simulation's shared store).
    pub fn new(clock: SharedClock, tombstone_retention: Duration, node_local: bool) -> Self {
        MemoryStore { inner: Arc::default(), clock, tombstone_retention, node_local }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Short, non-async critical sections: std mutex. Poisoning means a panic mid-update of
        // plain maps whose entries are replaced whole, so the data is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of records (tombstones included), for tests and metrics.
    pub fn len(&self) -> usize {
        self.lock().objects.len()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn check(
        &self,
        key: &FenceKey,
        epoch: Epoch,
        object_id: &str,
        version: u64,
    ) -> Result<(), StoreError> {
        let current = self.fences.get(key).copied().unwrap_or(Epoch::ZERO);
        if current != epoch && !crate::fault::is_on(crate::fault::FaultSwitch::SkipEpochFence) {
            return Err(StoreError::Fenced { key: key.clone(), attempted: epoch, current });
        }
        let stored_version = self.objects.get(object_id).map(|(stored, _)| stored.version);
        if let Some(stored) = stored_version.filter(|&stored| version <= stored) {
            return Err(StoreError::StaleVersion {
                object_id: object_id.to_owned(),
                attempted: version,
                stored,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn fence(&self, key: &FenceKey, epoch: Epoch) -> Result<Epoch, StoreError> {
        let mut inner = self.lock();
        let current = inner.fences.entry(key.clone()).or_insert(Epoch::ZERO);
        if epoch > *current {
            *current = epoch;
        }
        Ok(*current)
    }

    async fn current_fence(&self, key: &FenceKey) -> Result<Epoch, StoreError> {
        Ok(self.lock().fences.get(key).copied().unwrap_or(Epoch::ZERO))
    }

    async fn load(&self, object_id: &str) -> Result<Option<StoredObject>, StoreError> {
        Ok(self.lock().objects.get(object_id).map(|(record, _)| record.clone()))
    }

    async fn save(&self, req: SaveRequest) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.check(&req.fence, req.epoch, &req.object_id, req.version)?;
        let record = StoredObject {
            object_type: req.object_type,
            version: req.version,
            state: Some(req.state),
        };
        inner.objects.insert(req.object_id, (record, now));
        Ok(())
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.check(&req.fence, req.epoch, &req.object_id, req.version)?;
        let record =
            StoredObject { object_type: req.object_type, version: req.version, state: None };
        inner.objects.insert(req.object_id, (record, now));
        Ok(())
    }

    async fn purge_tombstones(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let retention = self.tombstone_retention;
        let mut inner = self.lock();
        let before = inner.objects.len();
        inner
            .objects
            .retain(|_, (record, written)| !record.is_tombstone() || now - *written < retention);
        Ok(before - inner.objects.len())
    }

    fn is_node_local(&self) -> bool {
        self.node_local
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::store::{self as suite, CONFORMANCE_TOMBSTONE_RETENTION};

    async fn make(clock: SharedClock) -> MemoryStore {
        MemoryStore::new(clock, CONFORMANCE_TOMBSTONE_RETENTION, true)
    }

    #[tokio::test]
    async fn memory_store_passes_the_conformance_suite() {
        suite::run_store_conformance(make).await;
    }

    #[test]
    fn memory_store_matches_the_model() {
        suite::store_model_proptest(make);
    }

    #[tokio::test]
    async fn clones_share_data() {
        let store = MemoryStore::new(crate::ManualClock::new().shared(), Duration::ZERO, false);
        let clone = store.clone();
        let key = FenceKey::Shard(crate::ShardId(1));
        store.fence(&key, Epoch::new(1, 1)).await.unwrap();
        assert_eq!(clone.current_fence(&key).await.unwrap(), Epoch::new(1, 1));
        assert!(!clone.is_node_local());
        assert!(clone.is_empty());
    }
}
