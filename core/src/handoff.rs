//! What a node does about each shard, as a sans-IO state machine: events in (a new view of the
//! shard map and live members, the results of claims, fence raises, handoffs and releases,
//! lease loss), decisions out (claim, raise the store fence, serve, hand off, release, stop).
//!
//! The cluster runtime drives it with real coordinator and store calls; tests drive it with
//! plain values. It encodes the architecture's rules:
//! - a node serves a shard only after it claimed it (epoch + 1, by CAS in the coordinator) and
//!   raised the store fence to that epoch (invariants 3 and 5);
//! - it claims only when it is the target and the previous owner released or is not live;
//!   while the previous owner is live and has not released, it *holds* the shard's calls;
//! - an owner that is no longer the target hands off (drain, save, answer) and then releases;
//!   a failed handoff resumes serving at the same epoch and reports the failed move;
//! - a node whose lease is lost stops serving everything at once.

use std::collections::BTreeMap;

use crate::epoch::Epoch;
use crate::shard::ShardId;
use crate::shardmap::{Incarnation, MemberId, OwnerRecord, ShardEntry, ShardMap};

/// This node: its id and the incarnation of this process lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    /// Node id.
    pub node: MemberId,
    /// Incarnation (a new process must claim again even shards that name its node id).
    pub incarnation: Incarnation,
}

/// Where this node stands with one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShardRole {
    /// Not ours and not coming to us.
    #[default]
    Idle,
    /// We are the target; the previous owner is live and has not released: hold calls.
    Holding,
    /// A claim is in flight.
    Claiming,
    /// Claimed at this epoch; raising the store fence before serving.
    Fencing(Epoch),
    /// Serving at this epoch.
    Serving(Epoch),
    /// No longer the target: draining, saving and answering before release.
    HandingOff(Epoch),
    /// Handoff done; the release is in flight.
    Releasing(Epoch),
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Claim the shard by CAS, expecting this owner record (unchanged since read).
    Claim {
        /// The shard.
        shard: ShardId,
        /// The owner record the claim compares against.
        expected_owner: Option<OwnerRecord>,
    },
    /// Raise the store fence for the shard to `epoch`, then report with
    /// [`ShardDecider::on_fence_raised`].
    RaiseFence {
        /// The shard.
        shard: ShardId,
        /// The claimed epoch.
        epoch: Epoch,
    },
    /// Start admitting calls for the shard at `epoch` (release held calls).
    Serve {
        /// The shard.
        shard: ShardId,
        /// The epoch to serve at.
        epoch: Epoch,
    },
    /// Stop admitting new turns; drain, deactivate (saving), answer; then report with
    /// [`ShardDecider::on_handoff_finished`].
    StartHandoff {
        /// The shard.
        shard: ShardId,
        /// The epoch being handed off.
        epoch: Epoch,
    },
    /// Release ownership in the coordinator (only the owning incarnation may).
    Release {
        /// The shard.
        shard: ShardId,
        /// The epoch released.
        epoch: Epoch,
    },
    /// Ownership was lost without a handoff (lease lost, or another owner claimed): discard the
    /// shard's activations without saving (a fenced write would be rejected anyway).
    Discard {
        /// The shard.
        shard: ShardId,
    },
    /// A handoff failed (a save failed); the shard is served again at the same epoch and the
    /// leader should back the move off.
    ReportMoveFailed {
        /// The shard.
        shard: ShardId,
    },
}

/// The per-shard decision machine of one node.
#[derive(Debug, Clone)]
pub struct ShardDecider {
    me: Me,
    roles: BTreeMap<ShardId, ShardRole>,
}

impl ShardDecider {
    /// A decider for this node; every shard starts `Idle`.
    pub fn new(me: Me) -> Self {
        ShardDecider { me, roles: BTreeMap::new() }
    }

    /// The role of `shard`.
    pub fn role(&self, shard: ShardId) -> ShardRole {
        self.roles.get(&shard).copied().unwrap_or_default()
    }

    /// The epoch this node serves `shard` at, if it serves it.
    pub fn serving(&self, shard: ShardId) -> Option<Epoch> {
        match self.role(shard) {
            ShardRole::Serving(epoch) => Some(epoch),
            _ => None,
        }
    }

    fn set(&mut self, shard: ShardId, role: ShardRole) {
        if role == ShardRole::Idle {
            self.roles.remove(&shard);
        } else {
            self.roles.insert(shard, role);
        }
    }

    fn owned_by_me(&self, owner: Option<&OwnerRecord>) -> bool {
        owner.is_some_and(|o| {
            o.node == self.me.node && o.incarnation == self.me.incarnation && !o.released
        })
    }

    /// Re-evaluates every shard against a new view: the shard map and the live members with
    /// their incarnations. Idempotent: a view that changes nothing decides nothing. Views must
    /// be current (the runtime feeds only views at or after the revision of this node's own
    /// last claim), since a view naming another owner ends serving.
    pub fn on_view(
        &mut self,
        map: &ShardMap,
        live: &BTreeMap<MemberId, Incarnation>,
    ) -> Vec<Decision> {
        let mut decisions = Vec::new();
        for entry in map.iter() {
            self.evaluate(entry, live, &mut decisions);
        }
        decisions
    }

    fn evaluate(
        &mut self,
        entry: &ShardEntry,
        live: &BTreeMap<MemberId, Incarnation>,
        decisions: &mut Vec<Decision>,
    ) {
        let shard = entry.shard;
        let owner = entry.owner.as_ref();
        let mine = self.owned_by_me(owner);
        let target_is_me = entry.target_node() == Some(&self.me.node);
        match self.role(shard) {
            ShardRole::Serving(epoch) => {
                if !mine || owner.map(|o| o.epoch) != Some(epoch) {
                    // Someone else claimed: our lease must have lapsed. Never serve on.
                    self.set(shard, ShardRole::Idle);
                    decisions.push(Decision::Discard { shard });
                } else if !target_is_me {
                    self.set(shard, ShardRole::HandingOff(epoch));
                    decisions.push(Decision::StartHandoff { shard, epoch });
                }
            }
            ShardRole::Fencing(epoch) => {
                if !mine || owner.map(|o| o.epoch) != Some(epoch) {
                    self.set(shard, ShardRole::Idle);
                }
            }
            // Results of these are reported by their own events.
            ShardRole::Claiming | ShardRole::HandingOff(_) | ShardRole::Releasing(_) => {}
            ShardRole::Idle | ShardRole::Holding => {
                if mine {
                    // Ours at this incarnation (e.g. a claim whose answer was lost): fence,
                    // then serve.
                    let epoch = owner.map(|o| o.epoch).unwrap_or(Epoch::ZERO);
                    self.set(shard, ShardRole::Fencing(epoch));
                    decisions.push(Decision::RaiseFence { shard, epoch });
                } else if !target_is_me {
                    self.set(shard, ShardRole::Idle);
                } else if previous_owner_gone(owner, live) {
                    self.set(shard, ShardRole::Claiming);
                    decisions.push(Decision::Claim { shard, expected_owner: owner.cloned() });
                } else {
                    self.set(shard, ShardRole::Holding);
                }
            }
        }
    }

    /// The claim's answer: the new epoch, or `None` if the CAS failed (the next view decides
    /// again).
    pub fn on_claim_result(&mut self, shard: ShardId, claimed: Option<Epoch>) -> Vec<Decision> {
        if self.role(shard) != ShardRole::Claiming {
            return Vec::new();
        }
        match claimed {
            Some(epoch) => {
                self.set(shard, ShardRole::Fencing(epoch));
                vec![Decision::RaiseFence { shard, epoch }]
            }
            None => {
                self.set(shard, ShardRole::Idle);
                Vec::new()
            }
        }
    }

    /// The store fence after raising it to `epoch` (the store returns the current fence: a
    /// higher one means a newer owner exists and this node must not serve).
    pub fn on_fence_raised(&mut self, shard: ShardId, epoch: Epoch, fence: Epoch) -> Vec<Decision> {
        if self.role(shard) != ShardRole::Fencing(epoch) {
            return Vec::new();
        }
        if fence == epoch {
            self.set(shard, ShardRole::Serving(epoch));
            vec![Decision::Serve { shard, epoch }]
        } else {
            self.set(shard, ShardRole::Idle);
            vec![Decision::Discard { shard }]
        }
    }

    /// The handoff ended: saved and answered (`true`), or a save failed (`false`: serve again at
    /// the same epoch and report the failed move).
    pub fn on_handoff_finished(&mut self, shard: ShardId, saved: bool) -> Vec<Decision> {
        let ShardRole::HandingOff(epoch) = self.role(shard) else { return Vec::new() };
        if saved {
            self.set(shard, ShardRole::Releasing(epoch));
            vec![Decision::Release { shard, epoch }]
        } else {
            self.set(shard, ShardRole::Serving(epoch));
            vec![Decision::Serve { shard, epoch }, Decision::ReportMoveFailed { shard }]
        }
    }

    /// The release's answer (either way the shard is no longer ours to serve).
    pub fn on_released(&mut self, shard: ShardId) {
        if matches!(self.role(shard), ShardRole::Releasing(_)) {
            self.set(shard, ShardRole::Idle);
        }
    }

    /// The lease is lost: every shard this node serves or is acquiring is dropped at once.
    pub fn on_lease_lost(&mut self) -> Vec<Decision> {
        let decisions = self
            .roles
            .iter()
            .filter(|(_, role)| {
                matches!(
                    role,
                    ShardRole::Serving(_) | ShardRole::HandingOff(_) | ShardRole::Releasing(_)
                )
            })
            .map(|(shard, _)| Decision::Discard { shard: *shard })
            .collect();
        self.roles.clear();
        decisions
    }
}

/// Whether the previous owner no longer holds the shard: none, released, or its incarnation is
/// not live (a new incarnation of the same node id counts as not live).
fn previous_owner_gone(
    owner: Option<&OwnerRecord>,
    live: &BTreeMap<MemberId, Incarnation>,
) -> bool {
    match owner {
        None => true,
        Some(o) => o.released || live.get(&o.node) != Some(&o.incarnation),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shardmap::TargetRecord;

    fn me(node: &str, incarnation: u64) -> Me {
        Me { node: node.into(), incarnation: Incarnation(incarnation) }
    }

    fn owner(node: &str, incarnation: u64, epoch: u64, released: bool) -> OwnerRecord {
        OwnerRecord {
            node: node.into(),
            incarnation: Incarnation(incarnation),
            epoch: Epoch::new(1, epoch),
            released,
        }
    }

    fn live(members: &[(&str, u64)]) -> BTreeMap<MemberId, Incarnation> {
        members.iter().map(|(n, i)| (MemberId::from(*n), Incarnation(*i))).collect()
    }

    fn map(target: &str, owner: Option<OwnerRecord>) -> ShardMap {
        let mut map = ShardMap::new(1);
        map.set_target(ShardId(0), Some(TargetRecord::planned(target)));
        map.set_owner(ShardId(0), owner);
        map
    }

    const S: ShardId = ShardId(0);

    #[test]
    fn a_target_claims_fences_then_serves() {
        let mut d = ShardDecider::new(me("b", 7));
        let view = map("b", None);
        let members = live(&[("b", 7)]);
        assert_eq!(
            d.on_view(&view, &members),
            [Decision::Claim { shard: S, expected_owner: None }]
        );
        assert_eq!(d.on_view(&view, &members), [], "a claim in flight is not repeated");
        assert_eq!(
            d.on_claim_result(S, Some(Epoch::new(1, 1))),
            [Decision::RaiseFence { shard: S, epoch: Epoch::new(1, 1) }]
        );
        assert_eq!(d.serving(S), None, "no serving before the fence is raised");
        assert_eq!(
            d.on_fence_raised(S, Epoch::new(1, 1), Epoch::new(1, 1)),
            [Decision::Serve { shard: S, epoch: Epoch::new(1, 1) }]
        );
        assert_eq!(d.serving(S), Some(Epoch::new(1, 1)));
    }

    #[test]
    fn the_target_holds_while_the_previous_owner_is_live_and_has_not_released() {
        let mut d = ShardDecider::new(me("b", 7));
        let members = live(&[("a", 3), ("b", 7)]);
        assert_eq!(d.on_view(&map("b", Some(owner("a", 3, 4, false))), &members), []);
        assert_eq!(d.role(S), ShardRole::Holding);
        // Released: claim against exactly the record read.
        let released = owner("a", 3, 4, true);
        assert_eq!(
            d.on_view(&map("b", Some(released.clone())), &members),
            [Decision::Claim { shard: S, expected_owner: Some(released) }]
        );
    }

    #[test]
    fn a_dead_previous_owner_or_an_older_incarnation_of_this_node_does_not_block_a_claim() {
        let mut d = ShardDecider::new(me("b", 8));
        let dead = owner("a", 3, 4, false);
        let decisions = d.on_view(&map("b", Some(dead.clone())), &live(&[("b", 8)]));
        assert_eq!(decisions, [Decision::Claim { shard: S, expected_owner: Some(dead) }]);

        let mut d = ShardDecider::new(me("b", 8));
        let my_old_self = owner("b", 7, 4, false);
        let decisions = d.on_view(&map("b", Some(my_old_self.clone())), &live(&[("b", 8)]));
        assert_eq!(decisions, [Decision::Claim { shard: S, expected_owner: Some(my_old_self) }]);
    }

    #[test]
    fn an_owner_that_is_no_longer_target_hands_off_then_releases() {
        let mut d = ShardDecider::new(me("a", 3));
        let members = live(&[("a", 3), ("b", 7)]);
        d.on_view(&map("a", Some(owner("a", 3, 4, false))), &members);
        d.on_fence_raised(S, Epoch::new(1, 4), Epoch::new(1, 4));
        assert_eq!(d.serving(S), Some(Epoch::new(1, 4)));
        let moved = map("b", Some(owner("a", 3, 4, false)));
        assert_eq!(
            d.on_view(&moved, &members),
            [Decision::StartHandoff { shard: S, epoch: Epoch::new(1, 4) }]
        );
        assert_eq!(d.serving(S), None, "no new turns once the handoff starts");
        assert_eq!(d.on_view(&moved, &members), []);
        assert_eq!(
            d.on_handoff_finished(S, true),
            [Decision::Release { shard: S, epoch: Epoch::new(1, 4) }]
        );
        d.on_released(S);
        assert_eq!(d.role(S), ShardRole::Idle);
    }

    #[test]
    fn a_failed_handoff_serves_again_at_the_same_epoch_and_reports() {
        let mut d = ShardDecider::new(me("a", 3));
        let members = live(&[("a", 3), ("b", 7)]);
        d.on_view(&map("a", Some(owner("a", 3, 4, false))), &members);
        d.on_fence_raised(S, Epoch::new(1, 4), Epoch::new(1, 4));
        d.on_view(&map("b", Some(owner("a", 3, 4, false))), &members);
        assert_eq!(
            d.on_handoff_finished(S, false),
            [
                Decision::Serve { shard: S, epoch: Epoch::new(1, 4) },
                Decision::ReportMoveFailed { shard: S }
            ]
        );
        assert_eq!(d.serving(S), Some(Epoch::new(1, 4)));
    }

    #[test]
    fn a_newer_fence_or_a_foreign_claim_means_never_serve() {
        let mut d = ShardDecider::new(me("b", 7));
        let members = live(&[("b", 7)]);
        d.on_view(&map("b", None), &members);
        d.on_claim_result(S, Some(Epoch::new(1, 1)));
        assert_eq!(
            d.on_fence_raised(S, Epoch::new(1, 1), Epoch::new(1, 2)),
            [Decision::Discard { shard: S }]
        );
        assert_eq!(d.serving(S), None);

        let mut d = ShardDecider::new(me("b", 7));
        d.on_view(&map("b", Some(owner("b", 7, 5, false))), &members);
        d.on_fence_raised(S, Epoch::new(1, 5), Epoch::new(1, 5));
        let stolen = map("b", Some(owner("c", 1, 6, false)));
        assert_eq!(d.on_view(&stolen, &members), [Decision::Discard { shard: S }]);
    }

    #[test]
    fn losing_the_lease_drops_everything_at_once() {
        let mut d = ShardDecider::new(me("b", 7));
        let members = live(&[("b", 7)]);
        d.on_view(&map("b", Some(owner("b", 7, 5, false))), &members);
        d.on_fence_raised(S, Epoch::new(1, 5), Epoch::new(1, 5));
        assert_eq!(d.on_lease_lost(), [Decision::Discard { shard: S }]);
        assert_eq!(d.serving(S), None);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Event {
            View { target_me: bool, owner: Option<(bool, u64, bool)>, other_live: bool },
            Claim(Option<u64>),
            Fence { epoch: u64, fence: u64 },
            Handoff(bool),
            Released,
            LeaseLost,
        }

        fn event() -> impl Strategy<Value = Event> {
            prop_oneof![
                (
                    any::<bool>(),
                    proptest::option::of((any::<bool>(), 1u64..6, any::<bool>())),
                    any::<bool>()
                )
                    .prop_map(|(target_me, owner, other_live)| Event::View {
                        target_me,
                        owner,
                        other_live
                    }),
                proptest::option::of(1u64..6).prop_map(Event::Claim),
                (1u64..6, 1u64..6).prop_map(|(epoch, fence)| Event::Fence { epoch, fence }),
                any::<bool>().prop_map(Event::Handoff),
                Just(Event::Released),
                Just(Event::LeaseLost),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]

            /// Whatever happens, the node serves a shard only at an epoch whose store fence it
            /// raised to exactly that epoch, and never while the last view names another owner.
            #[test]
            fn serves_only_fenced_epochs_it_owns(events in proptest::collection::vec(event(), 1..60)) {
                let mut d = ShardDecider::new(me("b", 7));
                let mut fenced = std::collections::BTreeSet::new();
                // None until a view arrives; then Some(the epoch the view says we own, if any).
                let mut view_owner_epoch: Option<Option<u64>> = None;
                for event in events {
                    match event {
                        Event::View { target_me, owner: o, other_live } => {
                            let record = o.map(|(mine, epoch, released)| {
                                if mine { owner("b", 7, epoch, released) } else { owner("a", 3, epoch, released) }
                            });
                            view_owner_epoch = Some(o.filter(|(mine, _, released)| *mine && !released).map(|(_, e, _)| e));
                            let members = if other_live { live(&[("a", 3), ("b", 7)]) } else { live(&[("b", 7)]) };
                            d.on_view(&map(if target_me { "b" } else { "a" }, record), &members);
                        }
                        Event::Claim(epoch) => {
                            let claiming = d.role(S) == ShardRole::Claiming;
                            d.on_claim_result(S, epoch.map(|e| Epoch::new(1, e)));
                            if claiming && epoch.is_some() {
                                // A won claim is the newest word on the owner.
                                view_owner_epoch = Some(epoch);
                            }
                        }
                        Event::Fence { epoch, fence } => {
                            if epoch == fence { fenced.insert(epoch); }
                            d.on_fence_raised(S, Epoch::new(1, epoch), Epoch::new(1, fence));
                        }
                        Event::Handoff(saved) => { d.on_handoff_finished(S, saved); }
                        Event::Released => d.on_released(S),
                        Event::LeaseLost => { d.on_lease_lost(); }
                    }
                    if let Some(epoch) = d.serving(S) {
                        prop_assert!(fenced.contains(&epoch.counter), "serving {epoch} without its fence");
                        if let Some(owned) = view_owner_epoch {
                            prop_assert_eq!(owned, Some(epoch.counter), "serving against the view");
                        }
                    }
                }
            }
        }
    }
}
