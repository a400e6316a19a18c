//! GoVerse's HTTP routes (`client-protocol.md`, "HTTP"): call, create and delete with JSON
//! bodies and base64 `Any`s, the error JSON and its codes (no new ones), CORS on every route
//! (`OPTIONS` → 204), HTTP identity (`X-Client-ID` proven by possession, `Authorization` and
//! `X-Goverse-Auth` for the hook), and the server-sent event stream with `id:` lines and
//! `Last-Event-ID` resume. Verse's JSON route (`POST /v1/objects/{type}/{id}/{method}`,
//! [`json`]) shares the call route's identity, authorization, routing and error table.
//!
//! SSE event ids are `<client id>:<seq>`: a reconnect presenting `Last-Event-ID` (browsers'
//! `EventSource` does it by itself) within the session grace resumes the session (the
//! `register` event carries the same client id) and replays the pushes after `seq`.

mod json;
mod ws;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::{Stream, StreamExt};
use prost::Message;
use prost_types::Any;
use verse_core::cluster::RoutedCall;
use verse_core::{CallError, CallerIdentity, EncodedMessage, MonoTime};

use crate::GatewayShared;
use crate::grpc::session_items;
use crate::session::{ConnectionId, Credentials, Principal, ResumeError};

/// One HTTP error: status, message and GoVerse code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// HTTP status.
    pub status: StatusCode,
    /// GoVerse's error code (`INVALID_JSON`, `CALL_FAILED`, …).
    pub code: &'static str,
    /// Short, lowercase message.
    pub message: String,
}

impl HttpError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        HttpError { status, code, message: message.into() }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "code": self.code });
        json_response(self.status, &body)
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Which operation failed (its fallback code).
#[derive(Debug, Clone, Copy)]
enum Operation {
    Call,
    Create,
    Delete,
}

/// The one table from a routed failure to an HTTP error.
fn call_error(operation: Operation, error: &CallError) -> HttpError {
    let failed = match operation {
        Operation::Call => "CALL_FAILED",
        Operation::Create => "CREATE_FAILED",
        Operation::Delete => "DELETE_FAILED",
    };
    let message = error.to_string();
    match error {
        CallError::UnknownType { .. }
        | CallError::UnknownMethod { .. }
        | CallError::ObjectNotFound { .. } => {
            HttpError::new(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", message)
        }
        CallError::InvalidObjectId(_) | CallError::InvalidArgument { .. } => {
            HttpError::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETERS", message)
        }
        CallError::DeadlineExceeded { .. } => {
            HttpError::new(StatusCode::GATEWAY_TIMEOUT, failed, message)
        }
        CallError::NodeNotFound { .. }
        | CallError::ShardPinnedToAbsentNode { .. }
        | CallError::NotServed { .. }
        | CallError::Overloaded { .. }
        | CallError::NotDelivered { .. }
        | CallError::ShuttingDown => {
            HttpError::new(StatusCode::SERVICE_UNAVAILABLE, failed, message)
        }
        _ => HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, failed, message),
    }
}

/// The gateway's HTTP routes (module docs), with CORS on every response.
pub(crate) fn router(shared: Arc<GatewayShared>) -> Router {
    Router::new()
        .route(
            "/api/v1/objects/call/{type}/{id}/{method}",
            post(call).options(preflight).fallback(method_not_allowed),
        )
        .route(
            "/api/v1/objects/create/{type}/{id}",
            post(create).options(preflight).fallback(method_not_allowed),
        )
        .route(
            "/api/v1/objects/delete/{type}/{id}",
            post(delete).options(preflight).fallback(method_not_allowed),
        )
        .route(
            "/v1/objects/{type}/{id}/{method}",
            post(json::call).options(preflight).fallback(method_not_allowed),
        )
        .route("/api/v1/events/stream", get(events).options(preflight).fallback(method_not_allowed))
        .route("/v1/ws", get(ws::upgrade).options(preflight).fallback(method_not_allowed))
        .fallback(invalid_path)
        .layer(axum::extract::DefaultBodyLimit::max(shared.config.http_body_limit))
        .layer(axum::middleware::map_response(cors))
        .with_state(shared)
}

async fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, X-Client-ID, Authorization, X-Goverse-Auth"),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    response
}

async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn method_not_allowed(method: Method) -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("method {method} not allowed"),
    )
}

async fn invalid_path(method: Method, uri: axum::http::Uri) -> Response {
    if method == Method::OPTIONS {
        return StatusCode::NO_CONTENT.into_response();
    }
    if uri.path().starts_with("/api/") || uri.path().starts_with("/v1/objects/") {
        return HttpError::new(StatusCode::BAD_REQUEST, "INVALID_PATH", "invalid path")
            .into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

/// Authenticates a request's `Authorization` and `X-Goverse-Auth` headers with the hook.
fn principal(shared: &GatewayShared, headers: &HeaderMap) -> Result<Principal, HttpError> {
    let unauthenticated =
        |message: String| HttpError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message);
    let mut credentials = Credentials::default();
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value =
            value.to_str().map_err(|_| unauthenticated("malformed authorization".into()))?;
        credentials.headers.insert("authorization".into(), value.to_owned());
    }
    if let Some(value) = headers.get("x-goverse-auth") {
        let text =
            value.to_str().map_err(|_| unauthenticated("malformed x-goverse-auth".into()))?;
        // GoVerse's per-request credentials: a JSON object of string keys and values.
        let parsed: serde_json::Value = serde_json::from_str(text)
            .map_err(|_| unauthenticated("malformed x-goverse-auth".into()))?;
        let object =
            parsed.as_object().ok_or_else(|| unauthenticated("malformed x-goverse-auth".into()))?;
        if !object.values().all(serde_json::Value::is_string) {
            return Err(unauthenticated("malformed x-goverse-auth".into()));
        }
        credentials.headers.insert("x-goverse-auth".into(), text.to_owned());
    }
    shared.auth.authenticate(&credentials).map_err(unauthenticated)
}

/// The caller of an HTTP call: `X-Client-ID` proven by possession (module docs).
fn identity(shared: &GatewayShared, headers: &HeaderMap) -> Result<CallerIdentity, HttpError> {
    let principal = principal(shared, headers)?;
    let anonymous = |principal: Principal| CallerIdentity {
        client_id: None,
        principal: principal.name,
        roles: principal.roles,
    };
    let Some(client_id) =
        headers.get("x-client-id").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty())
    else {
        if shared.config.require_session {
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                "ACCESS_DENIED",
                "a client session is required",
            ));
        }
        return Ok(anonymous(principal));
    };
    match shared.sessions.get(client_id) {
        Some(session) if session.principal() == &principal => Ok(CallerIdentity {
            client_id: Some(session.client_id().to_owned()),
            principal: principal.name,
            roles: principal.roles,
        }),
        Some(_) => Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "ACCESS_DENIED",
            "client id belongs to another principal",
        )),
        None => {
            metrics::counter!("verse_gateway_http_unknown_client_id_total").increment(1);
            if shared.config.require_session {
                return Err(HttpError::new(
                    StatusCode::FORBIDDEN,
                    "ACCESS_DENIED",
                    "a client session is required",
                ));
            }
            Ok(anonymous(principal))
        }
    }
}

fn serving(shared: &GatewayShared, operation: Operation) -> Result<(), HttpError> {
    if shared.stopping.is_cancelled() {
        return Err(call_error(operation, &CallError::ShuttingDown));
    }
    Ok(())
}

/// An empty path segment (`/api/v1/objects/delete//id`): 400 `INVALID_PARAMETERS`.
fn non_empty(operation: &str, segments: &[&str]) -> Result<(), HttpError> {
    if segments.iter().any(|s| s.is_empty()) {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETERS",
            format!(
                "{operation} requires a type and an id{}",
                if segments.len() > 2 { " and a method" } else { "" }
            ),
        ));
    }
    Ok(())
}

fn path_error(rejection: PathRejection) -> HttpError {
    HttpError::new(StatusCode::BAD_REQUEST, "INVALID_PATH", format!("invalid path: {rejection}"))
}

/// The request body (400 `INVALID_BODY` when too large or unreadable).
fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, HttpError> {
    body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            HttpError::new(StatusCode::BAD_REQUEST, "INVALID_BODY", "request body too large")
        }
        e => {
            HttpError::new(StatusCode::BAD_REQUEST, "INVALID_BODY", format!("unreadable body: {e}"))
        }
    })
}

/// Parses `{"request": "<base64 Any>"}`.
fn request_any(body: Result<Bytes, BytesRejection>) -> Result<Any, HttpError> {
    let body = read_body(body)?;
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        HttpError::new(StatusCode::BAD_REQUEST, "INVALID_JSON", format!("invalid json: {e}"))
    })?;
    let encoded = json.get("request").and_then(serde_json::Value::as_str).ok_or_else(|| {
        HttpError::new(StatusCode::BAD_REQUEST, "INVALID_BODY", "body needs a \"request\" string")
    })?;
    decode_any(encoded)
}

/// Decodes the standard base64 of a serialized `Any` with a type URL.
fn decode_any(encoded: &str) -> Result<Any, HttpError> {
    let bytes = STANDARD.decode(encoded).map_err(|e| {
        HttpError::new(StatusCode::BAD_REQUEST, "INVALID_BASE64", format!("invalid base64: {e}"))
    })?;
    let any = Any::decode(bytes.as_slice()).map_err(|e| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_PROTOBUF",
            format!("invalid protobuf any: {e}"),
        )
    })?;
    if any.type_url.is_empty() {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_PROTOBUF",
            "the request any has no type url",
        ));
    }
    Ok(any)
}

/// An admitted call of an HTTP call route: the caller and the target.
struct Admitted {
    identity: CallerIdentity,
    object_type: String,
    id: String,
    method: String,
}

/// The steps every HTTP call route takes before reading its body: serving, the path (three
/// non-empty segments), the caller's identity (`X-Client-ID` by possession, the auth hook)
/// and the hook's authorization of the call.
fn admit(
    shared: &GatewayShared,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: &HeaderMap,
) -> Result<Admitted, HttpError> {
    serving(shared, Operation::Call)?;
    let Path((object_type, id, method)) = path.map_err(path_error)?;
    non_empty("call", &[&object_type, &id, &method])?;
    let identity = identity(shared, headers)?;
    let principal = Principal { name: identity.principal.clone(), roles: identity.roles.clone() };
    shared
        .auth
        .authorize_call(&principal, &object_type, &id, &method)
        .map_err(|message| HttpError::new(StatusCode::FORBIDDEN, "ACCESS_DENIED", message))?;
    Ok(Admitted { identity, object_type, id, method })
}

/// Routes one admitted call until `deadline` (the gateway's default deadline from its
/// arrival); `idempotent` lets the router resend it after an unknown outcome.
async fn route_call(
    shared: &GatewayShared,
    call: Admitted,
    request: EncodedMessage,
    deadline: MonoTime,
    idempotent: bool,
) -> Result<EncodedMessage, HttpError> {
    let call = RoutedCall {
        object_type: call.object_type,
        id: call.id,
        method: call.method,
        request,
        deadline,
        identity: Some(call.identity),
        idempotent,
    };
    shared.router.call(call).await.map_err(|e| call_error(Operation::Call, &e))
}

async fn call(
    State(shared): State<Arc<GatewayShared>>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let admitted = admit(&shared, path, &headers)?;
    let request = request_any(body)?;
    let request = EncodedMessage { type_url: request.type_url, value: request.value.into() };
    let deadline = shared.clock.now() + shared.config.default_deadline;
    let idempotent = shared.idempotent(&admitted.object_type, &admitted.method);
    let response = route_call(&shared, admitted, request, deadline, idempotent).await?;
    let any = Any { type_url: response.type_url, value: response.value.to_vec() };
    let body = serde_json::json!({ "response": STANDARD.encode(any.encode_to_vec()) });
    Ok(json_response(StatusCode::OK, &body))
}

async fn create(
    State(shared): State<Arc<GatewayShared>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    serving(&shared, Operation::Create)?;
    let Path((object_type, id)) = path.map_err(path_error)?;
    non_empty("create", &[&object_type, &id])?;
    principal(&shared, &headers)?;
    let deadline = shared.clock.now() + shared.config.default_deadline;
    shared
        .router
        .create(&object_type, &id, deadline)
        .await
        .map_err(|e| call_error(Operation::Create, &e))?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({ "id": id })))
}

async fn delete(
    State(shared): State<Arc<GatewayShared>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    serving(&shared, Operation::Delete)?;
    let Path((object_type, id)) = path.map_err(path_error)?;
    non_empty("delete", &[&object_type, &id])?;
    principal(&shared, &headers)?;
    let deadline = shared.clock.now() + shared.config.default_deadline;
    shared
        .router
        .delete(&object_type, &id, deadline)
        .await
        .map_err(|e| call_error(Operation::Delete, &e))?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({ "success": true })))
}

async fn events(
    State(shared): State<Arc<GatewayShared>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HttpError> {
    if shared.stopping.is_cancelled() {
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "CALL_FAILED",
            "the gateway is stopping",
        ));
    }
    let principal = principal(&shared, &headers)?;
    let connection = ConnectionId::fresh();
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit_once(':'))
        .and_then(|(id, seq)| Some((id.to_owned(), seq.parse::<u64>().ok()?)));
    let (attachment, after) = match last {
        Some((client_id, seq)) => {
            match shared.sessions.resume(&client_id, &principal, connection) {
                Ok(attachment) => (attachment, seq),
                Err(ResumeError::Unknown) => (shared.sessions.open(principal, connection), 0),
                Err(ResumeError::OtherPrincipal) => {
                    return Err(HttpError::new(
                        StatusCode::FORBIDDEN,
                        "ACCESS_DENIED",
                        "session belongs to another principal",
                    ));
                }
            }
        }
        None => (shared.sessions.open(principal, connection), 0),
    };
    let client_id = attachment.session().client_id().to_owned();
    let register = Event::default()
        .event("register")
        .id(format!("{client_id}:{after}"))
        .data(serde_json::json!({ "clientId": client_id }).to_string());
    let pushes =
        session_items(attachment, after, shared.stopping.clone()).map(move |(seq, item)| {
            let data = serde_json::json!({
                "type": item.type_url,
                "payload": STANDARD.encode(item.encode_to_vec()),
            });
            Ok(Event::default()
                .event("message")
                .id(format!("{client_id}:{seq}"))
                .data(data.to_string()))
        });
    let stream = futures::stream::once(async move { Ok(register) }).chain(pushes);
    let heartbeat = Event::default().event("heartbeat").data("{}");
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(shared.config.heartbeat_interval).event(heartbeat)))
}
