//! Turn observation for invariant checkers: the simulation and the process-level tests record
//! every turn's interval (object, node, epoch, start, end) and check that turns of one object
//! never overlap across nodes and that epochs never decrease (invariants 1 and 2).
//!
//! Not a metrics or tracing hook: it is called on every turn, synchronously, on the turn's
//! task, so an implementation must be cheap and must not block (append to a buffer or an
//! unbuffered file, nothing more). Nodes built without an observer pay one branch per turn.

use std::fmt;

use crate::epoch::Epoch;

/// One turn as an observer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnRecord<'a> {
    /// The node running the turn (`NodeConfig::node_id`).
    pub node_id: &'a str,
    /// The object's type name.
    pub object_type: &'a str,
    /// The object id.
    pub object_id: &'a str,
    /// The epoch the activation serves under (its shard's or pinned node's fence epoch).
    pub epoch: Epoch,
}

/// Receives the start and end of every turn on a node (see the module docs).
///
/// `turn_started` is called after the ownership check admitted the turn and before the method
/// runs; `turn_finished` after the method returned (or was dropped by `max_turn_duration`) and,
/// for write-through types, after its save finished, before the caller gets its answer. So an
/// observer that reads its own clock in both calls records an interval that contains every
/// effect of the turn. Each `turn_started` is followed by exactly one `turn_finished` for the
/// same object on the same node, unless the process dies.
pub trait TurnObserver: Send + Sync + 'static {
    /// A turn was admitted and is about to run.
    fn turn_started(&self, turn: &TurnRecord<'_>);
    /// The turn admitted by the last `turn_started` of this object finished.
    fn turn_finished(&self, turn: &TurnRecord<'_>);
}

impl fmt::Debug for dyn TurnObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TurnObserver")
    }
}
