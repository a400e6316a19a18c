//! `verse node` child processes and an external caller, shared by the process-level tests.
//!
//! [`NodeProcess`] starts `verse-under-test node …` (the `verse` binary through this crate's
//! `[[bin]]` shim), forwards its log to the test's stderr, and reads the addresses from its
//! ready line. [`Caller`] calls counters over the node protocol the way a gateway would:
//! following `NotServed` hints and resending only what provably did not start.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use verse::EncodedMessage;
use verse_core::{CallError, SystemClock};
use verse_transport::{NodeClient, OutgoingCall};

/// How long a process may take to print its ready line.
pub const START_BOUND: Duration = Duration::from_secs(60);
/// How long a process may take to turn ready after its ready line.
pub const READY_BOUND: Duration = Duration::from_secs(30);

/// How to start one `verse node` process.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node id.
    pub id: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Coordinator flags (`--coordinator …` and the rest).
    pub coordinator: Vec<String>,
    /// PostgreSQL connection string and schema.
    pub postgres: (String, String),
    /// Shard count.
    pub shards: u32,
    /// Lease TTL in seconds.
    pub lease_ttl: u64,
    /// Node-protocol listen address (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Turn log file, if any.
    pub turn_log: Option<PathBuf>,
}

impl NodeSpec {
    /// A node on PostgreSQL with a 3 s lease TTL, listening on a free port.
    pub fn new(
        id: &str,
        data_dir: PathBuf,
        coordinator: &[&str],
        postgres: &(String, String),
    ) -> Self {
        NodeSpec {
            id: id.to_owned(),
            data_dir,
            coordinator: coordinator.iter().map(|a| (*a).to_owned()).collect(),
            postgres: postgres.clone(),
            shards: 64,
            lease_ttl: 3,
            listen: "127.0.0.1:0".into(),
            turn_log: None,
        }
    }
}

/// One `verse node` child process; killed on drop unless it already exited.
pub struct NodeProcess {
    /// Node id.
    pub id: String,
    child: Child,
    fields: BTreeMap<String, String>,
    /// Log lines reporting a failed state save (a fenced write is one), a lost lease or a
    /// new Raft leader.
    notable: Arc<Mutex<Vec<String>>>,
}

impl NodeProcess {
    /// Starts a process and waits for its ready line (bounded by [`START_BOUND`]).
    pub fn start(spec: &NodeSpec) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_verse-under-test"));
        command
            .args(["node", "--node-id", &spec.id, "--listen", &spec.listen, "--ops-listen"])
            .args(["127.0.0.1:0", "--shards", &spec.shards.to_string()])
            .args(["--lease-ttl", &spec.lease_ttl.to_string()])
            .args(["--drain-timeout", "30", "--store", "postgres", "--postgres-url"])
            .args([spec.postgres.0.as_str(), "--postgres-schema", spec.postgres.1.as_str()])
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .args(&spec.coordinator);
        if let Some(log) = &spec.turn_log {
            command.arg("--turn-log").arg(log);
        }
        Self::spawn(&spec.id, command)
    }

    /// Starts `verse coord` (a Raft voter hosting no objects) with these `--raft-*` flags and
    /// waits for its ready line.
    pub fn coord(id: &str, data_dir: &std::path::Path, raft: &[String]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_verse-under-test"));
        command
            .args(["coord", "--node-id", id, "--coordinator", "raft-voter"])
            .args(["--ops-listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(raft);
        Self::spawn(id, command)
    }

    fn spawn(id: &str, mut command: Command) -> Self {
        command
            .env("RUST_LOG", "info")
            .env_remove("VERSE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("spawn verse-under-test");
        let stdout = child.stdout.take().expect("piped stdout");
        let id = id.to_owned();
        let notable: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut process = NodeProcess {
            id: id.clone(),
            child,
            fields: BTreeMap::new(),
            notable: notable.clone(),
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        // Forwards the child's log to the test's stderr (keeping the pipe drained) and hands
        // over the ready line's fields.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{id}] {line}");
                if line.contains("ready to serve") {
                    let _ = ready_tx.send(parse_fields(&line));
                }
                if ["state save failed", "lease lost", "Raft leader"]
                    .iter()
                    .any(|p| line.contains(p))
                {
                    notable.lock().expect("notable lines").push(line);
                }
            }
        });
        match ready_rx.recv_timeout(START_BOUND) {
            Ok(fields) => process.fields = fields,
            Err(_) => panic!("{} printed no ready line within {START_BOUND:?}", process.id),
        }
        process
    }

    /// A field of the ready line.
    pub fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("{}: no {name} in {:?}", self.id, self.fields))
    }

    /// The advertised node-protocol address.
    pub fn node_address(&self) -> String {
        self.field("node_address").to_owned()
    }

    /// The ops HTTP address.
    pub fn ops_address(&self) -> String {
        self.field("ops_address").to_owned()
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: sends a signal to our own child by its pid; no memory is involved.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "signal {signal} to {}", self.id);
    }

    /// Log lines so far that report a failed state save, a lost lease or a Raft leader and
    /// contain `pattern`.
    pub fn logged(&self, pattern: &str) -> Vec<String> {
        let lines = self.notable.lock().expect("notable lines");
        lines.iter().filter(|line| line.contains(pattern)).cloned().collect()
    }

    /// Waits until the process logged a line [`NodeProcess::logged`] keeps that contains
    /// `pattern` (bounded).
    pub async fn wait_logged(&self, pattern: &str, within: Duration) {
        let started = Instant::now();
        while self.logged(pattern).is_empty() {
            assert!(
                started.elapsed() < within,
                "{} logged no {pattern:?} within {within:?}",
                self.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGSTOP (the process pauses, its clock keeps running).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Sends SIGCONT.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Sends SIGTERM (the node drains, then exits 0).
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// SIGKILLs the process and reaps it; returns `CLOCK_MONOTONIC` after it died (its open
    /// turn intervals end no later than that).
    pub fn kill(&mut self) -> u64 {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
        super::turns::monotonic_nanos()
    }

    /// Waits for the process to exit (bounded).
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
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

/// Starts several processes at once (voters of one Raft group wait for each other).
pub fn start_all(specs: &[NodeSpec]) -> Vec<NodeProcess> {
    std::thread::scope(|scope| {
        let started: Vec<_> =
            specs.iter().map(|spec| scope.spawn(move || NodeProcess::start(spec))).collect();
        started.into_iter().map(|s| s.join().expect("a node failed to start")).collect()
    })
}

/// `key=value` fields of a tracing fmt line.
pub fn parse_fields(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.trim_matches('"').to_owned()))
        .collect()
}

/// The HTTP status code and body of `GET path` on `address` (None if it cannot connect).
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((code, body))
}

/// Waits until the process answers `/readyz` with 200 (bounded by [`READY_BOUND`]).
pub async fn wait_ready(process: &NodeProcess) {
    let address = process.ops_address();
    let started = Instant::now();
    loop {
        let answer = tokio::task::spawn_blocking({
            let address = address.clone();
            move || http_get(&address, "/readyz")
        })
        .await
        .expect("readyz task");
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

/// The cluster as a caller sees it: node id → node-protocol address (updated as nodes
/// restart on new ports).
pub struct Caller {
    /// The pooled node-protocol client.
    pub client: NodeClient,
    addresses: Mutex<BTreeMap<String, String>>,
    /// Per-call deadline.
    pub deadline: Duration,
}

impl Caller {
    /// A caller reaching `nodes`, with `deadline` per call.
    pub fn new(nodes: &[&NodeProcess], deadline: Duration) -> Self {
        Caller {
            client: NodeClient::new(SystemClock::shared()),
            addresses: Mutex::new(nodes.iter().map(|n| (n.id.clone(), n.node_address())).collect()),
            deadline,
        }
    }

    /// Records `node`'s (new) address.
    pub fn set_address(&self, node: &NodeProcess) {
        let mut addresses = self.addresses.lock().expect("addresses");
        addresses.insert(node.id.clone(), node.node_address());
    }

    /// Forgets a node (it left the cluster).
    pub fn remove(&self, node: &str) {
        self.addresses.lock().expect("addresses").remove(node);
    }

    /// The node ids the caller knows, in order.
    pub fn nodes(&self) -> Vec<String> {
        self.addresses.lock().expect("addresses").keys().cloned().collect()
    }

    fn address(&self, node: &str) -> Option<String> {
        self.addresses.lock().expect("addresses").get(node).cloned()
    }

    /// The node after `node` in id order (wrapping), to try next after a refusal.
    fn next_after(&self, node: &str) -> String {
        let addresses = self.addresses.lock().expect("addresses");
        addresses
            .keys()
            .find(|k| k.as_str() > node)
            .or_else(|| addresses.keys().next())
            .cloned()
            .unwrap_or_else(|| node.to_owned())
    }

    /// Calls `method` of `object_type` `id` through node `via`, following `NotServed` hints
    /// and resending what provably did not start, until the deadline.
    pub async fn call<
        M: prost::Message + prost::Name,
        R: prost::Message + prost::Name + Default,
    >(
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
    pub async fn call_with<
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
        let deadline = SystemClock::shared().now() + self.deadline;
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
            let answer = match self.address(&node) {
                Some(address) => self.client.call(&address, call).await,
                None => Err(CallError::NotDelivered { peer: node.clone(), reason: "left".into() }),
            };
            match answer {
                Ok(answer) => return Ok(answer.unpack::<R>().expect("decode the answer")),
                Err(error @ CallError::NotServed { .. }) if !follow => return Err(error),
                Err(error) if error.provably_not_started() => {
                    node = match &error {
                        CallError::NotServed { hint: Some(hint), .. }
                            if self.address(hint).is_some() && *hint != node =>
                        {
                            hint.clone()
                        }
                        _ => self.next_after(&node),
                    };
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
    pub async fn activations(&self, via: &str, object_type: &str) -> BTreeSet<String> {
        let address = self.address(via).expect("a known node");
        let (listed, truncated) =
            self.client.list_activations(&address, 10_000).await.expect("list activations");
        assert!(!truncated);
        listed.into_iter().filter(|(t, _)| t == object_type).map(|(_, id)| id).collect()
    }
}

/// One counter id per shard of `shards`.
pub fn counter_ids(shards: u32) -> Vec<String> {
    let mut by_shard = BTreeMap::new();
    for i in 0.. {
        let id = format!("counter-{i}");
        by_shard.entry(verse_core::shard::hash_shard(&id, shards).0).or_insert(id);
        if by_shard.len() == shards as usize {
            break;
        }
    }
    by_shard.into_values().collect()
}

/// A PostgreSQL connection string and a fresh schema on the shared fixture.
pub fn postgres_store(name: &str) -> (String, String) {
    use verse_store_postgres::fixture::{PostgresServer, SUPERUSER, TEST_DATABASE};
    let postgres = PostgresServer::shared();
    let url =
        format!("host=127.0.0.1 port={} user={SUPERUSER} dbname={TEST_DATABASE}", postgres.port());
    (url, postgres.unique_schema(name).as_str().to_owned())
}
