//! Multi-process failure scenarios (issue 5, item 7): `verse node` processes hosting
//! write-through counters on PostgreSQL, 256 shards, one counter id per shard, 8 concurrent
//! callers with a 5 s call deadline, lease TTL 3 s, every outcome recorded; each scenario
//! ends with the turn-interval checker over every process's turn log.
//!
//! The scenarios run on the embedded Raft coordinator and on etcd. They assert generous
//! liveness bounds only; figures (p99, time to serve again) are printed for the record and
//! measured properly in `bench/`.

mod connection_cut;
mod coordinator_leader;
mod cut_off;
mod rolling_restart;
mod sigkill;
mod stale_owner;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use verse_core::CallError;
use verse_examples::proto::counter::{CounterResponse, GetRequest, IncrementRequest};

use crate::support::process::{Caller, NodeProcess, NodeSpec, counter_ids, wait_ready};
use crate::support::turns::{self, Interval};

/// Shards of every scenario.
pub const SHARDS: u32 = 256;
/// Call deadline of every call.
pub const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// Lease TTL (seconds) of every node.
pub const LEASE_TTL_SECS: u64 = 3;
/// Concurrent callers.
pub const CALLERS: usize = 8;
/// Bound on a SIGTERMed node's drain and exit.
pub const EXIT_BOUND: Duration = Duration::from_secs(60);

/// Which coordinator a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded Raft group.
    Raft,
    /// etcd (the fixture's single member).
    Etcd,
}

/// A free local port (bound, then released; the caller binds it again soon).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// The processes of one scenario, their turn logs and kill times.
pub struct Cluster {
    dir: PathBuf,
    postgres: (String, String),
    /// Running processes by node id.
    pub nodes: BTreeMap<String, NodeProcess>,
    specs: BTreeMap<String, NodeSpec>,
    launches: BTreeMap<String, usize>,
    /// Every turn log written, with the kill time of its process if it was SIGKILLed.
    logs: Vec<(PathBuf, Option<u64>)>,
    /// When a process was paused (SIGSTOP), by turn log.
    paused: BTreeMap<PathBuf, u64>,
}

impl Cluster {
    /// An empty cluster whose processes keep their files under `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        Cluster {
            dir: dir.to_owned(),
            postgres: crate::support::process::postgres_store(name),
            nodes: BTreeMap::new(),
            specs: BTreeMap::new(),
            launches: BTreeMap::new(),
            logs: Vec::new(),
            paused: BTreeMap::new(),
        }
    }

    /// The spec of node `id` with these coordinator flags (256 shards, TTL 3 s).
    pub fn spec(&self, id: &str, coordinator: &[String]) -> NodeSpec {
        let args: Vec<&str> = coordinator.iter().map(String::as_str).collect();
        let mut spec = NodeSpec::new(id, self.dir.join(id), &args, &self.postgres);
        spec.shards = SHARDS;
        spec.lease_ttl = LEASE_TTL_SECS;
        spec
    }

    /// Gives each spec a fresh turn log (one per process start).
    fn prepare(&mut self, spec: &NodeSpec) -> NodeSpec {
        let launch = self.launches.entry(spec.id.clone()).or_default();
        *launch += 1;
        let log = self.dir.join(format!("{}.{launch}.turns", spec.id));
        self.logs.push((log.clone(), None));
        let mut spec = spec.clone();
        spec.turn_log = Some(log);
        self.specs.insert(spec.id.clone(), spec.clone());
        spec
    }

    /// Starts these nodes together and waits until each is ready.
    pub async fn start(&mut self, specs: &[NodeSpec]) {
        let prepared: Vec<NodeSpec> = specs.iter().map(|s| self.prepare(s)).collect();
        let started =
            tokio::task::spawn_blocking(move || crate::support::process::start_all(&prepared))
                .await
                .expect("start nodes");
        for process in started {
            wait_ready(&process).await;
            self.nodes.insert(process.id.clone(), process);
        }
    }

    /// SIGTERM to `id`: waits for it to drain and exit 0.
    pub async fn terminate(&mut self, id: &str) {
        let mut process = self.nodes.remove(id).expect("a running node");
        process.terminate();
        let status =
            tokio::task::spawn_blocking(move || process.wait_exit(EXIT_BOUND)).await.expect("wait");
        assert!(status.success(), "{id} exited with {status}");
    }

    /// Starts `id` again with its last spec (a new turn log).
    pub async fn restart(&mut self, id: &str) {
        let spec = self.specs.get(id).expect("a known node").clone();
        self.start(&[spec]).await;
    }

    /// SIGKILLs `id`; its last turn log's open intervals end at the kill.
    pub async fn kill(&mut self, id: &str) -> u64 {
        let mut process = self.nodes.remove(id).expect("a running node");
        let killed = tokio::task::spawn_blocking(move || process.kill()).await.expect("kill");
        let launch = self.launches[id];
        let log = self.dir.join(format!("{id}.{launch}.turns"));
        for (path, at) in &mut self.logs {
            if *path == log {
                *at = Some(killed);
            }
        }
        killed
    }

    /// SIGSTOPs `id` and records when (see [`Cluster::check_turns`]).
    pub fn pause(&mut self, id: &str) {
        self.nodes[id].pause();
        let launch = self.launches[id];
        self.paused.insert(self.dir.join(format!("{id}.{launch}.turns")), turns::monotonic_nanos());
    }

    /// The turns node `id`'s current process logged so far (a running turn ends now).
    pub fn turns_of(&self, id: &str) -> Vec<Interval> {
        let launch = self.launches[id];
        let path = self.dir.join(format!("{id}.{launch}.turns"));
        turns::read_log(&path, Some(turns::monotonic_nanos())).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The PostgreSQL connection string and schema the nodes use.
    pub fn postgres(&self) -> &(String, String) {
        &self.postgres
    }

    /// SIGTERMs every running node (so their logs are complete).
    pub async fn stop_all(&mut self) {
        let ids: Vec<String> = self.nodes.keys().cloned().collect();
        for id in ids {
            self.terminate(&id).await;
        }
    }

    /// Runs the turn-interval checker over every log; panics on a violation.
    ///
    /// A turn of a paused process that was running when it was paused ends, for the check,
    /// at the pause: the process ran nothing while stopped, and what the turn does after the
    /// resume happens with its lease expired: its state write is rejected by the fence, and a
    /// response it still sends is the lease rule's accepted limit (a pause longer than
    /// `margin` between a check and its effect). Turns *starting* after the resume are
    /// checked in full (the lease check must refuse them).
    pub fn check_turns(&self, name: &str) {
        let mut intervals: Vec<Interval> = Vec::new();
        for (path, killed) in &self.logs {
            let mut read = turns::read_log(path, *killed).unwrap_or_else(|e| panic!("{e}"));
            if let Some(&paused) = self.paused.get(path) {
                for interval in &mut read {
                    if interval.start <= paused && paused < interval.end {
                        interval.end = paused;
                    }
                }
            }
            intervals.extend(read);
        }
        match turns::check(&intervals) {
            Ok(checked) => {
                eprintln!("{name}: turn intervals checked: {checked:?}");
                assert!(checked.intervals > 0, "{name}: no turn was logged");
            }
            Err(violations) => panic!(
                "{name}: {} violations of single activation or epoch order: {:#?}",
                violations.len(),
                &violations[..violations.len().min(20)]
            ),
        }
    }
}

/// Outcomes of the load, per counter.
pub struct Outcomes {
    /// Acknowledged increments per counter.
    pub acked: Vec<AtomicI64>,
    /// Increments that may have run without an acknowledgement (outcome unknown).
    pub maybe: Vec<AtomicI64>,
    /// Failed calls (any error), with the error.
    pub failures: Mutex<Vec<String>>,
    /// Latencies of acknowledged calls, microseconds.
    pub latencies: Mutex<Vec<u64>>,
    /// Acknowledged calls in total.
    pub total: AtomicU64,
}

impl Outcomes {
    fn new(count: usize) -> Self {
        Outcomes {
            acked: (0..count).map(|_| AtomicI64::new(0)).collect(),
            maybe: (0..count).map(|_| AtomicI64::new(0)).collect(),
            failures: Mutex::default(),
            latencies: Mutex::default(),
            total: AtomicU64::new(0),
        }
    }

    /// Failed calls so far.
    pub fn failed(&self) -> Vec<String> {
        self.failures.lock().expect("failures").clone()
    }

    /// The `q` quantile of acknowledged latencies.
    pub fn latency_quantile(&self, q: f64) -> Duration {
        let mut latencies = self.latencies.lock().expect("latencies").clone();
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        latencies.sort_unstable();
        let index = ((latencies.len() - 1) as f64 * q).round() as usize;
        Duration::from_micros(latencies[index])
    }
}

/// [`CALLERS`] callers incrementing counters through every node until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    /// What happened.
    pub outcomes: Arc<Outcomes>,
    /// The counters, one per shard.
    pub ids: Arc<Vec<String>>,
}

impl Load {
    /// Starts the callers.
    pub fn start(caller: &Arc<Caller>) -> Load {
        let ids = Arc::new(counter_ids(SHARDS));
        let outcomes = Arc::new(Outcomes::new(ids.len()));
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..CALLERS)
            .map(|worker| {
                let (caller, ids, outcomes, stop) =
                    (caller.clone(), ids.clone(), outcomes.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut index = worker;
                    while !stop.load(Ordering::Relaxed) {
                        let slot = index % ids.len();
                        let nodes = caller.nodes();
                        let via = nodes[index % nodes.len()].clone();
                        let started = Instant::now();
                        let request = IncrementRequest { amount: 1 };
                        let answer: Result<CounterResponse, CallError> =
                            caller.call(&via, "Counter", &ids[slot], "Increment", &request).await;
                        match answer {
                            Ok(_) => {
                                outcomes.acked[slot].fetch_add(1, Ordering::Relaxed);
                                outcomes.total.fetch_add(1, Ordering::Relaxed);
                                let micros = started.elapsed().as_micros() as u64;
                                outcomes.latencies.lock().expect("latencies").push(micros);
                            }
                            Err(error) => {
                                if !error.provably_not_started() {
                                    outcomes.maybe[slot].fetch_add(1, Ordering::Relaxed);
                                }
                                let failure = format!("{} via {via}: {error}", ids[slot]);
                                outcomes.failures.lock().expect("failures").push(failure);
                            }
                        }
                        index += CALLERS;
                    }
                })
            })
            .collect();
        Load { stop, workers, outcomes, ids }
    }

    /// Waits until `more` further calls were acknowledged (bounded by `within`).
    pub async fn wait_acknowledged(&self, more: u64, within: Duration) {
        let target = self.outcomes.total.load(Ordering::Relaxed) + more;
        let started = Instant::now();
        while self.outcomes.total.load(Ordering::Relaxed) < target {
            assert!(
                started.elapsed() < within,
                "fewer than {more} calls acknowledged within {within:?} (minimum call rate)"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the callers and waits for them.
    pub async fn finish(self) -> Arc<Outcomes> {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.expect("a caller panicked");
        }
        self.outcomes
    }
}

/// Reads every counter and compares with the outcomes: exactly the acknowledged increments
/// (`exact`), or at least those and at most those plus the unknown ones.
pub async fn check_values(caller: &Caller, ids: &[String], outcomes: &Outcomes, exact: bool) {
    let nodes = caller.nodes();
    for (slot, id) in ids.iter().enumerate() {
        let got: CounterResponse = caller
            .call(&nodes[slot % nodes.len()], "Counter", id, "Get", &GetRequest {})
            .await
            .unwrap_or_else(|e| panic!("reading {id}: {e}"));
        let value = i64::from(got.value);
        let acked = outcomes.acked[slot].load(Ordering::Relaxed);
        let maybe = outcomes.maybe[slot].load(Ordering::Relaxed);
        if exact {
            assert_eq!(value, acked, "counter {id}: value != acknowledged increments");
        } else {
            assert!(
                acked <= value && value <= acked + maybe,
                "counter {id}: value {value} outside [{acked}, {}]",
                acked + maybe
            );
        }
    }
}

/// Waits until node `id` hosts at least one counter (it owns shards again), bounded.
pub async fn wait_hosting(caller: &Caller, id: &str, within: Duration) {
    let started = Instant::now();
    while caller.activations(id, "Counter").await.is_empty() {
        assert!(started.elapsed() < within, "{id} hosts no counter within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
