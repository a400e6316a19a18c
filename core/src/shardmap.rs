//! The shard map: for every shard, the node the leader wants (its *target*) and the member
//! incarnation that serves it now (its *owner*).
//!
//! Targets and owners are separate records, as the coordinator stores them, so the leader's target
//! batches never conflict with claims. This module is plain data: the coordinator fills it, the
//! planner reads it, routing consults it.

use std::fmt;

use crate::epoch::Epoch;
use crate::shard::ShardId;

/// The id of a member (a node or a gateway), as registered with the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(String);

impl MemberId {
    /// Wraps a member id.
    pub fn new(id: impl Into<String>) -> Self {
        MemberId(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for MemberId {
    fn from(id: &str) -> Self {
        MemberId(id.to_owned())
    }
}

impl From<String> for MemberId {
    fn from(id: String) -> Self {
        MemberId(id)
    }
}

/// One process lifetime of a member: the etcd lease id, or the Raft log index of its registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Incarnation(pub u64);

/// The node the leader wants to serve a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRecord {
    /// The wanted node.
    pub node: MemberId,
    /// Fixed by an operator pin: the planner never changes it.
    pub pinned: bool,
}

impl TargetRecord {
    /// A target chosen by the planner (not pinned).
    pub fn planned(node: impl Into<MemberId>) -> Self {
        TargetRecord { node: node.into(), pinned: false }
    }

    /// A target fixed by an operator pin.
    pub fn pinned(node: impl Into<MemberId>) -> Self {
        TargetRecord { node: node.into(), pinned: true }
    }
}

/// The member incarnation that claimed a shard, and the epoch its claim produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRecord {
    /// The owning node.
    pub node: MemberId,
    /// The owning process lifetime of that node; a new incarnation owns nothing until it claims.
    pub incarnation: Incarnation,
    /// The epoch of the claim.
    pub epoch: Epoch,
    /// The owner has finished its handoff and released the shard; the target may claim it.
    pub released: bool,
}

/// The target and owner of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardEntry {
    /// The shard this entry describes.
    pub shard: ShardId,
    /// The node the leader wants, if any.
    pub target: Option<TargetRecord>,
    /// The incarnation that owns the shard now, if any.
    pub owner: Option<OwnerRecord>,
}

impl ShardEntry {
    /// An entry with neither target nor owner (a freshly initialised shard).
    pub fn empty(shard: ShardId) -> Self {
        ShardEntry { shard, target: None, owner: None }
    }

    /// The target's node, if there is a target.
    pub fn target_node(&self) -> Option<&MemberId> {
        self.target.as_ref().map(|target| &target.node)
    }

    /// The owner's node, if there is an owner.
    pub fn owner_node(&self) -> Option<&MemberId> {
        self.owner.as_ref().map(|owner| &owner.node)
    }

    /// Whether an operator pin fixes the target.
    pub fn is_pinned(&self) -> bool {
        self.target.as_ref().is_some_and(|target| target.pinned)
    }
}

/// Targets and owners of every shard of the cluster, indexed by shard number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    shard_count: u32,
    entries: Vec<ShardEntry>,
}

impl ShardMap {
    /// A map of `shard_count` shards, none with a target or an owner.
    ///
    /// # Panics
    /// If `shard_count` is zero.
    pub fn new(shard_count: u32) -> Self {
        assert!(shard_count > 0, "shard count must be positive");
        let entries = (0..shard_count).map(|shard| ShardEntry::empty(ShardId(shard))).collect();
        ShardMap { shard_count, entries }
    }

    /// The number of shards.
    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// The entry of `shard`.
    ///
    /// # Panics
    /// If `shard` is not below the shard count (a programmer error: shard ids come from
    /// [`crate::shard::place`] with the same count).
    pub fn entry(&self, shard: ShardId) -> &ShardEntry {
        &self.entries[self.index(shard)]
    }

    /// Replaces the target of `shard`.
    ///
    /// # Panics
    /// If `shard` is not below the shard count.
    pub fn set_target(&mut self, shard: ShardId, target: Option<TargetRecord>) {
        let index = self.index(shard);
        self.entries[index].target = target;
    }

    /// Replaces the owner of `shard`.
    ///
    /// # Panics
    /// If `shard` is not below the shard count.
    pub fn set_owner(&mut self, shard: ShardId, owner: Option<OwnerRecord>) {
        let index = self.index(shard);
        self.entries[index].owner = owner;
    }

    /// Every entry, in shard order.
    pub fn iter(&self) -> std::slice::Iter<'_, ShardEntry> {
        self.entries.iter()
    }

    fn index(&self, shard: ShardId) -> usize {
        assert!(
            shard.0 < self.shard_count,
            "{shard} is outside a map of {} shards",
            self.shard_count
        );
        usize::try_from(shard.0).expect("a u32 shard number fits in usize")
    }
}

impl<'a> IntoIterator for &'a ShardMap {
    type Item = &'a ShardEntry;
    type IntoIter = std::slice::Iter<'a, ShardEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// A target change decided by the planner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The shard whose target changes.
    pub shard: ShardId,
    /// The previous target's node (`None` if the shard had no target).
    pub from: Option<MemberId>,
    /// The new target's node.
    pub to: MemberId,
}

impl fmt::Display for Move {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.from {
            Some(from) => write!(f, "{}: {from} -> {}", self.shard, self.to),
            None => write!(f, "{}: (none) -> {}", self.shard, self.to),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_map_is_empty_and_indexed_by_shard_number() {
        let map = ShardMap::new(4);
        assert_eq!(map.shard_count(), 4);
        let shards: Vec<ShardId> = map.iter().map(|entry| entry.shard).collect();
        assert_eq!(shards, vec![ShardId(0), ShardId(1), ShardId(2), ShardId(3)]);
        assert!(map.iter().all(|entry| entry.target.is_none() && entry.owner.is_none()));
    }

    #[test]
    fn setters_change_one_entry() {
        let mut map = ShardMap::new(3);
        map.set_target(ShardId(1), Some(TargetRecord::pinned("n1")));
        let owner = OwnerRecord {
            node: "n2".into(),
            incarnation: Incarnation(7),
            epoch: Epoch::new(1, 3),
            released: false,
        };
        map.set_owner(ShardId(1), Some(owner.clone()));

        let entry = map.entry(ShardId(1));
        assert!(entry.is_pinned());
        assert_eq!(entry.target_node(), Some(&MemberId::from("n1")));
        assert_eq!(entry.owner, Some(owner));
        assert_eq!(map.entry(ShardId(0)), &ShardEntry::empty(ShardId(0)));
        assert_eq!(map.entry(ShardId(2)), &ShardEntry::empty(ShardId(2)));
    }

    #[test]
    #[should_panic(expected = "outside a map of 3 shards")]
    fn out_of_range_shard_is_a_programmer_error() {
        ShardMap::new(3).entry(ShardId(3));
    }

    #[test]
    fn member_ids_and_moves_display_plainly() {
        assert_eq!(MemberId::new("node-1").to_string(), "node-1");
        assert_eq!(MemberId::from(String::from("x")).as_str(), "x");
        let moved = Move { shard: ShardId(5), from: Some("a".into()), to: "b".into() };
        assert_eq!(moved.to_string(), "shard 5: a -> b");
        let placed = Move { shard: ShardId(6), from: None, to: "b".into() };
        assert_eq!(placed.to_string(), "shard 6: (none) -> b");
    }
}
