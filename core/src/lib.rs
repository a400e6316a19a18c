//! `verse-core`: the Verse runtime.
//!
//! Objects and their activations, sharding and the placement planner, shard ownership and
//! routing, and the traits every backend implements (`StateStore`, `Clock`, blocking executor,
//! random source). This crate performs no network or disk I/O of its own and depends on no
//! backend (a test in `verse-tests` enforces it).

pub mod clock;
pub mod cluster;
pub mod coordinator;
pub mod epoch;
pub mod executor;
pub mod fault;
pub mod handoff;
pub mod planner;
pub mod push;
pub mod rng;
pub mod shard;
pub mod shardmap;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transport;

pub use clock::{Clock, ManualClock, MonoTime, SharedClock, SystemClock};
pub use cluster::{ClusterError, ClusterNode, ClusterOptions};
pub use coordinator::{CoordError, Coordinator};
pub use epoch::Epoch;
pub use executor::{BlockingExecutor, InlineExecutor, SharedExecutor, TokioBlockingExecutor};
pub use planner::{Plan, PlanInput};
pub use push::{PushError, PushMessage, PushSink};
pub use rng::RandomSource;
pub use shard::{DEFAULT_SHARD_COUNT, Placement, ShardId};
pub use shardmap::{Incarnation, MemberId, Move, OwnerRecord, ShardEntry, ShardMap, TargetRecord};
pub use store::{FenceKey, MemoryStore, StateStore, StoreError};
pub use transport::{RemoteCall, Transport};
pub mod context;
pub mod error;
pub mod object;
pub mod reference;
pub mod runtime;

pub use context::{CallChain, CallContext, CallerIdentity, MAX_CHAIN_DEPTH};
pub use error::{CallError, MethodError};
pub use object::{
    ActivationPolicy, EncodedMessage, MethodInfo, Object, Payload, PersistencePolicy, Tick,
    TypeDescription, TypeOptions, TypedMessage,
};
pub use reference::{ObjectRef, RawRef, RemoteBackend, RemoteFuture};
pub use runtime::{
    BuildError, Client, IncomingCall, Node, NodeBuilder, NodeConfig, ShardStatus, TimerHandle,
};

/// Paths named by code the `#[verse::object]` macro generates (the facade re-exports this
/// module; `crate = ::verse_core` points the macro here). Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use prost;

    pub use crate::object::{HookFuture, TurnFuture, method_error};
    pub use crate::{CallContext, CallError, MethodInfo, Object, Payload, RawRef};
}
