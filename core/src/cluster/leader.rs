//! The leader: campaigns for leadership and, while it leads, turns every new view into target
//! writes fenced by its term (failovers and rebalancing from the pure planner).

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ClusterOptions;
use crate::clock::SharedClock;
use crate::coordinator::{ClusterView, CoordError, Coordinator, MemberRole, TargetWrite, Term};
use crate::planner::{PlanInput, plan};
use crate::shardmap::{MemberId, TargetRecord};

/// The target writes that carry out one planning round over `view`.
pub(crate) fn plan_writes(view: &ClusterView, max_in_flight: usize) -> Vec<TargetWrite> {
    let nodes = view.members().values().filter(|m| m.role == MemberRole::Node);
    let live: BTreeSet<MemberId> = nodes.clone().map(|m| m.id.clone()).collect();
    let draining: BTreeSet<MemberId> =
        nodes.filter(|m| m.flags.draining).map(|m| m.id.clone()).collect();
    let input = PlanInput { map: view.map(), live: &live, draining: &draining, max_in_flight };
    let plan = plan(&input);
    plan.moves()
        .map(|m| TargetWrite { shard: m.shard, target: Some(TargetRecord::planned(m.to.clone())) })
        .collect()
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
    let mut planned_at = None;
    let mut next_plan = clock.now();
    loop {
        let periodic = clock.now() >= next_plan;
        let view = views.borrow_and_update().clone();
        if let Some(view) = view
            && (periodic || planned_at != Some(view.revision()))
        {
            planned_at = Some(view.revision());
            next_plan = clock.now() + options.plan_interval;
            let writes = plan_writes(&view, options.max_in_flight);
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

    fn member(id: &str, draining: bool) -> MemberRecord {
        MemberRecord {
            id: id.into(),
            incarnation: Incarnation(1),
            addresses: vec![],
            role: MemberRole::Node,
            version: String::new(),
            start_time_unix_ms: 0,
            flags: MemberFlags { draining, ready: true },
        }
    }

    fn view(members: &[MemberRecord], map: ShardMap) -> ClusterView {
        ClusterView::new(ClusterSnapshot {
            revision: Revision(1),
            config: ClusterConfig { shard_count: map.shard_count(), generation: 1 },
            members: members.iter().map(|m| (m.id.clone(), m.clone())).collect(),
            leader: None,
            map,
            pins: Default::default(),
        })
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
}
