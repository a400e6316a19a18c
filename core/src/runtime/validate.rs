//! `Node::validate`: checks a node's core state against its internal invariants, for the
//! simulation (which calls it on every node after every step) and for tests. Not part of the
//! supported API (hidden from the docs); it reads the state under the same locks as the
//! runtime and changes nothing.
//!
//! What it checks:
//! - **ownership table**: no shard is both served and being handed off; in a cluster, a
//!   served (or leaving) shard's epoch counter equals the counter its store fence is known
//!   raised to (the fence is raised before a shard is served, and epochs of a shard only
//!   grow); a shard the last published cluster view shows owned by this node at epoch `e` is
//!   served at `e` or later, in `e`'s generation;
//! - **activation tables**: every slot sits in the table of its location, at most one
//!   activation per object id, no slot that went `Gone` is still in a table, a turn runs only
//!   in an `Active` activation;
//! - **ownership of activations**: an activation that is live (active, no deactivation asked
//!   for, not poisoned) belongs to a shard this node serves or is handing off, or is pinned to
//!   this node while it serves its pinned objects. (An activation still activating may be for
//!   a shard lost meanwhile: its own ownership check refuses it.)

use std::collections::HashSet;

use super::Node;
use super::activation::Phase;
use crate::store::FenceKey;

/// A broken invariant of a node's core state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A shard is served and handed off at once.
    #[error("shard {shard} is served at counter {served} and leaving at counter {leaving}")]
    ServedAndLeaving {
        /// The shard.
        shard: u32,
        /// Its served epoch counter.
        served: u64,
        /// Its leaving epoch counter.
        leaving: u64,
    },
    /// A shard is served (or handed off) at an epoch its store fence is not known raised to.
    #[error("shard {shard} is served at counter {served} but its fence is known at {fenced}")]
    FenceMismatch {
        /// The shard.
        shard: u32,
        /// Its served (or leaving) epoch counter.
        served: u64,
        /// The counter its fence is known raised to.
        fenced: u64,
    },
    /// The cluster view shows this node owning a shard at a newer epoch than it serves.
    #[error(
        "shard {shard} is served at {served} but the view shows this node owning it at {owned}"
    )]
    BehindOwnerRecord {
        /// The shard.
        shard: u32,
        /// The served epoch (generation, counter).
        served: crate::epoch::Epoch,
        /// The epoch of this node's owner record in the view.
        owned: crate::epoch::Epoch,
    },
    /// An activation sits in the wrong table.
    #[error("activation {id} sits in table {table} but belongs in table {expected}")]
    MisplacedSlot {
        /// The object id.
        id: String,
        /// The table it sits in.
        table: u32,
        /// The table its location names.
        expected: u32,
    },
    /// Two activations of one object id.
    #[error("two activations of {id}")]
    DuplicateActivation {
        /// The object id.
        id: String,
    },
    /// A slot that went `Gone` (or whose gone hint is set) is still in its table.
    #[error("activation {id} is gone but still in table {table}")]
    GoneInTable {
        /// The object id.
        id: String,
        /// Its table.
        table: u32,
    },
    /// A turn runs in an activation that is not active.
    #[error("a turn of {id} runs while the activation is {phase}")]
    RunningWhileNotActive {
        /// The object id.
        id: String,
        /// Its phase.
        phase: String,
    },
    /// A live activation of an object whose shard this node neither serves nor hands off.
    #[error(
        "live activation of {id} (phase {phase}) for shard {shard}, which this node does not own"
    )]
    UnownedActivation {
        /// The object id.
        id: String,
        /// Its shard.
        shard: u32,
        /// Its phase.
        phase: String,
    },
    /// A live activation of an object pinned to this node while its pinned objects are not
    /// served, or pinned to another node.
    #[error("live activation of {id}, pinned to {node}, which this node does not serve")]
    UnownedPinned {
        /// The object id.
        id: String,
        /// The node it is pinned to.
        node: String,
    },
}

impl Node {
    /// Checks this node's core state against its invariants (module docs of
    /// `verse_core::runtime::validate`); the first violation found. A testing aid: the
    /// simulation calls it after every step.
    #[doc(hidden)]
    pub fn validate(&self) -> Result<(), Violation> {
        let shared = self.shared();
        let ownership = &shared.ownership;
        if ownership.is_stopping() {
            // Shutting down: activations end while nothing is served any more.
            return Ok(());
        }
        let view = shared.cluster.get().and_then(|routes| routes.current_view());
        let me = ownership.node_id();
        for shard in 0..ownership.shard_count() {
            let counters = ownership.counters(shard);
            if counters.served != 0 && counters.leaving != 0 {
                return Err(Violation::ServedAndLeaving {
                    shard,
                    served: counters.served,
                    leaving: counters.leaving,
                });
            }
            let held = counters.served.max(counters.leaving);
            if shared.clustered && held != 0 && counters.fenced != held {
                return Err(Violation::FenceMismatch {
                    shard,
                    served: held,
                    fenced: counters.fenced,
                });
            }
            if counters.served == 0 {
                continue;
            }
            let served = crate::epoch::Epoch::new(ownership.generation(), counters.served);
            let owner = view
                .as_ref()
                .and_then(|view| view.map().entry(crate::shard::ShardId(shard)).owner.as_ref());
            if let Some(owner) = owner
                && !owner.released
                && owner.node.as_str() == me
                && (owner.epoch.generation != served.generation
                    || owner.epoch.counter > served.counter)
            {
                return Err(Violation::BehindOwnerRecord { shard, served, owned: owner.epoch });
            }
        }
        let pinned_served = ownership.node_counters().served != 0;
        let mut ids: HashSet<std::sync::Arc<str>> = HashSet::new();
        for table in 0..shared.tables.len() {
            let table = u32::try_from(table).unwrap_or(u32::MAX);
            // A slot's mailbox lock is taken under its table's, as the runtime does.
            let slots = shared.table(table);
            for slot in slots.iter() {
                let activation = &slot.0;
                let id = || activation.id.to_string();
                let expected = match &activation.location.fence {
                    FenceKey::Shard(shard) => shard.0,
                    FenceKey::Node(_) => activation.location.table_shard,
                };
                if activation.table_shard != table || activation.location.table_shard != expected {
                    return Err(Violation::MisplacedSlot { id: id(), table, expected });
                }
                if !ids.insert(activation.id.clone()) {
                    return Err(Violation::DuplicateActivation { id: id() });
                }
                let state = activation.slot_state();
                if state.phase == Phase::Gone || state.gone_hint {
                    return Err(Violation::GoneInTable { id: id(), table });
                }
                if state.running && state.phase != Phase::Active {
                    return Err(Violation::RunningWhileNotActive {
                        id: id(),
                        phase: format!("{:?}", state.phase),
                    });
                }
                let live = state.phase == Phase::Active
                    && !state.deactivation_requested
                    && !state.poisoned;
                if !live {
                    continue;
                }
                match &activation.location.fence {
                    FenceKey::Shard(shard) => {
                        let counters = ownership.counters(shard.0);
                        if counters.served == 0 && counters.leaving == 0 {
                            return Err(Violation::UnownedActivation {
                                id: id(),
                                shard: shard.0,
                                phase: format!("{:?}", state.phase),
                            });
                        }
                    }
                    FenceKey::Node(node) => {
                        if **node != *me || !pinned_served {
                            return Err(Violation::UnownedPinned {
                                id: id(),
                                node: node.to_string(),
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::Violation;
    use crate::clock::ManualClock;
    use crate::context::CallContext;
    use crate::epoch::Epoch;
    use crate::error::CallError;
    use crate::object::{MethodInfo, Object, Payload, TurnFuture};
    use crate::reference::RawRef;
    use crate::runtime::{Node, NodeBuilder, NodeConfig};
    use crate::shard::ShardId;
    use crate::store::{FenceKey, MemoryStore};

    /// A stateless object with one method, `Ping`, answering its request.
    struct Echo;

    #[derive(Clone, Debug)]
    struct EchoRef(RawRef);

    impl From<RawRef> for EchoRef {
        fn from(raw: RawRef) -> Self {
            EchoRef(raw)
        }
    }

    impl Object for Echo {
        const TYPE_NAME: &'static str = "Echo";
        const HAS_STATE: bool = false;
        type State = ();
        type Ref = EchoRef;

        fn methods() -> &'static [MethodInfo] {
            static METHODS: std::sync::OnceLock<Vec<MethodInfo>> = std::sync::OnceLock::new();
            METHODS.get_or_init(|| {
                vec![MethodInfo {
                    name: "Ping",
                    request_type: "google.protobuf.Empty".into(),
                    response_type: "google.protobuf.Empty".into(),
                    idempotent: true,
                }]
            })
        }

        fn construct(_id: &str) -> Self {
            Echo
        }

        fn dispatch<'a>(
            &'a mut self,
            _ctx: &'a CallContext,
            _method: usize,
            request: Payload,
        ) -> TurnFuture<'a> {
            Box::pin(async move { Ok(request) })
        }
    }

    fn node() -> Node {
        let clock = ManualClock::new();
        let store = MemoryStore::new(clock.shared(), Duration::from_secs(3600), true);
        NodeBuilder::new(NodeConfig { shard_count: 16, ..NodeConfig::default() })
            .clock(clock.shared())
            .store(Arc::new(store))
            .object::<Echo>()
            .start()
            .expect("a node")
    }

    /// Activates `id` with one call; returns its fence key.
    async fn activate(node: &Node, id: &str) -> FenceKey {
        let echo = node.client().get::<Echo>(id);
        let answer: Result<(), CallError> = echo.0.call("Ping", ()).await;
        answer.expect("ping");
        assert!(node.is_active(id));
        (0..16)
            .find_map(|table| {
                node.shared().table(table).get(id).map(|slot| slot.0.location.fence.clone())
            })
            .expect("the activation's slot")
    }

    #[tokio::test]
    async fn a_consistent_node_validates() {
        let node = node();
        assert_eq!(node.validate(), Ok(()));
        activate(&node, "a").await;
        activate(&node, "b").await;
        assert_eq!(node.validate(), Ok(()));
        node.shutdown().await;
    }

    #[tokio::test]
    async fn an_activation_of_a_shard_no_longer_owned_is_found() {
        let node = node();
        let FenceKey::Shard(shard) = activate(&node, "a").await else {
            panic!("a shard-placed object")
        };
        // Corrupt the state: stop serving the shard without discarding its activation (what
        // `discard_shard` and the handoff exist to prevent).
        node.shared().ownership.stop_serving(shard);
        match node.validate() {
            Err(Violation::UnownedActivation { id, shard: found, .. }) => {
                assert_eq!((id.as_str(), found), ("a", shard.0));
            }
            other => panic!("expected UnownedActivation, got {other:?}"),
        }
        node.shutdown().await;
    }

    #[tokio::test]
    async fn a_shard_served_while_handed_off_is_found() {
        let node = node();
        let ownership = &node.shared().ownership;
        ownership.begin_leaving(ShardId(3));
        assert_eq!(node.validate(), Ok(()), "leaving alone is consistent");
        ownership.serve(ShardId(3), Epoch::new(1, 2));
        let found = node.validate();
        assert_eq!(found, Err(Violation::ServedAndLeaving { shard: 3, served: 2, leaving: 1 }));
        assert!(found.expect_err("a violation").to_string().contains("shard 3"));
        node.shutdown().await;
    }
}
