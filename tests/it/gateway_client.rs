//! The Rust gateway client (`verse::GatewayClient`) against an in-process cluster and gateway
//! (the harness of [`crate::gateway`]): typed calls through the generated references, create
//! and delete, errors mapped back to `CallError`, headers for the authentication hook, chat-room pushes on the client's stream, and
//! a reconnection after the connection drops that resumes the session and replays the pushes
//! the gateway buffered meanwhile.

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use verse::gateway_client::{ClientConfig, ClientError, Pushes};
use verse::{CallError, GatewayClient};
use verse_examples::chat::ChatRoom;
use verse_examples::counter::Counter;
use verse_examples::proto::chat::{ChatMessage, JoinRequest, PostRequest};
use verse_examples::proto::counter::{GetRequest, IncrementRequest};

use crate::gateway::Cluster;
use crate::support::proxy::Proxy;

const WITHIN: Duration = Duration::from_secs(30);

fn client_config(address: &str) -> ClientConfig {
    let mut config = ClientConfig::new([address]);
    config.backoff_initial = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    config.connect_timeout = Duration::from_secs(5);
    config
}

async fn next_message(pushes: &mut Pushes) -> (u64, ChatMessage) {
    let push = tokio::time::timeout(WITHIN, pushes.next())
        .await
        .expect("a push within the bound")
        .expect("the push stream is open");
    (push.seq, push.unpack::<ChatMessage>().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_references_create_delete_and_errors_through_the_gateway() {
    let cluster = Cluster::start().await;
    // The first address refuses connections: the client rotates to the next gateway.
    let refused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = refused.local_addr().unwrap().to_string();
    drop(refused);
    let mut config = client_config(&dead);
    config.gateways.push(cluster.address().to_owned());
    let client = GatewayClient::connect(config).await.unwrap();
    assert!(client.client_id().unwrap().starts_with("gw1/"));

    let counter = client.get::<Counter>("rust-c1");
    assert_eq!(counter.increment(IncrementRequest { amount: 2 }).await.unwrap().value, 2);
    let response = counter.increment(IncrementRequest { amount: 3 }).await.unwrap();
    assert_eq!((response.name.as_str(), response.value), ("rust-c1", 5));
    // The same state the in-cluster reference sees.
    let inside = cluster.node_client().get::<Counter>("rust-c1");
    assert_eq!(inside.get(GetRequest {}).await.unwrap().value, 5);

    // A method's own error keeps its code.
    let overflow = counter.increment(IncrementRequest { amount: i32::MAX }).await.unwrap_err();
    assert!(matches!(overflow, CallError::Method { code: 11, .. }), "{overflow:?}");

    client.create("Counter", "rust-c2").await.unwrap();
    client.get::<Counter>("rust-c2").increment(IncrementRequest { amount: 1 }).await.unwrap();
    client.delete("Counter", "rust-c2").await.unwrap();
    let fresh = client.get::<Counter>("rust-c2").get(GetRequest {}).await.unwrap();
    assert_eq!(fresh.value, 0, "deleted state is gone");

    let unknown_ref = client.raw("NoSuchType", "x");
    let unknown = unknown_ref.call::<GetRequest, GetRequest>("Get", GetRequest {});
    assert_eq!(
        unknown.await.unwrap_err(),
        CallError::UnknownType { object_type: "NoSuchType".into() }
    );
    let method_ref = client.raw("Counter", "rust-c1");
    let method = method_ref.call::<GetRequest, GetRequest>("Nope", GetRequest {});
    assert_eq!(
        method.await.unwrap_err(),
        CallError::UnknownMethod { object_type: "Counter".into(), method: "Nope".into() }
    );
    let mismatch = client.create("ChatRoom", "rust-c1").await.unwrap_err();
    assert!(matches!(mismatch, CallError::TypeMismatch { .. }), "{mismatch:?}");

    // Bad configurations are refused up front.
    assert_eq!(
        GatewayClient::connect(ClientConfig::new(Vec::<String>::new())).await.unwrap_err(),
        ClientError::NoGateway
    );
    let mut unreachable = ClientConfig::new([dead]);
    unreachable.connect_timeout = Duration::from_millis(300);
    assert!(matches!(
        GatewayClient::connect(unreachable).await.unwrap_err(),
        ClientError::Unreachable(_)
    ));
    // Headers reach the gateway's authentication hook (the harness's: `Bearer reject` is
    // refused, other bearers are principals; object `secret` is off limits).
    let mut refused = client_config(cluster.address());
    refused.connect_timeout = Duration::from_millis(500);
    refused.headers.push(("authorization".into(), "Bearer reject".into()));
    assert!(matches!(
        GatewayClient::connect(refused).await.unwrap_err(),
        ClientError::Unreachable(_)
    ));
    let mut bad = client_config(cluster.address());
    bad.headers.push(("Not A Key".into(), "x".into()));
    assert!(matches!(
        GatewayClient::connect(bad).await.unwrap_err(),
        ClientError::InvalidHeader { .. }
    ));
    let mut ann = client_config(cluster.address());
    ann.headers.push(("authorization".into(), "Bearer ann".into()));
    let ann = GatewayClient::connect(ann).await.unwrap();
    let value = ann.get::<Counter>("rust-c1").get(GetRequest {}).await.unwrap().value;
    assert_eq!(value, 5);
    let secret = ann.get::<Counter>("secret").get(GetRequest {}).await.unwrap_err();
    assert!(
        matches!(secret, CallError::Method { code, .. } if code == tonic::Code::PermissionDenied as i32),
        "{secret:?}"
    );
    ann.shutdown();

    client.shutdown();
    let after = client.get::<Counter>("rust-c1").get(GetRequest {}).await.unwrap_err();
    assert_eq!(after, CallError::ShuttingDown);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_arrive_and_survive_a_reconnection() {
    let cluster = Cluster::start().await;
    let proxy = Proxy::start(cluster.address().parse().unwrap()).await;
    let client = GatewayClient::connect(client_config(&proxy.address())).await.unwrap();
    let mut pushes = client.pushes().unwrap();
    assert!(client.pushes().is_none(), "one consumer");
    let session = client.client_id().unwrap();

    let room = client.get::<ChatRoom>("rust-room");
    room.join(JoinRequest { user: "ann".into() }).await.unwrap();
    let post = |text: &str| PostRequest { user: "ann".into(), text: text.into() };
    room.post(post("one")).await.unwrap();
    let (seq, one) = next_message(&mut pushes).await;
    assert_eq!((seq, one.text.as_str()), (1, "one"));

    // The connection drops and new ones are refused; pushes posted meanwhile wait in the
    // gateway's session.
    proxy.cut();
    let started = Instant::now();
    while client.client_id().is_some() {
        assert!(started.elapsed() < WITHIN, "the client never saw the connection drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let inside = cluster.node_client().get::<ChatRoom>("rust-room");
    inside.post(post("two")).await.unwrap();
    inside.post(post("three")).await.unwrap();
    proxy.heal();

    // The client reconnects with backoff and resumes after seq 1: nothing lost, nothing twice.
    let (seq, two) = next_message(&mut pushes).await;
    assert_eq!((seq, two.text.as_str()), (2, "two"));
    let (seq, three) = next_message(&mut pushes).await;
    assert_eq!((seq, three.text.as_str()), (3, "three"));
    assert_eq!(client.connected(WITHIN).await.unwrap(), session, "the same session");
    // Calls carry the session on the new connection.
    room.post(post("four")).await.unwrap();
    let (seq, four) = next_message(&mut pushes).await;
    assert_eq!((seq, four.text.as_str()), (4, "four"));
    client.shutdown();
    drop(proxy);
    cluster.stop().await;
}
