//! A one-process cluster for the gateway benchmarks (P3, P5): an embedded single-voter Raft
//! coordinator, one clustered node (its push hub wired to its node-protocol server) owning every
//! shard, and a gateway, all on loopback TCP; kept alive for the whole run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use verse::prelude::*;
use verse_coord_raft::{ClientOptions, LocalRouter, RaftCoordinator, RaftVoter, VoterConfig};
use verse_core::clock::SharedClock;
use verse_core::coordinator::Coordinator;
use verse_core::{ClusterNode, ClusterOptions, TokioBlockingExecutor};
use verse_gateway::{Gateway, GatewayBuilder, GatewayConfig};
use verse_transport::{NodeClient, NodeServer, PushHub, TcpIncoming};

/// Binds a loopback listener on a free port.
pub async fn listen() -> anyhow::Result<(TcpIncoming, SocketAddr)> {
    let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = incoming.local_addr()?;
    Ok((incoming, addr))
}

/// The running cluster.
pub struct GatewayCluster {
    _dir: tempfile::TempDir,
    _voter: Arc<RaftVoter>,
    _cluster: ClusterNode,
    gateway: Arc<Gateway>,
    /// The node (for in-process clients).
    pub node: Arc<Node>,
    /// The gateway's gRPC address.
    pub gateway_addr: SocketAddr,
}

impl GatewayCluster {
    /// Starts the voter, a node of `shards` shards whose object types `register` adds, and the
    /// gateway; returns once the gateway is ready.
    pub async fn start(
        clock: &SharedClock,
        shards: u32,
        register: impl FnOnce(NodeBuilder) -> NodeBuilder,
    ) -> anyhow::Result<GatewayCluster> {
        let dir = tempfile::tempdir()?;
        let voter = Arc::new(
            RaftVoter::start(
                VoterConfig::new(1, dir.path().join("voter-1.redb")),
                &LocalRouter::new(),
                clock.clone(),
                Arc::new(TokioBlockingExecutor),
            )
            .await?,
        );
        voter.initialize(&[1]).await?;
        voter.wait_for_leader(Duration::from_secs(10)).await?;
        let coordinator = || -> Arc<dyn Coordinator> {
            Arc::new(RaftCoordinator::new(
                voter.clone(),
                clock.clone(),
                ClientOptions::new(Duration::from_secs(10)),
            ))
        };

        let hub = PushHub::default();
        let config =
            NodeConfig { node_id: "n1".into(), shard_count: shards, ..NodeConfig::default() };
        let builder = NodeBuilder::new(config)
            .clustered()
            .push_sink(Arc::new(hub.clone()))
            .clock(clock.clone());
        let node = Arc::new(register(builder).start()?);
        let (incoming, node_addr) = listen().await?;
        let server = NodeServer::new(node.clone()).with_push_hub(hub);
        tokio::spawn(server.serve(incoming, std::future::pending()));
        let cluster = ClusterNode::start(
            node.clone(),
            coordinator(),
            Arc::new(NodeClient::new(clock.clone())),
            ClusterOptions::new(node_addr.to_string()),
        )
        .await?;

        let (incoming, gateway_addr) = listen().await?;
        let gateway = Arc::new(
            GatewayBuilder::new(
                GatewayConfig::new("gw1", gateway_addr.to_string()),
                coordinator(),
                clock.clone(),
            )
            .start()
            .await?,
        );
        let serving = gateway.clone();
        tokio::spawn(async move { serving.serve(incoming, std::future::pending()).await });
        let started = Instant::now();
        while let Err(why) = gateway.readiness() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "gateway not ready: {why}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(GatewayCluster {
            _dir: dir,
            _voter: voter,
            _cluster: cluster,
            gateway,
            node,
            gateway_addr,
        })
    }

    /// The gateway's number of client sessions.
    pub fn sessions(&self) -> usize {
        self.gateway.sessions()
    }
}
