//! The on-disk encoding of object records and fence keys.
//!
//! Hand-written and fixed so the file format is plain to read and cannot drift with a codec
//! library. An object record is:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format (`1`) |
//! | 1 | kind: `0` state, `1` tombstone |
//! | 8 | version, little endian |
//! | 8 | written at: [`MonoTime`] nanoseconds of the store's clock, little endian |
//! | 4 | type name length, little endian |
//! | n | type name, UTF-8 |
//! | rest | state (empty for a tombstone) |

use bytes::Bytes;
use verse_core::MonoTime;
use verse_core::store::{FenceKey, StoredObject};

const FORMAT: u8 = 1;
const KIND_STATE: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;
const HEADER_LEN: usize = 1 + 1 + 8 + 8 + 4;

/// Why a stored record could not be decoded (the file is damaged or from another format).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("record of {0} bytes is shorter than its header")]
    Truncated(usize),
    #[error("unknown record format {0}")]
    UnknownFormat(u8),
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("type name runs past the end of the record")]
    TypeOverrun,
    #[error("type name is not UTF-8")]
    TypeNotUtf8,
    #[error("tombstone carries {0} bytes of state")]
    TombstoneWithState(usize),
}

/// The parts of a record every write checks, decoded without copying the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordMeta {
    pub(crate) version: u64,
    pub(crate) written_at: MonoTime,
    pub(crate) tombstone: bool,
}

/// Encodes a record (`state: None` for a tombstone).
pub(crate) fn encode(
    object_type: &str,
    version: u64,
    state: Option<&[u8]>,
    written_at: MonoTime,
) -> Vec<u8> {
    let type_len = u32::try_from(object_type.len()).expect("object type names are far below 4 GiB");
    let state_bytes = state.unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_LEN + object_type.len() + state_bytes.len());
    out.push(FORMAT);
    out.push(if state.is_some() { KIND_STATE } else { KIND_TOMBSTONE });
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&written_at.as_nanos().to_le_bytes());
    out.extend_from_slice(&type_len.to_le_bytes());
    out.extend_from_slice(object_type.as_bytes());
    out.extend_from_slice(state_bytes);
    out
}

fn le_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("callers pass exactly 8 bytes"))
}

/// Decodes the header of a record.
pub(crate) fn decode_meta(bytes: &[u8]) -> Result<RecordMeta, RecordError> {
    if bytes.len() < HEADER_LEN {
        return Err(RecordError::Truncated(bytes.len()));
    }
    if bytes[0] != FORMAT {
        return Err(RecordError::UnknownFormat(bytes[0]));
    }
    let tombstone = match bytes[1] {
        KIND_STATE => false,
        KIND_TOMBSTONE => true,
        other => return Err(RecordError::UnknownKind(other)),
    };
    Ok(RecordMeta {
        version: le_u64(&bytes[2..10]),
        written_at: MonoTime::from_nanos(le_u64(&bytes[10..18])),
        tombstone,
    })
}

/// Decodes a whole record.
pub(crate) fn decode(bytes: &[u8]) -> Result<StoredObject, RecordError> {
    let meta = decode_meta(bytes)?;
    let type_len_bytes: [u8; 4] =
        bytes[18..HEADER_LEN].try_into().expect("the header was length-checked");
    let type_len = u32::from_le_bytes(type_len_bytes) as usize;
    let type_end = HEADER_LEN.checked_add(type_len).ok_or(RecordError::TypeOverrun)?;
    let type_bytes = bytes.get(HEADER_LEN..type_end).ok_or(RecordError::TypeOverrun)?;
    let object_type = std::str::from_utf8(type_bytes).map_err(|_| RecordError::TypeNotUtf8)?;
    let rest = &bytes[type_end..];
    let state = if meta.tombstone {
        if !rest.is_empty() {
            return Err(RecordError::TombstoneWithState(rest.len()));
        }
        None
    } else {
        Some(Bytes::copy_from_slice(rest))
    };
    Ok(StoredObject { object_type: object_type.to_owned(), version: meta.version, state })
}

/// The fences table key for `key`: a tag byte, then the shard number (big endian) or the
/// node name, so shard and node keys can never collide.
pub(crate) fn fence_key_bytes(key: &FenceKey) -> Vec<u8> {
    match key {
        FenceKey::Shard(shard) => {
            let mut out = Vec::with_capacity(5);
            out.push(b's');
            out.extend_from_slice(&shard.0.to_be_bytes());
            out
        }
        FenceKey::Node(node) => {
            let mut out = Vec::with_capacity(1 + node.len());
            out.push(b'n');
            out.extend_from_slice(node.as_bytes());
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use verse_core::ShardId;

    proptest! {
        #[test]
        fn records_round_trip(
            object_type in ".{0,20}",
            version in any::<u64>(),
            nanos in any::<u64>(),
            state in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        ) {
            let at = MonoTime::from_nanos(nanos);
            let bytes = encode(&object_type, version, state.as_deref(), at);
            let meta = decode_meta(&bytes).unwrap();
            prop_assert_eq!(meta, RecordMeta { version, written_at: at, tombstone: state.is_none() });
            let record = decode(&bytes).unwrap();
            prop_assert_eq!(record, StoredObject {
                object_type,
                version,
                state: state.map(Bytes::from),
            });
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn damaged_records_are_refused() {
        let good = encode("Counter", 3, Some(b"xy"), MonoTime::from_nanos(5));
        assert_eq!(decode(&good[..10]), Err(RecordError::Truncated(10)));
        let mut bad = good.clone();
        bad[0] = 9;
        assert_eq!(decode(&bad), Err(RecordError::UnknownFormat(9)));
        let mut bad = good.clone();
        bad[1] = 7;
        assert_eq!(decode(&bad), Err(RecordError::UnknownKind(7)));
        let mut bad = good.clone();
        bad[18] = 200;
        assert_eq!(decode(&bad), Err(RecordError::TypeOverrun));
        let mut bad = encode("Counter", 3, None, MonoTime::ZERO);
        bad.push(1);
        assert_eq!(decode(&bad), Err(RecordError::TombstoneWithState(1)));
    }

    #[test]
    fn fence_keys_of_different_kinds_differ() {
        let shard = fence_key_bytes(&FenceKey::Shard(ShardId(0x6e00_0000)));
        let node = fence_key_bytes(&FenceKey::Node("\0\0\0".to_owned()));
        assert_ne!(shard, node);
        assert_eq!(shard, vec![b's', 0x6e, 0, 0, 0]);
    }
}
