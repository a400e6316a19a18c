//! The shared state store of the simulation: a [`MemoryStore`] that lives outside every host
//! (shared through an `Arc`), wrapped in [`FaultyStore`], which adds seeded latency before and
//! after each operation and outages during which every operation fails with `Unavailable`.
//!
//! Latency after the operation makes outcomes ambiguous as in a real database: a caller whose
//! host crashes (or whose future is dropped) in that window does not learn that its write
//! committed. The wrapper passes the same conformance suite as PostgreSQL (tests below).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verse_core::store::{DeleteRequest, FenceKey, SaveRequest, StoreError, StoredObject};
use verse_core::{Epoch, MemoryStore, StateStore};

use crate::clock::sim_now;
use crate::history::History;

#[derive(Debug)]
struct Faults {
    rng: ChaCha8Rng,
    max_latency: Duration,
    /// Operations fail while the global time is in one of these windows.
    outages: Vec<(Duration, Duration)>,
    /// Operations rejected by an outage so far.
    rejected: u64,
}

/// The store's fault switches, shared by the harness (which schedules outages) and the store.
#[derive(Debug, Clone)]
pub struct StoreFaults {
    inner: Arc<Mutex<Faults>>,
}

impl StoreFaults {
    /// Latency drawn uniformly from `0..=max_latency` (before and after each operation).
    pub fn new(seed: u64, max_latency: Duration) -> Self {
        let faults = Faults {
            rng: ChaCha8Rng::seed_from_u64(seed),
            max_latency,
            outages: Vec::new(),
            rejected: 0,
        };
        StoreFaults { inner: Arc::new(Mutex::new(faults)) }
    }

    fn lock(&self) -> MutexGuard<'_, Faults> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every operation between `from` and `to` (global time) fails with `Unavailable`.
    pub fn outage(&self, from: Duration, to: Duration) {
        self.lock().outages.push((from, to));
    }

    /// Operations rejected by outages so far.
    pub fn rejected(&self) -> u64 {
        self.lock().rejected
    }

    fn latency(&self) -> Duration {
        let mut faults = self.lock();
        let max = u64::try_from(faults.max_latency.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(faults.rng.gen_range(0..=max))
    }

    fn in_outage(&self) -> bool {
        let now = sim_now();
        let mut faults = self.lock();
        let out = faults.outages.iter().any(|(from, to)| *from <= now && now < *to);
        if out {
            faults.rejected += 1;
        }
        out
    }
}

/// A store with injected latency and outages (see the module docs).
#[derive(Debug, Clone)]
pub struct FaultyStore {
    inner: Arc<MemoryStore>,
    faults: StoreFaults,
    /// Where saves refused by the fence are recorded, if anywhere.
    history: Option<History>,
}

impl FaultyStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<MemoryStore>, faults: StoreFaults) -> Self {
        FaultyStore { inner, faults, history: None }
    }

    /// Records every save the fence refuses into `history` (the S1 checker needs them).
    pub fn recording(mut self, history: History) -> Self {
        self.history = Some(history);
        self
    }

    async fn before(&self) -> Result<(), StoreError> {
        sleep(self.faults.latency()).await;
        if self.faults.in_outage() {
            return Err(StoreError::Unavailable("simulated store outage".into()));
        }
        Ok(())
    }

    async fn after(&self) {
        sleep(self.faults.latency()).await;
    }
}

async fn sleep(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

#[async_trait]
impl StateStore for FaultyStore {
    async fn fence(&self, key: &FenceKey, epoch: Epoch) -> Result<Epoch, StoreError> {
        self.before().await?;
        let result = self.inner.fence(key, epoch).await;
        self.after().await;
        result
    }

    async fn current_fence(&self, key: &FenceKey) -> Result<Epoch, StoreError> {
        self.before().await?;
        let result = self.inner.current_fence(key).await;
        self.after().await;
        result
    }

    async fn load(&self, object_id: &str) -> Result<Option<StoredObject>, StoreError> {
        self.before().await?;
        let result = self.inner.load(object_id).await;
        self.after().await;
        result
    }

    async fn save(&self, req: SaveRequest) -> Result<(), StoreError> {
        let (object, epoch) = (req.object_id.clone(), req.epoch);
        if let Err(error) = self.before().await {
            if let Some(history) = &self.history {
                history.failed_save(&object, epoch);
            }
            return Err(error);
        }
        let result = self.inner.save(req).await;
        match (&self.history, &result) {
            (Some(history), Ok(())) => history.committed_save(&object, epoch),
            (Some(history), Err(StoreError::Fenced { attempted, .. })) => {
                history.fenced_save(&object, *attempted);
            }
            _ => {}
        }
        self.after().await;
        result
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), StoreError> {
        self.before().await?;
        let result = self.inner.delete(req).await;
        self.after().await;
        result
    }

    async fn purge_tombstones(&self) -> Result<usize, StoreError> {
        self.before().await?;
        let result = self.inner.purge_tombstones().await;
        self.after().await;
        result
    }

    fn is_node_local(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use verse_core::SharedClock;
    use verse_core::testing::store::{CONFORMANCE_TOMBSTONE_RETENTION, run_store_conformance};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_faulty_store_passes_the_store_conformance_suite() {
        let faults = StoreFaults::new(7, Duration::from_millis(3));
        run_store_conformance(|clock: SharedClock| {
            let faults = faults.clone();
            async move {
                let memory = MemoryStore::new(clock, CONFORMANCE_TOMBSTONE_RETENTION, false);
                FaultyStore::new(Arc::new(memory), faults)
            }
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_fails_operations_and_changes_nothing() {
        let faults = StoreFaults::new(7, Duration::ZERO);
        faults.outage(Duration::ZERO, Duration::from_secs(3600));
        let clock = verse_core::ManualClock::starting_at(verse_core::MonoTime::from_nanos(1));
        let memory = Arc::new(MemoryStore::new(clock.shared(), Duration::from_secs(60), false));
        let store = FaultyStore::new(memory.clone(), faults.clone());
        let key = FenceKey::Shard(verse_core::ShardId(1));
        let result = store.fence(&key, Epoch::new(1, 1)).await;
        assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
        assert_eq!(memory.current_fence(&key).await.expect("direct read"), Epoch::ZERO);
        assert_eq!(faults.rejected(), 1);
    }
}
