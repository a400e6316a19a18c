//! Which shards this node serves, at which epoch, and whether its lease is proven.
//!
//! Every effect for a shard (admitting a call, starting a turn, sending a response, a state
//! write) passes [`Ownership::check`] (invariant 2). On a single node a local source owns every
//! shard at epoch (1, 1) with an always-proven lease; the cluster runtime feeds the same table
//! from the coordinator, so both pay the same per-call cost.

mod validate;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::clock::{Clock, MonoTime};
use crate::context::CallChain;
use crate::epoch::Epoch;
use crate::error::CallError;
use crate::shard::ShardId;
use crate::store::FenceKey;

/// Where an object is served: its fence key and the per-shard table that holds its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    /// The shard (or pinned node) whose epoch fences the object.
    pub(crate) fence: FenceKey,
    /// Index of the activation table (the shard, or the id's hash shard for pinned objects).
    pub(crate) table_shard: u32,
}

/// The per-shard serving table plus the lease.
#[derive(Debug)]
pub(crate) struct Ownership {
    /// This node's id: only objects pinned to it are served here.
    node_id: Box<str>,
    generation: AtomicU64,
    /// Epoch counter per shard; 0 = not served here.
    shards: Box<[AtomicU64]>,
    /// Epoch counter at which the store fence is known raised, per shard.
    fenced: Box<[AtomicU64]>,
    /// Epoch counter of a shard being handed off (no longer admitting calls, except those
    /// whose awaited chain runs a turn of it); 0 = not leaving.
    leaving: Box<[AtomicU64]>,
    /// Epoch counter for objects pinned to this node; 0 = not serving them.
    node_counter: AtomicU64,
    node_fenced: AtomicU64,
    /// Nanoseconds of the node clock until which the lease is proven.
    lease_valid_until: AtomicU64,
    stopping: AtomicBool,
}

impl Ownership {
    /// A single-node source: every shard and the node's pinned objects at epoch (1, 1), lease
    /// always proven.
    pub(crate) fn local_all(node_id: &str, shard_count: u32) -> Self {
        let owned = |_| AtomicU64::new(1);
        Ownership {
            node_id: node_id.into(),
            generation: AtomicU64::new(1),
            shards: (0..shard_count).map(owned).collect(),
            fenced: (0..shard_count).map(|_| AtomicU64::new(0)).collect(),
            leaving: (0..shard_count).map(|_| AtomicU64::new(0)).collect(),
            node_counter: AtomicU64::new(1),
            node_fenced: AtomicU64::new(0),
            lease_valid_until: AtomicU64::new(u64::MAX),
            stopping: AtomicBool::new(false),
        }
    }

    /// A cluster source: nothing served and the lease unproven until the cluster runtime
    /// says otherwise.
    pub(crate) fn cluster(node_id: &str, shard_count: u32) -> Self {
        let none = |_| AtomicU64::new(0);
        Ownership {
            node_id: node_id.into(),
            generation: AtomicU64::new(1),
            shards: (0..shard_count).map(none).collect(),
            fenced: (0..shard_count).map(none).collect(),
            leaving: (0..shard_count).map(none).collect(),
            node_counter: AtomicU64::new(0),
            node_fenced: AtomicU64::new(0),
            lease_valid_until: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        }
    }

    /// Starts serving `shard` at `epoch` (the store fence is already raised to it).
    pub(crate) fn serve(&self, shard: ShardId, epoch: Epoch) {
        self.generation.store(epoch.generation, Ordering::Release);
        self.fenced[shard.0 as usize].fetch_max(epoch.counter, Ordering::AcqRel);
        self.shards[shard.0 as usize].store(epoch.counter, Ordering::Release);
    }

    /// Stops admitting anything for `shard`.
    pub(crate) fn stop_serving(&self, shard: ShardId) {
        self.leaving[shard.0 as usize].store(0, Ordering::Release);
        self.shards[shard.0 as usize].store(0, Ordering::Release);
    }

    /// Starts a handoff of `shard`: new calls are refused, except calls whose awaited chain
    /// includes a turn of this shard (see [`Ownership::check_for_chain`]), until
    /// [`Ownership::stop_serving`].
    pub(crate) fn begin_leaving(&self, shard: ShardId) {
        let counter = self.shards[shard.0 as usize].load(Ordering::Acquire);
        if counter != 0 {
            self.leaving[shard.0 as usize].store(counter, Ordering::Release);
        }
        self.shards[shard.0 as usize].store(0, Ordering::Release);
    }

    /// Like [`Ownership::check`], but a shard being handed off still admits a call whose
    /// awaited chain includes a turn of that shard: that turn is running now and waits for
    /// the call, and the handoff waits for the turn (the handoff exception of the
    /// architecture; refusing would deadlock until `handoff_timeout`). The lease must still
    /// be proven.
    pub(crate) fn check_for_chain(
        &self,
        key: &FenceKey,
        clock: &dyn Clock,
        chain: Option<&CallChain>,
    ) -> Result<Epoch, CallError> {
        let refused = match self.check(key, clock) {
            Ok(epoch) => return Ok(epoch),
            Err(error) => error,
        };
        let (FenceKey::Shard(shard), Some(chain)) = (key, chain) else { return Err(refused) };
        let leaving = self.leaving[shard.0 as usize].load(Ordering::Acquire);
        if leaving == 0 || self.stopping.load(Ordering::Acquire) || !chain.includes_shard(shard.0) {
            return Err(refused);
        }
        let valid_until = self.lease_valid_until.load(Ordering::Acquire);
        if valid_until != u64::MAX && clock.now().as_nanos() >= valid_until {
            return Err(refused);
        }
        Ok(Epoch::new(self.generation.load(Ordering::Acquire), leaving))
    }

    /// Serves the objects pinned to this node at `epoch` (the incarnation's epoch).
    pub(crate) fn serve_node(&self, epoch: Epoch) {
        self.generation.store(epoch.generation, Ordering::Release);
        self.node_counter.store(epoch.counter, Ordering::Release);
    }

    /// Stops serving the objects pinned to this node.
    pub(crate) fn stop_serving_node(&self) {
        self.node_counter.store(0, Ordering::Release);
    }

    /// Sets the instant (node clock) until which the lease is proven.
    pub(crate) fn set_lease_valid_until(&self, valid_until: MonoTime) {
        self.lease_valid_until.store(valid_until.as_nanos(), Ordering::Release);
    }

    fn counter(&self, key: &FenceKey) -> &AtomicU64 {
        match key {
            FenceKey::Shard(s) => &self.shards[s.0 as usize],
            FenceKey::Node(_) => &self.node_counter,
        }
    }

    fn fenced_counter(&self, key: &FenceKey) -> &AtomicU64 {
        match key {
            FenceKey::Shard(s) => &self.fenced[s.0 as usize],
            FenceKey::Node(_) => &self.node_fenced,
        }
    }

    /// The epoch at which this node may issue an effect for `key` at `now`, or why not.
    ///
    /// Errors are all "provably not started" (`NotServed`) or `ShuttingDown`.
    /// The lease is compared with a precise reading of `clock`, taken only when the lease is
    /// finite (a single node's local source never expires).
    pub(crate) fn check(&self, key: &FenceKey, clock: &dyn Clock) -> Result<Epoch, CallError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(CallError::ShuttingDown);
        }
        let shard = match key {
            FenceKey::Shard(s) => s.0,
            FenceKey::Node(node) if **node == *self.node_id => u32::MAX,
            // Objects pinned to another node are never served here.
            FenceKey::Node(node) => {
                return Err(CallError::NotServed {
                    shard: u32::MAX,
                    epoch: None,
                    hint: Some(node.clone()),
                });
            }
        };
        let valid_until = self.lease_valid_until.load(Ordering::Acquire);
        if valid_until != u64::MAX
            && clock.now().as_nanos() >= valid_until
            && !crate::fault::is_on(crate::fault::FaultSwitch::SkipLeaseCheck)
        {
            return Err(CallError::NotServed { shard, epoch: None, hint: None });
        }
        let counter = self.counter(key).load(Ordering::Acquire);
        if counter == 0 {
            return Err(CallError::NotServed { shard, epoch: None, hint: None });
        }
        Ok(Epoch::new(self.generation.load(Ordering::Acquire), counter))
    }

    /// Whether the store fence for `key` is known to be raised to `epoch`.
    pub(crate) fn is_fenced(&self, key: &FenceKey, epoch: Epoch) -> bool {
        self.fenced_counter(key).load(Ordering::Acquire) == epoch.counter
    }

    /// Records that the store fence for `key` was raised to `epoch`.
    pub(crate) fn mark_fenced(&self, key: &FenceKey, epoch: Epoch) {
        self.fenced_counter(key).fetch_max(epoch.counter, Ordering::AcqRel);
    }

    /// Stops admitting anything (shutdown).
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_source_owns_everything_until_stopped() {
        let ownership = Ownership::local_all("n", 16);
        let key = FenceKey::Shard(ShardId(3));
        let now = crate::clock::ManualClock::new();
        assert_eq!(ownership.check(&key, &now), Ok(Epoch::new(1, 1)));
        assert_eq!(ownership.check(&FenceKey::Node("n".into()), &now), Ok(Epoch::new(1, 1)));
        let other = ownership.check(&FenceKey::Node("m".into()), &now);
        assert!(matches!(other, Err(CallError::NotServed { hint: Some(h), .. }) if h == "m"));
        assert!(!ownership.is_fenced(&key, Epoch::new(1, 1)));
        ownership.mark_fenced(&key, Epoch::new(1, 1));
        assert!(ownership.is_fenced(&key, Epoch::new(1, 1)));
        ownership.stop();
        assert_eq!(ownership.check(&key, &now), Err(CallError::ShuttingDown));
    }

    #[test]
    fn cluster_source_serves_only_what_it_was_given_while_the_lease_holds() {
        let ownership = Ownership::cluster("n", 4);
        let clock = crate::clock::ManualClock::new();
        let key = FenceKey::Shard(ShardId(2));
        assert!(matches!(ownership.check(&key, &clock), Err(CallError::NotServed { .. })));
        ownership.set_lease_valid_until(clock.now() + std::time::Duration::from_secs(3));
        assert!(matches!(ownership.check(&key, &clock), Err(CallError::NotServed { .. })));
        ownership.serve(ShardId(2), Epoch::new(1, 7));
        assert_eq!(ownership.check(&key, &clock), Ok(Epoch::new(1, 7)));
        assert!(ownership.is_fenced(&key, Epoch::new(1, 7)));
        clock.advance(std::time::Duration::from_secs(3));
        assert!(matches!(ownership.check(&key, &clock), Err(CallError::NotServed { .. })));
        ownership.set_lease_valid_until(clock.now() + std::time::Duration::from_secs(3));
        ownership.stop_serving(ShardId(2));
        assert!(matches!(ownership.check(&key, &clock), Err(CallError::NotServed { .. })));
    }
}
