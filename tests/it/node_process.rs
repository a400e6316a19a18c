//! Three `verse node` processes: the first an embedded Raft voter (`--raft-init`), the others
//! members reaching it over gRPC; write-through counters on a shared PostgreSQL (the fixture).
//! Every process binds port 0 and prints its addresses in its ready line.
//!
//! (a) every node answers `/healthz`, `/metrics` and, once joined, `/readyz`; (b) calls through
//! every node reach every counter (through the node protocol, following `NotServed` hints like a
//! gateway would), and greeters served on every node relay to greeters on other nodes (calls
//! *from* every node); (c) SIGTERM to one node: it drains and exits 0 within a bound, and the
//! others keep serving every counter with every acknowledged increment.

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use verse::EncodedMessage;
use verse_core::{CallError, SystemClock};
use verse_examples::proto::counter::{CounterResponse, GetRequest, IncrementRequest};
use verse_examples::proto::greeter::{HelloReply, HelloRequest};
use verse_store_postgres::fixture::{PostgresServer, SUPERUSER, TEST_DATABASE};
use verse_transport::{NodeClient, OutgoingCall};

const SHARDS: u32 = 64;
const CALL_DEADLINE: Duration = Duration::from_secs(5);
const START_BOUND: Duration = Duration::from_secs(60);
const READY_BOUND: Duration = Duration::from_secs(30);
const EXIT_BOUND: Duration = Duration::from_secs(45);

/// One `verse node` child process; killed on drop unless it already exited.
struct NodeProcess {
    id: String,
    child: Child,
    fields: BTreeMap<String, String>,
}

impl NodeProcess {
    fn start(id: &str, data_dir: &Path, coordinator: &[&str], postgres: &(String, String)) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_verse-under-test"));
        command
            .args(["node", "--node-id", id, "--listen", "127.0.0.1:0", "--ops-listen"])
            .args(["127.0.0.1:0", "--shards", &SHARDS.to_string(), "--lease-ttl", "3"])
            .args(["--drain-timeout", "30", "--store", "postgres", "--postgres-url"])
            .args([postgres.0.as_str(), "--postgres-schema", postgres.1.as_str()])
            .arg("--data-dir")
            .arg(data_dir)
            .args(coordinator)
            .env("RUST_LOG", "info")
            .env_remove("VERSE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("spawn verse-under-test");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut process = NodeProcess { id: id.to_owned(), child, fields: BTreeMap::new() };
        let (ready_tx, ready_rx) = mpsc::channel();
        let name = id.to_owned();
        // Forwards the child's log to the test's stderr (keeping the pipe drained) and hands
        // over the ready line's fields.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{name}] {line}");
                if line.contains("ready to serve") {
                    let _ = ready_tx.send(parse_fields(&line));
                }
            }
        });
        match ready_rx.recv_timeout(START_BOUND) {
            Ok(fields) => process.fields = fields,
            Err(_) => panic!("{id} printed no ready line within {START_BOUND:?}"),
        }
        process
    }

    fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("{}: no {name} in {:?}", self.id, self.fields))
    }

    fn node_address(&self) -> String {
        self.field("node_address").to_owned()
    }

    fn ops_address(&self) -> String {
        self.field("ops_address").to_owned()
    }

    fn terminate(&self) {
        // SAFETY: sends a signal to our own child by its pid; no memory is involved.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to {}", self.id);
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < within, "{} did not exit within {within:?}", self.id);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `key=value` fields of a tracing fmt line.
fn parse_fields(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.trim_matches('"').to_owned()))
        .collect()
}

/// The HTTP status code of `GET path` on `address` (None if it cannot connect).
fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((code, body))
}

async fn wait_ready(process: &NodeProcess) {
    let address = process.ops_address();
    let started = Instant::now();
    loop {
        let answer = tokio::task::spawn_blocking({
            let address = address.clone();
            move || http_get(&address, "/readyz")
        })
        .await
        .unwrap();
        if matches!(answer, Some((200, _))) {
            return;
        }
        assert!(
            started.elapsed() < READY_BOUND,
            "{} not ready within {READY_BOUND:?}: {answer:?}",
            process.id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The cluster as a caller sees it: node id → node-protocol address.
struct Caller {
    client: NodeClient,
    addresses: BTreeMap<String, String>,
}

impl Caller {
    /// Calls `method` of `object_type` `id` through node `via`, following `NotServed` hints
    /// and resending what provably did not start, until the deadline.
    async fn call<M: prost::Message + prost::Name, R: prost::Message + prost::Name + Default>(
        &self,
        via: &str,
        object_type: &str,
        id: &str,
        method: &str,
        request: &M,
    ) -> Result<R, CallError> {
        self.call_with(via, true, object_type, id, method, request).await
    }

    /// [`Caller::call`]; with `follow` false, a `NotServed` answer is returned as is.
    async fn call_with<
        M: prost::Message + prost::Name,
        R: prost::Message + prost::Name + Default,
    >(
        &self,
        via: &str,
        follow: bool,
        object_type: &str,
        id: &str,
        method: &str,
        request: &M,
    ) -> Result<R, CallError> {
        let deadline = SystemClock::shared().now() + CALL_DEADLINE;
        let mut node = via.to_owned();
        loop {
            let call = OutgoingCall {
                object_type: object_type.into(),
                id: id.into(),
                method: method.into(),
                request: EncodedMessage::pack(request),
                deadline,
                chain: Vec::new(),
                identity: None,
                call_id: None,
                one_way: false,
            };
            match self.client.call(&self.addresses[&node], call).await {
                Ok(answer) => return Ok(answer.unpack::<R>().expect("decode the answer")),
                Err(error @ CallError::NotServed { .. }) if !follow => return Err(error),
                Err(error) if error.provably_not_started() => {
                    if let CallError::NotServed { hint: Some(hint), .. } = &error
                        && self.addresses.contains_key(hint)
                    {
                        node = hint.clone();
                    } else {
                        node = via.to_owned();
                    }
                    if SystemClock::shared().now() >= deadline {
                        return Err(error);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Node `via`'s activations of `object_type`.
    async fn activations(&self, via: &str, object_type: &str) -> BTreeSet<String> {
        let (listed, truncated) =
            self.client.list_activations(&self.addresses[via], 10_000).await.unwrap();
        assert!(!truncated);
        listed.into_iter().filter(|(t, _)| t == object_type).map(|(_, id)| id).collect()
    }
}

/// One counter id per shard.
fn counter_ids() -> Vec<String> {
    let mut by_shard = BTreeMap::new();
    for i in 0.. {
        let id = format!("counter-{i}");
        by_shard.entry(verse_core::shard::hash_shard(&id, SHARDS).0).or_insert(id);
        if by_shard.len() == SHARDS as usize {
            break;
        }
    }
    by_shard.into_values().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_processes_serve_every_object_and_one_drains_on_sigterm() {
    let started = Instant::now();
    let postgres = PostgresServer::shared();
    let url =
        format!("host=127.0.0.1 port={} user={SUPERUSER} dbname={TEST_DATABASE}", postgres.port());
    let store = (url, postgres.unique_schema("node_process").as_str().to_owned());
    let dir = tempfile::tempdir().unwrap();

    let voter_args =
        ["--coordinator", "raft-voter", "--raft-id", "1", "--raft-listen", "127.0.0.1:0"];
    let mut voter_args: Vec<&str> = voter_args.to_vec();
    voter_args.push("--raft-init");
    let first = NodeProcess::start("node-1", &dir.path().join("node-1"), &voter_args, &store);
    let raft_address = first.field("raft_address").to_owned();
    let member_args = ["--coordinator", "raft", "--raft-endpoints", raft_address.as_str()];
    let mut nodes = vec![first];
    for id in ["node-2", "node-3"] {
        nodes.push(NodeProcess::start(id, &dir.path().join(id), &member_args, &store));
    }

    // (a) Ops endpoints.
    for node in &nodes {
        wait_ready(node).await;
        let ops = node.ops_address();
        let (health, metrics) = tokio::task::spawn_blocking(move || {
            (http_get(&ops, "/healthz"), http_get(&ops, "/metrics"))
        })
        .await
        .unwrap();
        assert_eq!(health.map(|(code, _)| code), Some(200), "{} /healthz", node.id);
        assert_eq!(metrics.map(|(code, _)| code), Some(200), "{} /metrics", node.id);
    }
    eprintln!("three nodes ready after {:?}", started.elapsed());

    let caller = Caller {
        client: NodeClient::new(SystemClock::shared()),
        addresses: nodes.iter().map(|n| (n.id.clone(), n.node_address())).collect(),
    };
    let ids = counter_ids();

    // (b) Every counter through every node.
    let mut acknowledged: BTreeMap<&str, u32> = BTreeMap::new();
    for node in &nodes {
        for id in &ids {
            let _: CounterResponse = caller
                .call(&node.id, "Counter", id, "Increment", &IncrementRequest { amount: 1 })
                .await
                .unwrap_or_else(|e| panic!("increment {id} via {}: {e}", node.id));
            *acknowledged.entry(id).or_default() += 1;
        }
    }
    for id in &ids {
        let got: CounterResponse =
            caller.call("node-2", "Counter", id, "Get", &GetRequest {}).await.unwrap();
        assert_eq!(got.value, acknowledged[id.as_str()] as i32, "counter {id}");
    }

    // Calls from every node: greeters served by node X relay to `<id>-relay`, wherever it is.
    let mut relayed_from: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for node in &nodes {
        let mut count = 0;
        for i in 0..1000 {
            let id = format!("greeter-{}-{i}", node.id);
            let request = HelloRequest { name: "relay".into() };
            // Only greeters node X serves itself: the relay then starts on X.
            let answer = caller
                .call_with::<_, HelloReply>(&node.id, false, "Greeter", &id, "Relay", &request);
            match answer.await {
                Ok(reply) => assert!(reply.message.contains("-relay"), "{reply:?}"),
                Err(CallError::NotServed { .. }) => continue,
                Err(error) => panic!("relay {id} via {}: {error}", node.id),
            }
            relayed_from.entry(node.id.clone()).or_default().push(format!("{id}-relay"));
            count += 1;
            if count == 12 {
                break;
            }
        }
        assert_eq!(count, 12, "{} serves too few greeters", node.id);
    }
    for node in &nodes {
        let mut elsewhere = 0;
        for other in nodes.iter().filter(|o| o.id != node.id) {
            let active = caller.activations(&other.id, "Greeter").await;
            elsewhere += relayed_from[&node.id].iter().filter(|r| active.contains(*r)).count();
        }
        assert!(elsewhere > 0, "no relay from {} reached another node", node.id);
    }

    // (c) SIGTERM to node-3: it drains and exits 0; the others serve every counter.
    let mut leaving = nodes.pop().unwrap();
    let sigterm = Instant::now();
    leaving.terminate();
    let status = leaving.wait_exit(EXIT_BOUND);
    eprintln!("node-3 exited {status} after {:?}", sigterm.elapsed());
    assert!(status.success(), "node-3 exited with {status}");
    let caller = Caller {
        client: NodeClient::new(SystemClock::shared()),
        addresses: nodes.iter().map(|n| (n.id.clone(), n.node_address())).collect(),
    };
    for node in &nodes {
        for id in &ids {
            let _: CounterResponse = caller
                .call(&node.id, "Counter", id, "Increment", &IncrementRequest { amount: 1 })
                .await
                .unwrap_or_else(|e| panic!("increment {id} via {} after SIGTERM: {e}", node.id));
            *acknowledged.entry(id).or_default() += 1;
        }
    }
    for id in &ids {
        let got: CounterResponse =
            caller.call("node-1", "Counter", id, "Get", &GetRequest {}).await.unwrap();
        assert_eq!(got.value, acknowledged[id.as_str()] as i32, "counter {id} after SIGTERM");
    }
    eprintln!("whole test took {:?}", started.elapsed());
}
