//! The one table between the core's typed errors and the gRPC statuses clients see
//! (`client-protocol.md`: `UNAVAILABLE` when stopping, `PERMISSION_DENIED` for access rules,
//! `NOT_FOUND` for an unknown type or method, `DEADLINE_EXCEEDED`, `INVALID_ARGUMENT` for
//! malformed input). Messages are short, lowercase and name the object; they never contain a
//! client id.

use tonic::{Code, Status};
use verse_core::CallError;

/// A gateway-level refusal (before or beside routing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// The gateway is stopping or not connected to any node.
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
    /// The authentication hook refused.
    #[error("{0}")]
    Unauthenticated(String),
    /// The client id is not bound to this connection (or is required and missing).
    #[error("{0}")]
    PermissionDenied(String),
    /// Malformed input.
    #[error("{0}")]
    InvalidArgument(String),
    /// A call routed to a node failed.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// The status for `error`.
pub fn to_status(error: &GateError) -> Status {
    match error {
        GateError::Unavailable(message) => Status::unavailable(message.clone()),
        GateError::Unauthenticated(message) => Status::unauthenticated(message.clone()),
        GateError::PermissionDenied(message) => Status::permission_denied(message.clone()),
        GateError::InvalidArgument(message) => Status::invalid_argument(message.clone()),
        GateError::Call(error) => Status::new(call_code(error), error.to_string()),
    }
}

/// The gRPC code of a routed call's failure.
pub fn call_code(error: &CallError) -> Code {
    match error {
        // A method's own error keeps its code when it is a gRPC code (the convention).
        CallError::Method { code, .. } => match Code::from_i32(*code) {
            Code::Ok => Code::Unknown,
            code => code,
        },
        CallError::UnknownType { .. }
        | CallError::UnknownMethod { .. }
        | CallError::ObjectNotFound { .. } => Code::NotFound,
        CallError::InvalidObjectId(_) | CallError::InvalidArgument { .. } => Code::InvalidArgument,
        CallError::TypeMismatch { .. }
        | CallError::Cycle { .. }
        | CallError::ChainTooDeep { .. } => Code::FailedPrecondition,
        CallError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
        CallError::NodeNotFound { .. }
        | CallError::ShardPinnedToAbsentNode { .. }
        | CallError::NotServed { .. }
        | CallError::Overloaded { .. }
        | CallError::NotDelivered { .. }
        | CallError::ShuttingDown => Code::Unavailable,
        CallError::OutcomeUnknown { .. } => Code::Unknown,
        CallError::ActivationFailed { .. } | CallError::Store { .. } => Code::Internal,
        // Variants added later: an internal failure until mapped here.
        _ => Code::Internal,
    }
}

/// What a call failure looked like to the client: the call's object type, id and method.
#[derive(Debug, Clone, Copy)]
pub struct CallSite<'a> {
    /// The object type.
    pub object_type: &'a str,
    /// The object id.
    pub id: &'a str,
    /// The method (wire name; empty for create and delete).
    pub method: &'a str,
}

/// The inverse of [`to_status`] for clients (the gateway client of [`crate::client`]): the
/// [`CallError`] a status from `gate.GateService` stands for. Statuses the gateway made from a
/// routed call's error come back as that error (the variant recovered from the code and the
/// message's shape, its fields from `site`); `UNAVAILABLE` from the gateway means the call
/// provably did not start (`NotDelivered`); a status the client's own transport made (the
/// connection broke) and `UNKNOWN` are `OutcomeUnknown`; every other code, a method's own
/// error code included, is `CallError::Method` with that code.
pub fn call_error(status: &Status, site: CallSite<'_>, gateway: &str) -> CallError {
    let message = status.message();
    let id = site.id.to_owned();
    let object_type = site.object_type.to_owned();
    if std::error::Error::source(status).is_some() {
        // Made by tonic on this side: the request may have left.
        return CallError::OutcomeUnknown { id, reason: format!("{gateway}: {message}") };
    }
    match status.code() {
        Code::NotFound if message.starts_with("unknown object type") => {
            CallError::UnknownType { object_type }
        }
        Code::NotFound if message.starts_with("unknown method") => {
            CallError::UnknownMethod { object_type, method: site.method.to_owned() }
        }
        Code::NotFound if message.ends_with("does not exist") => {
            CallError::ObjectNotFound { object_type, id }
        }
        Code::InvalidArgument => CallError::InvalidArgument {
            message: message.strip_prefix("invalid argument: ").unwrap_or(message).to_owned(),
        },
        Code::FailedPrecondition
            if message.starts_with("object ") && message.contains(" is of type ") =>
        {
            let actual = message.rsplit(" is of type ").next().unwrap_or_default();
            CallError::TypeMismatch { id, actual: actual.trim_matches('"').to_owned() }
        }
        Code::DeadlineExceeded => CallError::DeadlineExceeded { id },
        Code::Unavailable => {
            CallError::NotDelivered { peer: gateway.to_owned(), reason: message.to_owned() }
        }
        Code::Unknown => CallError::OutcomeUnknown { id, reason: message.to_owned() },
        code => {
            // A method's error reads `method error: <message> (code <n>)`.
            let inner = message
                .strip_prefix("method error: ")
                .and_then(|rest| rest.rsplit_once(" (code ").map(|(text, _)| text))
                .unwrap_or(message);
            CallError::Method { code: code as i32, message: inner.to_owned() }
        }
    }
}

/// The `ReliableCallObject` outcome name of a failure: `SKIPPED` when the method provably
/// never ran (bad request, unknown type or method, access denied), `FAILED` when it ran and
/// returned an error, `UNKNOWN` otherwise.
pub fn reliable_status(error: &GateError) -> &'static str {
    match error {
        GateError::Call(CallError::Method { .. }) => "FAILED",
        GateError::Call(CallError::OutcomeUnknown { .. } | CallError::DeadlineExceeded { .. }) => {
            "UNKNOWN"
        }
        _ => "SKIPPED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_follows_the_client_protocol() {
        let not_found = GateError::Call(CallError::UnknownType { object_type: "X".into() });
        assert_eq!(to_status(&not_found).code(), Code::NotFound);
        let method = GateError::Call(CallError::UnknownMethod {
            object_type: "Counter".into(),
            method: "Nope".into(),
        });
        assert_eq!(to_status(&method).code(), Code::NotFound);
        let deadline = GateError::Call(CallError::DeadlineExceeded { id: "c".into() });
        assert_eq!(to_status(&deadline).code(), Code::DeadlineExceeded);
        assert_eq!(to_status(&GateError::Unavailable("stopping".into())).code(), Code::Unavailable);
        let bound = GateError::PermissionDenied("client id not bound to this connection".into());
        let status = to_status(&bound);
        assert_eq!(
            (status.code(), status.message()),
            (Code::PermissionDenied, "client id not bound to this connection")
        );
        let failed = GateError::Call(CallError::Method { code: 11, message: "overflow".into() });
        assert_eq!(to_status(&failed).code(), Code::OutOfRange);
        assert_eq!(reliable_status(&failed), "FAILED");
        assert_eq!(reliable_status(&not_found), "SKIPPED");
    }

    #[test]
    fn client_errors_invert_the_table() {
        let site = CallSite { object_type: "Counter", id: "c1", method: "Increment" };
        let round_trip =
            |error: CallError| call_error(&to_status(&GateError::Call(error)), site, "gw");
        for error in [
            CallError::UnknownType { object_type: "Counter".into() },
            CallError::UnknownMethod { object_type: "Counter".into(), method: "Increment".into() },
            CallError::ObjectNotFound { object_type: "Counter".into(), id: "c1".into() },
            CallError::InvalidArgument { message: "cannot decode x".into() },
            CallError::TypeMismatch { id: "c1".into(), actual: "ChatRoom".into() },
            CallError::DeadlineExceeded { id: "c1".into() },
            CallError::Method { code: 11, message: "overflow (really)".into() },
        ] {
            assert_eq!(round_trip(error.clone()), error);
        }
        assert!(matches!(
            round_trip(CallError::Overloaded { id: "c1".into() }),
            CallError::NotDelivered { .. }
        ));
        assert!(matches!(
            round_trip(CallError::OutcomeUnknown { id: "c1".into(), reason: "r".into() }),
            CallError::OutcomeUnknown { .. }
        ));
        let denied = call_error(&Status::permission_denied("no"), site, "gw");
        assert_eq!(
            denied,
            CallError::Method { code: Code::PermissionDenied as i32, message: "no".into() }
        );
    }
}
