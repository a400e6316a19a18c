//! The cluster runtime end to end in one process: one embedded Raft voter, nodes each with a
//! gRPC server on 127.0.0.1:0, a Raft coordinator client and a gRPC transport, hosting
//! write-through counters on one shared in-memory store (standing in for PostgreSQL).
//!
//! (a) calls from every node reach every object, each active on exactly one node; (b) a
//! fourth node joins under load: zero failed calls, final values == acknowledged increments;
//! (c) a node drains and leaves under load: the same.

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use verse::prelude::*;
use verse_coord_raft::{ClientOptions, LocalRouter, RaftCoordinator, RaftVoter, VoterConfig};
use verse_core::coordinator::Coordinator;
use verse_core::store::DEFAULT_TOMBSTONE_RETENTION;
use verse_core::{
    ClusterError, ClusterNode, ClusterOptions, MemoryStore, SharedClock, StateStore, SystemClock,
    TokioBlockingExecutor,
};
use verse_examples::counter::Counter;
use verse_examples::proto::counter::{GetRequest, IncrementRequest};
use verse_examples::proto::greeter::{HelloReply, HelloRequest};
use verse_transport::{NodeClient, NodeServer, TcpIncoming};

const SHARDS: u32 = 64;
const LEASE_TTL: Duration = Duration::from_secs(3);
const CALL_DEADLINE: Duration = Duration::from_secs(5);
const CALLERS: usize = 8;

/// Set by the handoff-exception test to let the first hop of its chain go on.
static HOP_RELEASE: AtomicBool = AtomicBool::new(false);

/// Relays along a path: `name` is `wait;next,rest…` (`wait`: hold the turn until the test
/// sets [`HOP_RELEASE`], at most 20 s); each hop answers `id@node` followed by the answers
/// of the rest of the path.
#[derive(Default)]
struct Hop;

#[verse::object]
impl Hop {
    async fn hop(
        &mut self,
        ctx: &CallContext,
        req: HelloRequest,
    ) -> Result<HelloReply, MethodError> {
        let (wait, path) = req.name.split_once(';').unwrap_or(("", &req.name));
        if wait == "wait" {
            let started = Instant::now();
            while !HOP_RELEASE.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(20)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let here = format!("{}@{}", ctx.id(), ctx.node_id());
        let Some(next) = path.split(',').next().filter(|n| !n.is_empty()) else {
            return Ok(HelloReply { message: here, ..HelloReply::default() });
        };
        let rest = path.split_once(',').map_or("", |(_, rest)| rest);
        let request = HelloRequest { name: format!(";{rest}") };
        let reply = ctx.get::<Hop>(next).hop(request).await.map_err(|e| e.to_string())?;
        Ok(HelloReply { message: format!("{here} {}", reply.message), ..HelloReply::default() })
    }
}

/// One node of the test cluster.
struct TestNode {
    id: String,
    node: Arc<Node>,
    cluster: ClusterNode,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl TestNode {
    async fn start(id: &str, voter: &Arc<RaftVoter>, store: &Arc<dyn StateStore>) -> TestNode {
        Self::start_with(id, voter, store, false).await.unwrap()
    }

    /// Starts a node; `allow_state_loss` as in [`ClusterOptions`].
    async fn start_with(
        id: &str,
        voter: &Arc<RaftVoter>,
        store: &Arc<dyn StateStore>,
        allow_state_loss: bool,
    ) -> Result<TestNode, ClusterError> {
        let clock: SharedClock = SystemClock::shared();
        let config =
            NodeConfig { node_id: id.into(), shard_count: SHARDS, ..NodeConfig::default() };
        let options = TypeOptions::default().persistence(PersistencePolicy::WriteThrough);
        let node = Arc::new(
            NodeBuilder::new(config)
                .clustered()
                .object_with::<Counter>(options)
                .object::<Hop>()
                .clock(clock.clone())
                .store(store.clone())
                .start()
                .unwrap(),
        );
        let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let address = incoming.local_addr().unwrap().to_string();
        let (stop, signal) = oneshot::channel::<()>();
        let server = NodeServer::new(node.clone());
        let served = tokio::spawn(async move {
            server
                .serve(incoming, async move {
                    let _ = signal.await;
                })
                .await
                .unwrap();
        });
        let coordinator: Arc<dyn Coordinator> = Arc::new(RaftCoordinator::new(
            voter.clone(),
            clock.clone(),
            ClientOptions::new(LEASE_TTL),
        ));
        let transport = Arc::new(NodeClient::new(clock));
        let mut options = ClusterOptions::new(address);
        options.plan_interval = Duration::from_millis(200);
        options.evaluate_interval = Duration::from_millis(200);
        options.handoff_timeout = Duration::from_secs(5);
        options.drain_timeout = Duration::from_secs(20);
        options.allow_state_loss = allow_state_loss;
        let cluster = match ClusterNode::start(node.clone(), coordinator, transport, options).await
        {
            Ok(cluster) => cluster,
            Err(error) => {
                let _ = stop.send(());
                served.await.unwrap();
                node.shutdown().await;
                return Err(error);
            }
        };
        Ok(TestNode { id: id.into(), node, cluster, server: Some((stop, served)) })
    }

    /// Leaves: cluster runtime, then the server (graceful), then the node.
    async fn stop(mut self) {
        self.cluster.shutdown().await;
        if let Some((stop, served)) = self.server.take() {
            let _ = stop.send(());
            served.await.unwrap();
        }
        self.node.shutdown().await;
    }
}

/// One counter id per shard.
fn counter_ids(node: &Node) -> Vec<String> {
    let mut by_shard = BTreeMap::new();
    for i in 0.. {
        let id = format!("counter-{i}");
        let shard = verse_core::runtime::shard_of(node, &id).unwrap();
        by_shard.entry(shard.0).or_insert(id);
        if by_shard.len() == SHARDS as usize {
            break;
        }
    }
    by_shard.into_values().collect()
}

/// Waits until every shard's owner is its target, live and serving, and targets are spread
/// evenly over `nodes`.
async fn wait_converged(coordinator: &dyn Coordinator, nodes: &[&str], within: Duration) {
    let started = Instant::now();
    loop {
        let snapshot = coordinator.snapshot().await.unwrap();
        let mut counts: BTreeMap<&str, u32> = nodes.iter().map(|n| (*n, 0)).collect();
        let mut settled = true;
        for entry in snapshot.map.iter() {
            let owner = entry.owner.as_ref();
            let target = entry.target_node().map(|t| t.as_str());
            let owned_by_target = owner.is_some_and(|o| {
                !o.released
                    && Some(o.node.as_str()) == target
                    && snapshot.members.get(&o.node).is_some_and(|m| m.incarnation == o.incarnation)
            });
            match target.and_then(|t| counts.get_mut(t)) {
                Some(count) if owned_by_target => *count += 1,
                _ => settled = false,
            }
        }
        let (min, max) = (counts.values().min().unwrap(), counts.values().max().unwrap());
        if settled && max - min <= 1 {
            return;
        }
        assert!(
            started.elapsed() < within,
            "no convergence on {nodes:?} within {within:?}: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Callers incrementing counters through the given nodes until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    failures: Arc<Mutex<Vec<String>>>,
    acknowledged: Arc<AtomicI64>,
}

impl Load {
    fn start(nodes: &[Arc<Node>], ids: &Arc<Vec<String>>, acked: &Arc<Vec<AtomicI64>>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let acknowledged = Arc::new(AtomicI64::new(0));
        let workers = (0..CALLERS)
            .map(|worker| {
                let client = nodes[worker % nodes.len()].client().with_timeout(CALL_DEADLINE);
                let (ids, acked, stop, failures, acknowledged) = (
                    ids.clone(),
                    acked.clone(),
                    stop.clone(),
                    failures.clone(),
                    acknowledged.clone(),
                );
                tokio::spawn(async move {
                    let mut index = worker;
                    while !stop.load(Ordering::Relaxed) {
                        let slot = index % ids.len();
                        let counter = client.get::<Counter>(ids[slot].clone());
                        match counter.increment(IncrementRequest { amount: 1 }).await {
                            Ok(_) => {
                                acked[slot].fetch_add(1, Ordering::Relaxed);
                                acknowledged.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => {
                                failures.lock().unwrap().push(format!("{}: {error}", ids[slot]))
                            }
                        }
                        index += CALLERS;
                    }
                })
            })
            .collect();
        Load { stop, workers, failures, acknowledged }
    }

    /// Stops the callers; returns the failures and the number of acknowledged calls.
    async fn finish(self) -> (Vec<String>, i64) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.unwrap();
        }
        (self.failures.lock().unwrap().clone(), self.acknowledged.load(Ordering::Relaxed))
    }
}

/// Every counter's value, read through `node`, equals its acknowledged increments.
async fn check_values(node: &Node, ids: &[String], acked: &[AtomicI64]) {
    let client = node.client().with_timeout(CALL_DEADLINE);
    for (slot, id) in ids.iter().enumerate() {
        let value = client.get::<Counter>(id.clone()).get(GetRequest {}).await.unwrap().value;
        assert_eq!(i64::from(value), acked[slot].load(Ordering::Relaxed), "counter {id}");
    }
}

/// A one-voter embedded Raft group in `dir`.
async fn single_voter(dir: &std::path::Path) -> Arc<RaftVoter> {
    let router = LocalRouter::new();
    let mut voter_config = VoterConfig::new(1, dir.join("voter-1.redb"));
    voter_config.heartbeat_interval = Duration::from_millis(30);
    voter_config.election_timeout_min = Duration::from_millis(150);
    voter_config.election_timeout_max = Duration::from_millis(300);
    let voter = Arc::new(
        RaftVoter::start(
            voter_config,
            &router,
            SystemClock::shared(),
            Arc::new(TokioBlockingExecutor),
        )
        .await
        .unwrap(),
    );
    voter.initialize(&[1]).await.unwrap();
    voter.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    voter
}

/// A one-voter Raft group in `dir`, a coordinator client for the test, and three nodes on one
/// shared in-memory store (returned for more nodes), converged.
async fn three_nodes(
    dir: &std::path::Path,
) -> (Arc<RaftVoter>, RaftCoordinator, Vec<TestNode>, Arc<dyn StateStore>) {
    let voter = single_voter(dir).await;
    let observer =
        RaftCoordinator::new(voter.clone(), SystemClock::shared(), ClientOptions::new(LEASE_TTL));
    let store: Arc<dyn StateStore> =
        Arc::new(MemoryStore::new(SystemClock::shared(), DEFAULT_TOMBSTONE_RETENTION, false));
    let mut nodes = Vec::new();
    for id in ["node-1", "node-2", "node-3"] {
        nodes.push(TestNode::start(id, &voter, &store).await);
    }
    wait_converged(&observer, &["node-1", "node-2", "node-3"], Duration::from_secs(20)).await;
    (voter, observer, nodes, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_every_object_and_move_shards_without_failing_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let (voter, observer, mut nodes, store) = three_nodes(dir.path()).await;
    let ids = Arc::new(counter_ids(&nodes[0].node));
    let acked: Arc<Vec<AtomicI64>> = Arc::new(ids.iter().map(|_| AtomicI64::new(0)).collect());

    // (a) Every node reaches every object; each object is active on exactly one node.
    for test_node in &nodes {
        let client = test_node.node.client().with_timeout(CALL_DEADLINE);
        for (slot, id) in ids.iter().enumerate() {
            let counter = client.get::<Counter>(id.clone());
            counter.increment(IncrementRequest { amount: 1 }).await.unwrap();
            acked[slot].fetch_add(1, Ordering::Relaxed);
        }
    }
    for id in ids.iter() {
        let active: Vec<&str> =
            nodes.iter().filter(|n| n.node.is_active(id)).map(|n| n.id.as_str()).collect();
        assert_eq!(active.len(), 1, "{id} is active on {active:?}");
    }
    check_values(&nodes[1].node, &ids, &acked).await;
    // Objects pinned to a node (`<node-id>/…`) are reached from every node and live there
    // only.
    for test_node in &nodes {
        let client = test_node.node.client().with_timeout(CALL_DEADLINE);
        client
            .get::<Counter>("node-3/pinned")
            .increment(IncrementRequest { amount: 1 })
            .await
            .unwrap();
    }
    let pinned = nodes[0].node.client().with_timeout(CALL_DEADLINE).get::<Counter>("node-3/pinned");
    assert_eq!(pinned.get(GetRequest {}).await.unwrap().value, 3);
    let active: Vec<&str> =
        nodes.iter().filter(|n| n.node.is_active("node-3/pinned")).map(|n| n.id.as_str()).collect();
    assert_eq!(active, ["node-3"]);

    // (b) A fourth node joins under load.
    let callers: Vec<Arc<Node>> = nodes.iter().map(|n| n.node.clone()).collect();
    let load = Load::start(&callers, &ids, &acked);
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes.push(TestNode::start("node-4", &voter, &store).await);
    wait_converged(&observer, &["node-1", "node-2", "node-3", "node-4"], Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (failures, acknowledged) = load.finish().await;
    eprintln!("join: {acknowledged} calls acknowledged, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{} failed calls during the join: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(acknowledged >= 500, "too few calls during the join: {acknowledged}");
    check_values(&nodes[3].node, &ids, &acked).await;
    assert!(nodes[3].cluster.owned_shards() >= 15, "the new node owns its share of shards");

    // (c) node-2 drains and leaves under load (the callers use the other nodes).
    let leaving = nodes.remove(1);
    let callers: Vec<Arc<Node>> = nodes.iter().map(|n| n.node.clone()).collect();
    let load = Load::start(&callers, &ids, &acked);
    tokio::time::sleep(Duration::from_millis(300)).await;
    leaving.cluster.drain().await.unwrap();
    leaving.stop().await;
    wait_converged(&observer, &["node-1", "node-3", "node-4"], Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (failures, acknowledged) = load.finish().await;
    eprintln!("drain: {acknowledged} calls acknowledged, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{} failed calls during the drain: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(acknowledged >= 500, "too few calls during the drain: {acknowledged}");
    check_values(&nodes[0].node, &ids, &acked).await;

    for test_node in nodes {
        test_node.stop().await;
    }
    voter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_local_stores_and_other_object_hosting_nodes_refuse_each_other_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let voter = single_voter(dir.path()).await;
    let local = || -> Arc<dyn StateStore> {
        Arc::new(MemoryStore::new(SystemClock::shared(), DEFAULT_TOMBSTONE_RETENTION, true))
    };
    // Alone, a node-local store is fine (`verse dev`-like).
    let first = TestNode::start_with("node-1", &voter, &local(), false).await.unwrap();
    // A second node with a node-local store refuses, naming the other node.
    let refused = TestNode::start_with("node-2", &voter, &local(), false).await;
    let Err(error) = refused else { panic!("node-2 joined with a node-local store") };
    assert_eq!(error, ClusterError::NodeLocalStore { other: "node-1".into() });
    assert!(error.to_string().contains("allow_state_loss"), "{error}");
    // It left no member record behind; told to accept the loss, it joins.
    let observer =
        RaftCoordinator::new(voter.clone(), SystemClock::shared(), ClientOptions::new(LEASE_TTL));
    let members = observer.snapshot().await.unwrap().members;
    assert!(!members.keys().any(|m| m.as_str() == "node-2"), "{members:?}");
    let second = TestNode::start_with("node-2", &voter, &local(), true).await.unwrap();
    assert!(second.cluster.me().incarnation.0 > 0);
    // A node with a shared store refuses too: shards moving to it from node-1 would lose
    // their state. It names the node-local node and leaves no record; allowed, it joins.
    let shared = || -> Arc<dyn StateStore> {
        Arc::new(MemoryStore::new(SystemClock::shared(), DEFAULT_TOMBSTONE_RETENTION, false))
    };
    let refused = TestNode::start_with("node-3", &voter, &shared(), false).await;
    let Err(error) = refused else { panic!("node-3 joined beside node-local nodes") };
    assert_eq!(error, ClusterError::OtherNodeLocalStore { other: "node-1".into() });
    assert!(error.to_string().contains("allow_state_loss"), "{error}");
    let members = observer.snapshot().await.unwrap().members;
    assert!(!members.keys().any(|m| m.as_str() == "node-3"), "{members:?}");
    let third = TestNode::start_with("node-3", &voter, &shared(), true).await.unwrap();
    third.stop().await;
    second.stop().await;
    first.stop().await;
    voter.shutdown().await;
}

/// Waits until `shard`'s target is `target` (pinned or not) and its live owner is that node.
async fn wait_owned(
    coordinator: &dyn Coordinator,
    shard: verse_core::ShardId,
    target: &verse_core::shardmap::TargetRecord,
    within: Duration,
) {
    let started = Instant::now();
    loop {
        let snapshot = coordinator.snapshot().await.unwrap();
        let entry = snapshot.map.entry(shard);
        let owned = entry.owner.as_ref().is_some_and(|o| {
            !o.released
                && o.node == target.node
                && snapshot.members.get(&o.node).is_some_and(|m| m.incarnation == o.incarnation)
        });
        if entry.target.as_ref() == Some(target) && owned {
            return;
        }
        assert!(started.elapsed() < within, "{shard} not owned as {target:?}: {entry:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Calls `id` through `node` until it answers, at most `within` (a liveness bound).
async fn served_within(node: &Node, id: &str, within: Duration) -> i32 {
    let started = Instant::now();
    let client = node.client().with_timeout(CALL_DEADLINE);
    loop {
        match client.get::<Counter>(id).get(GetRequest {}).await {
            Ok(response) => return response.value,
            Err(error) => {
                assert!(started.elapsed() < within, "{id} not served within {within:?}: {error}")
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_pins_fix_shards_block_drains_and_fail_fast_while_their_node_is_absent() {
    use verse_core::shardmap::TargetRecord;
    let dir = tempfile::tempdir().unwrap();
    let (voter, operator, mut nodes, _) = three_nodes(dir.path()).await;
    let ids = counter_ids(&nodes[0].node);
    let first = nodes[0].node.clone();
    let shard_of = |id: &str| verse_core::runtime::shard_of(&first, id).unwrap();
    let (to_two, to_three, free) = (&ids[0], &ids[1], &ids[2]);

    // Pins move their shards to the pinned nodes, which then serve them.
    operator.pin(shard_of(to_two), "node-2".into()).await.unwrap();
    operator.pin(shard_of(to_three), "node-3".into()).await.unwrap();
    let within = Duration::from_secs(20);
    wait_owned(&operator, shard_of(to_two), &TargetRecord::pinned("node-2"), within).await;
    wait_owned(&operator, shard_of(to_three), &TargetRecord::pinned("node-3"), within).await;
    let client = nodes[0].node.client().with_timeout(CALL_DEADLINE);
    for id in [to_two, to_three] {
        client.get::<Counter>(id.clone()).increment(IncrementRequest { amount: 1 }).await.unwrap();
    }
    assert!(nodes[1].node.is_active(to_two) && nodes[2].node.is_active(to_three));

    // Draining a node that holds pins is refused and changes nothing; with unpinning it
    // drains, and its pinned shard moves like any other.
    let refused = nodes[1].cluster.drain().await;
    assert_eq!(refused, Err(ClusterError::HoldsPins { shards: vec![shard_of(to_two)] }));
    let members = operator.snapshot().await.unwrap().members;
    assert!(!members[&verse_core::shardmap::MemberId::from("node-2")].flags.draining);
    let leaving = nodes.remove(2);
    leaving.cluster.drain_unpinning().await.unwrap();
    assert!(!operator.snapshot().await.unwrap().pins.contains_key(&shard_of(to_three)));
    leaving.stop().await;
    assert_eq!(served_within(&nodes[0].node, to_three, within).await, 1);

    // node-2 leaves without draining: its pinned shard stays unowned and its calls fail fast
    // with the shard and the node; other shards fail over and are served.
    let absent = nodes.remove(1);
    absent.stop().await;
    let error = client.get::<Counter>(to_two.clone()).get(GetRequest {}).await.unwrap_err();
    assert_eq!(
        error,
        CallError::ShardPinnedToAbsentNode { shard: shard_of(to_two).0, node: "node-2".into() }
    );
    served_within(&nodes[0].node, free, LEASE_TTL + Duration::from_secs(5)).await;

    // Unpinned, the shard fails over and its state is intact.
    operator.unpin(shard_of(to_two)).await.unwrap();
    assert_eq!(served_within(&nodes[0].node, to_two, within).await, 1);

    for test_node in nodes {
        test_node.stop().await;
    }
    voter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_being_handed_off_admits_nested_calls_of_a_chain_running_a_turn_in_it() {
    use verse_core::shardmap::TargetRecord;
    let dir = tempfile::tempdir().unwrap();
    let (voter, operator, nodes, _) = three_nodes(dir.path()).await;
    let owner_of = |map: &verse_core::ShardMap, id: &str| {
        let shard = verse_core::runtime::shard_of(&nodes[0].node, id).unwrap();
        map.entry(shard).owner.as_ref().map(|o| o.node.to_string())
    };
    let map = operator.snapshot().await.unwrap().map;
    let ids: Vec<String> = (0..).map(|i| format!("hop-{i}")).take(10_000).collect();
    let shard_of = |id: &str| verse_core::runtime::shard_of(&nodes[0].node, id).unwrap();
    // a and c share a shard owned by node-1; b lives on node-2.
    let a = ids.iter().find(|id| owner_of(&map, id).as_deref() == Some("node-1")).unwrap();
    let shard = shard_of(a);
    let c = ids.iter().find(|id| *id != a && shard_of(id) == shard).unwrap();
    let b = ids.iter().find(|id| owner_of(&map, id).as_deref() == Some("node-2")).unwrap();

    // a's turn starts (through node-3) and holds until the shard is being handed off.
    let client = nodes[2].node.client().with_timeout(Duration::from_secs(30));
    let request = HelloRequest { name: format!("wait;{b},{c}") };
    let chain = {
        let hop = client.get::<Hop>(a.clone());
        tokio::spawn(async move { hop.hop(request).await })
    };
    let started = Instant::now();
    while !nodes[0].node.is_active(a) {
        assert!(started.elapsed() < Duration::from_secs(10), "{a} never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Moving the shard away makes node-1 hand it off; a's turn keeps it from finishing.
    operator.pin(shard, "node-2".into()).await.unwrap();
    while !matches!(nodes[0].node.shard_status(shard), Some(verse_core::ShardStatus::HandingOff(_)))
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "node-1 never started handing off {shard}: {:?}",
            nodes[0].node.shard_status(shard)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // a → b → c: c's shard is leaving node-1, but the chain runs a turn of it there, so c is
    // admitted on node-1 (refusing it would hold the handoff until handoff_timeout, which
    // poisons a's turn: OutcomeUnknown).
    HOP_RELEASE.store(true, Ordering::SeqCst);
    let reply = chain.await.unwrap().unwrap();
    assert_eq!(reply.message, format!("{a}@node-1 {b}@node-2 {c}@node-1"));
    // The handoff then completes: node-2 owns the shard.
    wait_owned(&operator, shard, &TargetRecord::pinned("node-2"), Duration::from_secs(20)).await;

    for test_node in nodes {
        test_node.stop().await;
    }
    voter.shutdown().await;
}
