//! A connection cut after a call executed but before its response: the caller gets
//! `OutcomeUnknown` (not a "did not start" error, which the router would resend), and the
//! call ran exactly once. One node in process behind a TCP proxy that swallows the response
//! and then cuts the connection.

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use verse::EncodedMessage;
use verse::prelude::*;
use verse_core::{SharedClock, SystemClock};
use verse_examples::counter::Counter;
use verse_examples::proto::counter::{CounterResponse, GetRequest, IncrementRequest};
use verse_transport::{NodeClient, NodeServer, OutgoingCall, TcpIncoming};

use crate::support::proxy::Proxy;

fn call<M: prost::Message + prost::Name>(
    clock: &SharedClock,
    method: &str,
    request: &M,
) -> OutgoingCall {
    OutgoingCall {
        object_type: "Counter".into(),
        id: "cut-counter".into(),
        method: method.into(),
        request: EncodedMessage::pack(request),
        deadline: clock.now() + super::CALL_DEADLINE,
        chain: Vec::new(),
        identity: None,
        call_id: None,
        one_way: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_after_the_call_ran_is_outcome_unknown_and_runs_once() {
    let clock: SharedClock = SystemClock::shared();
    let options = TypeOptions::default().persistence(PersistencePolicy::WriteThrough);
    let node = Arc::new(
        NodeBuilder::new(NodeConfig { shard_count: 64, ..NodeConfig::default() })
            .object_with::<Counter>(options)
            .clock(clock.clone())
            .start()
            .unwrap(),
    );
    let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let upstream = incoming.local_addr().unwrap();
    let (stop, signal) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(NodeServer::new(node.clone()).serve(incoming, async move {
        let _ = signal.await;
    }));
    let proxy = Proxy::start(upstream).await;
    let client = Arc::new(NodeClient::new(clock.clone()));
    let local = node.client().get::<Counter>("cut-counter");

    // The connection works (HTTP/2 set up through the proxy).
    let answer = client.call(&proxy.address(), call(&clock, "Get", &GetRequest {})).await;
    assert_eq!(answer.unwrap().unpack::<CounterResponse>().unwrap().value, 0);

    // The increment reaches the node and runs; its response is swallowed; then the cut.
    proxy.swallow_responses();
    let pending = tokio::spawn({
        let (client, address) = (client.clone(), proxy.address());
        let request = call(&clock, "Increment", &IncrementRequest { amount: 1 });
        async move { client.call(&address, request).await }
    });
    let started = Instant::now();
    while local.get(GetRequest {}).await.unwrap().value != 1 {
        assert!(started.elapsed() < Duration::from_secs(10), "the increment never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.cut();
    let outcome = tokio::time::timeout(Duration::from_secs(10), pending).await.unwrap().unwrap();
    assert!(
        matches!(outcome, Err(CallError::OutcomeUnknown { .. })),
        "a call that ran must not look unstarted: {outcome:?}"
    );
    assert!(!outcome.as_ref().unwrap_err().provably_not_started());
    // Ran exactly once, also seen through a fresh connection.
    proxy.heal();
    let again = client.call(&proxy.address(), call(&clock, "Get", &GetRequest {})).await;
    assert_eq!(again.unwrap().unpack::<CounterResponse>().unwrap().value, 1);
    assert_eq!(local.get(GetRequest {}).await.unwrap().value, 1);

    drop(client);
    drop(proxy);
    let _ = stop.send(());
    served.await.unwrap().unwrap();
    node.shutdown().await;
}
