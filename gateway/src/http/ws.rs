//! WebSocket calls and pushes on one connection (`GET /v1/ws`), with the event stream's
//! session semantics. Frames are JSON text (`docs/PROTOCOL.md`, "WebSocket"):
//!
//! - the server's first frame is `{"register": {"clientId", "resumeToken", "resumed"}}`;
//! - a client frame `{"call": {"id", "type", "objectId", "method", "request": "<base64 Any>"}}`
//!   is answered by `{"reply": {"id", "response": "<base64 Any>"}}` or
//!   `{"reply": {"id", "error", "code"}}` with GoVerse's HTTP error codes; calls run
//!   concurrently and replies carry the request's `id`;
//! - each push is `{"push": {"seq", "type", "payload": "<base64 of the serialized Any>"}}`;
//! - reconnecting with `?resume=<token>&last_seq=<seq>` within the session grace (same
//!   principal) resumes the session: `register` carries the same client id with `"resumed":
//!   true`, then the pushes after `seq` are replayed. The resume token is the client id (a
//!   secret).
//!
//! The server pings an idle connection every `heartbeat_interval`; frames above
//! `http_body_limit` close the connection.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::Uri;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use prost::Message as _;
use prost_types::Any;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use verse_core::{CallerIdentity, EncodedMessage};

use super::{Admitted, HttpError, Operation, decode_any, principal, route_call, serving};
use crate::GatewayShared;
use crate::grpc::session_items;
use crate::session::{Attachment, ConnectionId, Principal, ResumeError};

fn bad_request(code: &'static str, message: impl Into<String>) -> HttpError {
    HttpError::new(StatusCode::BAD_REQUEST, code, message)
}

/// `GET /v1/ws`: authenticates, opens or resumes the session, then upgrades.
pub(super) async fn upgrade(
    State(shared): State<Arc<GatewayShared>>,
    headers: HeaderMap,
    uri: Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, HttpError> {
    if shared.stopping.is_cancelled() {
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "CALL_FAILED",
            "the gateway is stopping",
        ));
    }
    let upgrade = upgrade
        .map_err(|e| bad_request("INVALID_PARAMETERS", format!("websocket upgrade needed: {e}")))?;
    let query = parse_query(uri.query().unwrap_or_default())?;
    let principal = principal(&shared, &headers)?;
    let last_seq = match query.get("last_seq") {
        Some(seq) => seq
            .parse::<u64>()
            .map_err(|_| bad_request("INVALID_PARAMETERS", "last_seq must be a number"))?,
        None => 0,
    };
    let connection = ConnectionId::fresh();
    let (attachment, after, resumed) = match query.get("resume").filter(|t| !t.is_empty()) {
        Some(token) => match shared.sessions.resume(token, &principal, connection) {
            Ok(attachment) => (attachment, last_seq, true),
            Err(ResumeError::Unknown) => (shared.sessions.open(principal, connection), 0, false),
            Err(ResumeError::OtherPrincipal) => {
                return Err(HttpError::new(
                    StatusCode::FORBIDDEN,
                    "ACCESS_DENIED",
                    "session belongs to another principal",
                ));
            }
        },
        None => (shared.sessions.open(principal, connection), 0, false),
    };
    let limit = shared.config.http_body_limit;
    Ok(upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| serve(shared, socket, attachment, after, resumed)))
}

/// `name=value&…`, percent-decoded (`+` is not a space here: tokens have none).
fn parse_query(query: &str) -> Result<HashMap<String, String>, HttpError> {
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| bad_request("INVALID_PARAMETERS", "invalid query encoding"))
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

/// One parsed `call` frame.
struct CallFrame {
    id: Value,
    object_type: String,
    object_id: String,
    method: String,
    request: prost_types::Any,
}

/// Parses a client frame; an error carries the request id when there was one.
fn parse(text: &str) -> Result<CallFrame, (Value, HttpError)> {
    let frame: Value = serde_json::from_str(text)
        .map_err(|e| (Value::Null, bad_request("INVALID_JSON", format!("invalid json: {e}"))))?;
    let Some(call) = frame.get("call").filter(|c| c.is_object()) else {
        return Err((Value::Null, bad_request("INVALID_BODY", "a frame needs a \"call\" object")));
    };
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let field = |name: &str| {
        call.get(name).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
            (id.clone(), bad_request("INVALID_BODY", format!("a call needs a \"{name}\" string")))
        })
    };
    let (object_type, object_id, method) = (field("type")?, field("objectId")?, field("method")?);
    let encoded = field("request")?;
    if object_type.is_empty() || object_id.is_empty() || method.is_empty() {
        return Err((
            id,
            bad_request("INVALID_PARAMETERS", "a call requires a type, an id and a method"),
        ));
    }
    let request = decode_any(&encoded).map_err(|e| (id.clone(), e))?;
    Ok(CallFrame { id, object_type, object_id, method, request })
}

fn error_reply(id: Value, error: &HttpError) -> Value {
    json!({ "reply": { "id": id, "error": error.message, "code": error.code } })
}

async fn run_call(shared: Arc<GatewayShared>, identity: CallerIdentity, call: CallFrame) -> Value {
    let result = async {
        serving(&shared, Operation::Call)?;
        let principal =
            Principal { name: identity.principal.clone(), roles: identity.roles.clone() };
        shared
            .auth
            .authorize_call(&principal, &call.object_type, &call.object_id, &call.method)
            .map_err(|message| HttpError::new(StatusCode::FORBIDDEN, "ACCESS_DENIED", message))?;
        let admitted = Admitted {
            identity,
            object_type: call.object_type,
            id: call.object_id,
            method: call.method,
        };
        let request =
            EncodedMessage { type_url: call.request.type_url, value: call.request.value.into() };
        let deadline = shared.clock.now() + shared.config.default_deadline;
        let idempotent = shared.idempotent(&admitted.object_type, &admitted.method);
        route_call(&shared, admitted, request, deadline, idempotent).await
    }
    .await;
    match result {
        Ok(response) => {
            let any = Any { type_url: response.type_url, value: response.value.to_vec() };
            json!({ "reply": { "id": call.id, "response": STANDARD.encode(any.encode_to_vec()) } })
        }
        Err(error) => error_reply(call.id, &error),
    }
}

async fn send(socket: &mut WebSocket, frame: &Value) -> bool {
    socket.send(Message::Text(frame.to_string().into())).await.is_ok()
}

/// Serves one upgraded connection until the client leaves, a resume elsewhere replaces this
/// stream, or the gateway stops.
async fn serve(
    shared: Arc<GatewayShared>,
    mut socket: WebSocket,
    attachment: Attachment,
    after: u64,
    resumed: bool,
) {
    let session = attachment.session().clone();
    let client_id = session.client_id().to_owned();
    let identity = CallerIdentity {
        client_id: Some(client_id.clone()),
        principal: session.principal().name.clone(),
        roles: session.principal().roles.clone(),
    };
    let register = json!({
        "register": { "clientId": client_id, "resumeToken": client_id, "resumed": resumed }
    });
    if !send(&mut socket, &register).await {
        return;
    }
    let mut pushes = Box::pin(session_items(attachment, after, shared.stopping.clone()));
    let mut calls = JoinSet::new();
    let mut heartbeat = tokio::time::interval(shared.config.heartbeat_interval);
    heartbeat.reset();
    loop {
        tokio::select! {
            push = pushes.next() => {
                // `None`: a resume elsewhere replaced this stream, or the gateway is stopping.
                let Some((seq, item)) = push else { break };
                let frame = json!({ "push": {
                    "seq": seq,
                    "type": item.type_url,
                    "payload": STANDARD.encode(item.encode_to_vec()),
                }});
                if !send(&mut socket, &frame).await {
                    return;
                }
            }
            Some(done) = calls.join_next(), if !calls.is_empty() => {
                if let Ok(reply) = done
                    && !send(&mut socket, &reply).await
                {
                    return;
                }
            }
            _ = heartbeat.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => match parse(text.as_str()) {
                    Ok(call) => {
                        calls.spawn(run_call(shared.clone(), identity.clone(), call));
                    }
                    Err((id, error)) => {
                        if !send(&mut socket, &error_reply(id, &error)).await {
                            return;
                        }
                    }
                },
                Some(Ok(Message::Binary(_))) => {
                    let error = bad_request("INVALID_JSON", "frames are json text");
                    if !send(&mut socket, &error_reply(Value::Null, &error)).await {
                        return;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
            },
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_frames_parse_or_get_their_code() {
        let query = parse_query("resume=gw%2F00ff&last_seq=3&flag").expect("valid");
        assert_eq!(query.get("resume").map(String::as_str), Some("gw/00ff"));
        assert_eq!(query.get("last_seq").map(String::as_str), Some("3"));
        assert_eq!(query.get("flag").map(String::as_str), Some(""));
        assert_eq!(parse_query("resume=%ff").err().map(|e| e.code), Some("INVALID_PARAMETERS"));

        let code = |text: &str| parse(text).err().map(|(id, e)| (id, e.code));
        assert_eq!(code("{"), Some((Value::Null, "INVALID_JSON")));
        assert_eq!(code(r#"{"push": {}}"#), Some((Value::Null, "INVALID_BODY")));
        assert_eq!(code(r#"{"call": {"id": 1, "type": "T"}}"#), Some((json!(1), "INVALID_BODY")));
        let empty =
            r#"{"call": {"id": 2, "type": "", "objectId": "o", "method": "M", "request": ""}}"#;
        assert_eq!(code(empty), Some((json!(2), "INVALID_PARAMETERS")));
        let base64 =
            r#"{"call": {"id": 3, "type": "T", "objectId": "o", "method": "M", "request": "*"}}"#;
        assert_eq!(code(base64), Some((json!(3), "INVALID_BASE64")));
        let any = prost_types::Any { type_url: "type.googleapis.com/t.M".into(), value: vec![1] };
        let good = json!({ "call": {
            "id": "a", "type": "T", "objectId": "o/1", "method": "M",
            "request": STANDARD.encode(any.encode_to_vec()),
        }});
        let call = parse(&good.to_string()).map_err(|(_, e)| e).expect("a valid call");
        assert_eq!((call.id, call.object_id, call.request), (json!("a"), "o/1".into(), any));
    }
}
