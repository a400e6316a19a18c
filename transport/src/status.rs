//! The one table mapping [`CallError`] to gRPC [`Status`] and back, and the client side of the
//! retry rule (invariant 8).
//!
//! On the wire a `CallError` is a status code chosen by [`code_of`] plus, in the status details
//! (`grpc-status-details-bin`), a `google.rpc.Status`-shaped [`proto::RpcStatus`] holding one
//! [`proto::ErrorDetail`] with the variant and all its fields, so the error crosses losslessly,
//! and a `provably_not_started` flag that foreign clients can read without knowing the variants.
//!
//! | `CallError` | code | provably not started |
//! |---|---|---|
//! | `NotServed`, `Overloaded`, `NotDelivered` | `UNAVAILABLE` | yes |
//! | `ShuttingDown` | `UNAVAILABLE` | no (see below) |
//! | `NodeNotFound`, `ShardPinnedToAbsentNode` | `UNAVAILABLE` | no |
//! | `DeadlineExceeded` | `DEADLINE_EXCEEDED` | no |
//! | `UnknownType`, `UnknownMethod`, `ObjectNotFound` | `NOT_FOUND` | no |
//! | `InvalidArgument`, `InvalidObjectId` | `INVALID_ARGUMENT` | no |
//! | `TypeMismatch`, `Cycle`, `ChainTooDeep` | `FAILED_PRECONDITION` | no |
//! | `Method { code, message }` | `UNKNOWN` | no |
//! | `OutcomeUnknown` | `UNKNOWN` | no |
//! | `ActivationFailed` | `INTERNAL` | no |
//! | `Store`: fenced or stale version / unavailable / corrupt | `ABORTED` / `UNAVAILABLE` / `DATA_LOSS` | no |
//!
//! `ShuttingDown` is not marked: the core returns it both before admission and for calls whose
//! activation was stopping, and the two cannot be told apart from the error alone; a node that
//! refuses a call before admitting it answers `NotServed` instead.
//!
//! A status *without* our detail (the request failed in the transport, or a foreign server
//! answered) is classified by [`classify`]: the call provably did not start only when the
//! connection could not be established (tonic's `ConnectError`), the server refused the stream
//! (HTTP/2 `RST_STREAM` with `REFUSED_STREAM`), a graceful GOAWAY came with a last-stream-id
//! below the call's stream (h2 fails exactly those streams with a remote `NO_ERROR` GOAWAY
//! error), or hyper canceled the request while it still waited in the connection's dispatch
//! queue (`hyper::Error::is_canceled`: its HTTP/2 client produces it only for requests it never
//! handed to h2 — the connection closed first, or was not ready). Anything else after the request left is `OutcomeUnknown`, or `DeadlineExceeded` when
//! the caller's deadline has passed (not retried either).

use std::error::Error as StdError;

use bytes::Bytes;
use prost::{Message, Name};
use tonic::{Code, Status};
use verse_core::shard::InvalidObjectId;
use verse_core::{CallError, Epoch, FenceKey, ShardId, StoreError};

use crate::proto;
use crate::proto::error_detail as detail;

/// The gRPC code a [`CallError`] travels with.
pub fn code_of(error: &CallError) -> Code {
    match error {
        CallError::NotServed { .. }
        | CallError::Overloaded { .. }
        | CallError::NotDelivered { .. }
        | CallError::ShuttingDown
        | CallError::NodeNotFound { .. }
        | CallError::ShardPinnedToAbsentNode { .. } => Code::Unavailable,
        CallError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
        CallError::UnknownType { .. }
        | CallError::UnknownMethod { .. }
        | CallError::ObjectNotFound { .. } => Code::NotFound,
        CallError::InvalidArgument { .. } | CallError::InvalidObjectId(_) => Code::InvalidArgument,
        CallError::TypeMismatch { .. }
        | CallError::Cycle { .. }
        | CallError::ChainTooDeep { .. } => Code::FailedPrecondition,
        CallError::Method { .. } | CallError::OutcomeUnknown { .. } => Code::Unknown,
        CallError::ActivationFailed { .. } => Code::Internal,
        CallError::Store { source, .. } => match source {
            StoreError::Fenced { .. } | StoreError::StaleVersion { .. } => Code::Aborted,
            StoreError::Unavailable(_) => Code::Unavailable,
            StoreError::Corrupt(_) => Code::DataLoss,
        },
        // A variant this table does not know yet: the outcome is unknown to the caller.
        _ => Code::Unknown,
    }
}

/// The gRPC status a node answers with for `error`.
pub fn to_status(error: &CallError) -> Status {
    let detail = to_detail(error);
    let rpc = proto::RpcStatus {
        code: code_of(error) as i32,
        message: error.to_string(),
        details: vec![proto::Payload {
            type_url: proto::ErrorDetail::type_url(),
            value: Bytes::from(detail.encode_to_vec()),
        }],
    };
    Status::with_details(code_of(error), error.to_string(), Bytes::from(rpc.encode_to_vec()))
}

/// The typed error carried in `status`'s details, if it has one (a status a Verse node sent).
pub fn from_status(status: &Status) -> Option<CallError> {
    detail_of(status).map(from_detail)
}

/// Where a failed call was going, for [`classify`].
#[derive(Debug, Clone, Copy)]
pub struct CallSite<'a> {
    /// The peer's address.
    pub peer: &'a str,
    /// The object id called.
    pub id: &'a str,
    /// Whether the caller's deadline has passed.
    pub deadline_passed: bool,
}

/// The client side of the table: the typed error if the callee sent one, else the retry
/// rule's classification of a transport failure (see the module docs).
pub fn classify(status: &Status, site: CallSite<'_>) -> CallError {
    if let Some(error) = from_status(status) {
        return error;
    }
    if let Some(reason) = not_started_reason(status) {
        return CallError::NotDelivered { peer: site.peer.to_owned(), reason };
    }
    if site.deadline_passed {
        return CallError::DeadlineExceeded { id: site.id.to_owned() };
    }
    CallError::OutcomeUnknown {
        id: site.id.to_owned(),
        reason: format!("{} from {}: {}", code_name(status.code()), site.peer, status.message()),
    }
}

/// Why the transport proves the call did not start, if it does: the status's error sources
/// hold a connect error, a remote `REFUSED_STREAM` reset, or a remote graceful GOAWAY.
fn not_started_reason(status: &Status) -> Option<String> {
    let mut source: Option<&(dyn StdError + 'static)> = StdError::source(status);
    while let Some(error) = source {
        if let Some(connect) = error.downcast_ref::<tonic::ConnectError>() {
            return Some(format!("connection could not be established: {connect}"));
        }
        // hyper's HTTP/2 client fails a request as `canceled` only while it still waits in the
        // connection's dispatch queue (the connection closed or was not ready): never sent.
        if let Some(hyper) = error.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            return Some("the connection closed before the request was sent".into());
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            if h2.is_remote() && h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Some("the peer refused the stream (REFUSED_STREAM)".into());
            }
            if h2.is_remote() && h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR) {
                return Some("the peer sent GOAWAY below this call's stream".into());
            }
            return None;
        }
        source = error.source();
    }
    None
}

fn code_name(code: Code) -> String {
    format!("{code:?}")
}

fn detail_of(status: &Status) -> Option<proto::ErrorDetail> {
    if status.details().is_empty() {
        return None;
    }
    let rpc = proto::RpcStatus::decode(status.details()).ok()?;
    let wanted = proto::ErrorDetail::full_name();
    rpc.details
        .iter()
        .find(|d| d.type_url.rsplit('/').next() == Some(wanted.as_str()))
        .and_then(|d| proto::ErrorDetail::decode(d.value.clone()).ok())
}

fn epoch_to(epoch: Epoch) -> proto::Epoch {
    proto::Epoch { generation: epoch.generation, counter: epoch.counter }
}

fn epoch_from(epoch: Option<proto::Epoch>) -> Epoch {
    epoch.map_or(Epoch::ZERO, |e| Epoch::new(e.generation, e.counter))
}

fn fence_to(key: &FenceKey) -> proto::FenceKey {
    let key = match key {
        FenceKey::Shard(shard) => proto::fence_key::Key::Shard(shard.0),
        FenceKey::Node(node) => proto::fence_key::Key::Node(node.clone()),
    };
    proto::FenceKey { key: Some(key) }
}

fn fence_from(key: Option<proto::FenceKey>) -> FenceKey {
    match key.and_then(|k| k.key) {
        Some(proto::fence_key::Key::Node(node)) => FenceKey::Node(node),
        Some(proto::fence_key::Key::Shard(shard)) => FenceKey::Shard(ShardId(shard)),
        None => FenceKey::Shard(ShardId(0)),
    }
}

/// The detail message for `error`.
pub fn to_detail(error: &CallError) -> proto::ErrorDetail {
    use detail::Error as E;
    let variant = match error.clone() {
        CallError::Method { code, message } => E::Method(detail::MethodError { code, message }),
        CallError::UnknownType { object_type } => {
            E::UnknownType(detail::UnknownType { object_type })
        }
        CallError::UnknownMethod { object_type, method } => {
            E::UnknownMethod(detail::UnknownMethod { object_type, method })
        }
        CallError::TypeMismatch { id, actual } => {
            E::TypeMismatch(detail::TypeMismatch { id, actual })
        }
        CallError::ObjectNotFound { object_type, id } => {
            E::ObjectNotFound(detail::ObjectNotFound { object_type, id })
        }
        CallError::InvalidObjectId(invalid) => {
            use detail::invalid_object_id::{self as inv, Reason};
            let reason = match invalid {
                InvalidObjectId::Empty => Reason::Empty(inv::Empty {}),
                InvalidObjectId::BadShard { id, shard_count } => {
                    Reason::BadShard(inv::BadShard { id, shard_count })
                }
                InvalidObjectId::EmptyPart { id } => Reason::EmptyPart(inv::EmptyPart { id }),
            };
            E::InvalidObjectId(detail::InvalidObjectId { reason: Some(reason) })
        }
        CallError::InvalidArgument { message } => {
            E::InvalidArgument(detail::InvalidArgument { message })
        }
        CallError::NodeNotFound { node } => E::NodeNotFound(detail::NodeNotFound { node }),
        CallError::ShardPinnedToAbsentNode { shard, node } => {
            E::ShardPinnedToAbsentNode(detail::ShardPinnedToAbsentNode { shard, node })
        }
        CallError::NotServed { shard, epoch, hint } => {
            E::NotServed(detail::NotServed { shard, epoch: epoch.map(epoch_to), hint })
        }
        CallError::Overloaded { id } => E::Overloaded(detail::Overloaded { id }),
        CallError::DeadlineExceeded { id } => E::DeadlineExceeded(detail::DeadlineExceeded { id }),
        CallError::Cycle { chain } => E::Cycle(detail::Cycle { chain }),
        CallError::ChainTooDeep { limit } => {
            E::ChainTooDeep(detail::ChainTooDeep { limit: limit as u64 })
        }
        CallError::OutcomeUnknown { id, reason } => {
            E::OutcomeUnknown(detail::OutcomeUnknown { id, reason })
        }
        CallError::ActivationFailed { id, message } => {
            E::ActivationFailed(detail::ActivationFailed { id, message })
        }
        CallError::Store { id, source } => {
            use detail::store_error::{self as st, Kind};
            let kind = match source {
                StoreError::Fenced { key, attempted, current } => Kind::Fenced(st::Fenced {
                    key: Some(fence_to(&key)),
                    attempted: Some(epoch_to(attempted)),
                    current: Some(epoch_to(current)),
                }),
                StoreError::StaleVersion { object_id, attempted, stored } => {
                    Kind::StaleVersion(st::StaleVersion { object_id, attempted, stored })
                }
                StoreError::Unavailable(message) => Kind::Unavailable(message),
                StoreError::Corrupt(message) => Kind::Corrupt(message),
            };
            E::Store(detail::StoreError { id, kind: Some(kind) })
        }
        CallError::ShuttingDown => E::ShuttingDown(detail::ShuttingDown {}),
        CallError::NotDelivered { peer, reason } => {
            E::NotDelivered(detail::NotDelivered { peer, reason })
        }
        other => E::OutcomeUnknown(detail::OutcomeUnknown {
            id: String::new(),
            reason: other.to_string(),
        }),
    };
    proto::ErrorDetail { provably_not_started: error.provably_not_started(), error: Some(variant) }
}

/// The error a detail message describes. A detail without a variant (from a newer peer) is an
/// unknown outcome, unless it says the call provably did not start.
pub fn from_detail(detail: proto::ErrorDetail) -> CallError {
    use detail::Error as E;
    let Some(variant) = detail.error else {
        let reason = "the peer sent an error this node does not know".to_owned();
        return if detail.provably_not_started {
            CallError::NotDelivered { peer: String::new(), reason }
        } else {
            CallError::OutcomeUnknown { id: String::new(), reason }
        };
    };
    match variant {
        E::Method(m) => CallError::Method { code: m.code, message: m.message },
        E::UnknownType(m) => CallError::UnknownType { object_type: m.object_type },
        E::UnknownMethod(m) => {
            CallError::UnknownMethod { object_type: m.object_type, method: m.method }
        }
        E::TypeMismatch(m) => CallError::TypeMismatch { id: m.id, actual: m.actual },
        E::ObjectNotFound(m) => CallError::ObjectNotFound { object_type: m.object_type, id: m.id },
        E::InvalidObjectId(m) => {
            use detail::invalid_object_id::Reason;
            CallError::InvalidObjectId(match m.reason {
                Some(Reason::BadShard(b)) => {
                    InvalidObjectId::BadShard { id: b.id, shard_count: b.shard_count }
                }
                Some(Reason::EmptyPart(e)) => InvalidObjectId::EmptyPart { id: e.id },
                Some(Reason::Empty(_)) | None => InvalidObjectId::Empty,
            })
        }
        E::InvalidArgument(m) => CallError::InvalidArgument { message: m.message },
        E::NodeNotFound(m) => CallError::NodeNotFound { node: m.node },
        E::ShardPinnedToAbsentNode(m) => {
            CallError::ShardPinnedToAbsentNode { shard: m.shard, node: m.node }
        }
        E::NotServed(m) => CallError::NotServed {
            shard: m.shard,
            epoch: m.epoch.map(|e| Epoch::new(e.generation, e.counter)),
            hint: m.hint,
        },
        E::Overloaded(m) => CallError::Overloaded { id: m.id },
        E::DeadlineExceeded(m) => CallError::DeadlineExceeded { id: m.id },
        E::Cycle(m) => CallError::Cycle { chain: m.chain },
        E::ChainTooDeep(m) => {
            CallError::ChainTooDeep { limit: usize::try_from(m.limit).unwrap_or(usize::MAX) }
        }
        E::OutcomeUnknown(m) => CallError::OutcomeUnknown { id: m.id, reason: m.reason },
        E::ActivationFailed(m) => CallError::ActivationFailed { id: m.id, message: m.message },
        E::Store(m) => {
            use detail::store_error::Kind;
            let source = match m.kind {
                Some(Kind::Fenced(f)) => StoreError::Fenced {
                    key: fence_from(f.key),
                    attempted: epoch_from(f.attempted),
                    current: epoch_from(f.current),
                },
                Some(Kind::StaleVersion(s)) => StoreError::StaleVersion {
                    object_id: s.object_id,
                    attempted: s.attempted,
                    stored: s.stored,
                },
                Some(Kind::Unavailable(message)) => StoreError::Unavailable(message),
                Some(Kind::Corrupt(message)) => StoreError::Corrupt(message),
                None => StoreError::Unavailable("unspecified store error".into()),
            };
            CallError::Store { id: m.id, source }
        }
        E::ShuttingDown(_) => CallError::ShuttingDown,
        E::NotDelivered(m) => CallError::NotDelivered { peer: m.peer, reason: m.reason },
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9/#ü -]{0,12}"
    }

    fn epoch() -> impl Strategy<Value = Epoch> {
        (any::<u64>(), any::<u64>()).prop_map(|(g, c)| Epoch::new(g, c))
    }

    fn fence_key() -> impl Strategy<Value = FenceKey> {
        prop_oneof![
            any::<u32>().prop_map(|s| FenceKey::Shard(ShardId(s))),
            text().prop_map(FenceKey::Node)
        ]
    }

    fn store_error() -> impl Strategy<Value = StoreError> {
        prop_oneof![
            (fence_key(), epoch(), epoch()).prop_map(|(key, attempted, current)| {
                StoreError::Fenced { key, attempted, current }
            }),
            (text(), any::<u64>(), any::<u64>()).prop_map(|(object_id, attempted, stored)| {
                StoreError::StaleVersion { object_id, attempted, stored }
            }),
            text().prop_map(StoreError::Unavailable),
            text().prop_map(StoreError::Corrupt),
        ]
    }

    fn invalid_id() -> impl Strategy<Value = InvalidObjectId> {
        prop_oneof![
            Just(InvalidObjectId::Empty),
            (text(), any::<u32>())
                .prop_map(|(id, shard_count)| InvalidObjectId::BadShard { id, shard_count }),
            text().prop_map(|id| InvalidObjectId::EmptyPart { id }),
        ]
    }

    fn call_error() -> impl Strategy<Value = CallError> {
        prop_oneof![
            (any::<i32>(), text()).prop_map(|(code, message)| CallError::Method { code, message }),
            text().prop_map(|object_type| CallError::UnknownType { object_type }),
            (text(), text())
                .prop_map(|(object_type, method)| CallError::UnknownMethod { object_type, method }),
            (text(), text()).prop_map(|(id, actual)| CallError::TypeMismatch { id, actual }),
            (text(), text())
                .prop_map(|(object_type, id)| CallError::ObjectNotFound { object_type, id }),
            invalid_id().prop_map(CallError::InvalidObjectId),
            text().prop_map(|message| CallError::InvalidArgument { message }),
            text().prop_map(|node| CallError::NodeNotFound { node }),
            (any::<u32>(), text())
                .prop_map(|(shard, node)| CallError::ShardPinnedToAbsentNode { shard, node }),
            (any::<u32>(), proptest::option::of(epoch()), proptest::option::of(text()))
                .prop_map(|(shard, epoch, hint)| CallError::NotServed { shard, epoch, hint }),
            text().prop_map(|id| CallError::Overloaded { id }),
            text().prop_map(|id| CallError::DeadlineExceeded { id }),
            proptest::collection::vec(text(), 0..5).prop_map(|chain| CallError::Cycle { chain }),
            any::<u32>().prop_map(|limit| CallError::ChainTooDeep { limit: limit as usize }),
            (text(), text()).prop_map(|(id, reason)| CallError::OutcomeUnknown { id, reason }),
            (text(), text()).prop_map(|(id, message)| CallError::ActivationFailed { id, message }),
            (text(), store_error()).prop_map(|(id, source)| CallError::Store { id, source }),
            Just(CallError::ShuttingDown),
            (text(), text()).prop_map(|(peer, reason)| CallError::NotDelivered { peer, reason }),
        ]
    }

    proptest! {
        #[test]
        fn every_variant_crosses_the_wire_unchanged(error in call_error()) {
            let status = to_status(&error);
            prop_assert_eq!(status.code(), code_of(&error));
            // Through the encoded header form, as a peer receives it.
            let mut headers = tonic::codegen::http::HeaderMap::new();
            status.add_header(&mut headers).expect("headers");
            let received = Status::from_header_map(&headers).expect("a status in the headers");
            let site = CallSite { peer: "peer", id: "id", deadline_passed: false };
            let back = classify(&received, site);
            prop_assert_eq!(&back, &error);
            prop_assert_eq!(back.provably_not_started(), error.provably_not_started());
            let detail = detail_of(&received).expect("detail");
            prop_assert_eq!(detail.provably_not_started, error.provably_not_started());
        }
    }

    #[test]
    fn codes_follow_the_table() {
        let not_served = CallError::NotServed { shard: 1, epoch: None, hint: None };
        assert_eq!(code_of(&not_served), Code::Unavailable);
        assert!(to_detail(&not_served).provably_not_started);
        let overloaded = CallError::Overloaded { id: "a".into() };
        assert_eq!(code_of(&overloaded), Code::Unavailable);
        assert!(to_detail(&overloaded).provably_not_started);
        assert_eq!(code_of(&CallError::ShuttingDown), Code::Unavailable);
        assert!(!to_detail(&CallError::ShuttingDown).provably_not_started);
        let deadline = CallError::DeadlineExceeded { id: "a".into() };
        assert_eq!(code_of(&deadline), Code::DeadlineExceeded);
        let method = CallError::Method { code: 3, message: "no".into() };
        assert_eq!(code_of(&method), Code::Unknown);
        let unknown = CallError::UnknownMethod { object_type: "T".into(), method: "M".into() };
        assert_eq!(code_of(&unknown), Code::NotFound);
        let mismatch = CallError::TypeMismatch { id: "a".into(), actual: "T".into() };
        assert_eq!(code_of(&mismatch), Code::FailedPrecondition);
        let cycle = CallError::Cycle { chain: vec!["a".into(), "a".into()] };
        assert_eq!(code_of(&cycle), Code::FailedPrecondition);
        let invalid = CallError::InvalidArgument { message: "x".into() };
        assert_eq!(code_of(&invalid), Code::InvalidArgument);
    }

    #[test]
    fn a_status_without_detail_is_an_unknown_outcome() {
        let site = CallSite { peer: "p", id: "obj", deadline_passed: false };
        for status in [
            Status::unavailable("connection reset"),
            Status::cancelled("timeout"),
            Status::internal("h2 protocol error"),
            Status::unknown("?"),
        ] {
            let error = classify(&status, site);
            assert!(matches!(error, CallError::OutcomeUnknown { .. }), "{error:?}");
            assert!(!error.provably_not_started());
        }
        let late = CallSite { deadline_passed: true, ..site };
        let error = classify(&Status::cancelled("timeout"), late);
        assert_eq!(error, CallError::DeadlineExceeded { id: "obj".into() });
    }

    #[tokio::test]
    async fn a_request_hyper_canceled_before_it_was_sent_did_not_start() {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let (client_io, _server_io) = tokio::io::duplex(1024);
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client_io))
                .await
                .expect("an HTTP/2 client over a pipe");
        // The connection task is gone before the request is dispatched: hyper cancels it.
        drop(connection);
        let request = tonic::codegen::http::Request::new(tonic::body::Body::empty());
        let error = sender.send_request(request).await.expect_err("no connection");
        assert!(error.is_canceled(), "{error:?}");
        let status = Status::from_error(Box::new(error));
        let site = CallSite { peer: "p", id: "obj", deadline_passed: false };
        let classified = classify(&status, site);
        assert!(matches!(classified, CallError::NotDelivered { .. }), "{classified:?}");
        assert!(classified.provably_not_started());
    }

    #[test]
    fn transport_proofs_of_not_started_are_read_from_the_sources() {
        let site = CallSite { peer: "p", id: "obj", deadline_passed: false };
        let connect = tonic::ConnectError(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        let status = Status::from_error(Box::new(connect));
        let error = classify(&status, site);
        assert!(matches!(error, CallError::NotDelivered { .. }), "{error:?}");

        let mut refused = Status::unavailable("refused");
        refused.set_source(std::sync::Arc::new(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        // A locally made reason is not a remote reset: not proof.
        assert!(matches!(classify(&refused, site), CallError::OutcomeUnknown { .. }));
    }
}
