//! The replicated coordinator state machine: pure, deterministic and free of I/O.
//!
//! Every replica applies the same committed entries in the same order and reaches the same
//! state, revision counter and change log; nothing here reads a clock or draws randomness.
//! Lease time comes only from the leader's [`Stamp`]s (see [`CoordState::apply`]).
//!
//! Records: the configuration, members with their leases, the leader and the queue of
//! candidates, targets, owners (separate from targets), pins, a revision counter and a bounded
//! change log with a compaction revision, so a watch can resume from any retained revision.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::{ClaimItem, Command, Proposal, Reply, Response, Stamp};
use crate::records::{
    ChangeRec, ClaimRefusal, ConfigRec, LeaderRec, MemberRec, OwnerRec, Refusal, TargetRec,
};

/// The default bound of the change log, in changes (not revisions).
pub const DEFAULT_MAX_CHANGES: usize = 65_536;

/// A lease-time frame: the Raft term and node id of the leader that stamps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The leader's Raft term.
    pub term: u64,
    /// The leader's Raft node id.
    pub leader: u64,
}

/// A member's lease, in the current frame's milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The granted TTL.
    pub ttl_ms: u64,
    /// The frame time at which it expires (a tick at or after it ends the lease).
    pub expires_at_ms: u64,
}

/// The changes of one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revisioned {
    /// The revision.
    pub revision: u64,
    /// Its changes, in order.
    pub changes: Vec<ChangeRec>,
}

/// What a watcher gets from [`CoordState::changes_since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangesSince {
    /// The changes of every retained revision at or after the one asked for (maybe none).
    Changes(Vec<Revisioned>),
    /// The history asked for is compacted: resync from a snapshot.
    Compacted,
}

/// The coordinator state every replica holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordState {
    config: Option<ConfigRec>,
    members: BTreeMap<String, MemberRec>,
    leases: BTreeMap<String, Lease>,
    leader: Option<LeaderRec>,
    /// Campaigners waiting for leadership, in arrival order: `(member, incarnation)`.
    candidates: Vec<(String, u64)>,
    targets: BTreeMap<u32, TargetRec>,
    owners: BTreeMap<u32, OwnerRec>,
    pins: BTreeMap<u32, String>,
    revision: u64,
    frame: Option<Frame>,
    /// The latest stamp applied in `frame`.
    frame_now_ms: u64,
    changes: VecDeque<Revisioned>,
    change_count: usize,
    /// Every change at or below this revision is gone from the log.
    compacted: u64,
    max_changes: usize,
}

impl Default for CoordState {
    fn default() -> Self {
        CoordState::new(DEFAULT_MAX_CHANGES)
    }
}

/// Collects the changes of one command; they get one revision if there are any.
struct Pending {
    revision: u64,
    changes: Vec<ChangeRec>,
}

impl CoordState {
    /// An empty state whose change log keeps about `max_changes` changes.
    pub fn new(max_changes: usize) -> Self {
        CoordState {
            config: None,
            members: BTreeMap::new(),
            leases: BTreeMap::new(),
            leader: None,
            candidates: Vec::new(),
            targets: BTreeMap::new(),
            owners: BTreeMap::new(),
            pins: BTreeMap::new(),
            revision: 0,
            frame: None,
            frame_now_ms: 0,
            changes: VecDeque::new(),
            change_count: 0,
            compacted: 0,
            max_changes: max_changes.max(1),
        }
    }

    /// Applies one committed entry: `index` is its log index, `frame` the leader that appended
    /// it (term and node id of its log id).
    ///
    /// Lease time: a stamp counts only if it belongs to `frame`. The first stamped entry of a
    /// new frame refreshes every live lease to `stamp + ttl` (a new leader only extends
    /// leases); within a frame, time only moves forward. Leases end only in [`Command::Tick`].
    pub fn apply(&mut self, index: u64, frame: Frame, proposal: &Proposal) -> Response {
        let now_ms = proposal.stamp.and_then(|stamp| self.advance_time(frame, stamp));
        let mut pending = Pending { revision: self.revision + 1, changes: Vec::new() };
        let response = self.apply_command(index, now_ms, &proposal.command, &mut pending);
        self.commit(pending);
        response
    }

    /// Moves lease time to `stamp` if it belongs to `frame`; returns the frame time.
    fn advance_time(&mut self, frame: Frame, stamp: Stamp) -> Option<u64> {
        if stamp.term != frame.term || stamp.leader != frame.leader {
            return None;
        }
        if self.frame == Some(frame) {
            self.frame_now_ms = self.frame_now_ms.max(stamp.elapsed_ms);
        } else {
            // A new leader's time frame: stamps of the old one mean nothing here, so every
            // live lease gets a full TTL from now (only ever later than it would have been).
            self.frame = Some(frame);
            self.frame_now_ms = stamp.elapsed_ms;
            for lease in self.leases.values_mut() {
                lease.expires_at_ms = stamp.elapsed_ms.saturating_add(lease.ttl_ms);
            }
        }
        Some(self.frame_now_ms)
    }

    fn apply_command(
        &mut self,
        index: u64,
        now_ms: Option<u64>,
        command: &Command,
        pending: &mut Pending,
    ) -> Response {
        match command {
            Command::JoinCluster { shard_count } => self.join_cluster(*shard_count, pending),
            Command::Register { member, ttl_ms } => {
                let now_ms = now_ms.ok_or(Refusal::Unstamped)?;
                self.register(index, member, *ttl_ms, now_ms, pending)
            }
            Command::KeepAlive { member, incarnation } => {
                let now_ms = now_ms.ok_or(Refusal::Unstamped)?;
                let lease = self.live_lease(member, *incarnation)?;
                lease.expires_at_ms = lease.expires_at_ms.max(now_ms.saturating_add(lease.ttl_ms));
                Ok(Reply::Granted { ttl_ms: lease.ttl_ms })
            }
            Command::SetFlags { member, incarnation, draining, ready } => {
                self.live_lease(member, *incarnation)?;
                let record =
                    self.members.get_mut(member).ok_or(Refusal::LeaseLost(*incarnation))?;
                if (record.draining, record.ready) != (*draining, *ready) {
                    record.draining = *draining;
                    record.ready = *ready;
                    pending.changes.push(ChangeRec::MemberPut(record.clone()));
                }
                Ok(Reply::Member(record.clone()))
            }
            Command::Deregister { member, incarnation } => {
                if self.members.get(member).is_some_and(|m| m.incarnation == *incarnation) {
                    self.end_lease(member, pending);
                }
                Ok(Reply::Done)
            }
            Command::Campaign { member, incarnation } => {
                self.campaign(member, *incarnation, pending)
            }
            Command::Resign { term } => {
                if self.leader.as_ref().is_some_and(|leader| leader.term == *term) {
                    let leader = self.leader.take();
                    if let Some(leader) = leader {
                        self.candidates
                            .retain(|(m, i)| (m, *i) != (&leader.member, leader.incarnation));
                    }
                    self.promote_next(pending);
                }
                Ok(Reply::Done)
            }
            Command::WriteTargets { term, writes } => self.write_targets(*term, writes, pending),
            Command::Claim { member, incarnation, claims } => {
                self.claim(member, *incarnation, claims, pending)
            }
            Command::Release { member, incarnation, releases } => {
                self.release(member, *incarnation, releases, pending)
            }
            Command::Pin { shard, node } => {
                self.check_shards(std::iter::once(*shard))?;
                let old = match node {
                    Some(node) => self.pins.insert(*shard, node.clone()),
                    None => self.pins.remove(shard),
                };
                if old != *node {
                    pending.changes.push(ChangeRec::Pin(*shard, node.clone()));
                }
                Ok(Reply::Done)
            }
            Command::Tick => {
                if let Some(now_ms) = now_ms {
                    let expired: Vec<String> = self
                        .leases
                        .iter()
                        .filter(|(_, lease)| lease.expires_at_ms <= now_ms)
                        .map(|(member, _)| member.clone())
                        .collect();
                    for member in expired {
                        self.end_lease(&member, pending);
                    }
                }
                Ok(Reply::Done)
            }
            Command::Compact => {
                self.changes.clear();
                self.change_count = 0;
                self.compacted = self.revision;
                Ok(Reply::Done)
            }
        }
    }

    fn join_cluster(&mut self, shard_count: u32, pending: &mut Pending) -> Response {
        if let Some(config) = self.config {
            if config.shard_count != shard_count {
                return Err(Refusal::ShardCountMismatch {
                    cluster: config.shard_count,
                    ours: shard_count,
                });
            }
            return Ok(Reply::Config(config));
        }
        if shard_count == 0 {
            return Err(Refusal::InvalidShard { shard: 0, shard_count });
        }
        let config = ConfigRec { shard_count, generation: 1 };
        self.config = Some(config);
        pending.changes.push(ChangeRec::Config(config));
        Ok(Reply::Config(config))
    }

    fn register(
        &mut self,
        index: u64,
        member: &MemberRec,
        ttl_ms: u64,
        now_ms: u64,
        pending: &mut Pending,
    ) -> Response {
        if let Some(existing) = self.members.get(&member.id) {
            return Err(Refusal::MemberExists {
                id: member.id.clone(),
                incarnation: existing.incarnation,
            });
        }
        let record = MemberRec { incarnation: index, ..member.clone() };
        let lease = Lease { ttl_ms, expires_at_ms: now_ms.saturating_add(ttl_ms) };
        self.leases.insert(record.id.clone(), lease);
        self.members.insert(record.id.clone(), record.clone());
        pending.changes.push(ChangeRec::MemberPut(record.clone()));
        Ok(Reply::Member(record))
    }

    /// The lease of `member` if `incarnation` holds it.
    fn live_lease(&mut self, member: &str, incarnation: u64) -> Result<&mut Lease, Refusal> {
        if !self.is_live(member, incarnation) {
            return Err(Refusal::LeaseLost(incarnation));
        }
        self.leases.get_mut(member).ok_or(Refusal::LeaseLost(incarnation))
    }

    /// Whether `member`'s record exists under `incarnation` (its lease has not ended).
    pub fn is_live(&self, member: &str, incarnation: u64) -> bool {
        self.members.get(member).is_some_and(|record| record.incarnation == incarnation)
    }

    /// Ends `member`'s lease: its record, candidacy and leadership go.
    fn end_lease(&mut self, member: &str, pending: &mut Pending) {
        self.leases.remove(member);
        if self.members.remove(member).is_some() {
            pending.changes.push(ChangeRec::MemberGone(member.to_owned()));
        }
        self.candidates.retain(|(candidate, _)| candidate != member);
        if self.leader.as_ref().is_some_and(|leader| leader.member == member) {
            self.leader = None;
            self.promote_next(pending);
        }
    }

    /// Gives leadership to the first live candidate, with the pending revision as its term.
    fn promote_next(&mut self, pending: &mut Pending) {
        debug_assert!(self.leader.is_none());
        while !self.candidates.is_empty() {
            let (member, incarnation) = self.candidates.remove(0);
            if self.is_live(&member, incarnation) {
                let leader = LeaderRec { member, incarnation, term: pending.revision };
                self.leader = Some(leader.clone());
                pending.changes.push(ChangeRec::Leader(Some(leader)));
                return;
            }
        }
        pending.changes.push(ChangeRec::Leader(None));
    }

    fn campaign(&mut self, member: &str, incarnation: u64, pending: &mut Pending) -> Response {
        if !self.is_live(member, incarnation) {
            return Err(Refusal::LeaseLost(incarnation));
        }
        match &self.leader {
            Some(leader) if leader.member == member && leader.incarnation == incarnation => {
                Ok(Reply::Leading { term: leader.term })
            }
            Some(_) => {
                let candidate = (member.to_owned(), incarnation);
                if !self.candidates.contains(&candidate) {
                    self.candidates.push(candidate);
                }
                Ok(Reply::Waiting { revision: self.revision })
            }
            None => {
                let leader =
                    LeaderRec { member: member.to_owned(), incarnation, term: pending.revision };
                self.leader = Some(leader.clone());
                pending.changes.push(ChangeRec::Leader(Some(leader)));
                Ok(Reply::Leading { term: pending.revision })
            }
        }
    }

    fn write_targets(
        &mut self,
        term: u64,
        writes: &[(u32, Option<TargetRec>)],
        pending: &mut Pending,
    ) -> Response {
        if self.leader.as_ref().is_none_or(|leader| leader.term != term) {
            return Err(Refusal::StaleTerm(term));
        }
        self.check_shards(writes.iter().map(|(shard, _)| *shard))?;
        for (shard, target) in writes {
            let old = match target {
                Some(target) => self.targets.insert(*shard, target.clone()),
                None => self.targets.remove(shard),
            };
            if old != *target {
                pending.changes.push(ChangeRec::Target(*shard, target.clone()));
            }
        }
        Ok(Reply::Done)
    }

    fn claim(
        &mut self,
        member: &str,
        incarnation: u64,
        claims: &[ClaimItem],
        pending: &mut Pending,
    ) -> Response {
        let config = self.config.ok_or(Refusal::NotInitialised)?;
        self.check_shards(claims.iter().map(|claim| claim.shard))?;
        if !self.is_live(member, incarnation) {
            return Err(Refusal::LeaseLost(incarnation));
        }
        let mut outcomes = Vec::with_capacity(claims.len());
        for claim in claims {
            let outcome = self.claim_one(member, incarnation, config.generation, claim);
            if let Ok(owner) = &outcome {
                self.owners.insert(claim.shard, owner.clone());
                pending.changes.push(ChangeRec::Owner(claim.shard, Some(owner.clone())));
            }
            outcomes.push((claim.shard, outcome));
        }
        Ok(Reply::Claims(outcomes))
    }

    /// The claim rule for one shard.
    fn claim_one(
        &self,
        member: &str,
        incarnation: u64,
        generation: u64,
        claim: &ClaimItem,
    ) -> Result<OwnerRec, ClaimRefusal> {
        let target = self.targets.get(&claim.shard);
        if target != Some(&claim.expected_target) || claim.expected_target.node != member {
            return Err(ClaimRefusal::NotTarget(target.cloned()));
        }
        let owner = self.owners.get(&claim.shard);
        if owner != claim.expected_owner.as_ref() {
            return Err(ClaimRefusal::OwnerChanged(owner.cloned()));
        }
        if let Some(owner) = owner
            && !owner.released
            && self.is_live(&owner.node, owner.incarnation)
        {
            return Err(ClaimRefusal::OwnerLive(owner.clone()));
        }
        let epoch = match owner {
            Some(owner) if owner.epoch.0 == generation => (generation, owner.epoch.1 + 1),
            _ => (generation, 1),
        };
        Ok(OwnerRec { node: member.to_owned(), incarnation, epoch, released: false })
    }

    fn release(
        &mut self,
        member: &str,
        incarnation: u64,
        releases: &[(u32, (u64, u64))],
        pending: &mut Pending,
    ) -> Response {
        self.check_shards(releases.iter().map(|(shard, _)| *shard))?;
        let mut outcomes = Vec::with_capacity(releases.len());
        for (shard, epoch) in releases {
            let current = self.owners.get(shard);
            let outcome = match current {
                Some(owner)
                    if owner.node == member
                        && owner.incarnation == incarnation
                        && owner.epoch == *epoch =>
                {
                    let released = OwnerRec { released: true, ..owner.clone() };
                    if !owner.released {
                        self.owners.insert(*shard, released.clone());
                        pending.changes.push(ChangeRec::Owner(*shard, Some(released.clone())));
                    }
                    Ok(released)
                }
                _ => Err(current.cloned()),
            };
            outcomes.push((*shard, outcome));
        }
        Ok(Reply::Releases(outcomes))
    }

    /// `NotInitialised` without a configuration, `InvalidShard` for a shard outside it.
    fn check_shards(&self, shards: impl IntoIterator<Item = u32>) -> Result<(), Refusal> {
        let config = self.config.ok_or(Refusal::NotInitialised)?;
        for shard in shards {
            if shard >= config.shard_count {
                return Err(Refusal::InvalidShard { shard, shard_count: config.shard_count });
            }
        }
        Ok(())
    }

    /// Records the pending changes under their revision, bounding the change log.
    fn commit(&mut self, pending: Pending) {
        if pending.changes.is_empty() {
            return;
        }
        self.revision = pending.revision;
        self.change_count += pending.changes.len();
        self.changes.push_back(Revisioned { revision: pending.revision, changes: pending.changes });
        while self.change_count > self.max_changes && self.changes.len() > 1 {
            if let Some(dropped) = self.changes.pop_front() {
                self.change_count -= dropped.changes.len();
                self.compacted = dropped.revision;
            }
        }
    }

    /// The changes of every revision at or after `from`, or [`ChangesSince::Compacted`] when
    /// some of them are gone.
    pub fn changes_since(&self, from: u64) -> ChangesSince {
        let from = from.max(1);
        if from <= self.compacted {
            return ChangesSince::Compacted;
        }
        let start = self.changes.partition_point(|revisioned| revisioned.revision < from);
        ChangesSince::Changes(self.changes.iter().skip(start).cloned().collect())
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The revision up to which history is compacted.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// The configuration, if created.
    pub fn config(&self) -> Option<ConfigRec> {
        self.config
    }

    /// Live members.
    pub fn members(&self) -> impl Iterator<Item = &MemberRec> {
        self.members.values()
    }

    /// The leader.
    pub fn leader(&self) -> Option<&LeaderRec> {
        self.leader.as_ref()
    }

    /// Targets by shard.
    pub fn targets(&self) -> &BTreeMap<u32, TargetRec> {
        &self.targets
    }

    /// Owners by shard.
    pub fn owners(&self) -> &BTreeMap<u32, OwnerRec> {
        &self.owners
    }

    /// Pins by shard.
    pub fn pins(&self) -> &BTreeMap<u32, String> {
        &self.pins
    }

    /// The current lease-time frame.
    pub fn frame(&self) -> Option<Frame> {
        self.frame
    }

    /// The lease of `member`.
    pub fn lease(&self, member: &str) -> Option<Lease> {
        self.leases.get(member).copied()
    }

    /// The earliest lease expiry in the current frame.
    pub fn earliest_expiry_ms(&self) -> Option<u64> {
        self.leases.values().map(|lease| lease.expires_at_ms).min()
    }
}

#[cfg(test)]
mod tests;
