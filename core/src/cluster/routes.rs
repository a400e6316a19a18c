//! Where to send a call for a shard this node does not serve: the route table the cluster
//! runtime keeps current from the coordinator's view, read by the router only off the local
//! hot path (after [`Ownership::check`](crate::runtime) refused).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use std::time::Duration;

use tokio::sync::watch;

use crate::clock::{Clock, MonoTime};

use crate::coordinator::{ClusterView, Coordinator, MemberRecord, MemberRole};
use crate::shard::ShardId;
use crate::shardmap::{MemberId, ShardEntry};
use crate::transport::Transport;

/// Where a call for a shard goes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// Another node serves the shard, or will (its target): send it there.
    Remote {
        /// The node.
        node: MemberId,
        /// Its advertised node-protocol address.
        address: String,
    },
    /// This node is (or is about to be) the shard's owner: hold the call until it serves.
    Hold,
    /// Nobody to send it to yet (no live owner or target): refresh and wait.
    Unknown,
    /// The shard is pinned to a node that is not live, and nobody serves it: its calls
    /// fail fast (`ShardPinnedToAbsentNode`) until the node returns or the pin is removed.
    PinnedToAbsent(MemberId),
}

/// The shared route table of a clustered node.
pub(crate) struct Routes {
    me: MemberId,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) coordinator: Arc<dyn Coordinator>,
    // A std lock: read briefly to compute a route, replaced whole by the cluster runtime;
    // never held across an await.
    view: RwLock<Option<Arc<ClusterView>>>,
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes").field("me", &self.me).finish_non_exhaustive()
    }
}

impl Routes {
    pub(crate) fn new(
        me: MemberId,
        transport: Arc<dyn Transport>,
        coordinator: Arc<dyn Coordinator>,
    ) -> Self {
        Routes {
            me,
            transport,
            coordinator,
            view: RwLock::new(None),
            changes: watch::Sender::new(0),
        }
    }

    /// The route for `shard`: from `fresh` (a linearizable re-read) when given, else from the
    /// view. `avoid` is a node that just refused the call: its shard's target is preferred.
    /// `chained`: the call's awaited chain runs a turn of this shard (see [`route_for`]).
    pub(crate) fn route(
        &self,
        shard: ShardId,
        fresh: Option<&ShardEntry>,
        avoid: Option<&MemberId>,
        chained: bool,
    ) -> Route {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(view) = view else { return Route::Unknown };
        if shard.0 >= view.map().shard_count() {
            return Route::Unknown;
        }
        let entry = fresh.unwrap_or_else(|| view.map().entry(shard));
        route_for(entry, view.members(), &self.me, avoid, chained)
    }

    /// The current view, once one was published.
    pub(crate) fn current_view(&self) -> Option<Arc<ClusterView>> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether `gateway` is a live gateway member in the current view (`None`: no view yet).
    pub(crate) fn gateway_live(&self, gateway: &str) -> Option<bool> {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        let view = view.as_ref()?;
        Some(
            view.members()
                .get(&MemberId::from(gateway))
                .is_some_and(|m| m.role == MemberRole::Gateway),
        )
    }

    /// The node-protocol address of node `node` while it is a live member (objects pinned
    /// to it go there).
    pub(crate) fn node_address(&self, node: &str) -> Option<String> {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner()).clone()?;
        let record = view.members().get(&MemberId::from(node))?;
        (record.role == MemberRole::Node).then(|| record.addresses.first().cloned()).flatten()
    }

    /// Replaces the view and wakes held calls.
    pub(crate) fn publish(&self, view: Arc<ClusterView>) {
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = Some(view);
        self.bump();
    }

    /// Wakes held calls (serving started or stopped somewhere).
    pub(crate) fn bump(&self) {
        self.changes.send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// A receiver that sees every later [`Routes::bump`].
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// The pause before resending after a refusal: none for the first two attempts (a refusal
/// usually comes with a fresh route), then doubling from 8 ms up to 100 ms, never past
/// `deadline`. Shared by nodes and non-hosting members ([`super::Router`]).
pub(crate) async fn backoff(clock: &dyn Clock, attempt: u32, deadline: MonoTime) {
    if attempt <= 2 {
        tokio::task::yield_now().await;
        return;
    }
    let delay = Duration::from_millis(1u64 << attempt.min(7)).min(Duration::from_millis(100));
    let wake = (clock.now() + delay).min(deadline);
    clock.sleep_until(wake).await;
}

/// The route for one entry, given the live members.
///
/// Order matters: a target holds its own calls even while the previous owner lives (it will
/// claim once that owner releases); otherwise the live owner serves; otherwise the target will.
/// One exception: a `chained` call (its awaited chain runs a turn of this shard) goes to the
/// live owner even from the target. That turn runs on the owner, which admits such calls
/// while handing the shard off (the handoff exception), and the handoff waits for the turn:
/// held at the target, the call would wait for a release that waits for it.
pub(crate) fn route_for(
    entry: &ShardEntry,
    members: &BTreeMap<MemberId, MemberRecord>,
    me: &MemberId,
    avoid: Option<&MemberId>,
    chained: bool,
) -> Route {
    let live = |node: &MemberId| members.get(node);
    let remote = |node: &MemberId| match live(node).and_then(|r| r.addresses.first()) {
        Some(address) => Route::Remote { node: node.clone(), address: address.clone() },
        None => Route::Unknown,
    };
    let target = entry.target_node();
    let owner = entry
        .owner
        .as_ref()
        .filter(|o| !o.released && live(&o.node).is_some_and(|r| r.incarnation == o.incarnation));
    if chained
        && let Some(owner) = owner
        && &owner.node != me
        && avoid != Some(&owner.node)
    {
        return remote(&owner.node);
    }
    if target == Some(me) {
        return Route::Hold;
    }
    let live_target = target.filter(|t| live(t).is_some());
    if let Some(owner) = owner
        && &owner.node != me
    {
        if avoid == Some(&owner.node)
            && let Some(target) = live_target.filter(|t| Some(*t) != avoid)
        {
            return remote(target);
        }
        return remote(&owner.node);
    }
    if let Some(target) = live_target {
        return remote(target);
    }
    if owner.is_some() {
        // Owned by this incarnation but not served yet (fencing) or not now (lease unproven).
        return Route::Hold;
    }
    match target {
        Some(node) if entry.is_pinned() => Route::PinnedToAbsent(node.clone()),
        _ => Route::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::{MemberFlags, MemberRole};
    use crate::epoch::Epoch;
    use crate::shardmap::{Incarnation, OwnerRecord, TargetRecord};

    fn members(list: &[(&str, u64)]) -> BTreeMap<MemberId, MemberRecord> {
        list.iter()
            .map(|(id, incarnation)| {
                let record = MemberRecord {
                    id: MemberId::from(*id),
                    incarnation: Incarnation(*incarnation),
                    addresses: vec![format!("{id}:1")],
                    role: MemberRole::Node,
                    version: String::new(),
                    start_time_unix_ms: 0,
                    flags: MemberFlags::default(),
                    node_local_store: false,
                };
                (record.id.clone(), record)
            })
            .collect()
    }

    fn entry(target: Option<&str>, owner: Option<(&str, u64, bool)>) -> ShardEntry {
        ShardEntry {
            shard: ShardId(0),
            target: target.map(TargetRecord::planned),
            owner: owner.map(|(node, incarnation, released)| OwnerRecord {
                node: node.into(),
                incarnation: Incarnation(incarnation),
                epoch: Epoch::new(1, 3),
                released,
            }),
        }
    }

    fn remote(node: &str) -> Route {
        Route::Remote { node: node.into(), address: format!("{node}:1") }
    }

    #[test]
    fn routes_follow_owner_target_and_liveness() {
        let me = MemberId::from("a");
        let live = members(&[("a", 1), ("b", 2), ("c", 3)]);
        // Steady state: the live owner serves.
        assert_eq!(
            route_for(&entry(Some("b"), Some(("b", 2, false))), &live, &me, None, false),
            remote("b")
        );
        // Moving to me: hold, even while the owner lives.
        assert_eq!(
            route_for(&entry(Some("a"), Some(("b", 2, false))), &live, &me, None, false),
            Route::Hold
        );
        // Moving from b to c: b until it releases, c once it did or after b refused.
        let moving = entry(Some("c"), Some(("b", 2, false)));
        assert_eq!(route_for(&moving, &live, &me, None, false), remote("b"));
        assert_eq!(route_for(&moving, &live, &me, Some(&"b".into()), false), remote("c"));
        assert_eq!(
            route_for(&entry(Some("c"), Some(("b", 2, true))), &live, &me, None, false),
            remote("c")
        );
        // A dead owner (older incarnation) does not count.
        assert_eq!(
            route_for(&entry(Some("c"), Some(("b", 1, false))), &live, &me, None, false),
            remote("c")
        );
        // Handing off from me: the target.
        assert_eq!(
            route_for(&entry(Some("b"), Some(("a", 1, false))), &live, &me, None, false),
            remote("b")
        );
        // Owned by me with no live target: hold; nothing at all: unknown.
        assert_eq!(
            route_for(&entry(Some("x"), Some(("a", 1, false))), &live, &me, None, false),
            Route::Hold
        );
        assert_eq!(route_for(&entry(None, None), &live, &me, None, false), Route::Unknown);
    }

    #[test]
    fn a_call_whose_chain_runs_a_turn_of_the_shard_goes_to_its_live_owner() {
        let me = MemberId::from("a");
        let live = members(&[("a", 1), ("b", 2)]);
        // Moving from b to me: a chained call goes to b (which admits it while handing off),
        // an unchained one is held here.
        let moving = entry(Some("a"), Some(("b", 2, false)));
        assert_eq!(route_for(&moving, &live, &me, None, true), remote("b"));
        assert_eq!(route_for(&moving, &live, &me, None, false), Route::Hold);
        // Once b refused it (the turn ended) or released, the usual route.
        assert_eq!(route_for(&moving, &live, &me, Some(&"b".into()), true), Route::Hold);
        let released = entry(Some("a"), Some(("b", 2, true)));
        assert_eq!(route_for(&released, &live, &me, None, true), Route::Hold);
    }

    #[test]
    fn a_shard_pinned_to_an_absent_node_fails_fast_once_nobody_serves_it() {
        let me = MemberId::from("a");
        let live = members(&[("a", 1), ("b", 2)]);
        let pinned = |target: &str, owner| {
            let mut entry = entry(None, owner);
            entry.target = Some(TargetRecord::pinned(target));
            entry
        };
        // Pinned to a live node: routed like any target.
        assert_eq!(route_for(&pinned("b", None), &live, &me, None, false), remote("b"));
        // Pinned to an absent node while the old owner still serves (handing off): the owner.
        assert_eq!(
            route_for(&pinned("x", Some(("b", 2, false))), &live, &me, None, false),
            remote("b")
        );
        // Nobody serves it: fail fast, naming the node.
        let absent = Route::PinnedToAbsent("x".into());
        assert_eq!(route_for(&pinned("x", None), &live, &me, None, false), absent);
        assert_eq!(route_for(&pinned("x", Some(("b", 2, true))), &live, &me, None, false), absent);
        assert_eq!(route_for(&pinned("x", Some(("x", 9, false))), &live, &me, None, false), absent);
    }
}
