//! A1 and A2 of targets.md ("Availability"), measured on real `verse node` processes.
//!
//! A coordinator (a `verse coord` Raft voter, or a single-member etcd from the fixture), three
//! nodes hosting write-through counters on PostgreSQL (the fixture), 256 shards, one counter
//! per shard, 8 callers with a 5 s call deadline following `NotServed` hints, lease TTL 3 s.
//!
//! - **A1**: p99 latency of acknowledged increments during a steady window, then during a
//!   rolling restart of every node (SIGTERM, drain, exit, start again); the added p99 is the
//!   difference. Failed calls (any error, `OutcomeUnknown` included) are counted.
//! - **A2**: node-3 is SIGKILLed `--kills` times; each time, the time until every counter
//!   answers again (through the other nodes); node-3 is then started again. The median.
//!
//! This binary is also the node: invoked as `availability node …` or `availability coord …` it
//! runs `verse_cli::run()`, so no separate `verse` build is needed.
//!
//! `cargo run --release -p verse-bench --bin availability -- --coordinator raft`

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use verse::EncodedMessage;
use verse_core::{CallError, SystemClock};
use verse_examples::proto::counter::{CounterResponse, GetRequest, IncrementRequest};
use verse_store_postgres::fixture::{PostgresServer, SUPERUSER, TEST_DATABASE};
use verse_transport::{NodeClient, OutgoingCall};

const SHARDS: u32 = 256;
const CALLERS: usize = 8;
const DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
struct Args {
    /// `raft` or `etcd`.
    #[arg(long, default_value = "raft")]
    coordinator: String,
    /// SIGKILLs measured for A2.
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// Length of the steady window of A1, in seconds.
    #[arg(long, default_value_t = 10)]
    steady_secs: u64,
}

fn main() -> anyhow::Result<()> {
    let role = std::env::args().nth(1);
    if matches!(role.as_deref(), Some("node" | "coord")) {
        return verse_cli::run();
    }
    let args = Args::parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(measure(args))
}

/// One child process (killed on drop).
struct Proc {
    child: Child,
    fields: BTreeMap<String, String>,
}

impl Proc {
    fn start(args: &[String]) -> anyhow::Result<Proc> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .env("RUST_LOG", "warn,verse_cli=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning a node")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("ready to serve") {
                    let fields = line
                        .split_whitespace()
                        .filter_map(|w| w.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                        .collect::<BTreeMap<_, _>>();
                    let _ = tx.send(fields);
                }
            }
        });
        let fields = rx.recv_timeout(Duration::from_secs(60)).context("no ready line")?;
        Ok(Proc { child, fields })
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: a signal to our own child by pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    fn wait(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        while self.child.try_wait()?.is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                bail!("a node did not exit within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Node id → address, and a client following hints.
struct Caller {
    client: NodeClient,
    addresses: Mutex<BTreeMap<String, String>>,
}

impl Caller {
    fn nodes(&self) -> Vec<String> {
        self.addresses.lock().expect("addresses").keys().cloned().collect()
    }

    fn address(&self, node: &str) -> Option<String> {
        self.addresses.lock().expect("addresses").get(node).cloned()
    }

    async fn call<M: prost::Message + prost::Name>(
        &self,
        via: &str,
        id: &str,
        method: &str,
        request: &M,
        deadline: Duration,
    ) -> Result<CounterResponse, CallError> {
        let deadline = SystemClock::shared().now() + deadline;
        let mut node = via.to_owned();
        loop {
            let call = OutgoingCall {
                object_type: "Counter".into(),
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
                None => Err(CallError::NotDelivered { peer: node.clone(), reason: "gone".into() }),
            };
            match answer {
                Ok(answer) => {
                    return answer.unpack::<CounterResponse>().map_err(|e| e.to_string().into());
                }
                Err(error) if error.provably_not_started() => {
                    let nodes = self.nodes();
                    node = match &error {
                        CallError::NotServed { hint: Some(hint), .. }
                            if nodes.contains(hint) && *hint != node =>
                        {
                            hint.clone()
                        }
                        _ => nodes
                            .iter()
                            .find(|n| **n > node)
                            .or(nodes.first())
                            .cloned()
                            .unwrap_or_else(|| via.to_owned()),
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
}

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

/// The cluster under measurement.
struct Cluster {
    coordinator: Vec<String>,
    postgres: (String, String),
    dir: PathBuf,
    nodes: BTreeMap<String, Proc>,
    caller: Arc<Caller>,
}

impl Cluster {
    fn node_args(&self, id: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "node",
            "--node-id",
            id,
            "--listen",
            "127.0.0.1:0",
            "--ops-listen",
            "127.0.0.1:0",
            "--shards",
            "256",
            "--lease-ttl",
            "3",
            "--drain-timeout",
            "30",
            "--store",
            "postgres",
            "--postgres-url",
            &self.postgres.0,
            "--postgres-schema",
            &self.postgres.1,
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        args.push("--data-dir".into());
        args.push(self.dir.join(id).display().to_string());
        args.extend(self.coordinator.iter().cloned());
        args
    }

    /// Starts `id`; with `hosting`, also waits until it hosts a counter (under load).
    async fn start(&mut self, id: &str, hosting: bool) -> anyhow::Result<()> {
        let args = self.node_args(id);
        let proc = tokio::task::spawn_blocking(move || Proc::start(&args)).await??;
        let address = proc.fields.get("node_address").context("node_address")?.clone();
        self.caller.addresses.lock().expect("addresses").insert(id.to_owned(), address);
        self.nodes.insert(id.to_owned(), proc);
        if hosting { self.wait_hosting(id).await } else { Ok(()) }
    }

    /// Until `id` hosts a counter (it owns shards).
    async fn wait_hosting(&self, id: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let address = self.caller.address(id).context("address")?;
            if let Ok((listed, _)) = self.caller.client.list_activations(&address, 10).await
                && listed.iter().any(|(t, _)| t == "Counter")
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("{id} hosts nothing after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Latencies (µs) of acknowledged calls per phase, and failures per phase.
#[derive(Default)]
struct Record {
    phase: AtomicUsize,
    latencies: Mutex<BTreeMap<usize, Vec<u64>>>,
    failures: Mutex<BTreeMap<usize, u64>>,
    acked: AtomicU64,
}

fn p99(latencies: &[u64]) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    Duration::from_micros(sorted[((sorted.len() - 1) as f64 * 0.99).round() as usize])
}

async fn measure(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let postgres = PostgresServer::shared();
    let url =
        format!("host=127.0.0.1 port={} user={SUPERUSER} dbname={TEST_DATABASE}", postgres.port());
    let schema = postgres.unique_schema("availability").as_str().to_owned();
    let mut _etcd = None;
    let mut _coord = None;
    let coordinator: Vec<String> = match args.coordinator.as_str() {
        "raft" => {
            let coord_args: Vec<String> = [
                "coord",
                "--coordinator",
                "raft-voter",
                "--raft-id",
                "1",
                "--raft-listen",
                "127.0.0.1:0",
                "--raft-init",
                "--data-dir",
            ]
            .iter()
            .map(|a| (*a).to_owned())
            .chain([dir.path().join("coord").display().to_string()])
            .collect();
            let coord = tokio::task::spawn_blocking(move || Proc::start(&coord_args)).await??;
            let raft = coord.fields.get("raft_address").context("raft_address")?.clone();
            _coord = Some(coord);
            vec!["--coordinator".into(), "raft".into(), "--raft-endpoints".into(), raft]
        }
        "etcd" => {
            let etcd = verse_coord_etcd::fixture::EtcdCluster::single().await;
            let endpoints = etcd.endpoints().join(",");
            _etcd = Some(etcd);
            vec!["--coordinator".into(), "etcd".into(), "--etcd-endpoints".into(), endpoints]
        }
        other => bail!("--coordinator raft or etcd, not {other}"),
    };
    let caller = Arc::new(Caller {
        client: NodeClient::new(SystemClock::shared()),
        addresses: Mutex::default(),
    });
    let mut cluster = Cluster {
        coordinator,
        postgres: (url, schema),
        dir: dir.path().to_owned(),
        nodes: BTreeMap::new(),
        caller: caller.clone(),
    };
    for id in ["node-1", "node-2", "node-3"] {
        cluster.start(id, false).await?;
    }

    let ids = Arc::new(counter_ids());
    let record = Arc::new(Record::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..CALLERS)
        .map(|worker| {
            let (caller, ids, record, stop) =
                (caller.clone(), ids.clone(), record.clone(), stop.clone());
            tokio::spawn(async move {
                let mut index = worker;
                while !stop.load(Ordering::Relaxed) {
                    let nodes = caller.nodes();
                    let via = nodes[index % nodes.len()].clone();
                    let id = &ids[index % ids.len()];
                    let phase = record.phase.load(Ordering::Relaxed);
                    let started = Instant::now();
                    let request = IncrementRequest { amount: 1 };
                    match caller.call(&via, id, "Increment", &request, DEADLINE).await {
                        Ok(_) => {
                            let micros = started.elapsed().as_micros() as u64;
                            record.acked.fetch_add(1, Ordering::Relaxed);
                            let mut latencies = record.latencies.lock().expect("latencies");
                            latencies.entry(phase).or_default().push(micros);
                        }
                        Err(_) => {
                            *record.failures.lock().expect("failures").entry(phase).or_default() +=
                                1;
                        }
                    }
                    index += CALLERS;
                }
            })
        })
        .collect();

    // A1: warm-up (phase 0), steady window (phase 1), rolling restart (phase 2).
    tokio::time::sleep(Duration::from_secs(3)).await;
    record.phase.store(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.steady_secs)).await;
    record.phase.store(2, Ordering::Relaxed);
    let rolling = Instant::now();
    for id in ["node-1", "node-2", "node-3"] {
        let mut proc = cluster.nodes.remove(id).context("node")?;
        proc.signal(libc::SIGTERM);
        let proc = tokio::task::spawn_blocking(move || proc.wait().map(|()| proc)).await??;
        drop(proc);
        caller.addresses.lock().expect("addresses").remove(id);
        cluster.start(id, true).await?;
    }
    let rolling = rolling.elapsed();
    record.phase.store(3, Ordering::Relaxed);

    // A2: SIGKILL node-3, time until every counter answers through the others.
    let mut served_again = Vec::new();
    for _ in 0..args.kills {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut proc = cluster.nodes.remove("node-3").context("node-3")?;
        proc.signal(libc::SIGKILL);
        let killed = Instant::now();
        caller.addresses.lock().expect("addresses").remove("node-3");
        let _ = proc.child.wait();
        let mut waiting: Vec<String> = ids.to_vec();
        while !waiting.is_empty() {
            if killed.elapsed() > Duration::from_secs(60) {
                bail!("{} counters not served 60 s after SIGKILL", waiting.len());
            }
            let mut round = tokio::task::JoinSet::new();
            for id in waiting {
                let caller = caller.clone();
                round.spawn(async move {
                    let get = caller.call("node-1", &id, "Get", &GetRequest {}, DEADLINE / 5);
                    get.await.err().map(|_| id)
                });
            }
            waiting = round.join_all().await.into_iter().flatten().collect();
        }
        served_again.push(killed.elapsed());
        cluster.start("node-3", true).await?;
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await?;
    }

    let latencies = record.latencies.lock().expect("latencies").clone();
    let failures = record.failures.lock().expect("failures").clone();
    let steady = p99(latencies.get(&1).map_or(&[][..], |v| v));
    let restart = p99(latencies.get(&2).map_or(&[][..], |v| v));
    served_again.sort();
    let median = served_again.get(served_again.len() / 2).copied().unwrap_or_default();
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!("availability, coordinator {}, {profile} build, 2 tokio workers", args.coordinator);
    println!("| measure | value |");
    println!("|---|---|");
    println!("| A1 steady p99 ({} calls) | {steady:.1?} |", latencies.get(&1).map_or(0, Vec::len));
    println!(
        "| A1 rolling-restart p99 ({} calls, restart took {rolling:.1?}) | {restart:.1?} |",
        latencies.get(&2).map_or(0, Vec::len)
    );
    println!("| A1 added p99 | {:.1?} |", restart.saturating_sub(steady));
    println!("| A1 failed calls during the restart | {} |", failures.get(&2).copied().unwrap_or(0));
    println!("| A2 served again after SIGKILL, each | {served_again:.2?} |");
    println!("| A2 median (TTL 3 s; target ≤ TTL + 2 s) | {median:.2?} |");
    println!(
        "| failed calls during the kills (expected: unreachable shards) | {} |",
        failures.get(&3).copied().unwrap_or(0)
    );
    drop(cluster);
    Ok(())
}
