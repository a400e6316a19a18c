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
}
