//! The gateway's JSON-transcoding route (`POST /v1/objects/{type}/{id}/{method}`) with a real
//! HTTP/1.1 client against the in-process cluster of `gateway`: the counter and the chat room
//! called with protobuf JSON (camelCase and proto field names, 64-bit integers as strings,
//! defaults emitted, an empty body), the same objects as the base64 route, the call route's
//! identity rules (`X-Client-ID` of an SSE session, 403 for another principal), CORS, and every
//! error answered with the documented code while the gateway keeps serving. The gateway hosts
//! no objects: it learns the method tables and descriptors from the node (`DescribeType`).

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use verse_examples::proto::counter::{CounterResponse, IncrementRequest};

use crate::gateway::Cluster;
use crate::gateway_http::{Events, Reply, body_of, chat_text, request, response_of};

async fn post(http: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    request(http, "POST", path, headers, body).await
}

/// Asserts a 200 JSON reply and returns its body.
fn ok(reply: &Reply) -> serde_json::Value {
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    reply.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_calls_reach_the_counter_and_the_chat_room() {
    let cluster = Cluster::start().await;
    let http = cluster.http.clone();

    // Preflight and CORS, as on every route.
    let preflight = request(&http, "OPTIONS", "/v1/objects/Counter/j1/Increment", &[], "").await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("Content-Type, X-Client-ID, Authorization, X-Goverse-Auth")
    );

    // The counter: protobuf JSON in and out.
    let incremented =
        post(&http, "/v1/objects/Counter/j1/Increment", &[], r#"{"amount": 5}"#).await;
    assert_eq!(ok(&incremented), json!({"name": "j1", "value": 5}));
    assert_eq!(incremented.body, r#"{"name":"j1","value":5}"#, "compact, in field order");
    let decremented = post(&http, "/v1/objects/Counter/j1/Decrement", &[], r#"{"amount":2}"#).await;
    assert_eq!(ok(&decremented), json!({"name": "j1", "value": 3}));
    // An empty body is the empty request; fields at their default are emitted.
    let got = post(&http, "/v1/objects/Counter/j1/Get", &[], "").await;
    assert_eq!(ok(&got), json!({"name": "j1", "value": 3}));
    let fresh = post(&http, "/v1/objects/Counter/j-fresh/Get", &[], "{}").await;
    assert_eq!(ok(&fresh), json!({"name": "j-fresh", "value": 0}));
    // The same object as on GoVerse's base64 route.
    let body = body_of(&IncrementRequest { amount: 1 });
    let counter: CounterResponse =
        response_of(&post(&http, "/api/v1/objects/call/Counter/j1/Increment", &[], &body).await);
    assert_eq!(counter.value, 4);
    // Percent-encoded ids, as on the other routes.
    let pinned = post(&http, "/v1/objects/Counter/shard%233%2Fj/Increment", &[], r#"{"amount":1}"#);
    assert_eq!(ok(&pinned.await), json!({"name": "shard#3/j", "value": 1}));

    // The chat room as alice's SSE session: X-Client-ID works as on the call route.
    let alice = [("Authorization", "Bearer alice")];
    let mut events = Events::open(&http, &alice).await;
    let (event, _, data) = events.next().await;
    assert_eq!(event, "register");
    let client_id = data["clientId"].as_str().unwrap().to_owned();
    let as_alice = [("Authorization", "Bearer alice"), ("X-Client-ID", client_id.as_str())];
    let join = r#"{"user": "alice"}"#;
    let joined = post(&http, "/v1/objects/ChatRoom/jr/Join", &as_alice, join).await;
    assert_eq!(ok(&joined), json!({"members": 1}));
    // Another principal presenting alice's id: 403, as on the call route.
    let as_bob = [("Authorization", "Bearer bob"), ("X-Client-ID", client_id.as_str())];
    post(&http, "/v1/objects/ChatRoom/jr/Join", &as_bob, join)
        .await
        .assert_error(403, "ACCESS_DENIED");
    // int64 fields are strings in responses; the post is pushed to alice's stream.
    let hello = r#"{"user": "bob", "text": "one"}"#;
    let posted = post(&http, "/v1/objects/ChatRoom/jr/Post", &[], hello).await;
    assert_eq!(ok(&posted), json!({"seq": "0", "delivered": 1}));
    let (event, _, data) = events.next_non_heartbeat().await;
    assert_eq!((event.as_str(), chat_text(&data)), ("message", "one".to_owned()));
    let again = r#"{"user": "bob", "text": "two"}"#;
    let posted = post(&http, "/v1/objects/ChatRoom/jr/Post", &[], again).await;
    assert_eq!(ok(&posted), json!({"seq": "1", "delivered": 1}));

    // Proto field names and lowerCamelCase names are both accepted, int64 as string or number.
    let second = json!({"messages": [{"room": "jr", "user": "bob", "text": "two", "seq": "1"}]});
    for body in [r#"{"after_seq": "0"}"#, r#"{"afterSeq": 0}"#, r#"{"limit": 1}"#] {
        let listed = post(&http, "/v1/objects/ChatRoom/jr/List", &[], body).await;
        assert_eq!(ok(&listed), second, "{body}");
    }
    let listed = post(&http, "/v1/objects/ChatRoom/jr/List", &[], "").await;
    assert_eq!(ok(&listed)["messages"].as_array().map(Vec::len), Some(2));

    tokio::time::timeout(std::time::Duration::from_secs(30), cluster.stop())
        .await
        .expect("stops with an SSE stream open");
    drop(events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_route_errors_use_the_documented_codes() {
    let cluster = Cluster::start().await;
    let http = cluster.http.clone();
    let increment = "/v1/objects/Counter/e1/Increment";

    // Malformed JSON, JSON that does not fit the request message.
    for body in [
        "{nope",
        r#"{"amount": 1} {"amount": 2}"#,
        r#"{"amount": "five"}"#,
        r#"{"amount": 1.5}"#,
        r#"{"amount": 3000000000}"#,
        r#"{"amont": 1}"#,
        "[1]",
        "null",
    ] {
        let reply = post(&http, increment, &[], body).await;
        reply.assert_error(400, "INVALID_JSON");
        assert_eq!(reply.header("access-control-allow-origin"), Some("*"), "CORS on errors");
        assert!(reply.json()["error"].as_str().unwrap().contains("counter.IncrementRequest"));
    }
    // Unknown type and method.
    let unknown_type = post(&http, "/v1/objects/Nope/x/Get", &[], "{}").await;
    unknown_type.assert_error(404, "OBJECT_NOT_FOUND");
    assert_eq!(unknown_type.json()["error"], "unknown object type \"Nope\"");
    // Asked again: the unknown type is remembered, the answer the same.
    post(&http, "/v1/objects/Nope/x/Get", &[], "{}").await.assert_error(404, "OBJECT_NOT_FOUND");
    post(&http, "/v1/objects/Counter/e1/Explode", &[], "{}")
        .await
        .assert_error(404, "OBJECT_NOT_FOUND");
    // Route shape and HTTP method.
    request(&http, "GET", increment, &[], "").await.assert_error(405, "METHOD_NOT_ALLOWED");
    post(&http, "/v1/objects/Counter/e1", &[], "{}").await.assert_error(400, "INVALID_PATH");
    post(&http, "/v1/objects/Counter//Get", &[], "{}")
        .await
        .assert_error(400, "INVALID_PARAMETERS");
    // Identity and authorization, as on the call route.
    post(&http, increment, &[("Authorization", "Bearer reject")], "{}")
        .await
        .assert_error(401, "UNAUTHENTICATED");
    post(&http, "/v1/objects/Counter/secret/Get", &[], "{}")
        .await
        .assert_error(403, "ACCESS_DENIED");
    // A body over the limit (64 KiB in this cluster).
    let huge = format!(r#"{{"amount": 1, "pad": "{}"}}"#, "x".repeat(70 * 1024));
    post(&http, increment, &[], &huge).await.assert_error(400, "INVALID_BODY");

    // A method's own error maps as on the base64 route: the same status, code and message.
    let max = format!(r#"{{"amount": {}}}"#, i32::MAX);
    for (route, id) in
        [("/v1/objects/Counter", "big-json"), ("/api/v1/objects/call/Counter", "big")]
    {
        let path = format!("{route}/{id}/Increment");
        let body = if route.starts_with("/api") {
            body_of(&IncrementRequest { amount: i32::MAX })
        } else {
            max.clone()
        };
        assert_eq!(post(&http, &path, &[], &body).await.status, 200);
        let overflow = post(&http, &path, &[], &body).await;
        overflow.assert_error(500, "CALL_FAILED");
        assert_eq!(
            overflow.json()["error"],
            format!("method error: counter {id} would overflow (code 11)")
        );
    }
    // A method error that needs a session (the chat room's Join without X-Client-ID).
    let join = post(&http, "/v1/objects/ChatRoom/e-room/Join", &[], r#"{"user": "x"}"#).await;
    join.assert_error(500, "CALL_FAILED");

    // Still serving.
    let served = post(&http, increment, &[], r#"{"amount": 2}"#).await;
    assert_eq!(ok(&served), json!({"name": "e1", "value": 2}));
    cluster.stop().await;
}
