//! P2: remote calls node → node reaching an activation on the other node, against a bare tonic
//! unary echo in the same topology (same process and runtime, one HTTP/2 connection per side).
//!
//! The subject sends through `verse_transport::NodeClient` (one pooled channel to the peer) to a
//! `NodeServer` whose node hosts the echo objects: remaining deadline, call chain, identity,
//! ownership check, typed errors and metrics all on. The baseline is a tonic `BareEcho` server
//! and one shared tonic channel with `TCP_NODELAY`. Both servers accept through the same
//! `TcpIncoming` and allow the same 1024 concurrent streams per connection.
//!
//! `cargo run --release -p verse-bench --bin remote_calls -- --pairs 5`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tonic::transport::{Channel, Endpoint};
use verse::EncodedMessage;
use verse::clock::{SharedClock, SystemClock};
use verse::prelude::*;
use verse_bench::{Blob, Row, drive, install_metrics, report};
use verse_transport::{NodeClient, NodeServer, OutgoingCall, TcpIncoming};

use verse_bench::echo::proto;

use proto::EchoBlob;
use proto::bare_echo_client::BareEchoClient;
use proto::bare_echo_server::BareEchoServer;

use verse_bench::echo::Echo;

use verse_bench::echo::Bare;

#[derive(Parser)]
struct Args {
    /// Interleaved (baseline, subject) pairs per case.
    #[arg(long, default_value_t = 5)]
    pairs: usize,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Write the rows as JSON here.
    #[arg(long)]
    json: Option<String>,
    /// Only this concurrency (1, 16 or 256); default all.
    #[arg(long)]
    only: Option<usize>,
    /// Skip baselines (for profiling the subject alone; ratios become meaningless).
    #[arg(long)]
    skip_baseline: bool,
}

const MAX_STREAMS: u32 = 1024;

async fn start_bare() -> anyhow::Result<Channel> {
    let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = incoming.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .max_concurrent_streams(Some(MAX_STREAMS))
            .add_service(BareEchoServer::new(Bare))
            .serve_with_incoming(incoming),
    );
    let channel =
        Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?;
    Ok(channel)
}

async fn start_node() -> anyhow::Result<(Arc<Node>, String)> {
    let config = NodeConfig { node_id: "node-b".into(), ..NodeConfig::default() };
    let node = Arc::new(NodeBuilder::new(config).object::<Echo>().start()?);
    let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = incoming.local_addr()?.to_string();
    let server = NodeServer::new(node.clone());
    tokio::spawn(server.serve(incoming, std::future::pending()));
    Ok((node, addr))
}

async fn baseline(channel: &Channel, callers: usize, warmup: Duration, measure: Duration) -> f64 {
    let client = BareEchoClient::new(channel.clone());
    drive(callers, warmup, measure, move |_caller| {
        let mut client = client.clone();
        async move {
            let request = EchoBlob { data: bytes::Bytes::from(Blob::new().data) };
            let reply = client.echo(request).await.expect("echo");
            assert_eq!(reply.into_inner().data.len(), 64);
        }
    })
    .await
    .per_second()
}

async fn subject(
    client: &Arc<NodeClient>,
    clock: &SharedClock,
    peer: &str,
    callers: usize,
    warmup: Duration,
    measure: Duration,
) -> f64 {
    let ids: Arc<Vec<String>> = Arc::new((0..callers).map(|i| format!("echo-{i}")).collect());
    let (client, clock, peer) = (client.clone(), clock.clone(), peer.to_owned());
    drive(callers, warmup, measure, move |caller| {
        let (client, clock, peer, ids) = (client.clone(), clock.clone(), peer.clone(), ids.clone());
        async move {
            let call = OutgoingCall {
                object_type: "Echo".into(),
                id: ids[caller].clone(),
                method: "Echo".into(),
                request: EncodedMessage::pack(&Blob::new()),
                deadline: clock.now() + Duration::from_secs(30),
                chain: Vec::new(),
                identity: None,
                call_id: None,
                one_way: false,
            };
            let reply = client.call(&peer, call).await.expect("remote call");
            let reply: Blob = reply.unpack().expect("a blob");
            assert_eq!(reply.data.len(), 64);
        }
    })
    .await
    .per_second()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        install_metrics();
        let (node, peer) = start_node().await?;
        let bare = start_bare().await?;
        let clock = SystemClock::shared();
        let client = Arc::new(NodeClient::new(clock.clone()));
        let warmup = Duration::from_millis(300);
        let measure = Duration::from_secs_f64(args.seconds);
        let mut rows = Vec::new();
        for n in [1usize, 16, 256] {
            if args.only.is_some_and(|only| only != n) {
                continue;
            }
            let mut pairs = Vec::new();
            for _ in 0..args.pairs {
                let b = if args.skip_baseline {
                    1.0
                } else {
                    baseline(&bare, n, warmup, measure).await
                };
                let s = subject(&client, &clock, &peer, n, warmup, measure).await;
                pairs.push((b, s));
            }
            rows.push(Row::new("P2", &format!("remote calls, {n} callers"), &pairs, Some(0.8)));
        }
        node.shutdown().await;
        report("P2 remote calls", &rows, args.json.as_deref())
    })
}
