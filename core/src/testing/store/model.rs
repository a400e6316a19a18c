//! The model-based half of the store suite: random operation sequences checked against a
//! reference model written independently of every implementation.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

use super::{CONFORMANCE_TOMBSTONE_RETENTION, StoreFactory, fresh, shard};
use crate::clock::{Clock, MonoTime};
use crate::epoch::Epoch;
use crate::store::{DeleteRequest, FenceKey, SaveRequest, StateStore, StoreError, StoredObject};

/// Number of cases [`store_model_proptest`] runs.
pub const DEFAULT_MODEL_CASES: u32 = 64;

/// Runs [`store_model_proptest_with`] with [`DEFAULT_MODEL_CASES`] cases.
pub fn store_model_proptest<F: StoreFactory>(factory: F) {
    store_model_proptest_with(DEFAULT_MODEL_CASES, factory);
}

/// Model-based check: `cases` random sequences of operations over a few fence keys, epochs,
/// object ids and versions, applied to a fresh store each and to a reference model; every
/// result (values and errors) must match. Panics with the minimal failing sequence.
///
/// Builds its own current-thread tokio runtime (with I/O and time enabled): call it from a
/// plain `#[test]`, not from inside a runtime.
pub fn store_model_proptest_with<F: StoreFactory>(cases: u32, factory: F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime for the model proptest");
    let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = TestRunner::new(config);
    let strategy = proptest::collection::vec(op_strategy(), 1..48);
    let result = runner.run(&strategy, |ops| runtime.block_on(check_against_model(&factory, ops)));
    if let Err(failure) = result {
        panic!("state store differs from the model: {failure}");
    }
}

/// The fence keys, object ids and types the model draws from (few, so operations collide).
const MODEL_KEYS: usize = 3;
const MODEL_IDS: usize = 4;
const MODEL_TYPES: [&str; 2] = ["Counter", "ChatRoom"];

fn model_key(index: usize) -> FenceKey {
    match index {
        0 => shard(1),
        1 => shard(2),
        _ => FenceKey::Node("node-a".to_owned()),
    }
}

fn model_id(index: usize) -> String {
    format!("object-{index}")
}

#[derive(Debug, Clone)]
enum ModelOp {
    Fence { key: usize, epoch: Epoch },
    CurrentFence { key: usize },
    Save { key: usize, epoch: Epoch, id: usize, object_type: usize, version: u64, state: Vec<u8> },
    Delete { key: usize, epoch: Epoch, id: usize, object_type: usize, version: u64 },
    Load { id: usize },
    Advance { seconds: u64 },
    Purge,
}

fn op_strategy() -> impl Strategy<Value = ModelOp> {
    let key = 0..MODEL_KEYS;
    let id = 0..MODEL_IDS;
    let object_type = 0..MODEL_TYPES.len();
    // Two generations and a few counters: epochs collide with fences often enough that many
    // writes succeed, and Epoch::ZERO (the unraised fence) is included.
    let epoch =
        (0u64..2, 0u64..4).prop_map(|(generation, counter)| Epoch::new(generation, counter));
    let version = 0u64..8;
    prop_oneof![
        3 => (key.clone(), epoch.clone()).prop_map(|(key, epoch)| ModelOp::Fence { key, epoch }),
        1 => key.clone().prop_map(|key| ModelOp::CurrentFence { key }),
        6 => (
            key.clone(),
            epoch.clone(),
            id.clone(),
            object_type.clone(),
            version.clone(),
            proptest::collection::vec(any::<u8>(), 0..8),
        )
            .prop_map(|(key, epoch, id, object_type, version, state)| ModelOp::Save {
                key,
                epoch,
                id,
                object_type,
                version,
                state,
            }),
        2 => (key, epoch, id.clone(), object_type, version).prop_map(
            |(key, epoch, id, object_type, version)| ModelOp::Delete {
                key,
                epoch,
                id,
                object_type,
                version,
            }
        ),
        3 => id.prop_map(|id| ModelOp::Load { id }),
        1 => (0u64..90).prop_map(|seconds| ModelOp::Advance { seconds }),
        1 => Just(ModelOp::Purge),
    ]
}

/// The reference model: plain maps, written independently of any implementation.
#[derive(Debug, Default)]
struct Model {
    fences: BTreeMap<FenceKey, Epoch>,
    objects: BTreeMap<String, (StoredObject, MonoTime)>,
}

impl Model {
    fn fence(&mut self, key: &FenceKey, epoch: Epoch) -> Epoch {
        let current = self.fences.entry(key.clone()).or_insert(Epoch::ZERO);
        *current = (*current).max(epoch);
        *current
    }

    fn current_fence(&self, key: &FenceKey) -> Epoch {
        self.fences.get(key).copied().unwrap_or(Epoch::ZERO)
    }

    fn write(
        &mut self,
        key: &FenceKey,
        epoch: Epoch,
        id: String,
        record: StoredObject,
        now: MonoTime,
    ) -> Result<(), StoreError> {
        let current = self.current_fence(key);
        if current != epoch {
            return Err(StoreError::Fenced { key: key.clone(), attempted: epoch, current });
        }
        let stored_version = self.objects.get(&id).map(|(stored, _)| stored.version);
        if let Some(stored) = stored_version.filter(|&stored| record.version <= stored) {
            return Err(StoreError::StaleVersion {
                object_id: id,
                attempted: record.version,
                stored,
            });
        }
        self.objects.insert(id, (record, now));
        Ok(())
    }

    fn purge(&mut self, now: MonoTime) -> usize {
        let before = self.objects.len();
        self.objects.retain(|_, (record, written)| {
            record.state.is_some() || now - *written < CONFORMANCE_TOMBSTONE_RETENTION
        });
        before - self.objects.len()
    }
}

async fn check_against_model<F: StoreFactory>(
    factory: &F,
    ops: Vec<ModelOp>,
) -> Result<(), TestCaseError> {
    let (store, clock) = fresh(factory).await;
    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            ModelOp::Fence { key, epoch } => {
                let key = model_key(key);
                let got = store.fence(&key, epoch).await;
                prop_assert_eq!(got, Ok(model.fence(&key, epoch)), "step {}: fence", step);
            }
            ModelOp::CurrentFence { key } => {
                let key = model_key(key);
                let got = store.current_fence(&key).await;
                prop_assert_eq!(got, Ok(model.current_fence(&key)), "step {}: fence read", step);
            }
            ModelOp::Save { key, epoch, id, object_type, version, state } => {
                let key = model_key(key);
                let state = Bytes::from(state);
                let object_type = MODEL_TYPES[object_type].to_owned();
                let req = SaveRequest {
                    fence: key.clone(),
                    epoch,
                    object_id: model_id(id),
                    object_type: object_type.clone(),
                    version,
                    state: state.clone(),
                };
                let got = store.save(req).await;
                let record = StoredObject { object_type, version, state: Some(state) };
                let want = model.write(&key, epoch, model_id(id), record, clock.now());
                prop_assert_eq!(got, want, "step {}: save", step);
            }
            ModelOp::Delete { key, epoch, id, object_type, version } => {
                let key = model_key(key);
                let object_type = MODEL_TYPES[object_type].to_owned();
                let req = DeleteRequest {
                    fence: key.clone(),
                    epoch,
                    object_id: model_id(id),
                    object_type: object_type.clone(),
                    version,
                };
                let got = store.delete(req).await;
                let record = StoredObject { object_type, version, state: None };
                let want = model.write(&key, epoch, model_id(id), record, clock.now());
                prop_assert_eq!(got, want, "step {}: delete", step);
            }
            ModelOp::Load { id } => {
                let got = store.load(&model_id(id)).await;
                let want = model.objects.get(&model_id(id)).map(|(record, _)| record.clone());
                prop_assert_eq!(got, Ok(want), "step {}: load", step);
            }
            ModelOp::Advance { seconds } => clock.advance(Duration::from_secs(seconds)),
            ModelOp::Purge => {
                let got = store.purge_tombstones().await;
                prop_assert_eq!(got, Ok(model.purge(clock.now())), "step {}: purge", step);
            }
        }
    }
    // Finally every object and fence must agree, whatever the sequence read along the way.
    for id in 0..MODEL_IDS {
        let got = store.load(&model_id(id)).await;
        let want = model.objects.get(&model_id(id)).map(|(record, _)| record.clone());
        prop_assert_eq!(got, Ok(want), "final load of {}", model_id(id));
    }
    for key in 0..MODEL_KEYS {
        let key = model_key(key);
        let got = store.current_fence(&key).await;
        prop_assert_eq!(got, Ok(model.current_fence(&key)), "final fence of {}", key);
    }
    Ok(())
}
