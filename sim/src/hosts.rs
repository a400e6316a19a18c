//! The simulated hosts, each assembled like `verse node` (cli/src/node.rs) from real parts with
//! simulated ones injected: turmoil TCP for the listeners and connectors, a [`HostClock`], a
//! seeded [`RandomSource`], the [`InlineExecutor`], the shared [`FaultyStore`] and, for voters,
//! a [`SimDisk`].
//!
//! - **Voter** (`voter1`..): a real [`RaftVoter`] (openraft, redb on the simulated disk) served
//!   by a real [`VoterServer`] (Raft RPC and the `CoordinatorService`) on port 5000.
//! - **Node** (`node1`..): a real [`Node`](verse_core::Node) hosting write-through counters,
//!   the real node-protocol server on port 7000, a real [`ClusterNode`] reaching the
//!   coordinator through [`RemoteAccess`] (as `verse node --coordinator raft` does).
//! - **Client** (`client1`..): calls counters through the node protocol with a real
//!   [`NodeClient`], following `NotServed` hints, and records every call and its outcome.
//! - **Gateway** (`gateway1`..): a real `verse-gateway` gateway joined through the same
//!   coordinator client, serving `gate.GateService` on port [`GATEWAY_PORT`]; its client
//!   (`gwclient1`..) opens a session and calls counters through it.
//!
//! A host's future never returns an error to turmoil (that would end the run): a failure is
//! recorded as [`Event::HostError`] and fails the seed through the checkers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verse_coord_raft::{
    ClientOptions, GrpcConfig, GrpcNetwork, RaftAccess, RaftCoordinator, RaftVoter, RemoteAccess,
    VoterConfig, VoterServer,
};
use verse_core::runtime::observe::TurnObserver;
use verse_core::{
    CallError, ClusterNode, ClusterOptions, Coordinator, EncodedMessage, InlineExecutor,
    NodeBuilder, NodeConfig, PersistencePolicy, RandomSource, StateStore, TypeOptions,
};
use verse_examples::counter::Counter;
use verse_examples::proto::counter::{CounterResponse, GetRequest, IncrementRequest};
use verse_transport::{ClientConfig, NodeClient, NodeServer, OutgoingCall};

use crate::clock::{HostClock, sim_now};
use crate::disk::SimDisk;
use crate::history::{CallKind, CallRecord, Event, History, Outcome};
use crate::net::{SimConnector, incoming};

/// Port of the Raft and coordinator services on voters.
pub const RAFT_PORT: u16 = 5000;
/// Port of the node protocol on nodes.
pub const NODE_PORT: u16 = 7000;
/// Port of `gate.GateService` on gateways.
pub const GATEWAY_PORT: u16 = 7100;

/// Live voters by Raft id, for the harness to find the leader (weak: a crash drops them).
pub type VoterRegistry = Arc<Mutex<BTreeMap<u64, Weak<RaftVoter>>>>;

/// The running node of each node host, for the harness to validate after every step (weak:
/// a crash drops them).
pub type NodeRegistry = Arc<Mutex<BTreeMap<String, Weak<verse_core::Node>>>>;

/// The current Raft leader as the running voters see it: a voter that says it leads (other
/// than `except`, e.g. an isolated old leader that does not know it was replaced).
pub fn current_leader(registry: &VoterRegistry, except: Option<u64>) -> Option<u64> {
    let voters = registry.lock().unwrap_or_else(|e| e.into_inner());
    voters
        .iter()
        .filter(|(id, _)| Some(**id) != except)
        .filter_map(|(id, voter)| voter.upgrade().map(|voter| (*id, voter)))
        .find(|(id, voter)| voter.current_leader() == Some(*id))
        .map(|(id, _)| id)
}

/// Settings shared by every host of a run.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// Voter host names, Raft id = position + 1.
    pub voters: Vec<String>,
    /// Node host names (also their node ids).
    pub nodes: Vec<String>,
    /// Shards of the cluster.
    pub shard_count: u32,
    /// The nodes' lease TTL.
    pub lease_ttl: Duration,
}

/// The coordinator clients' gRPC settings, scaled to the lease TTL: a request, a connection
/// attempt and a dead connection's detection each take well under the TTL, so a node whose
/// voter went silent (isolated, or its connection black-holed) moves to another voter before
/// its lease runs out. (The defaults, 5 s requests and 5 s + 10 s keepalive, are longer than
/// the simulation's 2 s TTL.)
pub fn grpc_config(lease_ttl: Duration) -> GrpcConfig {
    let quarter = lease_ttl / 4;
    GrpcConfig {
        connect_timeout: quarter,
        request_timeout: quarter,
        keepalive_interval: quarter,
        keepalive_timeout: quarter,
        watch_stall_timeout: lease_ttl,
        ..GrpcConfig::default()
    }
}

impl HostSettings {
    fn voter_addresses(&self) -> Vec<String> {
        self.voters.iter().map(|v| format!("{v}:{RAFT_PORT}")).collect()
    }
}

fn host_error(history: &History, host: &str, what: impl std::fmt::Display) {
    history.event(sim_now(), host, Event::HostError(host.to_owned(), what.to_string()));
}

/// Runs voter `id` (1-based) until its host crashes. Voter 1 initialises the group when its
/// disk is fresh.
pub async fn run_voter(
    settings: HostSettings,
    id: u64,
    disk: SimDisk,
    clock: HostClock,
    registry: VoterRegistry,
    history: History,
) {
    let name = settings.voters[usize::try_from(id - 1).unwrap_or(0)].clone();
    crate::timeline::register_host(&name);
    let fresh = verse_coord_raft::DatabaseSource::is_fresh(&disk);
    let mut config = VoterConfig::new(id, format!("/sim/{name}.redb"));
    config.database = Some(Arc::new(disk));
    let own = format!("{name}:{RAFT_PORT}");
    let seeds: Vec<String> = settings.voter_addresses().into_iter().filter(|a| *a != own).collect();
    let network = GrpcNetwork::with_connector(grpc_config(settings.lease_ttl), seeds, SimConnector);
    let voter =
        match RaftVoter::start_grpc(config, &network, clock.shared(), Arc::new(InlineExecutor))
            .await
        {
            Ok(voter) => Arc::new(voter),
            Err(error) => return host_error(&history, &name, format!("voter start: {error}")),
        };
    let listener = match incoming(RAFT_PORT).await {
        Ok(listener) => listener,
        Err(error) => return host_error(&history, &name, format!("bind: {error}")),
    };
    let server = VoterServer::new(&voter);
    tokio::spawn(async move {
        let _ = server.serve(listener, std::future::pending::<()>()).await;
    });
    registry.lock().unwrap_or_else(|e| e.into_inner()).insert(id, Arc::downgrade(&voter));
    history.note(&name, &format!("voter {id} running (fresh disk: {fresh})"));
    if id == 1 && fresh {
        // Found by seed 101: a fresh voter that asks its peers after voter 1 initialised the
        // group is refused (`DataMissing`: the check cannot tell "never had data" from "lost
        // it"), so a group whose voters start together must initialise after all of them have
        // started. Voters start at time zero; initialise a little later.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let members: Vec<(u64, String)> = (1..).zip(settings.voter_addresses()).collect();
        if let Err(error) = voter.initialize_with_addresses(&members).await {
            host_error(&history, &name, format!("initialize: {error}"));
        }
    }
    // The voter lives as long as the host: until the harness crashes it.
    let _voter = voter;
    std::future::pending::<()>().await;
}

/// Everything a node host needs.
#[derive(Clone)]
pub struct NodeParts {
    /// Settings of the run.
    pub settings: HostSettings,
    /// The node's name (node id and host name).
    pub name: String,
    /// The host's clock.
    pub clock: HostClock,
    /// The shared store.
    pub store: Arc<dyn StateStore>,
    /// The turn observer.
    pub observer: Arc<dyn TurnObserver>,
    /// Seed of this incarnation's random source.
    pub seed: u64,
    /// The record.
    pub history: History,
    /// Where the running node is registered for validation.
    pub registry: NodeRegistry,
}

/// Runs a node until its host crashes: builds the node, serves the node protocol, joins the
/// cluster (retrying while the coordinator has no leader yet).
pub async fn run_node(parts: NodeParts) {
    let NodeParts { settings, name, clock, store, observer, seed, history, registry } = parts;
    crate::timeline::register_host(&name);
    let shared_clock = clock.shared();
    let config = NodeConfig {
        node_id: name.clone(),
        shard_count: settings.shard_count,
        ..NodeConfig::default()
    };
    let counters = TypeOptions::default().persistence(PersistencePolicy::WriteThrough);
    let node = match NodeBuilder::new(config)
        .clustered()
        .object_with::<Counter>(counters)
        .clock(shared_clock.clone())
        .rng(RandomSource::from_seed(seed))
        .executor(Arc::new(InlineExecutor))
        .store(store)
        .turn_observer(observer)
        .start()
    {
        Ok(node) => Arc::new(node),
        Err(error) => return host_error(&history, &name, format!("node build: {error}")),
    };
    registry.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), Arc::downgrade(&node));
    let listener = match incoming(NODE_PORT).await {
        Ok(listener) => listener,
        Err(error) => return host_error(&history, &name, format!("bind: {error}")),
    };
    let server = NodeServer::new(node.clone());
    tokio::spawn(async move {
        let _ = server.serve(listener, std::future::pending::<()>()).await;
    });
    let access: Arc<dyn RaftAccess> = Arc::new(RemoteAccess::with_connector(
        grpc_config(settings.lease_ttl),
        settings.voter_addresses(),
        SimConnector,
    ));
    let coordinator: Arc<dyn Coordinator> = Arc::new(RaftCoordinator::new(
        access,
        shared_clock.clone(),
        ClientOptions::new(settings.lease_ttl),
    ));
    let transport = Arc::new(NodeClient::with_connector(
        shared_clock.clone(),
        ClientConfig::default(),
        SimConnector,
    ));
    let mut options = ClusterOptions::new(format!("{name}:{NODE_PORT}"));
    options.register_wait = Duration::from_secs(30);
    let cluster = loop {
        match ClusterNode::start(
            node.clone(),
            coordinator.clone(),
            transport.clone(),
            options.clone(),
        )
        .await
        {
            Ok(cluster) => break cluster,
            Err(error) if error_is_retryable(&error) => {
                history.note(&name, &format!("join failed, retrying: {error}"));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => return host_error(&history, &name, format!("join: {error}")),
        }
    };
    let mut incarnation = cluster.me().incarnation;
    history.note(&name, &format!("joined as incarnation {}", incarnation.0));
    // The cluster runtime registers again by itself after a lost lease; the node lives as long
    // as its host. Lease losses and new incarnations are recorded.
    let mut lost = false;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if cluster.lease_lost() && !lost {
            history.event(sim_now(), &name, Event::LeaseLost(name.clone()));
        }
        lost = cluster.lease_lost();
        let now = cluster.me().incarnation;
        if now != incarnation {
            history.note(&name, &format!("registered again as incarnation {}", now.0));
            incarnation = now;
        }
    }
}

/// Everything a gateway host needs.
#[derive(Debug, Clone)]
pub struct GatewayParts {
    /// Settings of the run.
    pub settings: HostSettings,
    /// The gateway's name (member id and host name).
    pub name: String,
    /// The host's clock.
    pub clock: HostClock,
    /// Seed of this incarnation's random source (client ids, session tokens).
    pub seed: u64,
    /// The record.
    pub history: History,
}

/// Runs a gateway until its host crashes: joins the cluster through the coordinator (as
/// `verse gateway --coordinator raft` does), routes over the node protocol, and serves
/// `gate.GateService` on port [`GATEWAY_PORT`]. Client ids come from the seeded source.
pub async fn run_gateway(parts: GatewayParts) {
    let GatewayParts { settings, name, clock, seed, history } = parts;
    crate::timeline::register_host(&name);
    let shared_clock = clock.shared();
    let access: Arc<dyn RaftAccess> = Arc::new(RemoteAccess::with_connector(
        grpc_config(settings.lease_ttl),
        settings.voter_addresses(),
        SimConnector,
    ));
    let coordinator: Arc<dyn Coordinator> = Arc::new(RaftCoordinator::new(
        access,
        shared_clock.clone(),
        ClientOptions::new(settings.lease_ttl),
    ));
    let client = Arc::new(NodeClient::with_connector(
        shared_clock.clone(),
        ClientConfig::default(),
        SimConnector,
    ));
    let mut config =
        verse_gateway::GatewayConfig::new(name.clone(), format!("{name}:{GATEWAY_PORT}"));
    config.register_wait = Duration::from_secs(30);
    let rng = RandomSource::from_seed(seed);
    let gateway = loop {
        let builder = verse_gateway::GatewayBuilder::new(
            config.clone(),
            coordinator.clone(),
            shared_clock.clone(),
        )
        .rng(rng.fork())
        .node_client(client.clone());
        match builder.start().await {
            Ok(gateway) => break gateway,
            Err(error) => {
                history.note(&name, &format!("gateway start failed, retrying: {error}"));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let listener = match incoming(GATEWAY_PORT).await {
        Ok(listener) => listener,
        Err(error) => return host_error(&history, &name, format!("bind: {error}")),
    };
    history.note(&name, "gateway serving");
    if let Err(error) = gateway.serve(listener, std::future::pending::<()>()).await {
        host_error(&history, &name, format!("gateway serve: {error}"));
    }
}

fn error_is_retryable(error: &verse_core::ClusterError) -> bool {
    match error {
        verse_core::ClusterError::Coordinator(error) => error.is_retryable(),
        _ => false,
    }
}

/// What a client host does.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    /// The client's name.
    pub name: String,
    /// The counters it may call.
    pub counters: Vec<String>,
    /// Global time at which it starts.
    pub start_at: Duration,
    /// Increments until this global time (none if it equals `start_at`).
    pub writes_until: Duration,
    /// Then reads every counter once (the final values), if set.
    pub final_reads: bool,
    /// Deadline of each call.
    pub deadline: Duration,
    /// Seed of its choices.
    pub seed: u64,
}

/// Runs a client: increments random counters until `writes_until`, then optionally reads every
/// counter once. Records every call.
pub async fn run_client(
    settings: HostSettings,
    plan: ClientPlan,
    clock: HostClock,
    history: History,
) -> turmoil::Result {
    crate::timeline::register_host(&plan.name);
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    let shared_clock = clock.shared();
    let client = NodeClient::with_connector(shared_clock, ClientConfig::default(), SimConnector);
    let mut caller = Caller {
        client,
        clock,
        settings,
        owners: BTreeMap::new(),
        name: plan.name.clone(),
        history,
        deadline: plan.deadline,
    };
    sleep_until(plan.start_at).await;
    while sim_now() < plan.writes_until {
        let counter = plan.counters[rng.gen_range(0..plan.counters.len())].clone();
        caller.call(&mut rng, &counter, CallKind::Increment).await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1..20))).await;
    }
    if plan.final_reads {
        for counter in &plan.counters {
            caller.call(&mut rng, counter, CallKind::Get).await;
        }
    }
    Ok(())
}

async fn sleep_until(at: Duration) {
    let now = sim_now();
    if at > now {
        tokio::time::sleep(at - now).await;
    }
}

struct Caller {
    client: NodeClient,
    clock: HostClock,
    settings: HostSettings,
    /// Counter → the node it was last served by (or hinted to).
    owners: BTreeMap<String, String>,
    name: String,
    history: History,
    deadline: Duration,
}

impl Caller {
    /// One call, resent only while every attempt provably did not start (`NotServed`,
    /// `Overloaded`, `NotDelivered`), following `NotServed` hints, until the deadline.
    async fn call(&mut self, rng: &mut ChaCha8Rng, counter: &str, kind: CallKind) {
        use verse_core::Clock as _;
        let start = sim_now();
        let deadline = self.clock.now() + self.deadline;
        let (method, request) = match kind {
            CallKind::Increment => {
                ("Increment", EncodedMessage::pack(&IncrementRequest { amount: 1 }))
            }
            CallKind::Get => ("Get", EncodedMessage::pack(&GetRequest {})),
        };
        let outcome = loop {
            let node = match self.owners.get(counter) {
                Some(node) => node.clone(),
                None => self.settings.nodes[rng.gen_range(0..self.settings.nodes.len())].clone(),
            };
            let call = OutgoingCall {
                object_type: "Counter".into(),
                id: counter.to_owned(),
                method: method.into(),
                request: request.clone(),
                deadline,
                chain: Vec::new(),
                identity: None,
                call_id: None,
                one_way: false,
            };
            let error = match self.client.call(&format!("{node}:{NODE_PORT}"), call).await {
                Ok(answer) => match answer.unpack::<CounterResponse>() {
                    Ok(response) => {
                        self.owners.insert(counter.to_owned(), node);
                        break Outcome::Acknowledged(i64::from(response.value));
                    }
                    Err(error) => break Outcome::Unknown(format!("undecodable answer: {error}")),
                },
                Err(error) => error,
            };
            if !error.provably_not_started() {
                break Outcome::Unknown(error.to_string());
            }
            match &error {
                CallError::NotServed { hint: Some(hint), .. } if *hint != node => {
                    self.owners.insert(counter.to_owned(), hint.clone());
                }
                _ => {
                    self.owners.remove(counter);
                }
            }
            if self.clock.now() + Duration::from_millis(20) >= deadline {
                break Outcome::Failed(format!("deadline after refusals, last: {error}"));
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(5..25))).await;
        };
        self.history.call(CallRecord {
            client: self.name.clone(),
            object: counter.to_owned(),
            kind,
            start,
            end: sim_now(),
            outcome,
        });
    }
}

/// Runs a client of gateway `gateway`: opens a session (`Register`; its client id comes from
/// the gateway's seeded source), then increments random counters through `CallObject` with
/// that client id until `writes_until`, recording every call. An answer is acknowledged; any
/// error is recorded as unknown (the gateway already resent what provably did not start).
pub async fn run_gateway_client(
    plan: ClientPlan,
    gateway: String,
    history: History,
) -> turmoil::Result {
    use verse_gateway::proto::gate_service_client::GateServiceClient;
    use verse_gateway::proto::{CallObjectRequest, Empty};

    crate::timeline::register_host(&plan.name);
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{gateway}:{GATEWAY_PORT}"))?
            .connect_timeout(Duration::from_millis(500));
    let channel =
        endpoint.connect_with_connector_lazy(verse_transport::net::HyperConnector(SimConnector));
    let mut client = GateServiceClient::new(channel);
    sleep_until(plan.start_at).await;
    // The session: retried until the gateway answers (it joins the cluster first).
    let (client_id, _pushes) = loop {
        match client.register(Empty {}).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                match stream.message().await {
                    Ok(Some(first)) => {
                        match first.to_msg::<verse_gateway::proto::RegisterResponse>() {
                            Ok(registered) => break (registered.client_id, stream),
                            Err(error) => history.note(&plan.name, &format!("register: {error}")),
                        }
                    }
                    Ok(None) => history.note(&plan.name, "register: the stream ended"),
                    Err(status) => history.note(&plan.name, &format!("register: {status}")),
                }
            }
            Err(status) => history.note(&plan.name, &format!("register: {}", status.code())),
        }
        if sim_now() >= plan.writes_until {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    history.note(&plan.name, &format!("session open as client {client_id}"));
    while sim_now() < plan.writes_until {
        let counter = plan.counters[rng.gen_range(0..plan.counters.len())].clone();
        let start = sim_now();
        let any = prost_types::Any::from_msg(&IncrementRequest { amount: 1 })?;
        let mut request = tonic::Request::new(CallObjectRequest {
            client_id: client_id.clone(),
            r#type: "Counter".into(),
            id: counter.clone(),
            method: "Increment".into(),
            request: Some(any),
        });
        request.set_timeout(plan.deadline);
        let outcome = match client.call_object(request).await {
            Ok(response) => {
                match response.into_inner().response.map(|a| a.to_msg::<CounterResponse>()) {
                    Some(Ok(answer)) => Outcome::Acknowledged(i64::from(answer.value)),
                    Some(Err(error)) => Outcome::Unknown(format!("undecodable answer: {error}")),
                    None => Outcome::Unknown("empty answer".into()),
                }
            }
            Err(status) => Outcome::Unknown(format!("{:?}: {}", status.code(), status.message())),
        };
        history.call(CallRecord {
            client: plan.name.clone(),
            object: counter,
            kind: CallKind::Increment,
            start,
            end: sim_now(),
            outcome,
        });
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1..20))).await;
    }
    Ok(())
}
