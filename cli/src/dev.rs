//! `verse dev`: a whole development cluster in one process — a single-voter embedded Raft
//! coordinator (in process, no Raft port), one node with a redb store hosting the example
//! objects (`Counter` write-through, `Greeter`, `ChatRoom` with push), and a gateway serving
//! `gate.GateService` over gRPC — then one ready line on stdout:
//!
//! ```text
//! verse dev ready: grpc=127.0.0.1:7000 http=127.0.0.1:7080 data=./verse-data
//! ```
//!
//! `http` is the gateway's HTTP port: GoVerse's HTTP routes (`/api/v1/objects/…`, the SSE
//! stream `/api/v1/events/stream`), `/healthz`, `/readyz` (the gateway's readiness) and
//! `/metrics`. SIGINT or SIGTERM stop everything gracefully (exit 0). The data
//! directory keeps the Raft log and the counters across restarts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use verse::prelude::*;
use verse_coord_raft::{ClientOptions, LocalRouter, RaftCoordinator, RaftVoter, VoterConfig};
use verse_core::coordinator::Coordinator;
use verse_core::{ClusterNode, ClusterOptions, SharedClock, SystemClock, TokioBlockingExecutor};
use verse_examples::chat::ChatRoom;
use verse_examples::counter::Counter;
use verse_examples::greeter::Greeter;
use verse_gateway::{GatewayBuilder, GatewayConfig};
use verse_store_redb::{RedbOptions, RedbStore};
use verse_transport::{NodeClient, NodeServer, PushHub, TcpIncoming};

use crate::gateway::GatewayServers;

/// The default gRPC (gate protocol) address of `verse dev`.
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:7000";
/// The default HTTP address of `verse dev`.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7080";
/// The default data directory of `verse dev`.
pub const DEFAULT_DATA_DIR: &str = "./verse-data";
/// The default shard count of `verse dev` (small: one node, fast start).
pub const DEFAULT_DEV_SHARDS: u32 = 64;

/// How long `verse dev` waits for its node to serve every shard before giving up.
const START_WAIT: Duration = Duration::from_secs(60);
/// The dev cluster's lease TTL: short, so a restart after a crash waits little.
const LEASE_TTL: Duration = Duration::from_secs(5);

/// Flags of `verse dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// The gateway's gRPC (gate protocol) listen address; port 0 picks a free port.
    #[arg(long, env = "VERSE_GRPC_LISTEN", default_value = DEFAULT_GRPC_LISTEN)]
    pub grpc_listen: SocketAddr,
    /// The gateway's HTTP listen address (API routes, /healthz, /readyz, /metrics); port 0
    /// picks one.
    #[arg(long, env = "VERSE_HTTP_LISTEN", default_value = DEFAULT_HTTP_LISTEN)]
    pub http_listen: SocketAddr,
    /// Directory of the Raft log and the redb store.
    #[arg(long, env = "VERSE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Shard count (fixed per data directory).
    #[arg(long, env = "VERSE_SHARDS", default_value_t = DEFAULT_DEV_SHARDS)]
    pub shards: u32,
}

/// Runs `verse dev` until SIGINT or SIGTERM (module docs).
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let clock: SharedClock = SystemClock::shared();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;

    // The coordinator: one voter, in process.
    let voter_config = VoterConfig::new(1, args.data_dir.join("raft-1.redb"));
    let voter = Arc::new(
        RaftVoter::start(
            voter_config,
            &LocalRouter::new(),
            clock.clone(),
            Arc::new(TokioBlockingExecutor),
        )
        .await
        .context("starting the Raft voter")?,
    );
    voter.initialize(&[1]).await.context("initialising the Raft group")?;
    voter.wait_for_leader(START_WAIT).await.context("waiting for the Raft leader")?;
    let coordinator = |clock: &SharedClock| -> Arc<dyn Coordinator> {
        Arc::new(RaftCoordinator::new(voter.clone(), clock.clone(), ClientOptions::new(LEASE_TTL)))
    };

    // The node.
    let store_path = args.data_dir.join("state.redb");
    let store = RedbStore::open(&store_path, RedbOptions::production())
        .with_context(|| format!("opening the redb store {}", store_path.display()))?;
    let hub = PushHub::default();
    let config =
        NodeConfig { node_id: "dev".into(), shard_count: args.shards, ..NodeConfig::default() };
    let counters = TypeOptions::default().persistence(PersistencePolicy::WriteThrough);
    let node = Arc::new(
        NodeBuilder::new(config)
            .clustered()
            .object_with::<Counter>(counters)
            .object::<Greeter>()
            .object::<ChatRoom>()
            .push_sink(Arc::new(hub.clone()))
            .clock(clock.clone())
            .store(Arc::new(store))
            .start()
            .context("building the node")?,
    );
    let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("binding the node protocol")?;
    let node_address = incoming.local_addr()?.to_string();
    let node_stop = CancellationToken::new();
    let node_server = NodeServer::new(node.clone()).with_push_hub(hub);
    let node_served =
        tokio::spawn(node_server.serve(incoming, node_stop.clone().cancelled_owned()));
    let cluster = ClusterNode::start(
        node.clone(),
        coordinator(&clock),
        Arc::new(NodeClient::new(clock.clone())),
        ClusterOptions::new(node_address),
    )
    .await
    .context("joining the dev cluster")?;

    // The gateway.
    let grpc = TcpIncoming::bind(args.grpc_listen)
        .await
        .with_context(|| format!("binding the gRPC port {}", args.grpc_listen))?;
    let grpc_address = grpc.local_addr()?;
    let http = TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("binding the HTTP port {}", args.http_listen))?;
    let http_address = http.local_addr()?;
    let gateway = Arc::new(
        GatewayBuilder::new(
            GatewayConfig::new("dev-gateway", grpc_address.to_string()),
            coordinator(&clock),
            clock.clone(),
        )
        .start()
        .await
        .context("starting the gateway")?,
    );
    let mut servers = GatewayServers::start(gateway.clone(), grpc, http, metrics.clone());

    // Ready once the node serves every shard and the gateway is ready.
    let started = Instant::now();
    loop {
        let serving = cluster.is_ready() && cluster.owned_shards() == args.shards as usize;
        if serving && gateway.readiness().is_ok() {
            break;
        }
        if started.elapsed() > START_WAIT {
            anyhow::bail!("the dev cluster was not ready within {START_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "verse dev ready: grpc={grpc_address} http={http_address} data={}",
        args.data_dir.display()
    );

    wait_for_signal().await?;
    tracing::info!("stopping");
    servers.stop_gateway().await;
    cluster.shutdown().await;
    node_stop.cancel();
    crate::join_server(node_served, "node-protocol server").await;
    node.shutdown().await;
    voter.shutdown().await;
    servers.stop_http().await;
    tracing::info!("stopped");
    Ok(())
}

/// Waits for SIGTERM or SIGINT.
pub(crate) async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM"),
        _ = interrupt.recv() => tracing::info!("SIGINT"),
    }
    Ok(())
}
