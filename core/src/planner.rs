//! The placement planner: a pure function from the shard map and the membership to the target
//! changes the leader should write.
//!
//! No clock, no I/O, no randomness, no hash-ordered collections: the same input always gives the
//! same [`Plan`], so the leader can re-plan on every watch event and the simulation can replay it.
//!
//! # Rules
//!
//! * A node is *eligible* when it is live and not draining. Only eligible nodes receive targets;
//!   gateways are never in the live set the caller passes.
//! * **Failover.** Every unpinned shard whose target is absent or not eligible is re-targeted in
//!   this round, however many there are: failover is never rate-limited. This covers shards whose
//!   owner is dead or draining while the target still names that owner's node. A shard whose
//!   owner is dead but whose target already names an eligible node was re-targeted earlier and is
//!   waiting for the claim; moving it again would only add a move, so it is left alone.
//! * **Spread.** With `m` eligible nodes and `N` unpinned shards, the `N mod m` eligible nodes
//!   holding the most targets (ties broken by node id) end with ⌈N/m⌉ and the rest with ⌊N/m⌋.
//!   Shards leave only nodes above their quota, and only as many as the excess, so the total
//!   number of moves is the minimum: failovers + Σ max(0, countᵢ − quotaᵢ).
//! * **In-flight bound.** A shard is *in flight* while a handoff between two live nodes is under
//!   way: its owner and its target are both live and differ. Rebalancing moves (not failovers)
//!   are limited to `max_in_flight` minus the shards already in flight, so once failovers have
//!   landed the map converges within ⌈remaining moves / bound⌉ rounds.
//! * **Pins.** A pinned shard's target is never changed and the shard does not count towards the
//!   spread. A shard pinned to a node that is not live is reported in
//!   [`Plan::pinned_to_absent`] (its calls fail fast) and left alone.
//! * With no eligible node nothing is planned and [`Plan::no_eligible_nodes`] is set.

use std::collections::{BTreeMap, BTreeSet};

use crate::shard::ShardId;
use crate::shardmap::{MemberId, Move, ShardEntry, ShardMap};

/// Everything the planner looks at. Borrowed, so planning a map of 8192 shards copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// Targets and owners of every shard.
    pub map: &'a ShardMap,
    /// Nodes whose lease is live. Gateways must not be included: they are never candidates.
    pub live: &'a BTreeSet<MemberId>,
    /// Members whose draining flag is set (live or not); they receive no new targets.
    pub draining: &'a BTreeSet<MemberId>,
    /// The most shards that may be in flight once this round's rebalancing moves start.
    /// Zero disables rebalancing (failover still happens).
    pub max_in_flight: usize,
}

/// The target changes of one planning round, and what the planner could not fix.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Shards re-targeted because their target was absent, dead or draining (not rate-limited).
    pub failovers: Vec<Move>,
    /// Shards moved to even out the spread (bounded by the in-flight limit).
    pub rebalances: Vec<Move>,
    /// Pinned shards whose pinned node is not live: unowned, their calls fail fast.
    pub pinned_to_absent: Vec<ShardId>,
    /// There was no live, non-draining node, so nothing was planned.
    pub no_eligible_nodes: bool,
}

impl Plan {
    /// Every move of the round: failovers first, then rebalancing moves.
    pub fn moves(&self) -> impl Iterator<Item = &Move> {
        self.failovers.iter().chain(&self.rebalances)
    }

    /// Whether the round changes no target.
    pub fn is_empty(&self) -> bool {
        self.failovers.is_empty() && self.rebalances.is_empty()
    }
}

/// Plans one round of target changes (see the module documentation for the rules).
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let pinned_to_absent = pinned_to_absent(input.map, input.live);
    let eligible: BTreeSet<&MemberId> = input.live.difference(input.draining).collect();
    if eligible.is_empty() {
        return Plan { pinned_to_absent, no_eligible_nodes: true, ..Plan::default() };
    }

    let (homeless, loads) = spread(input.map, &eligible);
    let surplus = surplus(&loads);
    let mut open_slots = open_slots(&loads).into_iter();
    assert_eq!(
        open_slots.len(),
        homeless.len() + surplus.len(),
        "quotas must absorb exactly the homeless and surplus shards"
    );

    let failovers = homeless
        .into_iter()
        .zip(&mut open_slots)
        .map(|((shard, from), to)| Move { shard, from: from.cloned(), to: to.clone() })
        .collect();
    let budget = input.max_in_flight.saturating_sub(in_flight(input.map, input.live));
    let rebalances = surplus
        .into_iter()
        .take(budget)
        .zip(open_slots)
        .map(|((shard, from), to)| Move { shard, from: Some(from.clone()), to: to.clone() })
        .collect();
    Plan { failovers, rebalances, pinned_to_absent, no_eligible_nodes: false }
}

/// The number of shards in flight: owner and target both live and different.
pub fn in_flight(map: &ShardMap, live: &BTreeSet<MemberId>) -> usize {
    map.iter().filter(|entry| is_in_flight(entry, live)).count()
}

/// The shards pinned to `node`, if any: draining `node` is then refused unless the caller is told
/// to unpin them first.
pub fn drain_refusal(map: &ShardMap, node: &MemberId) -> Option<Vec<ShardId>> {
    let pins: Vec<ShardId> = map
        .iter()
        .filter(|entry| entry.is_pinned() && entry.target_node() == Some(node))
        .map(|entry| entry.shard)
        .collect();
    (!pins.is_empty()).then_some(pins)
}

/// An unpinned shard without an eligible target, with the target it had (if any).
type Homeless<'a> = (ShardId, Option<&'a MemberId>);

/// An eligible node's unpinned shards (in shard order) and how many it should end with.
struct NodeLoad<'a> {
    node: &'a MemberId,
    shards: Vec<ShardId>,
    quota: usize,
}

fn is_in_flight(entry: &ShardEntry, live: &BTreeSet<MemberId>) -> bool {
    match (entry.target_node(), entry.owner_node()) {
        (Some(target), Some(owner)) => {
            target != owner && live.contains(target) && live.contains(owner)
        }
        _ => false,
    }
}

fn pinned_to_absent(map: &ShardMap, live: &BTreeSet<MemberId>) -> Vec<ShardId> {
    map.iter()
        .filter(|entry| entry.is_pinned())
        .filter(|entry| entry.target_node().is_some_and(|node| !live.contains(node)))
        .map(|entry| entry.shard)
        .collect()
}

/// Splits the unpinned shards into homeless ones and per-node loads, the loads ranked.
fn spread<'a>(
    map: &'a ShardMap,
    eligible: &BTreeSet<&'a MemberId>,
) -> (Vec<Homeless<'a>>, Vec<NodeLoad<'a>>) {
    let mut homeless = Vec::new();
    let mut by_node: BTreeMap<&MemberId, Vec<ShardId>> =
        eligible.iter().map(|node| (*node, Vec::new())).collect();
    for entry in map.iter().filter(|entry| !entry.is_pinned()) {
        match entry.target_node().and_then(|node| by_node.get_mut(node)) {
            Some(shards) => shards.push(entry.shard),
            None => homeless.push((entry.shard, entry.target_node())),
        }
    }
    let unpinned = homeless.len() + by_node.values().map(Vec::len).sum::<usize>();
    (homeless, ranked_with_quotas(by_node, unpinned))
}

/// Ranks nodes by descending count, ties by node id, and gives the first `N mod m` the
/// larger quota: the nodes holding the most keep the most, which minimises moves.
fn ranked_with_quotas<'a>(
    by_node: BTreeMap<&'a MemberId, Vec<ShardId>>,
    unpinned: usize,
) -> Vec<NodeLoad<'a>> {
    let (floor, larger_quotas) = (unpinned / by_node.len(), unpinned % by_node.len());
    let mut loads: Vec<NodeLoad<'a>> =
        by_node.into_iter().map(|(node, shards)| NodeLoad { node, shards, quota: floor }).collect();
    loads.sort_by(|a, b| b.shards.len().cmp(&a.shards.len()).then_with(|| a.node.cmp(b.node)));
    for load in loads.iter_mut().take(larger_quotas) {
        load.quota += 1;
    }
    loads
}

/// One entry per missing shard below quota, highest-ranked nodes first.
///
/// Filling from the top of the ranking and draining from the bottom (see [`surplus`]) never lets
/// a node below the `N mod m` cut overtake one above it, so every round computes the same quotas
/// and a partly applied plan is continued, never undone.
fn open_slots<'a>(loads: &[NodeLoad<'a>]) -> Vec<&'a MemberId> {
    loads
        .iter()
        .flat_map(|load| {
            let missing = load.quota.saturating_sub(load.shards.len());
            std::iter::repeat_n(load.node, missing)
        })
        .collect()
}

/// The shards above quota, lowest-ranked nodes first, each node giving its highest shards.
fn surplus<'a>(loads: &[NodeLoad<'a>]) -> Vec<(ShardId, &'a MemberId)> {
    loads
        .iter()
        .rev()
        .flat_map(|load| {
            let excess = load.shards.get(load.quota..).unwrap_or_default();
            excess.iter().map(move |shard| (*shard, load.node))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;

    use proptest::prelude::*;

    use super::*;
    use crate::epoch::Epoch;
    use crate::shardmap::{Incarnation, OwnerRecord, TargetRecord};

    fn ids(names: &[&str]) -> BTreeSet<MemberId> {
        names.iter().map(|name| MemberId::from(*name)).collect()
    }

    fn owner(node: &MemberId) -> OwnerRecord {
        OwnerRecord {
            node: node.clone(),
            incarnation: Incarnation(1),
            epoch: Epoch::new(1, 1),
            released: false,
        }
    }

    /// A map whose shard `i` is targeted at and owned by `nodes[i]`.
    fn settled_map(nodes: &[&str]) -> ShardMap {
        let count = u32::try_from(nodes.len()).expect("small test map");
        let mut map = ShardMap::new(count);
        for (shard, node) in (0..count).zip(nodes) {
            map.set_target(ShardId(shard), Some(TargetRecord::planned(*node)));
            map.set_owner(ShardId(shard), Some(owner(&MemberId::from(*node))));
        }
        map
    }

    fn plan_for(
        map: &ShardMap,
        live: &BTreeSet<MemberId>,
        draining: &BTreeSet<MemberId>,
        max_in_flight: usize,
    ) -> Plan {
        plan(&PlanInput { map, live, draining, max_in_flight })
    }

    /// What a round does once it has run: every moved shard is targeted at and owned by its new
    /// node, and every handoff that was in flight has completed.
    fn apply(map: &mut ShardMap, plan: &Plan, live: &BTreeSet<MemberId>) {
        for mv in plan.moves() {
            map.set_target(mv.shard, Some(TargetRecord::planned(mv.to.clone())));
            map.set_owner(mv.shard, Some(owner(&mv.to)));
        }
        let in_flight: Vec<(ShardId, MemberId)> = map
            .iter()
            .filter(|entry| is_in_flight(entry, live))
            .map(|entry| (entry.shard, entry.target_node().expect("in flight").clone()))
            .collect();
        for (shard, node) in in_flight {
            map.set_owner(shard, Some(owner(&node)));
        }
    }

    fn unpinned_counts(map: &ShardMap) -> BTreeMap<MemberId, usize> {
        let mut counts = BTreeMap::new();
        for entry in map.iter().filter(|entry| !entry.is_pinned()) {
            if let Some(node) = entry.target_node() {
                *counts.entry(node.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    #[test]
    fn fresh_map_is_placed_in_one_round_whatever_the_bound() {
        let map = ShardMap::new(10);
        let plan = plan_for(&map, &ids(&["a", "b", "c"]), &ids(&[]), 1);

        assert_eq!(plan.failovers.len(), 10);
        assert!(plan.rebalances.is_empty());
        assert!(plan.failovers.iter().all(|mv| mv.from.is_none()));
        let mut counts = BTreeMap::new();
        for mv in plan.moves() {
            *counts.entry(mv.to.as_str()).or_insert(0) += 1;
        }
        // All start at zero: the tie goes to the smallest id.
        assert_eq!(counts, BTreeMap::from([("a", 4), ("b", 3), ("c", 3)]));
    }

    #[test]
    fn dead_nodes_shards_fail_over_at_once() {
        let map = settled_map(&["a", "b", "c", "a", "b", "c", "a", "b", "c"]);
        let plan = plan_for(&map, &ids(&["a", "b"]), &ids(&[]), 1);

        let moved: Vec<(u32, &str)> =
            plan.failovers.iter().map(|mv| (mv.shard.0, mv.to.as_str())).collect();
        // N = 9 over 2 nodes: the tie between a and b (3 each) gives a the 5.
        assert_eq!(moved, vec![(2, "a"), (5, "a"), (8, "b")]);
        assert!(plan.failovers.iter().all(|mv| mv.from == Some("c".into())));
        assert!(plan.rebalances.is_empty());
    }

    #[test]
    fn draining_node_is_emptied_and_receives_nothing() {
        let map = settled_map(&["a", "b", "a", "b"]);
        let plan = plan_for(&map, &ids(&["a", "b", "c"]), &ids(&["b"]), 1);

        let moved: Vec<(u32, &str)> =
            plan.failovers.iter().map(|mv| (mv.shard.0, mv.to.as_str())).collect();
        assert_eq!(moved, vec![(1, "c"), (3, "c")]);
        assert!(plan.rebalances.is_empty(), "a already holds its quota of 2");
    }

    #[test]
    fn joining_node_is_filled_within_the_bound() {
        let live = ids(&["a", "b", "c"]);
        let mut map = settled_map(&["a", "b", "a", "b", "a", "b", "a", "b"]);

        let first = plan_for(&map, &live, &ids(&[]), 1);
        // Quotas 3, 3, 2: one shard each from a and b, one per round, b (ranked lower) first.
        assert_eq!(
            first.rebalances,
            vec![Move { shard: ShardId(7), from: Some("b".into()), to: "c".into() }]
        );
        apply(&mut map, &first, &live);
        let second = plan_for(&map, &live, &ids(&[]), 1);
        assert_eq!(
            second.rebalances,
            vec![Move { shard: ShardId(6), from: Some("a".into()), to: "c".into() }]
        );
        apply(&mut map, &second, &live);
        assert!(plan_for(&map, &live, &ids(&[]), 1).is_empty());
    }

    #[test]
    fn shards_in_flight_use_up_the_bound() {
        let live = ids(&["a", "b", "c"]);
        let mut map = settled_map(&["a", "a", "a", "a", "b", "b"]);
        // Shard 3 is being handed from a to c.
        map.set_target(ShardId(3), Some(TargetRecord::planned("c")));
        assert_eq!(in_flight(&map, &live), 1);

        assert!(plan_for(&map, &live, &ids(&[]), 1).is_empty());
        assert_eq!(plan_for(&map, &live, &ids(&[]), 2).rebalances.len(), 1);
    }

    #[test]
    fn pins_are_kept_and_pins_to_absent_nodes_reported() {
        let live = ids(&["a", "b"]);
        let mut map = settled_map(&["a", "a", "a", "a"]);
        map.set_target(ShardId(0), Some(TargetRecord::pinned("a")));
        map.set_target(ShardId(1), Some(TargetRecord::pinned("gone")));
        let plan = plan_for(&map, &live, &ids(&[]), 10);

        assert_eq!(plan.pinned_to_absent, vec![ShardId(1)]);
        assert!(plan.moves().all(|mv| mv.shard != ShardId(0) && mv.shard != ShardId(1)));
        // Two unpinned shards, both on a: one moves to b.
        assert_eq!(plan.rebalances.len(), 1);
        assert_eq!(plan.rebalances[0].to, "b".into());
    }

    #[test]
    fn no_eligible_node_plans_nothing() {
        let map = settled_map(&["a", "b"]);
        let plan = plan_for(&map, &ids(&["a"]), &ids(&["a"]), 10);
        assert!(plan.is_empty());
        assert!(plan.no_eligible_nodes);
    }

    #[test]
    fn converged_map_is_left_alone() {
        let map = settled_map(&["a", "b", "c", "a", "b"]);
        let plan = plan_for(&map, &ids(&["a", "b", "c"]), &ids(&[]), 5);
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn drain_is_refused_while_the_node_holds_pins() {
        let mut map = settled_map(&["a", "a", "b"]);
        assert_eq!(drain_refusal(&map, &"a".into()), None);
        map.set_target(ShardId(1), Some(TargetRecord::pinned("a")));
        map.set_target(ShardId(2), Some(TargetRecord::pinned("b")));
        assert_eq!(drain_refusal(&map, &"a".into()), Some(vec![ShardId(1)]));
        assert_eq!(drain_refusal(&map, &"c".into()), None);
    }

    // ---- properties -------------------------------------------------------------------------

    const NODES: [&str; 10] = ["n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9"];

    #[derive(Debug, Clone)]
    struct Case {
        map: ShardMap,
        live: BTreeSet<MemberId>,
        draining: BTreeSet<MemberId>,
        bound: usize,
    }

    impl Case {
        fn plan(&self, map: &ShardMap) -> Plan {
            plan_for(map, &self.live, &self.draining, self.bound)
        }
    }

    /// Node indices skewed towards the first three, so some nodes hold far more than others.
    fn node_index() -> impl Strategy<Value = usize> {
        prop_oneof![3 => 0..3usize, 1 => 0..NODES.len()]
    }

    /// Random maps: dead and draining targets and owners, some pins, handoffs in flight; half
    /// of them settled (every owner is its target), where nothing is in flight at the start.
    fn arb_case() -> impl Strategy<Value = Case> {
        let entry = (
            prop::option::weighted(0.9, (node_index(), prop::bool::weighted(0.05))),
            prop::option::weighted(0.8, node_index()),
        );
        (
            prop::collection::vec(entry, 1..300),
            prop::sample::subsequence(NODES.to_vec(), 0..=8),
            prop::sample::subsequence(NODES.to_vec(), 0..=3),
            1usize..50,
            any::<bool>(),
        )
            .prop_map(|(entries, live, draining, bound, settled)| {
                let count = u32::try_from(entries.len()).expect("below 300");
                let mut map = ShardMap::new(count);
                for (shard, (target, owner_node)) in (0..count).zip(entries) {
                    let target = target
                        .map(|(node, pinned)| TargetRecord { node: NODES[node].into(), pinned });
                    let owner_node = match (&target, settled) {
                        (Some(target), true) => Some(target.node.clone()),
                        _ => owner_node.map(|node| MemberId::from(NODES[node])),
                    };
                    map.set_target(ShardId(shard), target);
                    map.set_owner(ShardId(shard), owner_node.as_ref().map(owner));
                }
                Case { map, live: ids(&live), draining: ids(&draining), bound }
            })
    }

    /// What the rules predict, computed without the planner's code.
    struct Oracle {
        eligible: BTreeSet<MemberId>,
        failovers: BTreeSet<ShardId>,
        quotas: BTreeMap<MemberId, usize>,
        minimum_moves: usize,
        in_flight: usize,
    }

    fn oracle(case: &Case) -> Oracle {
        let eligible: BTreeSet<MemberId> = case.live.difference(&case.draining).cloned().collect();
        let unpinned: Vec<&ShardEntry> = case.map.iter().filter(|e| !e.is_pinned()).collect();
        let failovers: BTreeSet<ShardId> = unpinned
            .iter()
            .filter(|e| e.target_node().is_none_or(|node| !eligible.contains(node)))
            .map(|e| e.shard)
            .collect();
        let counts = unpinned_counts(&case.map);
        let count_of = |node: &MemberId| counts.get(node).copied().unwrap_or(0);

        let mut ranked: Vec<&MemberId> = eligible.iter().collect();
        ranked.sort_by_key(|node| (Reverse(count_of(node)), (*node).clone()));
        let mut quotas = BTreeMap::new();
        for (rank, node) in ranked.into_iter().enumerate() {
            let (floor, larger) =
                (unpinned.len() / eligible.len(), unpinned.len() % eligible.len());
            quotas.insert(node.clone(), floor + usize::from(rank < larger));
        }
        let excess: usize =
            quotas.iter().map(|(node, quota)| count_of(node).saturating_sub(*quota)).sum();

        let in_flight = case
            .map
            .iter()
            .filter(|e| match (e.target_node(), e.owner_node()) {
                (Some(t), Some(o)) => t != o && case.live.contains(t) && case.live.contains(o),
                _ => false,
            })
            .count();
        let minimum_moves = if eligible.is_empty() { 0 } else { failovers.len() + excess };
        Oracle { eligible, failovers, quotas, minimum_moves, in_flight }
    }

    /// The rounds of planning until a plan is empty with nothing in flight: each round's
    /// plan with the in-flight count it started from, and the final map.
    fn run_rounds(case: &Case, max_rounds: usize) -> (Vec<(usize, Plan)>, ShardMap) {
        let mut map = case.map.clone();
        let mut rounds = Vec::new();
        loop {
            let plan = case.plan(&map);
            let in_flight = in_flight(&map, &case.live);
            if plan.is_empty() && in_flight == 0 {
                return (rounds, map);
            }
            assert!(rounds.len() < max_rounds, "no convergence within {max_rounds} rounds");
            apply(&mut map, &plan, &case.live);
            rounds.push((in_flight, plan));
        }
    }

    proptest! {
        #[test]
        fn failover_is_complete_in_the_first_round(case in arb_case()) {
            let expected = oracle(&case);
            let plan = case.plan(&case.map);
            prop_assert!(plan.moves().all(|mv| expected.eligible.contains(&mv.to)));
            if expected.eligible.is_empty() {
                prop_assert!(plan.is_empty() && plan.no_eligible_nodes);
                return Ok(());
            }
            let failed_over: BTreeSet<ShardId> = plan.failovers.iter().map(|mv| mv.shard).collect();
            prop_assert_eq!(failed_over.len(), plan.failovers.len(), "a shard moved twice");
            prop_assert_eq!(failed_over, expected.failovers);

            let mut map = case.map.clone();
            apply(&mut map, &plan, &case.live);
            for entry in map.iter().filter(|e| !e.is_pinned()) {
                let target = entry.target_node().expect("every unpinned shard has a target");
                prop_assert!(expected.eligible.contains(target), "{} left on {}", entry.shard, target);
            }
        }

        #[test]
        fn rounds_converge_to_the_quotas_with_minimum_moves(case in arb_case()) {
            let expected = oracle(&case);
            // Round 1 may be starved by handoffs already in flight; they complete after it, so
            // the extra budget they take is at most `in_flight` moves. With nothing in flight at
            // the start (all settled cases) this is exactly ⌈minimum / bound⌉.
            let round_limit = (expected.minimum_moves + expected.in_flight).div_ceil(case.bound);
            let (rounds, converged) = run_rounds(&case, round_limit + 1);

            prop_assert!(rounds.len() <= round_limit, "{} rounds > {round_limit}", rounds.len());
            let total: usize = rounds.iter().map(|(_, plan)| plan.moves().count()).sum();
            prop_assert_eq!(total, expected.minimum_moves);
            for (in_flight, plan) in &rounds {
                prop_assert!(plan.rebalances.len() <= case.bound.saturating_sub(*in_flight));
            }
            if !expected.eligible.is_empty() {
                let counts = unpinned_counts(&converged);
                for (node, quota) in &expected.quotas {
                    prop_assert_eq!(counts.get(node).copied().unwrap_or(0), *quota, "on {}", node);
                }
            }
            prop_assert!(case.plan(&converged).is_empty());
        }

        #[test]
        fn pins_and_draining_nodes_are_respected(case in arb_case()) {
            let expected = oracle(&case);
            let (rounds, converged) = run_rounds(&case, 400);
            for (_, plan) in &rounds {
                for mv in plan.moves() {
                    prop_assert!(!case.map.entry(mv.shard).is_pinned(), "pinned {} moved", mv.shard);
                    prop_assert!(expected.eligible.contains(&mv.to), "{} to ineligible node", mv);
                }
            }
            for (before, after) in case.map.iter().zip(&converged) {
                if before.is_pinned() {
                    prop_assert_eq!(&before.target, &after.target);
                }
            }
            let absent: Vec<ShardId> = case
                .map
                .iter()
                .filter(|e| e.is_pinned() && !case.live.contains(e.target_node().expect("pinned")))
                .map(|e| e.shard)
                .collect();
            prop_assert_eq!(case.plan(&case.map).pinned_to_absent, absent);
        }

        #[test]
        fn planning_is_deterministic(case in arb_case()) {
            let twin = case.clone();
            prop_assert_eq!(case.plan(&case.map), twin.plan(&twin.map));
            let (first, _) = run_rounds(&case, 400);
            let (second, _) = run_rounds(&twin, 400);
            prop_assert_eq!(first, second);
        }
    }
}
