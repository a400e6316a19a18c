//! Shard epochs: the ownership generation of a shard.
//!
//! An epoch is `(generation, counter)`. The generation is the cluster generation recorded in the
//! coordinator's cluster configuration; it rises when a coordinator is restored from a backup, so
//! epochs never go backwards even if counters restart. Epochs compare lexicographically.

use std::fmt;

/// The ownership generation of a shard (or of a pinned node's objects).
///
/// Every successful claim produces a strictly larger epoch than the shard had before. State
/// stores are fenced by epochs (see [`crate::store::StateStore`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Epoch {
    /// Cluster generation: rises when the coordinator's data is restored or re-created.
    pub generation: u64,
    /// Claim counter within the generation.
    pub counter: u64,
}

impl Epoch {
    /// The epoch before any claim (used as "nothing yet").
    pub const ZERO: Epoch = Epoch {
        generation: 0,
        counter: 0,
    };

    /// Builds an epoch.
    pub const fn new(generation: u64, counter: u64) -> Self {
        Epoch {
            generation,
            counter,
        }
    }

    /// The epoch a successful claim moves to: the same generation, the next counter.
    pub const fn next(self) -> Self {
        Epoch {
            generation: self.generation,
            counter: self.counter + 1,
        }
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.generation, self.counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_order_by_generation_first() {
        assert!(Epoch::new(2, 0) > Epoch::new(1, 99));
        assert!(Epoch::new(1, 2) > Epoch::new(1, 1));
        assert_eq!(Epoch::new(1, 1).next(), Epoch::new(1, 2));
        assert_eq!(Epoch::new(3, 4).to_string(), "3.4");
    }
}
