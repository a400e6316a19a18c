//! `verse gateway` as a process in a split deployment: a `verse node` process (embedded Raft
//! voter, example objects) and a `verse gateway` process reaching the Raft group over gRPC; a
//! client registers, calls the counter (also with JSON on the gateway's JSON route, whose
//! descriptors come from the node process) and gets a chat-room push through the gateway,
//! which exits 0 on SIGTERM while the client's push stream is still open.
//!
//! And the split deployment end to end: two `verse node` processes on PostgreSQL state and one
//! `verse gateway` process, driven by the Rust gateway client: a counter on every shard (so
//! through both nodes), a chat-room push, and the counters still there through the gateway
//! after one node drains away (its objects move to the other node and restore from
//! PostgreSQL).

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use prost::{Message, Name};
use prost_types::Any;
use verse_examples::proto::chat::{ChatMessage, JoinRequest, PostRequest};
use verse_examples::proto::counter::{CounterResponse, IncrementRequest};
use verse_gateway::proto::gate_service_client::GateServiceClient;
use verse_gateway::proto::{CallObjectRequest, Empty, RegisterResponse};

const BOUND: Duration = Duration::from_secs(60);
const SPLIT_SHARDS: u32 = 16;

/// A child process; killed on drop unless it exited.
struct Process {
    name: &'static str,
    child: Child,
    fields: BTreeMap<String, String>,
}

impl Process {
    /// Starts `verse-under-test args…` and waits for a stdout line containing `ready`.
    fn start(name: &'static str, args: &[&str], ready: &'static str) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_verse-under-test"))
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("VERSE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn verse-under-test");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{name}] {line}");
                if line.contains(ready) {
                    let fields: BTreeMap<String, String> = line
                        .split_whitespace()
                        .filter_map(|f| f.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                        .collect();
                    let _ = tx.send(fields);
                }
            }
        });
        let fields = rx.recv_timeout(BOUND).unwrap_or_else(|_| panic!("{name}: no ready line"));
        Process { name, child, fields }
    }

    fn field(&self, key: &str) -> String {
        self.fields
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("{}: no {key} in {:?}", self.name, self.fields))
    }

    fn terminate_and_wait(&mut self) -> bool {
        // SAFETY: sends a signal to our own child by its pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) }, 0);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(started.elapsed() < BOUND, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn pack<M: Message + Name>(message: &M) -> Any {
    Any { type_url: M::type_url(), value: message.encode_to_vec() }
}

fn call(
    client_id: &str,
    object_type: &str,
    id: &str,
    method: &str,
    request: Any,
) -> CallObjectRequest {
    CallObjectRequest {
        client_id: client_id.into(),
        r#type: object_type.into(),
        id: id.into(),
        method: method.into(),
        request: Some(request),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_process_serves_a_node_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut node = Process::start(
        "node",
        &[
            "node",
            "--node-id",
            "n1",
            "--listen",
            "127.0.0.1:0",
            "--ops-listen",
            "127.0.0.1:0",
            "--shards",
            "16",
            "--lease-ttl",
            "3",
            "--drain-timeout",
            "2",
            "--coordinator",
            "raft-voter",
            "--raft-id",
            "1",
            "--raft-listen",
            "127.0.0.1:0",
            "--raft-init",
            "--data-dir",
            data,
        ],
        "ready to serve",
    );
    let raft = node.field("raft_address");
    let mut gateway = start_gateway(&raft);
    let grpc = gateway.field("grpc_address");
    let mut client = GateServiceClient::connect(format!("http://{grpc}")).await.unwrap();
    let mut pushes = client.register(Empty {}).await.unwrap().into_inner();
    let first = pushes.next().await.unwrap().unwrap();
    let client_id = RegisterResponse::decode(first.value.as_slice()).unwrap().client_id;

    // Calls wait (bounded by their deadline) until the node serves the shard.
    let started = Instant::now();
    let response = loop {
        let increment =
            call(&client_id, "Counter", "c1", "Increment", pack(&IncrementRequest { amount: 3 }));
        match client.call_object(increment).await {
            Ok(response) => break response.into_inner().response.unwrap(),
            Err(status) => {
                assert!(started.elapsed() < BOUND, "no answer within {BOUND:?}: {status}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(CounterResponse::decode(response.value.as_slice()).unwrap().value, 3);

    // The JSON route: the gateway process registers no object types, so it learns the
    // counter's method table and descriptors from the node process (`DescribeType`).
    let http = gateway.field("http_address");
    let got =
        crate::gateway_http::request(&http, "POST", "/v1/objects/Counter/c1/Get", &[], "").await;
    assert_eq!((got.status, got.body.as_str()), (200, r#"{"name":"c1","value":3}"#));
    let incremented = crate::gateway_http::request(
        &http,
        "POST",
        "/v1/objects/Counter/c1/Increment",
        &[],
        r#"{"amount": 4}"#,
    )
    .await;
    assert_eq!(incremented.json(), serde_json::json!({"name": "c1", "value": 7}));
    crate::gateway_http::request(&http, "POST", "/v1/objects/Nope/x/Get", &[], "")
        .await
        .assert_error(404, "OBJECT_NOT_FOUND");

    let join =
        call(&client_id, "ChatRoom", "lobby", "Join", pack(&JoinRequest { user: "a".into() }));
    client.call_object(join).await.unwrap();
    let post = call(
        "",
        "ChatRoom",
        "lobby",
        "Post",
        pack(&PostRequest { user: "b".into(), text: "hello".into() }),
    );
    client.call_object(post).await.unwrap();
    let pushed = tokio::time::timeout(BOUND, pushes.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(ChatMessage::decode(pushed.value.as_slice()).unwrap().text, "hello");

    // The push stream stays open: SIGTERM still stops the gateway (the stream ends).
    assert!(gateway.terminate_and_wait(), "the gateway exits 0 on SIGTERM");
    drop(pushes);
    assert!(node.terminate_and_wait(), "the node exits 0 on SIGTERM");
}

/// Retries an idempotent call while it fails, up to [`BOUND`].
async fn until_ok<T, F, Fut>(what: &str, call: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, verse::CallError>>,
{
    let started = Instant::now();
    loop {
        match call().await {
            Ok(value) => return value,
            Err(error) => {
                assert!(started.elapsed() < BOUND, "{what}: no answer within {BOUND:?}: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_deployment_serves_the_rust_client_through_the_gateway() {
    use crate::support::process::{NodeProcess, NodeSpec, counter_ids, postgres_store, wait_ready};
    use verse::GatewayClient;
    use verse::gateway_client::ClientConfig;
    use verse_examples::chat::ChatRoom;
    use verse_examples::counter::Counter;
    use verse_examples::proto::counter::GetRequest;

    let store = postgres_store("gateway_split");
    let dir = tempfile::tempdir().unwrap();
    let spec = |id: &str, args: &[&str]| {
        let mut spec = NodeSpec::new(id, dir.path().join(id), args, &store);
        spec.shards = SPLIT_SHARDS;
        spec
    };
    let voter = ["--coordinator", "raft-voter", "--raft-id", "1", "--raft-listen", "127.0.0.1:0"];
    let mut voter = voter.to_vec();
    voter.push("--raft-init");
    let first = NodeProcess::start(&spec("node-1", &voter));
    let raft = first.field("raft_address").to_owned();
    let mut second =
        NodeProcess::start(&spec("node-2", &["--coordinator", "raft", "--raft-endpoints", &raft]));
    wait_ready(&first).await;
    wait_ready(&second).await;
    let mut gateway = start_gateway(&raft);
    let client =
        GatewayClient::connect(ClientConfig::new([gateway.field("grpc_address")])).await.unwrap();

    // A counter on every shard: both nodes serve some. `Get` is idempotent, so it may be
    // retried while the shards settle; each increment is sent once.
    let ids = counter_ids(SPLIT_SHARDS);
    for id in &ids {
        let counter = client.get::<Counter>(id.clone());
        let before = until_ok(id, || counter.get(GetRequest {})).await;
        assert_eq!(before.value, 0, "{id} starts at 0");
        let after = counter.increment(IncrementRequest { amount: 1 }).await.unwrap();
        assert_eq!(after.value, 1, "{id}");
    }

    // A push from the chat room to this client's session.
    let mut pushes = client.pushes().unwrap();
    let room = client.get::<ChatRoom>("split-lobby");
    room.join(JoinRequest { user: "a".into() }).await.unwrap();
    room.post(PostRequest { user: "b".into(), text: "hello".into() }).await.unwrap();
    let push = tokio::time::timeout(BOUND, pushes.next()).await.unwrap().unwrap();
    assert_eq!(push.unpack::<ChatMessage>().unwrap().text, "hello");

    // node-2 drains away: its counters restore on node-1 from PostgreSQL.
    second.terminate();
    assert!(second.wait_exit(BOUND).success(), "node-2 exits 0 after draining");
    for id in &ids {
        let counter = client.get::<Counter>(id.clone());
        let value = until_ok(id, || counter.get(GetRequest {})).await.value;
        assert_eq!(value, 1, "{id} kept its state");
    }

    client.shutdown();
    assert!(gateway.terminate_and_wait(), "the gateway exits 0 on SIGTERM");
    drop(first);
}

/// Starts `verse gateway` `gw1` against the Raft group at `raft` on ports 0 (TTL 3 s) and
/// waits for its ready line.
fn start_gateway(raft: &str) -> Process {
    Process::start(
        "gateway",
        &[
            "gateway",
            "--gateway-id",
            "gw1",
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--coordinator",
            "raft",
            "--raft-endpoints",
            raft,
            "--lease-ttl",
            "3",
        ],
        "gateway serving",
    )
}
