//! Calls, creates, deletes and errors across the wire; deadlines, chains, connection failures,
//! graceful shutdown and channel reuse.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use verse::prelude::*;
use verse_core::CallerIdentity;
use verse_core::shard::hash_shard;
use verse_transport::proto::PushMessage;

use crate::support::{
    Delay, OTHER_DESCRIPTORS, Served, Text, client, deadline_in, echo_call, wait_until,
};

fn text(s: &str) -> Text {
    Text { text: s.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_call_reaches_an_activation_on_the_other_node() {
    let mut b = Served::start("node-b").await;
    let client = client();
    let response = client.call(&b.addr, echo_call("echo-1", "Echo", &text("hi"))).await;
    let response: Text = response.expect("call").unpack().expect("a Text");
    assert_eq!(response.text, "hi");
    assert!(b.node.is_active("echo-1"));

    // Identity, chain and the remaining deadline cross the wire.
    let mut call = echo_call("echo-2", "Who", &text(""));
    call.identity = Some(CallerIdentity {
        client_id: Some("gw/1".into()),
        principal: Some("ada".into()),
        roles: vec!["admin".into(), "ops".into()],
    });
    call.chain = vec![("root".into(), 1), ("middle".into(), 2)];
    let who: Text = client.call(&b.addr, call).await.expect("call").unpack().expect("a Text");
    assert_eq!(who.text, "gw/1|ada|admin,ops|2|1");

    // A one-way call is answered once queued.
    let mut one_way = echo_call("echo-3", "Echo", &text("fire"));
    one_way.one_way = true;
    client.call(&b.addr, one_way).await.expect("queued");
    wait_until("the one-way call to activate echo-3", || b.node.is_active("echo-3")).await;

    // Introspection.
    let status = client.status(&b.addr).await.expect("status");
    assert_eq!(status.node_id, "node-b");
    assert_eq!(status.activations, 3);
    let (listed, truncated) = client.list_activations(&b.addr, 2).await.expect("list");
    assert_eq!(listed.len(), 2);
    assert!(truncated);
    let (mut listed, truncated) = client.list_activations(&b.addr, 0).await.expect("list");
    listed.sort();
    assert!(!truncated);
    let ids: Vec<&str> = listed.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids, ["echo-1", "echo-2", "echo-3"]);
    assert!(listed.iter().all(|(t, _)| t == "Echo"));
    b.shut_down().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_type_answers_the_method_table_and_the_registered_descriptors() {
    let mut b = Served::start("node-b").await;
    let client = client();
    let deadline = deadline_in(Duration::from_secs(5));
    let echo = client.describe_type(&b.addr, "Echo", deadline).await.expect("describe Echo");
    assert_eq!(echo.object_type, "Echo");
    let names: Vec<&str> = echo.methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["Echo", "Fail", "Slow", "Who"]);
    let slow = &echo.methods[2];
    assert_eq!(
        (slow.request_type.as_str(), slow.response_type.as_str(), slow.idempotent),
        ("test.Delay", "test.Text", false)
    );
    assert!(echo.file_descriptor_set.is_empty(), "Echo registers no descriptors");

    let other = client.describe_type(&b.addr, "Other", deadline).await.expect("describe Other");
    assert_eq!(other.file_descriptor_set, OTHER_DESCRIPTORS);
    assert!(other.methods[0].idempotent, "#[idempotent] travels");

    let unknown = client.describe_type(&b.addr, "Nope", deadline).await;
    assert_eq!(unknown.map(|_| ()), Err(CallError::UnknownType { object_type: "Nope".into() }));
    // Describing activates nothing.
    assert_eq!(b.node.activation_count(), 0);
    b.shut_down().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_delete_cross_the_wire_and_types_are_checked() {
    let mut b = Served::start("node-b").await;
    let client = client();
    let deadline = deadline_in(Duration::from_secs(5));
    client.create(&b.addr, "Echo", "made-1", deadline).await.expect("create");
    assert!(b.node.is_active("made-1"));
    client.create(&b.addr, "Echo", "made-1", deadline).await.expect("create is idempotent");
    let mismatch = client.create(&b.addr, "Other", "made-1", deadline).await;
    assert_eq!(
        mismatch,
        Err(CallError::TypeMismatch { id: "made-1".into(), actual: "Echo".into() })
    );
    let mut call = echo_call("made-1", "Echo", &text("x"));
    call.object_type = "Other".into();
    let mismatch = client.call(&b.addr, call).await;
    assert_eq!(
        mismatch,
        Err(CallError::TypeMismatch { id: "made-1".into(), actual: "Echo".into() })
    );
    client.delete(&b.addr, "Echo", "made-1", deadline).await.expect("delete");
    wait_until("made-1 to go", || !b.node.is_active("made-1")).await;
    client.delete(&b.addr, "Echo", "never-made", deadline).await.expect("absent is fine");
    let unknown = client.create(&b.addr, "Nope", "x", deadline).await;
    assert_eq!(unknown, Err(CallError::UnknownType { object_type: "Nope".into() }));
    b.shut_down().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_cross_the_wire_typed() {
    let mut b = Served::start("node-b").await;
    let client = client();
    let failed = client.call(&b.addr, echo_call("e", "Fail", &text("x"))).await;
    assert_eq!(failed, Err(CallError::Method { code: 7, message: "no luck".into() }));

    let unknown = client.call(&b.addr, echo_call("e", "Nope", &text("x"))).await;
    assert_eq!(
        unknown,
        Err(CallError::UnknownMethod { object_type: "Echo".into(), method: "Nope".into() })
    );

    let wrong_type = client.call(&b.addr, echo_call("e", "Slow", &text("x"))).await;
    assert!(matches!(wrong_type, Err(CallError::InvalidArgument { .. })), "{wrong_type:?}");

    let bad_id = client.call(&b.addr, echo_call("shard#99999/x", "Echo", &text("x"))).await;
    assert!(matches!(bad_id, Err(CallError::InvalidObjectId(_))), "{bad_id:?}");

    let elsewhere = client.call(&b.addr, echo_call("node-z/x", "Echo", &text("x"))).await;
    assert_eq!(elsewhere, Err(CallError::NodeNotFound { node: "node-z".into() }));
    b.shut_down().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remaining_deadline_crosses_the_wire() {
    let mut b = Served::start("node-b").await;
    let client = client();
    let mut call = echo_call("sleepy", "Slow", &Delay { millis: 1_000 });
    call.deadline = deadline_in(Duration::from_millis(50));
    let started = Instant::now();
    let result = client.call(&b.addr, call).await;
    let took = started.elapsed();
    assert_eq!(result, Err(CallError::DeadlineExceeded { id: "sleepy".into() }));
    assert!(took < Duration::from_millis(800), "answered after {took:?}");

    // A deadline already past is not sent.
    let mut call = echo_call("sleepy", "Echo", &text("x"));
    call.deadline = deadline_in(Duration::ZERO);
    let result = client.call(&b.addr, call).await;
    assert_eq!(result, Err(CallError::DeadlineExceeded { id: "sleepy".into() }));
    b.shut_down().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_is_detected_on_the_far_side() {
    let mut b = Served::start("node-b").await;
    let client = client();
    let shard = hash_shard("loop-a", 8192).0;
    let mut call = echo_call("loop-a", "Echo", &text("x"));
    call.chain = vec![("root".into(), 1), ("loop-a".into(), shard), ("loop-b".into(), 3)];
    let result = client.call(&b.addr, call).await;
    assert_eq!(
        result,
        Err(CallError::Cycle {
            chain: vec!["root".into(), "loop-a".into(), "loop-b".into(), "loop-a".into()]
        })
    );
    b.shut_down().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_classified_as_not_started() {
    // A port that was free a moment ago and has no listener now.
    let listener =
        std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    drop(listener);
    let client = client();
    let result = client.call(&addr, echo_call("e", "Echo", &text("x"))).await;
    let error = result.expect_err("nobody listens");
    assert!(matches!(error, CallError::NotDelivered { .. }), "{error:?}");
    assert!(error.provably_not_started());
}

#[test]
fn a_server_killed_mid_call_leaves_the_outcome_unknown() {
    // The callee runs on a runtime of its own, so killing it drops its sockets mid-call.
    let callee = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("callee runtime");
    let caller = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("caller runtime");
    let (node, addr) = callee.block_on(async {
        let served = Served::start("node-b").await;
        let node = served.node.clone();
        let addr = served.addr.clone();
        // Keep the server running (its handle would otherwise be dropped with `served`).
        std::mem::forget(served);
        (node, addr)
    });
    let client = Arc::new(client());
    let call = {
        let (client, addr) = (client.clone(), addr.clone());
        caller.spawn(async move {
            let mut call = echo_call("victim", "Slow", &Delay { millis: 5_000 });
            call.deadline = deadline_in(Duration::from_secs(20));
            client.call(&addr, call).await
        })
    };
    caller.block_on(wait_until("the slow call to start", || node.is_active("victim")));
    callee.shutdown_background();
    let result = caller.block_on(call).expect("caller task");
    let error = result.expect_err("the callee died");
    assert!(matches!(error, CallError::OutcomeUnknown { .. }), "{error:?}");
    assert!(!error.provably_not_started());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_calls_in_flight() {
    let mut b = Served::start("node-b").await;
    let client = Arc::new(client());
    let slow = {
        let (client, addr) = (client.clone(), b.addr.clone());
        tokio::spawn(async move {
            client.call(&addr, echo_call("slowpoke", "Slow", &Delay { millis: 300 })).await
        })
    };
    wait_until("the slow call to start", || b.node.is_active("slowpoke")).await;
    let stopped = b.shut_down();
    let response = slow.await.expect("caller task").expect("answered despite the shutdown");
    assert_eq!(response.unpack::<Text>().expect("a Text").text, "done");
    stopped.await.expect("clean shutdown");
    // The listener is gone: a new call provably does not start.
    let after = client.call(&b.addr, echo_call("late", "Echo", &text("x"))).await;
    assert!(matches!(after, Err(CallError::NotDelivered { .. })), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_share_one_connection() {
    let mut b = Served::start("node-b").await;
    let client = Arc::new(client());
    for round in 0..20 {
        let id = format!("seq-{round}");
        client.call(&b.addr, echo_call(&id, "Echo", &text("x"))).await.expect("call");
    }
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let (client, addr) = (client.clone(), b.addr.clone());
            tokio::spawn(async move {
                let id = format!("par-{}", i % 17);
                client.call(&addr, echo_call(&id, "Echo", &text("x"))).await
            })
        })
        .collect();
    for call in calls {
        call.await.expect("task").expect("call");
    }
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1, "one HTTP/2 connection per peer");
    assert_eq!(client.peer_count(), 1);
    b.shut_down().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_reach_the_gateway_stream_and_shutdown_ends_it() {
    let mut b = Served::start("node-b").await;
    let client = client();
    let mut stream = client.open_push_stream(&b.addr, "gw-1").await.expect("stream");
    wait_until("the gateway to register", || b.hub.gateways() == ["gw-1"]).await;
    let message = PushMessage { client_id: "gw-1/s1".into(), ..PushMessage::default() };
    b.hub.push("gw-1", message.clone()).expect("queued");
    let received = stream.next().await.expect("a message").expect("no error");
    assert_eq!(received, message);
    assert_eq!(b.hub.broadcast(&message), 1);
    assert_eq!(stream.next().await.expect("a message").expect("no error"), message);
    b.shut_down().await.expect("shutdown is not held open by the push stream");
    assert!(stream.next().await.is_none_or(|item| item.is_err()));
}

/// A raw HTTP/2 server on a free port that handles one connection with `handle`.
async fn raw_h2_server<F, Fut>(handle: F) -> String
where
    F: FnOnce(h2::server::Connection<tokio::net::TcpStream, bytes::Bytes>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("accept");
        let connection = h2::server::handshake(socket).await.expect("handshake");
        handle(connection).await;
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_is_classified_as_not_started() {
    let addr = raw_h2_server(|mut connection| async move {
        while let Some(Ok((_request, mut respond))) = connection.accept().await {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
        }
    })
    .await;
    let error =
        client().call(&addr, echo_call("e", "Echo", &text("x"))).await.expect_err("refused");
    assert!(
        matches!(&error, CallError::NotDelivered { reason, .. } if reason.contains("REFUSED_STREAM")),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goaway_that_covers_the_call_leaves_the_outcome_unknown() {
    // The server takes the call's stream, then sends GOAWAY naming it as processed and closes:
    // the call may have run.
    let addr = raw_h2_server(|mut connection| async move {
        let held = connection.accept().await;
        connection.abrupt_shutdown(h2::Reason::NO_ERROR);
        while let Some(Ok(_)) = connection.accept().await {}
        drop(held);
    })
    .await;
    let error = client().call(&addr, echo_call("e", "Echo", &text("x"))).await.expect_err("gone");
    assert!(matches!(error, CallError::OutcomeUnknown { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_after_the_request_arrived_leaves_the_outcome_unknown() {
    let addr = raw_h2_server(|mut connection| async move {
        while let Some(Ok((_request, mut respond))) = connection.accept().await {
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
        }
    })
    .await;
    let error = client().call(&addr, echo_call("e", "Echo", &text("x"))).await.expect_err("reset");
    assert!(matches!(error, CallError::OutcomeUnknown { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_cannot_hold_a_caller_past_its_deadline() {
    // The server takes the call and holds it forever, with the connection alive.
    let addr = raw_h2_server(|mut connection| async move {
        let mut held = Vec::new();
        while let Some(Ok(call)) = connection.accept().await {
            held.push(call);
        }
    })
    .await;
    let client = client();
    for _ in 0..3 {
        // Several waits, one after another: the watchdog's sweeper stops when idle and must
        // start again for the next call.
        let mut call = echo_call("e", "Echo", &text("x"));
        call.deadline = deadline_in(Duration::from_millis(300));
        let started = Instant::now();
        let error = client.call(&addr, call).await.expect_err("no answer");
        let waited = started.elapsed();
        assert!(matches!(error, CallError::DeadlineExceeded { .. }), "{error:?}");
        assert!(waited >= Duration::from_millis(300), "gave up before the deadline: {waited:?}");
        // Liveness bound only (deadline + grace + one sweep, with room for a loaded machine).
        assert!(waited < Duration::from_secs(5), "held past the deadline: {waited:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
