//! `verse node`: one cluster node in this process, assembled from its settings.
//!
//! Order of start: metrics recorder (before the node, so its metrics register), ops port
//! (`/healthz` answers while the node still registers), coordinator (an embedded voter and its
//! server first, for `raft-voter`), state store, node, node-protocol server, cluster runtime.
//! Then one `ready` log line with every address. On SIGTERM or SIGINT the node turns unready,
//! drains (its shards move away), leaves the cluster, and stops its servers; exit status 0.
//!
//! Readiness (architecture: registered, lease Proven, watch current): registered is the cluster
//! runtime having started and its lease not lost; the lease is the coordinator's lease status;
//! the watch's currency is not exposed by the cluster runtime, so the coordinator connection's
//! health stands in for it.

use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use verse::prelude::*;
use verse_coord_etcd::{EtcdCoordinator, EtcdOptions};
use verse_coord_raft::{
    ClientOptions, GrpcConfig, GrpcNetwork, RaftAccess, RaftCoordinator, RaftVoter,
};
use verse_coord_raft::{RemoteAccess, VoterConfig, VoterServer};
use verse_core::coordinator::ConnectionHealth;
use verse_core::store::DEFAULT_TOMBSTONE_RETENTION;
use verse_core::{
    ClusterNode, ClusterOptions, Coordinator, MemoryStore, SharedClock, StateStore, SystemClock,
    TokioBlockingExecutor,
};
use verse_examples::chat::ChatRoom;
use verse_examples::counter::Counter;
use verse_examples::greeter::Greeter;
use verse_store_postgres::{PostgresOptions, PostgresStore, SchemaName};
use verse_store_redb::{RedbOptions, RedbStore};

use crate::config::{CoordinatorSettings, NodeSettings, StoreSettings};
use crate::ops;

/// How long a voter waits for the Raft group to elect a leader before the node joins.
const LEADER_WAIT: Duration = Duration::from_secs(60);

/// The cluster runtime and its coordinator, once the node has joined (for readiness).
type Joined = Arc<OnceLock<(Arc<ClusterNode>, Arc<dyn Coordinator>)>>;

/// An embedded voter and its server.
struct EmbeddedVoter {
    voter: Arc<RaftVoter>,
    address: String,
    stop: CancellationToken,
    served: JoinHandle<()>,
}

/// Runs `verse node` until SIGTERM or SIGINT (then drains and returns `Ok`). A lost lease is
/// survived: the cluster runtime registers again as a new incarnation.
pub async fn run(settings: NodeSettings) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let clock: SharedClock = SystemClock::shared();

    let stopping = Arc::new(AtomicBool::new(false));
    let joined: Joined = Arc::default();
    let ops_listener = TcpListener::bind(settings.ops_listen)
        .await
        .with_context(|| format!("binding the ops port {}", settings.ops_listen))?;
    let ops_address = ops_listener.local_addr()?;
    let ops_stop = CancellationToken::new();
    let ready = readiness(stopping.clone(), joined.clone(), clock.clone());
    let ops_served = tokio::spawn(ops::serve(ops_listener, metrics, ready, ops_stop.clone()));

    let (coordinator, voter) = coordinator(&settings, &clock).await?;
    let voter_watch =
        voter.as_ref().map(|v| tokio::spawn(watch_voter(v.voter.clone(), v.stop.clone())));
    let store = store(&settings.store, &clock).await?;
    let config = NodeConfig {
        node_id: settings.node_id.clone(),
        shard_count: settings.shards,
        ..NodeConfig::default()
    };
    let counters = TypeOptions::default().persistence(PersistencePolicy::WriteThrough);
    // One hub: objects push into it, gateways' push streams read from it.
    let push_hub = verse_transport::PushHub::default();
    let mut builder = NodeBuilder::new(config)
        .clustered()
        .object_with::<Counter>(counters)
        .object::<Greeter>()
        .object::<ChatRoom>()
        .push_sink(Arc::new(push_hub.clone()))
        .clock(clock.clone())
        .store(store);
    let turn_log_cluster: Arc<OnceLock<Arc<ClusterNode>>> = Arc::default();
    if let Some(path) = &settings.turn_log {
        let log = crate::turnlog::TurnLog::open(path, turn_log_cluster.clone())?;
        builder = builder.turn_observer(Arc::new(log));
    }
    let node = Arc::new(builder.start().context("building the node")?);

    let incoming = verse_transport::TcpIncoming::bind(settings.listen)
        .await
        .with_context(|| format!("binding the node protocol on {}", settings.listen))?;
    let bound = incoming.local_addr()?;
    let advertise = settings.advertise.clone().unwrap_or_else(|| bound.to_string());
    let server_stop = CancellationToken::new();
    let server = verse_transport::NodeServer::new(node.clone()).with_push_hub(push_hub);
    let server_served = tokio::spawn(server.serve(incoming, server_stop.clone().cancelled_owned()));

    let transport = Arc::new(verse_transport::NodeClient::new(clock.clone()));
    let mut options = ClusterOptions::new(advertise.clone());
    options.drain_timeout = settings.drain_timeout;
    options.allow_state_loss = settings.allow_state_loss;
    let cluster = Arc::new(
        ClusterNode::start(node.clone(), coordinator.clone(), transport, options)
            .await
            .context("joining the cluster")?,
    );
    let _ = turn_log_cluster.set(cluster.clone());
    let _ = joined.set((cluster.clone(), coordinator.clone()));
    tracing::info!(
        node_id = %settings.node_id,
        node_address = %advertise,
        listen = %bound,
        ops_address = %ops_address,
        raft_address = voter.as_ref().map_or("-", |v| v.address.as_str()),
        "ready to serve (see /readyz)"
    );

    let outcome = wait_for_stop(&cluster).await;
    stopping.store(true, Ordering::SeqCst);
    if outcome.is_ok() {
        tracing::info!("draining");
        let drained = if settings.unpin_on_drain {
            cluster.drain_unpinning().await
        } else {
            cluster.drain().await
        };
        if let Err(error) = drained {
            tracing::warn!(%error, "drain incomplete; leaving anyway");
        }
    }
    cluster.shutdown().await;
    server_stop.cancel();
    crate::join_server(server_served, "node-protocol server").await;
    node.shutdown().await;
    if let Some(voter) = voter {
        voter.stop.cancel();
        if let Some(watch) = voter_watch
            && let Err(error) = watch.await
        {
            tracing::warn!(%error, "voter status task failed");
        }
        if let Err(error) = voter.served.await {
            tracing::warn!(%error, "Raft server task failed");
        }
        voter.voter.shutdown().await;
    }
    ops_stop.cancel();
    crate::join_server(ops_served, "ops server").await;
    tracing::info!("stopped");
    outcome
}

/// Runs `verse coord`: an embedded Raft voter hosting no objects (so killing the Raft leader
/// moves no shard), until SIGTERM or SIGINT. Logs one `ready to serve` line with its
/// `raft_address`, and a `Raft leader` line whenever the leader it knows of changes.
pub async fn run_coord(settings: NodeSettings) -> anyhow::Result<()> {
    let CoordinatorSettings::RaftVoter { id, peers, listen, advertise, init } =
        &settings.coordinator
    else {
        anyhow::bail!("verse coord needs --coordinator raft-voter");
    };
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let clock: SharedClock = SystemClock::shared();
    let ops_listener = TcpListener::bind(settings.ops_listen)
        .await
        .with_context(|| format!("binding the ops port {}", settings.ops_listen))?;
    let ops_address = ops_listener.local_addr()?;
    let voter =
        start_voter(&settings, *id, peers, *listen, advertise.clone(), *init, &clock).await?;
    // Ready while this voter knows a leader (it is part of a working group) and not stopping.
    let stopping = Arc::new(AtomicBool::new(false));
    let ready: ops::ReadyCheck = {
        let (voter, stopping) = (voter.voter.clone(), stopping.clone());
        Arc::new(move || {
            if stopping.load(Ordering::SeqCst) {
                return Err("stopping".into());
            }
            match voter.current_leader() {
                Some(_) => Ok(()),
                None => Err("no Raft leader known".into()),
            }
        })
    };
    let ops_stop = CancellationToken::new();
    let ops_served = tokio::spawn(ops::serve(ops_listener, metrics, ready, ops_stop.clone()));
    tracing::info!(
        raft_id = id,
        raft_address = %voter.address,
        ops_address = %ops_address,
        "ready to serve (coordinator)"
    );
    let follow = tokio::spawn(watch_voter(voter.voter.clone(), voter.stop.clone()));
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM"),
        _ = interrupt.recv() => tracing::info!("SIGINT"),
    }
    stopping.store(true, Ordering::SeqCst);
    voter.stop.cancel();
    if let Err(error) = follow.await {
        tracing::warn!(%error, "leader follower task failed");
    }
    if let Err(error) = voter.served.await {
        tracing::warn!(%error, "Raft server task failed");
    }
    voter.voter.shutdown().await;
    ops_stop.cancel();
    crate::join_server(ops_served, "ops server").await;
    tracing::info!("stopped");
    Ok(())
}

/// Logs a `Raft leader` line whenever the leader `voter` knows of changes and publishes its
/// Raft status as gauges (`verse_raft_*`), every 100 ms until `stop`.
async fn watch_voter(voter: Arc<RaftVoter>, stop: CancellationToken) {
    let mut known = None;
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let status = voter.status();
        if status.leader != known {
            known = status.leader;
            tracing::info!(leader = status.leader.unwrap_or(0), "Raft leader");
        }
        let index = |index: Option<u64>| index.map_or(-1.0, |i| i as f64);
        metrics::gauge!("verse_raft_leader_id").set(status.leader.map_or(0.0, |l| l as f64));
        metrics::gauge!("verse_raft_is_leader").set(if status.is_leader { 1.0 } else { 0.0 });
        metrics::gauge!("verse_raft_term").set(status.term as f64);
        metrics::gauge!("verse_raft_last_log_index").set(index(status.last_log_index));
        metrics::gauge!("verse_raft_last_applied_index").set(index(status.last_applied_index));
        metrics::gauge!("verse_raft_snapshot_index").set(index(status.snapshot_index));
        metrics::gauge!("verse_raft_voters").set(status.voters as f64);
    }
}

/// The readiness check of the ops port (module docs).
fn readiness(stopping: Arc<AtomicBool>, joined: Joined, clock: SharedClock) -> ops::ReadyCheck {
    Arc::new(move || {
        if stopping.load(Ordering::SeqCst) {
            return Err("stopping".into());
        }
        let Some((cluster, coordinator)) = joined.get() else {
            return Err("not registered yet".into());
        };
        if cluster.lease_lost() {
            return Err("lease lost".into());
        }
        let lease = *coordinator.lease_status().borrow();
        if !lease.is_proven_at(clock.now()) {
            return Err(format!("lease {:?}", lease.state));
        }
        if coordinator.health() != ConnectionHealth::Connected {
            return Err("coordinator disconnected".into());
        }
        Ok(())
    })
}

/// Waits for SIGTERM or SIGINT. A lost lease does not stop the process: the cluster runtime
/// discards everything and registers again as a new incarnation (logged here too).
async fn wait_for_stop(cluster: &ClusterNode) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    let mut lost = false;
    loop {
        tokio::select! {
            _ = terminate.recv() => {
                tracing::info!("SIGTERM");
                return Ok(());
            }
            _ = interrupt.recv() => {
                tracing::info!("SIGINT");
                return Ok(());
            }
            _ = poll.tick() => {
                let now_lost = cluster.lease_lost();
                if now_lost && !lost {
                    tracing::warn!("the lease is lost; registering again as a new incarnation");
                }
                lost = now_lost;
            }
        }
    }
}

/// Connects to (or, for `raft-voter`, starts a voter of) the coordinator.
async fn coordinator(
    settings: &NodeSettings,
    clock: &SharedClock,
) -> anyhow::Result<(Arc<dyn Coordinator>, Option<EmbeddedVoter>)> {
    let ttl = settings.lease_ttl;
    match &settings.coordinator {
        CoordinatorSettings::Etcd { endpoints, prefix } => {
            let mut options = EtcdOptions::new(endpoints.clone(), prefix.clone());
            options.lease_ttl = ttl;
            options.clock = clock.clone();
            let etcd = EtcdCoordinator::connect(options).await.context("connecting to etcd")?;
            Ok((Arc::new(etcd), None))
        }
        CoordinatorSettings::Raft { endpoints } => {
            let access: Arc<dyn RaftAccess> =
                Arc::new(RemoteAccess::for_lease_ttl(endpoints.clone(), ttl));
            let client = RaftCoordinator::new(access, clock.clone(), ClientOptions::new(ttl));
            Ok((Arc::new(client), None))
        }
        CoordinatorSettings::RaftVoter { id, peers, listen, advertise, init } => {
            let voter =
                start_voter(settings, *id, peers, *listen, advertise.clone(), *init, clock).await?;
            let access: Arc<dyn RaftAccess> = voter.voter.clone();
            let client = RaftCoordinator::new(access, clock.clone(), ClientOptions::new(ttl));
            Ok((Arc::new(client), Some(voter)))
        }
    }
}

async fn start_voter(
    settings: &NodeSettings,
    id: u64,
    peers: &[(u64, String)],
    listen: SocketAddr,
    advertise: Option<String>,
    init: bool,
    clock: &SharedClock,
) -> anyhow::Result<EmbeddedVoter> {
    let incoming = verse_coord_raft::TcpIncoming::bind(listen)
        .await
        .with_context(|| format!("binding the Raft port {listen}"))?;
    let bound = incoming.local_addr()?;
    let address = advertise
        .or_else(|| peers.iter().find(|(peer, _)| *peer == id).map(|(_, a)| a.clone()))
        .unwrap_or_else(|| bound.to_string());
    let seeds = peers.iter().filter(|(peer, _)| *peer != id).map(|(_, a)| a.clone()).collect();
    create_dir(&settings.data_dir)?;
    let config = VoterConfig::new(id, settings.data_dir.join(format!("raft-{id}.redb")));
    let network = GrpcNetwork::with_connector(
        GrpcConfig::for_lease_ttl(settings.lease_ttl),
        seeds,
        verse_coord_raft::TcpConnector,
    );
    let voter =
        RaftVoter::start_grpc(config, &network, clock.clone(), Arc::new(TokioBlockingExecutor))
            .await
            .context("starting the Raft voter")?;
    let voter = Arc::new(voter);
    let stop = CancellationToken::new();
    let server = VoterServer::new(&voter);
    let shutdown = stop.clone().cancelled_owned();
    let served = tokio::spawn(async move {
        if let Err(error) = server.serve(incoming, shutdown).await {
            tracing::error!(%error, "Raft server failed");
        }
    });
    if init {
        // Initialise only once every other voter has started (and passed its data check).
        network.wait_for_seeds(LEADER_WAIT).await.context("waiting for the other Raft voters")?;
        let members = if peers.is_empty() { vec![(id, address.clone())] } else { peers.to_vec() };
        voter.initialize_with_addresses(&members).await.context("initialising the Raft group")?;
    }
    let leader = voter.wait_for_leader(LEADER_WAIT).await.context("waiting for a Raft leader")?;
    tracing::info!(raft_id = id, raft_address = %address, leader, "Raft voter running");
    Ok(EmbeddedVoter { voter, address, stop, served })
}

async fn store(
    settings: &StoreSettings,
    clock: &SharedClock,
) -> anyhow::Result<Arc<dyn StateStore>> {
    Ok(match settings {
        StoreSettings::Memory => {
            Arc::new(MemoryStore::new(clock.clone(), DEFAULT_TOMBSTONE_RETENTION, true))
        }
        StoreSettings::Redb { path } => {
            if let Some(parent) = path.parent() {
                create_dir(parent)?;
            }
            let store = RedbStore::open(path, RedbOptions::production())
                .with_context(|| format!("opening the redb store {}", path.display()))?;
            Arc::new(store)
        }
        StoreSettings::Postgres { url, schema } => {
            let config =
                verse_store_postgres::Config::from_str(url).context("parsing --postgres-url")?;
            let mut options = PostgresOptions::new(config);
            options.schema = SchemaName::new(schema).context("--postgres-schema")?;
            Arc::new(PostgresStore::connect(options).await.context("connecting to PostgreSQL")?)
        }
    })
}

fn create_dir(path: &Path) -> anyhow::Result<()> {
    if path.as_os_str().is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))
}
