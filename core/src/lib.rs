//! `verse-core`: the Verse runtime.
//!
//! Objects and their activations, sharding and the placement planner, shard ownership and
//! routing, and the traits every backend implements (`StateStore`, `Clock`, blocking executor,
//! random source). This crate performs no network or disk I/O of its own and depends on no
//! backend (a test in `verse-tests` enforces it).

pub mod clock;
pub mod epoch;
pub mod executor;
pub mod rng;
pub mod shard;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use clock::{Clock, ManualClock, MonoTime, SharedClock, SystemClock};
pub use epoch::Epoch;
pub use executor::{BlockingExecutor, InlineExecutor, SharedExecutor, TokioBlockingExecutor};
pub use rng::RandomSource;
pub use shard::{DEFAULT_SHARD_COUNT, Placement, ShardId};
pub use store::{FenceKey, MemoryStore, StateStore, StoreError};
