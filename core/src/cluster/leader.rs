//! The leader: campaigns for leadership and, while it leads, turns every new view into target
//! writes fenced by its term (failovers and rebalancing from the pure planner).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ClusterOptions;
use crate::clock::{MonoTime, SharedClock};
use crate::coordinator::{ClusterView, CoordError, Coordinator, MemberRole, TargetWrite, Term};
use crate::planner::{PlanInput, plan};
use crate::shard::ShardId;
use crate::shardmap::{MemberId, Move, TargetRecord};

/// The target writes that carry out one planning round over `view` (the planner alone).
#[cfg(test)]
fn plan_writes(view: &ClusterView, max_in_flight: usize) -> Vec<TargetWrite> {
    planned_moves(view, max_in_flight)
        .into_iter()
        .map(|m| TargetWrite { shard: m.shard, target: Some(TargetRecord::planned(m.to)) })
        .collect()
}

/// The planner's moves over `view`.
fn planned_moves(view: &ClusterView, max_in_flight: usize) -> Vec<Move> {
    let nodes = view.members().values().filter(|m| m.role == MemberRole::Node);
    let live: BTreeSet<MemberId> = nodes.clone().map(|m| m.id.clone()).collect();
    let draining: BTreeSet<MemberId> =
        nodes.filter(|m| m.flags.draining).map(|m| m.id.clone()).collect();
    let input = PlanInput { map: view.map(), live: &live, draining: &draining, max_in_flight };
    plan(&input).moves().cloned().collect()
}

/// The target writes that carry out operator pins: a pin becomes a pinned target on its node,
/// and a pinned target whose pin was removed becomes a planned one on the same node (the
/// planner may move it from the next round on).
fn pin_writes(view: &ClusterView) -> BTreeMap<ShardId, TargetWrite> {
    let pins = view.pins();
    let mut writes = BTreeMap::new();
    for (shard, node) in pins {
        if shard.0 >= view.map().shard_count() {
            continue;
        }
        let pinned = TargetRecord::pinned(node.clone());
        if view.map().entry(*shard).target.as_ref() != Some(&pinned) {
            writes.insert(*shard, TargetWrite { shard: *shard, target: Some(pinned) });
        }
    }
    for entry in view.map().iter().filter(|e| e.is_pinned() && !pins.contains_key(&e.shard)) {
        let target = entry.target_node().map(|node| TargetRecord::planned(node.clone()));
        writes.insert(entry.shard, TargetWrite { shard: entry.shard, target });
    }
    writes
}

/// What one leader remembers between planning rounds about moves that do not land: since
/// when each shard's live target has not claimed it, and which moves are backed off.
///
/// A move that does not land within `claim_timeout` (the target is live but not the owner)
/// is given up: if the previous owner is still live the shard's target goes back to it (the
/// move is cancelled; this is also how a failed handoff — the owner reported `MoveFailed`
/// by keeping the shard — reaches the leader), otherwise another eligible node is chosen.
/// Either way the move to that target is backed off for `move_backoff`: the planner's moves
/// of that shard to that node are dropped until then. Kept in memory only: a new leader
/// starts afresh (at worst it waits `claim_timeout` again).
#[derive(Debug, Default)]
pub(crate) struct StuckMoves {
    /// Shard → (its live target that has not claimed it, since when).
    waiting: BTreeMap<ShardId, (MemberId, MonoTime)>,
    /// Shard → (a target not to move it to, until when).
    backed_off: BTreeMap<ShardId, (MemberId, MonoTime)>,
}

impl StuckMoves {
    /// One planning round at `now`: operator pins first, then the planner's moves, minus
    /// backed-off ones, plus the re-targeting of moves stuck for `claim_timeout`.
    pub(crate) fn round(
        &mut self,
        view: &ClusterView,
        now: MonoTime,
        options: &ClusterOptions,
    ) -> Vec<TargetWrite> {
        self.backed_off.retain(|_, (_, until)| *until > now);
        let members = view.members();
        let live_node = |node: &MemberId| {
            members.get(node).filter(|m| m.role == MemberRole::Node).map(|m| m.incarnation)
        };
        let mut targets: BTreeMap<&MemberId, usize> = BTreeMap::new();
        for entry in view.map().iter() {
            if let Some(target) = entry.target_node() {
                *targets.entry(target).or_default() += 1;
            }
        }
        let mut writes = pin_writes(view);
        let pinning: BTreeSet<ShardId> = writes.keys().copied().collect();
        let mut waiting = BTreeMap::new();
        for entry in view.map().iter().filter(|e| !e.is_pinned() && !pinning.contains(&e.shard)) {
            let Some(target) = entry.target_node() else { continue };
            let Some(target_incarnation) = live_node(target) else { continue };
            let owner = entry.owner.as_ref();
            let claimed = owner.is_some_and(|o| {
                &o.node == target && o.incarnation == target_incarnation && !o.released
            });
            if claimed {
                continue;
            }
            let since = match self.waiting.get(&entry.shard) {
                Some((node, since)) if node == target => *since,
                _ => now,
            };
            if now.saturating_duration_since(since) < options.claim_timeout {
                waiting.insert(entry.shard, (target.clone(), since));
                continue;
            }
            let live_owner = owner.filter(|o| {
                !o.released && &o.node != target && live_node(&o.node) == Some(o.incarnation)
            });
            let to = match live_owner {
                Some(owner) => Some(owner.node.clone()),
                None => members
                    .values()
                    .filter(|m| m.role == MemberRole::Node && !m.flags.draining)
                    .filter(|m| &m.id != target)
                    .min_by_key(|m| (targets.get(&m.id).copied().unwrap_or(0), m.id.clone()))
                    .map(|m| m.id.clone()),
            };
            tracing::warn!(
                shard = entry.shard.0,
                %target,
                to = ?to,
                "the move did not land within claim_timeout; backing it off"
            );
            self.backed_off.insert(entry.shard, (target.clone(), now + options.move_backoff));
            if let Some(to) = to {
                let write =
                    TargetWrite { shard: entry.shard, target: Some(TargetRecord::planned(to)) };
                writes.insert(entry.shard, write);
            }
        }
        self.waiting = waiting;
        for planned in planned_moves(view, options.max_in_flight) {
            let backed_off =
                self.backed_off.get(&planned.shard).is_some_and(|(node, _)| *node == planned.to);
            if backed_off || writes.contains_key(&planned.shard) {
                continue;
            }
            let write = TargetWrite {
                shard: planned.shard,
                target: Some(TargetRecord::planned(planned.to)),
            };
            writes.insert(planned.shard, write);
        }
        writes.into_values().collect()
    }
}

/// The leader task: campaign, lead until leadership is lost, campaign again; until cancelled
/// (then it resigns).
pub(super) async fn lead(
    coordinator: Arc<dyn Coordinator>,
    clock: SharedClock,
    options: ClusterOptions,
    mut views: watch::Receiver<Option<Arc<ClusterView>>>,
    cancel: CancellationToken,
) {
    loop {
        let campaign = tokio::select! {
            () = cancel.cancelled() => return,
            campaign = coordinator.campaign() => campaign,
        };
        let term = match campaign {
            Ok(term) => term,
            Err(error @ (CoordError::NotRegistered | CoordError::LeaseLost(_))) => {
                tracing::warn!(%error, "cannot campaign any more");
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "campaign failed; retrying");
                let retry = clock.now() + options.plan_interval;
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = clock.sleep_until(retry) => continue,
                }
            }
        };
        tracing::info!(%term, "leading");
        let resign = lead_term(&*coordinator, &clock, &options, &mut views, &cancel, term).await;
        if resign {
            let _ = coordinator.resign(term).await;
            return;
        }
        tracing::info!(%term, "leadership lost");
    }
}

/// Leads one term; returns true when cancelled (the caller resigns), false when the term
/// ended.
async fn lead_term(
    coordinator: &dyn Coordinator,
    clock: &SharedClock,
    options: &ClusterOptions,
    views: &mut watch::Receiver<Option<Arc<ClusterView>>>,
    cancel: &CancellationToken,
    term: Term,
) -> bool {
    let mut lost = std::pin::pin!(coordinator.leadership_lost(term));
    let mut stuck = StuckMoves::default();
    let mut planned_at = None;
    let mut next_plan = clock.now();
    loop {
        let periodic = clock.now() >= next_plan;
        if periodic {
            // Also without a view yet: otherwise the sleep below completes at once and the
            // loop spins until the first view arrives (found by the simulation, where that
            // spin stops virtual time).
            next_plan = clock.now() + options.plan_interval;
        }
        let view = views.borrow_and_update().clone();
        if let Some(view) = view
            && (periodic || planned_at != Some(view.revision()))
        {
            planned_at = Some(view.revision());
            next_plan = clock.now() + options.plan_interval;
            let writes = stuck.round(&view, clock.now(), options);
            if !writes.is_empty() {
                tracing::debug!(%term, moves = writes.len(), "writing targets");
                match coordinator.write_targets(term, writes).await {
                    Ok(()) => {}
                    Err(CoordError::StaleTerm(_)) => return false,
                    Err(error) => tracing::warn!(%error, "writing targets failed"),
                }
            }
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => return true,
            _ = &mut lost => return false,
            changed = views.changed() => if changed.is_err() { return true },
            () = clock.sleep_until(next_plan) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::{ClusterConfig, ClusterSnapshot, MemberFlags, MemberRecord, Revision};
    use crate::shard::ShardId;
    use crate::shardmap::{Incarnation, ShardMap};
    use std::time::Duration;

    fn member(id: &str, draining: bool) -> MemberRecord {
        MemberRecord {
            id: id.into(),
            incarnation: Incarnation(1),
            addresses: vec![],
            role: MemberRole::Node,
            version: String::new(),
            start_time_unix_ms: 0,
            flags: MemberFlags { draining, ready: true },
            node_local_store: false,
        }
    }

    fn view(members: &[MemberRecord], map: ShardMap) -> ClusterView {
        pinned_view(members, map, &[])
    }

    #[test]
    fn the_leader_targets_every_shard_then_moves_shards_off_draining_nodes() {
        let fresh = view(&[member("a", false), member("b", false)], ShardMap::new(4));
        let writes = plan_writes(&fresh, 8);
        assert_eq!(writes.len(), 4, "every untargeted shard is a failover");
        let mut map = ShardMap::new(4);
        for write in &writes {
            map.set_target(write.shard, write.target.clone());
        }
        assert!(
            plan_writes(&view(&[member("a", false), member("b", false)], map.clone()), 8)
                .is_empty()
        );
        let drained = plan_writes(&view(&[member("a", true), member("b", false)], map), 8);
        assert_eq!(drained.len(), 2);
        assert!(drained.iter().all(|w| w.target == Some(TargetRecord::planned("b"))));
        let _ = ShardId(0);
    }

    fn owner(node: &str) -> Option<crate::shardmap::OwnerRecord> {
        Some(crate::shardmap::OwnerRecord {
            node: node.into(),
            incarnation: Incarnation(1),
            epoch: crate::epoch::Epoch::new(1, 1),
            released: false,
        })
    }

    fn options() -> ClusterOptions {
        let mut options = ClusterOptions::new("x:1");
        options.claim_timeout = Duration::from_secs(10);
        options.move_backoff = Duration::from_secs(30);
        options
    }

    fn at(seconds: u64) -> MonoTime {
        MonoTime::from_nanos(1) + Duration::from_secs(seconds)
    }

    fn to(writes: &[TargetWrite], shard: u32) -> Option<&str> {
        writes
            .iter()
            .find(|w| w.shard == ShardId(shard))
            .and_then(|w| w.target.as_ref())
            .map(|t| t.node.as_str())
    }

    fn pinned_view(members: &[MemberRecord], map: ShardMap, pins: &[(u32, &str)]) -> ClusterView {
        ClusterView::new(ClusterSnapshot {
            revision: Revision(1),
            config: ClusterConfig { shard_count: map.shard_count(), generation: 1 },
            members: members.iter().map(|m| (m.id.clone(), m.clone())).collect(),
            leader: None,
            map,
            pins: pins
                .iter()
                .map(|(shard, node)| (ShardId(*shard), MemberId::from(*node)))
                .collect(),
        })
    }

    #[test]
    fn pins_become_pinned_targets_and_removed_pins_go_back_to_the_planner() {
        let members = [member("a", false), member("b", false)];
        let mut map = ShardMap::new(4);
        for shard in 0..4u32 {
            let node = if shard % 2 == 0 { "a" } else { "b" };
            map.set_target(ShardId(shard), Some(TargetRecord::planned(node)));
        }
        // Shard 2 was pinned to b earlier; its pin is gone now.
        map.set_target(ShardId(2), Some(TargetRecord::pinned("b")));
        // Shard 0 (on a) and shard 1 (on b) are pinned to b.
        let pins = [(0, "b"), (1, "b")];
        let pinned = pinned_view(&members, map, &pins);
        let writes = StuckMoves::default().round(&pinned, at(0), &options());
        let find = |shard: u32| writes.iter().find(|w| w.shard == ShardId(shard)).cloned();
        assert_eq!(find(0).and_then(|w| w.target), Some(TargetRecord::pinned("b")));
        assert_eq!(find(1).and_then(|w| w.target), Some(TargetRecord::pinned("b")));
        assert_eq!(find(2).and_then(|w| w.target), Some(TargetRecord::planned("b")));
        // Once written, the pins need no more writes.
        let mut map = pinned.map().clone();
        for write in &writes {
            map.set_target(write.shard, write.target.clone());
        }
        let again =
            StuckMoves::default().round(&pinned_view(&members, map, &pins), at(0), &options());
        assert!(again.iter().all(|w| w.shard != ShardId(0) && w.shard != ShardId(1)), "{again:?}");
    }

    #[test]
    fn a_move_that_does_not_land_is_cancelled_and_backed_off() {
        // Shard 0 moves from a (live, keeps it: its handoff failed) to b; shard 1 stays on a.
        let members = [member("a", false), member("b", false)];
        let mut map = ShardMap::new(2);
        map.set_target(ShardId(0), Some(TargetRecord::planned("b")));
        map.set_owner(ShardId(0), owner("a"));
        map.set_target(ShardId(1), Some(TargetRecord::planned("a")));
        map.set_owner(ShardId(1), owner("a"));
        let mut stuck = StuckMoves::default();
        let options = options();
        assert!(stuck.round(&view(&members, map.clone()), at(0), &options).is_empty());
        assert!(stuck.round(&view(&members, map.clone()), at(9), &options).is_empty());
        let writes = stuck.round(&view(&members, map.clone()), at(10), &options);
        assert_eq!(to(&writes, 0), Some("a"), "the move is cancelled: back to its live owner");
        map.set_target(ShardId(0), Some(TargetRecord::planned("a")));
        // The planner wants to even out again, but not by the same move while backed off.
        for second in [11, 20, 39] {
            let writes = stuck.round(&view(&members, map.clone()), at(second), &options);
            assert_ne!(to(&writes, 0), Some("b"), "at {second} s: {writes:?}");
        }
        let writes = stuck.round(&view(&members, map), at(41), &options);
        assert!(!writes.is_empty(), "after the back-off the spread is evened out again");
    }

    #[test]
    fn a_shard_its_target_never_claims_goes_to_another_node() {
        // Failover: the owner is gone; b is target but never claims.
        let members = [member("a", false), member("b", false), member("c", true)];
        let mut map = ShardMap::new(3);
        map.set_target(ShardId(0), Some(TargetRecord::planned("b")));
        map.set_target(ShardId(1), Some(TargetRecord::planned("a")));
        map.set_owner(ShardId(1), owner("a"));
        map.set_target(ShardId(2), Some(TargetRecord::planned("b")));
        map.set_owner(ShardId(2), owner("b"));
        let mut stuck = StuckMoves::default();
        let options = options();
        assert!(stuck.round(&view(&members, map.clone()), at(0), &options).is_empty());
        let writes = stuck.round(&view(&members, map.clone()), at(10), &options);
        assert_eq!(writes.len(), 1);
        assert_eq!(to(&writes, 0), Some("a"), "c drains: a is the only other eligible node");
        // A target that changes restarts the clock.
        map.set_target(ShardId(0), Some(TargetRecord::planned("a")));
        assert!(
            stuck
                .round(&view(&members, map.clone()), at(19), &options)
                .iter()
                .all(|w| w.shard != ShardId(0))
        );
    }
}
