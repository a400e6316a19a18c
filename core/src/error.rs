//! Call errors: one typed enum for local and remote calls alike.
//!
//! The core never sees gRPC statuses; transports and gateways map these to their wire codes in
//! one table at the edge. [`CallError::provably_not_started`] is the retry rule's test
//! (invariant 8): only those errors may be retried for calls that are not idempotent.

use std::fmt;

use crate::epoch::Epoch;
use crate::shard::InvalidObjectId;
use crate::store::StoreError;

/// A method's own error, as it crosses any boundary (`CallError::Method`).
///
/// Object authors return their own error types; anything that converts into `MethodError`
/// (including `String` and `&str`, with code [`MethodError::UNKNOWN`]) can be a method's `E`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodError {
    /// Application-defined code (gRPC-like numbering is a good convention; 2 = unknown).
    pub code: i32,
    /// Human-readable message.
    pub message: String,
}

impl MethodError {
    /// The code used when an error carries no code of its own.
    pub const UNKNOWN: i32 = 2;

    /// A method error with a code and a message.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        MethodError { code, message: message.into() }
    }
}

impl fmt::Display for MethodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for MethodError {}

impl From<String> for MethodError {
    fn from(message: String) -> Self {
        MethodError { code: Self::UNKNOWN, message }
    }
}

impl From<&str> for MethodError {
    fn from(message: &str) -> Self {
        MethodError { code: Self::UNKNOWN, message: message.to_owned() }
    }
}

impl From<std::convert::Infallible> for MethodError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// Why a call, create or delete failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The method ran and returned its own error.
    #[error("method error: {message} (code {code})")]
    Method {
        /// Application-defined code.
        code: i32,
        /// Message.
        message: String,
    },
    /// No object type of that name is registered.
    #[error("unknown object type {object_type:?}")]
    UnknownType {
        /// The requested type.
        object_type: String,
    },
    /// The type has no method of that name.
    #[error("unknown method {method:?} of object type {object_type:?}")]
    UnknownMethod {
        /// The object type.
        object_type: String,
        /// The requested method.
        method: String,
    },
    /// The object id exists with another type.
    #[error("object {id:?} is of type {actual:?}")]
    TypeMismatch {
        /// The object id.
        id: String,
        /// Its actual type.
        actual: String,
    },
    /// The type activates only after `create`, and this object was not created.
    #[error("object {id:?} of type {object_type:?} does not exist")]
    ObjectNotFound {
        /// The object type.
        object_type: String,
        /// The object id.
        id: String,
    },
    /// The object id cannot be placed.
    #[error(transparent)]
    InvalidObjectId(#[from] InvalidObjectId),
    /// The request is malformed (undecodable payload, wrong `Any` type).
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What was wrong.
        message: String,
    },
    /// A `<node>/…` id names a node that is not a live member.
    #[error("node {node:?} not found")]
    NodeNotFound {
        /// The node id.
        node: String,
    },
    /// The shard is pinned to a node that is not live.
    #[error("shard {shard} is pinned to absent node {node:?}")]
    ShardPinnedToAbsentNode {
        /// The shard.
        shard: u32,
        /// The pinned node.
        node: String,
    },
    /// The callee does not serve the shard now; the call provably did not start.
    #[error("shard {shard} not served here{}", hint.as_ref().map(|h| format!(" (try {h})")).unwrap_or_default())]
    NotServed {
        /// The shard.
        shard: u32,
        /// The epoch the callee knows, if any.
        epoch: Option<Epoch>,
        /// The owner or target the callee believes in, if any.
        hint: Option<String>,
    },
    /// The object's mailbox is full; the call provably did not start.
    #[error("object {id:?} is overloaded")]
    Overloaded {
        /// The object id.
        id: String,
    },
    /// The deadline passed before an answer.
    #[error("deadline exceeded calling {id:?}")]
    DeadlineExceeded {
        /// The object id.
        id: String,
    },
    /// The call would re-enter an object already on the awaited call chain.
    #[error("call cycle: {}", chain.join(" -> "))]
    Cycle {
        /// The chain, from the root caller to the re-entered object.
        chain: Vec<String>,
    },
    /// The awaited call chain is deeper than allowed.
    #[error("call chain deeper than {limit}")]
    ChainTooDeep {
        /// The limit.
        limit: usize,
    },
    /// The call may or may not have run (e.g. its turn was poisoned, or the connection broke
    /// after the request left). It must not be resent unless it is idempotent.
    #[error("outcome unknown calling {id:?}: {reason}")]
    OutcomeUnknown {
        /// The object id.
        id: String,
        /// What happened.
        reason: String,
    },
    /// The object's activation failed (hook error or state load error).
    #[error("activation of {id:?} failed: {message}")]
    ActivationFailed {
        /// The object id.
        id: String,
        /// Why.
        message: String,
    },
    /// Saving or deleting state failed.
    #[error("state store error for {id:?}: {source}")]
    Store {
        /// The object id.
        id: String,
        /// The store error.
        source: StoreError,
    },
    /// The node or client is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// A transport proved that the call never reached a callee that could start it (the
    /// connection could not be established, the stream was refused, or a GOAWAY came below the
    /// call's stream); the call provably did not start.
    #[error("call not delivered to {peer}: {reason}")]
    NotDelivered {
        /// The peer's address.
        peer: String,
        /// Why.
        reason: String,
    },
}

impl CallError {
    /// Whether the call provably did not start (the retry rule: such calls may be sent again).
    pub fn provably_not_started(&self) -> bool {
        matches!(
            self,
            CallError::NotServed { .. }
                | CallError::Overloaded { .. }
                | CallError::NotDelivered { .. }
        )
    }
}

impl From<String> for CallError {
    fn from(message: String) -> Self {
        MethodError::from(message).into()
    }
}

impl From<&str> for CallError {
    fn from(message: &str) -> Self {
        MethodError::from(message).into()
    }
}

impl From<MethodError> for CallError {
    fn from(e: MethodError) -> Self {
        CallError::Method { code: e.code, message: e.message }
    }
}
