//! Object ids to shards: FNV-1a 32-bit of the id's UTF-8 bytes modulo the shard count, plus the
//! GoVerse pinned forms `shard#N/rest` (shard N) and `<node-id>/rest` (served only by that node).

use std::fmt;

/// The default number of shards (GoVerse's).
pub const DEFAULT_SHARD_COUNT: u32 = 8192;

/// A shard number in `0..shard_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}", self.0)
    }
}

/// FNV-1a, 32 bits (Go's `hash/fnv` `New32a`).
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes
        .iter()
        .fold(OFFSET, |hash, b| (hash ^ u32::from(*b)).wrapping_mul(PRIME))
}

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Placement {
    /// In a shard (hashed, or explicitly `shard#N/…`); follows the shard's owner.
    Shard(ShardId),
    /// Pinned to a node (`<node-id>/…`): served only by a live incarnation of that node.
    Node(String),
}

/// Why an object id cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidObjectId {
    /// The empty id.
    #[error("object id is empty")]
    Empty,
    /// `shard#N/…` where N is not a number or not below the shard count.
    #[error("invalid shard in object id {id:?}: shard must be a number below {shard_count}")]
    BadShard {
        /// The offending id.
        id: String,
        /// The cluster's shard count.
        shard_count: u32,
    },
    /// `/rest` with an empty node prefix, or `prefix/` with nothing after it.
    #[error("invalid object id {id:?}: the parts around '/' must not be empty")]
    EmptyPart {
        /// The offending id.
        id: String,
    },
}

/// Places `id` among `shard_count` shards.
pub fn place(id: &str, shard_count: u32) -> Result<Placement, InvalidObjectId> {
    assert!(shard_count > 0, "shard count must be positive");
    if id.is_empty() {
        return Err(InvalidObjectId::Empty);
    }
    let Some((prefix, rest)) = id.split_once('/') else {
        return Ok(Placement::Shard(ShardId(
            fnv1a32(id.as_bytes()) % shard_count,
        )));
    };
    if prefix.is_empty() || rest.is_empty() {
        return Err(InvalidObjectId::EmptyPart { id: id.to_owned() });
    }
    if let Some(number) = prefix.strip_prefix("shard#") {
        let bad = || InvalidObjectId::BadShard {
            id: id.to_owned(),
            shard_count,
        };
        let shard: u32 = number.parse().map_err(|_| bad())?;
        if shard >= shard_count || number.starts_with('+') {
            return Err(bad());
        }
        return Ok(Placement::Shard(ShardId(shard)));
    }
    Ok(Placement::Node(prefix.to_owned()))
}

/// The shard an object hashes to, ignoring pinned forms (used to spread pinned objects' local
/// bookkeeping over per-shard tables).
pub fn hash_shard(id: &str, shard_count: u32) -> ShardId {
    ShardId(fnv1a32(id.as_bytes()) % shard_count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn goverse_vectors() {
        let vectors: [(&str, u32, u32, u32); 6] = [
            ("a", 0xe40c292c, 2348, 44),
            ("foobar", 0xbf9cf968, 6504, 40),
            ("object-123", 0xcd87adcb, 3531, 11),
            ("Counter-test", 0x3213fc2a, 7210, 42),
            ("ChatRoom-General", 0x866c3d49, 7497, 9),
            ("üñí", 0xb4ca6b0e, 2830, 14),
        ];
        for (id, hash, s8192, s64) in vectors {
            assert_eq!(fnv1a32(id.as_bytes()), hash, "hash of {id}");
            assert_eq!(
                place(id, 8192),
                Ok(Placement::Shard(ShardId(s8192))),
                "{id} of 8192"
            );
            assert_eq!(
                place(id, 64),
                Ok(Placement::Shard(ShardId(s64))),
                "{id} of 64"
            );
        }
        assert_eq!(place("shard#5/x", 8192), Ok(Placement::Shard(ShardId(5))));
        assert_eq!(place("shard#5/x", 64), Ok(Placement::Shard(ShardId(5))));
    }

    #[test]
    fn pinned_and_invalid_forms() {
        assert_eq!(
            place("node-1/chat", 8192),
            Ok(Placement::Node("node-1".into()))
        );
        assert_eq!(place("", 8192), Err(InvalidObjectId::Empty));
        for bad in [
            "shard#x/y",
            "shard#8192/y",
            "shard#-1/y",
            "shard#+1/y",
            "shard#/y",
        ] {
            assert!(
                matches!(place(bad, 8192), Err(InvalidObjectId::BadShard { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            place("/x", 8192),
            Err(InvalidObjectId::EmptyPart { .. })
        ));
        assert!(matches!(
            place("n/", 8192),
            Err(InvalidObjectId::EmptyPart { .. })
        ));
    }

    proptest! {
        #[test]
        fn plain_ids_always_land_in_range(id in "[^/]{1,40}", count in 1u32..10_000) {
            match place(&id, count) {
                Ok(Placement::Shard(ShardId(s))) => prop_assert!(s < count),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }

        #[test]
        fn explicit_shards_round_trip(shard in 0u32..8192, rest in "[a-z]{1,10}") {
            let id = format!("shard#{shard}/{rest}");
            prop_assert_eq!(place(&id, 8192), Ok(Placement::Shard(ShardId(shard))));
        }
    }
}
