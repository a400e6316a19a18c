//! Errors of coordinator operations: which ones to retry, which ones end the incarnation or the
//! process.

use crate::shard::ShardId;
use crate::shardmap::{Incarnation, MemberId};

use super::types::Term;

/// Why a coordinator operation failed.
///
/// [`CoordError::is_retryable`] separates the operating errors a caller retries (after a
/// backoff, within its own deadline) from those that retrying cannot fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordError {
    /// The coordinator could not be reached or did not answer within the backend's request
    /// timeout. Retryable. For a write, the outcome is unknown: re-read before deciding.
    #[error("coordinator unavailable: {0}")]
    Unavailable(String),
    /// A record for this member id exists (another process, or an earlier incarnation whose
    /// lease has not expired yet). Retryable: wait for the record to expire, then register again.
    #[error("member {id} is already registered (incarnation {incarnation:?})")]
    MemberExists {
        /// The contested id.
        id: MemberId,
        /// The incarnation that holds it.
        incarnation: Incarnation,
    },
    /// The operation needs a registered member and this client has none. Fatal (a programmer
    /// error: register first).
    #[error("this client has not registered a member")]
    NotRegistered,
    /// This client's lease is gone (expired or revoked): the incarnation is over. Fatal for the
    /// incarnation: discard what it served and register again as a new incarnation.
    #[error("the lease of incarnation {0:?} is lost")]
    LeaseLost(Incarnation),
    /// A leader write carried a term that is no longer current. Not retryable: the writer is
    /// not leader any more.
    #[error("term {0:?} is not the current term")]
    StaleTerm(Term),
    /// The cluster was created with another shard count. Fatal: this member cannot join.
    #[error("the cluster has {cluster} shards; this member is configured for {ours}")]
    ShardCountMismatch {
        /// The cluster's shard count.
        cluster: u32,
        /// The count this member asked for.
        ours: u32,
    },
    /// The cluster configuration does not exist yet or its shards are not initialised. Fatal
    /// for the call (call `join_cluster` first).
    #[error("the cluster is not initialised")]
    NotInitialised,
    /// A shard number outside the cluster's shard count. Fatal (programmer error).
    #[error("{shard} is outside a cluster of {shard_count} shards")]
    InvalidShard {
        /// The offending shard.
        shard: ShardId,
        /// The cluster's shard count.
        shard_count: u32,
    },
    /// A record in the coordinator could not be decoded, or the backend broke its contract.
    /// Fatal.
    #[error("corrupt coordinator data: {0}")]
    Corrupt(String),
}

impl CoordError {
    /// Whether retrying the same operation later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CoordError::Unavailable(_) | CoordError::MemberExists { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_and_member_exists_are_retryable() {
        assert!(CoordError::Unavailable("x".into()).is_retryable());
        let exists = CoordError::MemberExists { id: "n".into(), incarnation: Incarnation(1) };
        assert!(exists.is_retryable());
        assert!(!CoordError::LeaseLost(Incarnation(1)).is_retryable());
        assert!(!CoordError::StaleTerm(Term(3)).is_retryable());
        assert!(!CoordError::ShardCountMismatch { cluster: 8192, ours: 64 }.is_retryable());
        assert!(!CoordError::NotRegistered.is_retryable());
    }
}
