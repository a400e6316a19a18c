//! Verse's JSON route, `POST /v1/objects/{type}/{id}/{method}` (`docs/PROTOCOL.md`, "JSON
//! transcoding"): the request body is the method's request message in protobuf JSON (empty:
//! the empty message), the answer its response message in protobuf JSON, through the method
//! tables and descriptors learnt from nodes ([`crate::transcode`]).
//!
//! It takes the call route's path ([`super::admit`]: serving, path, identity, authorization)
//! and its routing and error table ([`super::route_call`], [`super::call_error`]); it adds
//! only the type lookup and the transcoding, whose errors map to the existing codes: an
//! unknown type or method, or a method whose messages the type does not register, is 404
//! `OBJECT_NOT_FOUND`; JSON that is malformed or does not fit the request message is 400
//! `INVALID_JSON`; descriptors or a response that do not decode are 500 `CALL_FAILED`. The
//! learnt `idempotent` flag lets the router resend idempotent methods after an unknown
//! outcome (the retry rule).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{HttpError, Operation, admit, call_error, read_body, route_call};
use crate::GatewayShared;
use crate::transcode::TranscodeError;

/// The one table from a transcoding failure to an HTTP error (module docs).
fn transcode_error(error: &TranscodeError) -> HttpError {
    let message = error.to_string();
    match error {
        TranscodeError::UnknownMethod { .. }
        | TranscodeError::NoDescriptors { .. }
        | TranscodeError::MissingMessage { .. } => {
            HttpError::new(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", message)
        }
        TranscodeError::InvalidJson { .. } => {
            HttpError::new(StatusCode::BAD_REQUEST, "INVALID_JSON", message)
        }
        TranscodeError::InvalidDescriptors { .. } | TranscodeError::InvalidResponse { .. } => {
            HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "CALL_FAILED", message)
        }
    }
}

pub(super) async fn call(
    State(shared): State<Arc<GatewayShared>>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let admitted = admit(&shared, path, &headers)?;
    let body = read_body(body)?;
    let deadline = shared.clock.now() + shared.config.default_deadline;
    let schema = shared
        .describe(&admitted.object_type, deadline)
        .await
        .map_err(|e| call_error(Operation::Call, &e))?;
    let method = schema.method(&admitted.method).map_err(|e| transcode_error(&e))?;
    let request = schema.request_from_json(method, &body).map_err(|e| transcode_error(&e))?;
    let idempotent = method.idempotent;
    let response = route_call(&shared, admitted, request, deadline, idempotent).await?;
    let json = schema.response_to_json(&response).map_err(|e| transcode_error(&e))?;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], json).into_response())
}
