//! What [`crate::runtime::validate`] reads from the ownership table: each shard's serving,
//! leaving and fenced epoch counters, and the node's own.

use std::sync::atomic::Ordering;

use super::Ownership;

/// One shard's (or the pinned objects') counters at one instant (0 = none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) served: u64,
    pub(crate) leaving: u64,
    pub(crate) fenced: u64,
}

impl Ownership {
    /// Shards in the table.
    pub(crate) fn shard_count(&self) -> u32 {
        u32::try_from(self.shards.len()).unwrap_or(u32::MAX)
    }

    /// The counters of `shard`.
    pub(crate) fn counters(&self, shard: u32) -> Counters {
        let index = shard as usize;
        Counters {
            served: self.shards[index].load(Ordering::Acquire),
            leaving: self.leaving[index].load(Ordering::Acquire),
            fenced: self.fenced[index].load(Ordering::Acquire),
        }
    }

    /// The counters of the objects pinned to this node (never leaving).
    pub(crate) fn node_counters(&self) -> Counters {
        Counters {
            served: self.node_counter.load(Ordering::Acquire),
            leaving: 0,
            fenced: self.node_fenced.load(Ordering::Acquire),
        }
    }

    /// The generation epochs are issued in.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// This node's id.
    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether the node is shutting down.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}
