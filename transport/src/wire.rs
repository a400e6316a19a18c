//! Conversions between the node protocol's messages and the core's types.

use std::time::Duration;

use verse_core::{CallError, CallerIdentity, EncodedMessage, IncomingCall};

use crate::proto;

/// The protocol's payload for an encoded message (the bytes are shared, not copied).
pub(crate) fn payload_to(message: EncodedMessage) -> proto::Payload {
    proto::Payload { type_url: message.type_url, value: message.value }
}

/// The encoded message a payload carries (an absent payload is the empty message).
pub(crate) fn payload_from(payload: Option<proto::Payload>) -> EncodedMessage {
    payload.map(|p| EncodedMessage { type_url: p.type_url, value: p.value }).unwrap_or_default()
}

pub(crate) fn identity_to(identity: CallerIdentity) -> proto::CallerIdentity {
    proto::CallerIdentity {
        client_id: identity.client_id,
        principal: identity.principal,
        roles: identity.roles,
    }
}

pub(crate) fn identity_from(identity: proto::CallerIdentity) -> CallerIdentity {
    CallerIdentity {
        client_id: identity.client_id,
        principal: identity.principal,
        roles: identity.roles,
    }
}

/// Remaining time in whole microseconds, rounded up so a positive remainder never becomes 0.
pub(crate) fn micros(remaining: Duration) -> u64 {
    let micros = remaining.as_nanos().div_ceil(1000);
    u64::try_from(micros).unwrap_or(u64::MAX)
}

/// A received call request as the node serves it.
pub(crate) fn incoming_call(request: proto::CallRequest) -> Result<IncomingCall, CallError> {
    if request.object_type.is_empty() || request.method.is_empty() {
        return Err(CallError::InvalidArgument {
            message: "a call names an object type and a method".into(),
        });
    }
    Ok(IncomingCall {
        object_type: request.object_type,
        id: request.object_id,
        method: request.method,
        request: payload_from(request.request),
        remaining: Duration::from_micros(request.remaining_micros),
        chain: request.chain.into_iter().map(|link| (link.object_id, link.shard)).collect(),
        identity: request.identity.map(identity_from),
        one_way: request.one_way,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_time_rounds_up_to_a_microsecond() {
        assert_eq!(micros(Duration::from_nanos(1)), 1);
        assert_eq!(micros(Duration::from_millis(50)), 50_000);
        assert_eq!(micros(Duration::ZERO), 0);
    }
}
