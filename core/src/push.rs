//! Pushes from objects to client sessions: the [`PushSink`] boundary a node hands pushes to.
//!
//! A client id names the gateway that holds its session: `<gateway-id>/<session>` (the session
//! part carries at least 128 random bits; client ids are secrets, never log them in full). An
//! object pushes from a turn with [`CallContext::push`](crate::CallContext::push) (one client),
//! [`CallContext::push_many`](crate::CallContext::push_many) (a list) or
//! [`CallContext::broadcast`](crate::CallContext::broadcast) (every session of every gateway).
//! The node resolves the gateway from the id, checks that it is a live gateway member of the
//! cluster view (when the node is clustered), and hands the message to its [`PushSink`] —
//! `verse-transport`'s `PushHub` in production, which queues it on the stream that gateway
//! keeps open to this node, or briefly buffers it (bounded) while that stream is not open yet.
//!
//! Pushes never block a turn: a full queue refuses at once ([`PushError::Full`]). Delivery is at
//! most once: a push accepted by the sink can still be lost when the gateway's stream breaks.
//! Every outcome is counted in `verse_push_total{outcome}`.

use crate::object::EncodedMessage;

/// One push as the node hands it to its sink.
#[derive(Debug, Clone, PartialEq)]
pub struct PushMessage {
    /// `<gateway-id>/<session>`; empty for a broadcast to every session of the gateway.
    pub client_id: String,
    /// The type of the object that pushed.
    pub object_type: String,
    /// The id of the object that pushed.
    pub object_id: String,
    /// The message, packed as `Any` (type URL and bytes) exactly as the object sent it.
    pub message: EncodedMessage,
}

/// Why a push was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The client id is not `<gateway-id>/<session>` with both parts non-empty.
    #[error("invalid client id (expected <gateway-id>/<session>)")]
    InvalidClientId,
    /// The gateway named by the client id is not a live gateway member of the cluster.
    #[error("gateway {0:?} is not a live gateway member")]
    UnknownGateway(String),
    /// The gateway's queue (or its brief buffer while its stream is not open) is full.
    #[error("push queue of gateway {0:?} is full")]
    Full(String),
    /// This node has no push sink (it was built without one).
    #[error("this node cannot push (no push sink)")]
    NoSink,
    /// The sink is closed (the node is shutting down).
    #[error("push sink closed")]
    Closed,
}

/// Where a node's pushes go: implemented by `verse-transport`'s `PushHub`.
///
/// Both methods must return at once (they are called from turns).
pub trait PushSink: Send + Sync + 'static {
    /// Queues `message` for `gateway`. `live` tells whether the gateway is a live member of
    /// the cluster view: a sink should buffer briefly (bounded) for a live gateway whose
    /// stream is not open yet, and refuse ([`PushError::UnknownGateway`]) otherwise.
    fn push(&self, gateway: &str, message: PushMessage, live: bool) -> Result<(), PushError>;

    /// Queues `message` (with an empty client id) for every gateway with an open stream;
    /// returns how many accepted it.
    fn broadcast(&self, message: PushMessage) -> usize;
}

/// The gateway part of a client id (`<gateway-id>/<session>`).
pub fn gateway_of(client_id: &str) -> Result<&str, PushError> {
    match client_id.split_once('/') {
        Some((gateway, session)) if !gateway.is_empty() && !session.is_empty() => Ok(gateway),
        _ => Err(PushError::InvalidClientId),
    }
}

/// A shortened client id for logs: the gateway and the first 4 characters of the session.
pub fn redact_client_id(client_id: &str) -> String {
    match client_id.split_once('/') {
        Some((gateway, session)) => {
            let prefix: String = session.chars().take(4).collect();
            format!("{gateway}/{prefix}…")
        }
        None => "<invalid>".to_owned(),
    }
}

/// Counts one push outcome in `verse_push_total{outcome}`.
pub(crate) fn count(outcome: &Result<(), PushError>) {
    let label = match outcome {
        Ok(()) => "queued",
        Err(PushError::InvalidClientId) => "invalid_client_id",
        Err(PushError::UnknownGateway(_)) => "unknown_gateway",
        Err(PushError::Full(_)) => "full",
        Err(PushError::NoSink) => "no_sink",
        Err(PushError::Closed) => "closed",
    };
    metrics::counter!("verse_push_total", "outcome" => label).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_name_their_gateway() {
        assert_eq!(gateway_of("gw-1/abcdef"), Ok("gw-1"));
        assert_eq!(gateway_of("gw-1/a/b"), Ok("gw-1"));
        assert_eq!(gateway_of("gw-1"), Err(PushError::InvalidClientId));
        assert_eq!(gateway_of("/abc"), Err(PushError::InvalidClientId));
        assert_eq!(gateway_of("gw/"), Err(PushError::InvalidClientId));
        assert_eq!(redact_client_id("gw/0123456789"), "gw/0123…");
        assert_eq!(redact_client_id("nothing"), "<invalid>");
    }
}
