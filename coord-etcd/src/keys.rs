//! The key layout under the cluster prefix and the encoding of every record
//! (see `docs/COORDINATOR.md`).
//!
//! Records are JSON of the fixed structs below. Claims and releases compare stored values
//! byte for byte with re-encoded expected records, so the encoding must be deterministic:
//! serde_json writes struct fields in declaration order, and no field may be added without a
//! cluster-wide upgrade plan.

use serde::{Deserialize, Serialize};
use verse_core::coordinator::{
    ClusterConfig, CoordError, Leader, MemberFlags, MemberRecord, MemberRole, Term,
};
use verse_core::shard::ShardId;
use verse_core::{Epoch, Incarnation, MemberId, OwnerRecord, TargetRecord};

/// Key names under one cluster prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

/// What a key under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Config,
    Member(MemberId),
    Election,
    Leader,
    Target(ShardId),
    Owner(ShardId),
    Pin(ShardId),
}

impl Keys {
    /// Keys under `prefix` (a trailing `/` is added when missing).
    pub(crate) fn new(prefix: &str) -> Self {
        let prefix = if prefix.ends_with('/') { prefix.to_owned() } else { format!("{prefix}/") };
        Keys { prefix }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn config(&self) -> String {
        format!("{}config", self.prefix)
    }

    pub(crate) fn member(&self, id: &MemberId) -> String {
        format!("{}members/{id}", self.prefix)
    }

    pub(crate) fn members(&self) -> String {
        format!("{}members/", self.prefix)
    }

    pub(crate) fn election(&self, lease: i64) -> String {
        format!("{}election/{lease:016x}", self.prefix)
    }

    pub(crate) fn elections(&self) -> String {
        format!("{}election/", self.prefix)
    }

    pub(crate) fn leader(&self) -> String {
        format!("{}leader", self.prefix)
    }

    pub(crate) fn target(&self, shard: ShardId) -> String {
        format!("{}targets/{:05}", self.prefix, shard.0)
    }

    pub(crate) fn owner(&self, shard: ShardId) -> String {
        format!("{}owners/{:05}", self.prefix, shard.0)
    }

    pub(crate) fn pin(&self, shard: ShardId) -> String {
        format!("{}pins/{:05}", self.prefix, shard.0)
    }

    /// Classifies a full key; `None` for keys outside the layout.
    pub(crate) fn parse(&self, key: &[u8]) -> Option<KeyKind> {
        let key = std::str::from_utf8(key).ok()?.strip_prefix(&self.prefix)?;
        let shard = |rest: &str| rest.parse::<u32>().ok().map(ShardId);
        if key == "config" {
            Some(KeyKind::Config)
        } else if key == "leader" {
            Some(KeyKind::Leader)
        } else if let Some(id) = key.strip_prefix("members/") {
            Some(KeyKind::Member(MemberId::from(id)))
        } else if key.starts_with("election/") {
            Some(KeyKind::Election)
        } else if let Some(rest) = key.strip_prefix("targets/") {
            shard(rest).map(KeyKind::Target)
        } else if let Some(rest) = key.strip_prefix("owners/") {
            shard(rest).map(KeyKind::Owner)
        } else if let Some(rest) = key.strip_prefix("pins/") {
            shard(rest).map(KeyKind::Pin)
        } else {
            None
        }
    }
}

/// The end of the range of keys starting with `prefix`.
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    // Prefixes here end with '/', never with 0xff.
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> CoordError {
    CoordError::Corrupt(format!("{what}: {error}"))
}

fn encode(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("plain structs always serialise")
}

/// The cluster configuration record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConfigDoc {
    pub(crate) shard_count: u32,
    pub(crate) generation: u64,
    /// Every shard's owner record exists.
    pub(crate) initialised: bool,
}

impl ConfigDoc {
    pub(crate) fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, CoordError> {
        serde_json::from_slice(bytes).map_err(|e| corrupt("config", e))
    }

    pub(crate) fn config(&self) -> ClusterConfig {
        ClusterConfig { shard_count: self.shard_count, generation: self.generation }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MemberDoc {
    id: String,
    incarnation: u64,
    addresses: Vec<String>,
    gateway: bool,
    version: String,
    start_time_unix_ms: u64,
    draining: bool,
    ready: bool,
    /// Absent in records written before the field existed.
    #[serde(default)]
    node_local_store: bool,
}

pub(crate) fn encode_member(record: &MemberRecord) -> Vec<u8> {
    encode(&MemberDoc {
        id: record.id.to_string(),
        incarnation: record.incarnation.0,
        addresses: record.addresses.clone(),
        gateway: record.role == MemberRole::Gateway,
        version: record.version.clone(),
        start_time_unix_ms: record.start_time_unix_ms,
        draining: record.flags.draining,
        ready: record.flags.ready,
        node_local_store: record.node_local_store,
    })
}

pub(crate) fn decode_member(bytes: &[u8]) -> Result<MemberRecord, CoordError> {
    let doc: MemberDoc = serde_json::from_slice(bytes).map_err(|e| corrupt("member", e))?;
    Ok(MemberRecord {
        id: doc.id.into(),
        incarnation: Incarnation(doc.incarnation),
        addresses: doc.addresses,
        role: if doc.gateway { MemberRole::Gateway } else { MemberRole::Node },
        version: doc.version,
        start_time_unix_ms: doc.start_time_unix_ms,
        flags: MemberFlags { draining: doc.draining, ready: doc.ready },
        node_local_store: doc.node_local_store,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaderDoc {
    member: String,
    term: u64,
}

pub(crate) fn encode_leader(leader: &Leader) -> Vec<u8> {
    encode(&LeaderDoc { member: leader.member.to_string(), term: leader.term.0 })
}

pub(crate) fn decode_leader(bytes: &[u8]) -> Result<Leader, CoordError> {
    let doc: LeaderDoc = serde_json::from_slice(bytes).map_err(|e| corrupt("leader", e))?;
    Ok(Leader { member: doc.member.into(), term: Term(doc.term) })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TargetDoc {
    node: String,
    pinned: bool,
}

pub(crate) fn encode_target(target: &TargetRecord) -> Vec<u8> {
    encode(&TargetDoc { node: target.node.to_string(), pinned: target.pinned })
}

pub(crate) fn decode_target(bytes: &[u8]) -> Result<TargetRecord, CoordError> {
    let doc: TargetDoc = serde_json::from_slice(bytes).map_err(|e| corrupt("target", e))?;
    Ok(TargetRecord { node: doc.node.into(), pinned: doc.pinned })
}

/// An owner record; `node: None` is the vacant record written by shard initialisation.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OwnerDoc {
    node: Option<String>,
    incarnation: u64,
    generation: u64,
    counter: u64,
    released: bool,
}

pub(crate) fn encode_owner(owner: Option<&OwnerRecord>) -> Vec<u8> {
    encode(&match owner {
        None => OwnerDoc { node: None, incarnation: 0, generation: 0, counter: 0, released: false },
        Some(owner) => OwnerDoc {
            node: Some(owner.node.to_string()),
            incarnation: owner.incarnation.0,
            generation: owner.epoch.generation,
            counter: owner.epoch.counter,
            released: owner.released,
        },
    })
}

pub(crate) fn decode_owner(bytes: &[u8]) -> Result<Option<OwnerRecord>, CoordError> {
    let doc: OwnerDoc = serde_json::from_slice(bytes).map_err(|e| corrupt("owner", e))?;
    Ok(doc.node.map(|node| OwnerRecord {
        node: node.into(),
        incarnation: Incarnation(doc.incarnation),
        epoch: Epoch::new(doc.generation, doc.counter),
        released: doc.released,
    }))
}

pub(crate) fn decode_pin(bytes: &[u8]) -> Result<MemberId, CoordError> {
    std::str::from_utf8(bytes).map(MemberId::from).map_err(|e| corrupt("pin", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_by_shard() {
        let keys = Keys::new("/verse/c1");
        assert_eq!(keys.target(ShardId(42)), "/verse/c1/targets/00042");
        assert!(keys.owner(ShardId(9)) < keys.owner(ShardId(10)));
        assert_eq!(
            keys.parse(keys.owner(ShardId(8191)).as_bytes()),
            Some(KeyKind::Owner(ShardId(8191)))
        );
        assert_eq!(
            keys.parse(keys.member(&"n-1".into()).as_bytes()),
            Some(KeyKind::Member("n-1".into()))
        );
        assert_eq!(keys.parse(keys.election(5).as_bytes()), Some(KeyKind::Election));
        assert_eq!(keys.parse(b"/verse/c2/config"), None);
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
    }

    #[test]
    fn records_round_trip_and_encode_deterministically() {
        let owner = OwnerRecord {
            node: "n1".into(),
            incarnation: Incarnation(77),
            epoch: Epoch::new(1, 3),
            released: true,
        };
        assert_eq!(decode_owner(&encode_owner(Some(&owner))).ok(), Some(Some(owner.clone())));
        assert_eq!(encode_owner(Some(&owner)), encode_owner(Some(&owner.clone())));
        assert_eq!(decode_owner(&encode_owner(None)).ok(), Some(None));
        let target = TargetRecord::pinned("n2");
        assert_eq!(decode_target(&encode_target(&target)).ok(), Some(target));
        assert!(matches!(decode_member(b"{"), Err(CoordError::Corrupt(_))));
    }
}
