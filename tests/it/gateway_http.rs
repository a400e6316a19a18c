//! The gateway's HTTP routes with a real HTTP/1.1 client (plain TCP, so every byte on the wire
//! is the server's): every route and error code, CORS and the `OPTIONS` preflight, HTTP identity
//! (`X-Client-ID` by possession, 403 for another principal, unknown ids served anonymously),
//! and the SSE stream (register, message, heartbeat, resume with `Last-Event-ID`), while the
//! gateway keeps serving.

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost::{Message, Name};
use prost_types::Any;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use verse_examples::proto::chat::{ChatMessage, JoinRequest, PostRequest};
use verse_examples::proto::counter::{CounterResponse, IncrementRequest};

use crate::gateway::Cluster;

const BOUND: Duration = Duration::from_secs(30);

pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    /// Asserts an error reply: status, GoVerse code, JSON content type.
    pub(crate) fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.json()["code"].as_str()),
            (status, Some(code)),
            "{}",
            self.body
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
    }
}

pub(crate) async fn request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(BOUND, stream.read_to_string(&mut raw)).await.unwrap().unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Reply { status, headers, body: body.to_owned() }
}

pub(crate) fn body_of<M: Message + Name>(message: &M) -> String {
    let any = Any { type_url: M::type_url(), value: message.encode_to_vec() };
    serde_json::json!({ "request": STANDARD.encode(any.encode_to_vec()) }).to_string()
}

pub(crate) fn response_of<M: Message + Default>(reply: &Reply) -> M {
    assert_eq!(reply.status, 200, "{}", reply.body);
    let bytes = STANDARD.decode(reply.json()["response"].as_str().unwrap()).unwrap();
    let any = Any::decode(bytes.as_slice()).unwrap();
    M::decode(any.value.as_slice()).unwrap()
}

/// An open SSE stream: `(event, id, data)` in order.
pub(crate) struct Events {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
    event: String,
    id: String,
}

impl Events {
    pub(crate) async fn open(address: &str, headers: &[(&str, &str)]) -> Events {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let mut text = format!("GET /api/v1/events/stream HTTP/1.1\r\nHost: {address}\r\n");
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        stream.write_all(text.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(stream).lines();
        let status = lines.next_line().await.unwrap().unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        Events { lines, event: String::new(), id: String::new() }
    }

    /// The next event (chunk-size lines of the transfer encoding are skipped).
    pub(crate) async fn next(&mut self) -> (String, String, serde_json::Value) {
        loop {
            let line = tokio::time::timeout(BOUND, self.lines.next_line())
                .await
                .expect("an event within the bound")
                .unwrap()
                .expect("the stream is open");
            if let Some(event) = line.strip_prefix("event: ") {
                self.event = event.to_owned();
                self.id.clear();
            } else if let Some(id) = line.strip_prefix("id: ") {
                self.id = id.to_owned();
            } else if let Some(data) = line.strip_prefix("data: ") {
                return (self.event.clone(), self.id.clone(), serde_json::from_str(data).unwrap());
            }
        }
    }

    /// The next event that is not a heartbeat.
    pub(crate) async fn next_non_heartbeat(&mut self) -> (String, String, serde_json::Value) {
        loop {
            let event = self.next().await;
            if event.0 != "heartbeat" {
                return event;
            }
        }
    }
}

pub(crate) fn chat_text(data: &serde_json::Value) -> String {
    assert_eq!(data["type"], "type.googleapis.com/chat.ChatMessage");
    let bytes = STANDARD.decode(data["payload"].as_str().unwrap()).unwrap();
    let any = Any::decode(bytes.as_slice()).unwrap();
    ChatMessage::decode(any.value.as_slice()).unwrap().text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_routes_and_their_error_codes() {
    let cluster = Cluster::start().await;
    let http = cluster.http.clone();

    // Preflight and CORS.
    let preflight =
        request(&http, "OPTIONS", "/api/v1/objects/call/Counter/h1/Increment", &[], "").await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET, POST, PUT, DELETE, OPTIONS")
    );
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("Content-Type, X-Client-ID, Authorization, X-Goverse-Auth")
    );
    assert_eq!(preflight.header("access-control-max-age"), Some("86400"));

    // Create, call, delete.
    let created = request(&http, "POST", "/api/v1/objects/create/Counter/h1", &[], "").await;
    assert_eq!((created.status, created.json()["id"].as_str()), (200, Some("h1")));
    assert_eq!(created.header("access-control-allow-origin"), Some("*"));
    let body = body_of(&IncrementRequest { amount: 4 });
    let called =
        request(&http, "POST", "/api/v1/objects/call/Counter/h1/Increment", &[], &body).await;
    assert_eq!(called.header("content-type"), Some("application/json"));
    let counter: CounterResponse = response_of(&called);
    assert_eq!((counter.name.as_str(), counter.value), ("h1", 4));
    let deleted = request(&http, "POST", "/api/v1/objects/delete/Counter/h1", &[], "").await;
    assert_eq!((deleted.status, deleted.json()["success"].as_bool()), (200, Some(true)));

    // Every error code the routes use.
    let call_path = "/api/v1/objects/call/Counter/h1/Increment";
    request(&http, "GET", call_path, &[], "").await.assert_error(405, "METHOD_NOT_ALLOWED");
    request(&http, "POST", call_path, &[], "{nope").await.assert_error(400, "INVALID_JSON");
    request(&http, "POST", call_path, &[], r#"{"other": 1}"#)
        .await
        .assert_error(400, "INVALID_BODY");
    request(&http, "POST", call_path, &[], r#"{"request": "%%%"}"#)
        .await
        .assert_error(400, "INVALID_BASE64");
    let garbage = serde_json::json!({ "request": STANDARD.encode([0xff, 0xff, 0xff]) }).to_string();
    request(&http, "POST", call_path, &[], &garbage).await.assert_error(400, "INVALID_PROTOBUF");
    request(&http, "POST", "/api/v1/objects/call/Counter", &[], &body)
        .await
        .assert_error(400, "INVALID_PATH");
    request(&http, "POST", "/api/v1/objects/call/Nope/x/Get", &[], &body)
        .await
        .assert_error(404, "OBJECT_NOT_FOUND");
    request(&http, "POST", "/api/v1/objects/call/Counter/h1/Explode", &[], &body)
        .await
        .assert_error(404, "OBJECT_NOT_FOUND");
    let wrong = body_of(&JoinRequest::default());
    request(&http, "POST", call_path, &[], &wrong).await.assert_error(400, "INVALID_PARAMETERS");
    let malformed_auth = [("X-Goverse-Auth", "[1, 2]")];
    request(&http, "POST", call_path, &malformed_auth, &body)
        .await
        .assert_error(401, "UNAUTHENTICATED");
    let refused = [("Authorization", "Bearer reject")];
    request(&http, "POST", call_path, &refused, &body).await.assert_error(401, "UNAUTHENTICATED");
    request(&http, "POST", "/api/v1/objects/call/Counter/secret/Get", &[], &body)
        .await
        .assert_error(403, "ACCESS_DENIED");
    let good_auth = [("X-Goverse-Auth", r#"{"user": "u", "token": "t"}"#)];
    let counter: CounterResponse =
        response_of(&request(&http, "POST", call_path, &good_auth, &body).await);
    assert_eq!(counter.value, 4, "a new counter after the delete, and the gateway still serves");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_register_push_heartbeat_and_resume() {
    let cluster = Cluster::start().await;
    let http = cluster.http.clone();
    let alice = [("Authorization", "Bearer alice")];
    let mut events = Events::open(&http, &alice).await;
    let (event, id, data) = events.next().await;
    assert_eq!(event, "register");
    let client_id = data["clientId"].as_str().unwrap().to_owned();
    assert!(client_id.starts_with("gw1/"));
    assert_eq!(id, format!("{client_id}:0"));

    // Join with X-Client-ID (same principal), then a post pushes a message event.
    let with_id = [("Authorization", "Bearer alice"), ("X-Client-ID", client_id.as_str())];
    let join = body_of(&JoinRequest { user: "alice".into() });
    let joined =
        request(&http, "POST", "/api/v1/objects/call/ChatRoom/sse/Join", &with_id, &join).await;
    assert_eq!(joined.status, 200, "{}", joined.body);
    let post = |text: &str| body_of(&PostRequest { user: "bob".into(), text: text.into() });
    let posted =
        request(&http, "POST", "/api/v1/objects/call/ChatRoom/sse/Post", &[], &post("one")).await;
    assert_eq!(posted.status, 200, "{}", posted.body);
    let (event, id, data) = events.next_non_heartbeat().await;
    assert_eq!((event.as_str(), id), ("message", format!("{client_id}:1")));
    assert_eq!(chat_text(&data), "one");

    // An idle stream gets heartbeats (300 ms in this test's configuration).
    let (event, _, data) = events.next().await;
    assert_eq!((event.as_str(), data), ("heartbeat", serde_json::json!({})));

    // Another principal presenting alice's id: 403; an unknown id: served anonymously.
    let bob = [("Authorization", "Bearer bob"), ("X-Client-ID", client_id.as_str())];
    request(&http, "POST", "/api/v1/objects/call/ChatRoom/sse/Join", &bob, &join)
        .await
        .assert_error(403, "ACCESS_DENIED");
    let unknown = [("X-Client-ID", "gw1/00000000000000000000000000000000")];
    let list = body_of(&verse_examples::proto::chat::ListRequest::default());
    assert_eq!(
        request(&http, "POST", "/api/v1/objects/call/ChatRoom/sse/List", &unknown, &list)
            .await
            .status,
        200
    );

    // Disconnect, miss a push, resume with Last-Event-ID: same client id, the push replayed.
    drop(events);
    let posted =
        request(&http, "POST", "/api/v1/objects/call/ChatRoom/sse/Post", &[], &post("two")).await;
    assert_eq!(posted.status, 200);
    let last = format!("{client_id}:1");
    let resume = [("Authorization", "Bearer alice"), ("Last-Event-ID", last.as_str())];
    let mut events = Events::open(&http, &resume).await;
    let (event, _, data) = events.next().await;
    assert_eq!((event.as_str(), data["clientId"].as_str()), ("register", Some(client_id.as_str())));
    let (event, id, data) = events.next_non_heartbeat().await;
    assert_eq!((event.as_str(), id), ("message", format!("{client_id}:2")));
    assert_eq!(chat_text(&data), "two");
    // Stopping ends the open event stream.
    tokio::time::timeout(BOUND, cluster.stop()).await.expect("stops with an SSE stream open");
    drop(events);
}
