//! P3: client calls through the gateway to a node over gRPC (`gate.GateService/CallObject`),
//! against a bare tonic proxy chain in the same layout: client → tonic pass-through → tonic
//! echo. The one-hop ratio (client → tonic echo) is reported too.
//!
//! Everything runs in one process on one tokio runtime with 2 workers, every hop over loopback
//! TCP with `TCP_NODELAY`: the subject is a gateway (registered with an embedded single-voter
//! Raft coordinator, routing by the cluster view with the retry rule, sessions, metrics on)
//! in front of a clustered node that owns every shard and hosts the echo objects; the client
//! uses one tonic channel to the gateway (one HTTP/2 connection, as GoVerse clients do) and
//! anonymous calls. The baseline proxy forwards each request over one channel to the echo
//! server, as the gateway does to the node.
//!
//! `cargo run --release -p verse-bench --bin gateway_calls -- --pairs 5`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use prost::{Message, Name};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use verse::clock::{SharedClock, SystemClock};
use verse_bench::gateway_cluster::{GatewayCluster, listen};
use verse_bench::{Blob, Row, drive, install_metrics, report};
use verse_gateway::proto::CallObjectRequest;
use verse_gateway::proto::gate_service_client::GateServiceClient;

use verse_bench::echo::proto;

use proto::EchoBlob;
use proto::bare_echo_client::BareEchoClient;
use proto::bare_echo_server::{BareEcho, BareEchoServer};

use verse_bench::echo::Echo;

use verse_bench::echo::Bare;

/// The baseline pass-through: forwards each request to the echo server over one channel.
struct PassThrough {
    upstream: BareEchoClient<Channel>,
}

#[tonic::async_trait]
impl BareEcho for PassThrough {
    async fn echo(&self, request: Request<EchoBlob>) -> Result<Response<EchoBlob>, Status> {
        let mut upstream = self.upstream.clone();
        let reply = upstream.echo(request.into_inner()).await?;
        Ok(Response::new(reply.into_inner()))
    }
}

#[derive(Parser)]
struct Args {
    /// Interleaved (baseline, subject) runs per case.
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
    /// Skip the baselines (for profiling the subject alone; ratios become meaningless).
    #[arg(long)]
    skip_baseline: bool,
    /// Skip the subject (for profiling the proxy-chain baseline alone).
    #[arg(long)]
    skip_subject: bool,
}

const MAX_STREAMS: u32 = 1024;
const SHARDS: u32 = 256;

async fn channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?)
}

/// Starts the echo server and the pass-through in front of it; returns channels to both.
async fn start_baseline() -> anyhow::Result<(Channel, Channel)> {
    let (incoming, echo_addr) = listen().await?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .max_concurrent_streams(Some(MAX_STREAMS))
            .add_service(BareEchoServer::new(Bare))
            .serve_with_incoming(incoming),
    );
    let upstream = BareEchoClient::new(channel(echo_addr).await?);
    let (incoming, proxy_addr) = listen().await?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .max_concurrent_streams(Some(MAX_STREAMS))
            .add_service(BareEchoServer::new(PassThrough { upstream }))
            .serve_with_incoming(incoming),
    );
    Ok((channel(proxy_addr).await?, channel(echo_addr).await?))
}

/// Starts the subject's cluster and waits until every echo id used is served.
async fn start_subject(clock: &SharedClock) -> anyhow::Result<(GatewayCluster, Channel)> {
    let cluster = GatewayCluster::start(clock, SHARDS, |node| node.object::<Echo>()).await?;
    let channel = channel(cluster.gateway_addr).await?;
    // Every shard owned and served before measuring: one call per echo id used.
    let mut client = GateServiceClient::new(channel.clone());
    for id in 0..256 {
        let started = Instant::now();
        while client.call_object(echo_call(id)).await.is_err() {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "echo-{id} not served");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok((cluster, channel))
}

fn echo_call(caller: usize) -> CallObjectRequest {
    let blob = Blob::new();
    CallObjectRequest {
        client_id: String::new(),
        r#type: "Echo".into(),
        id: format!("echo-{caller}"),
        method: "Echo".into(),
        request: Some(prost_types::Any { type_url: Blob::type_url(), value: blob.encode_to_vec() }),
    }
}

async fn bare(channel: &Channel, callers: usize, warmup: Duration, measure: Duration) -> f64 {
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

async fn subject(channel: &Channel, callers: usize, warmup: Duration, measure: Duration) -> f64 {
    let client = GateServiceClient::new(channel.clone());
    drive(callers, warmup, measure, move |caller| {
        let mut client = client.clone();
        async move {
            let reply = client.call_object(echo_call(caller)).await.expect("gateway call");
            let any = reply.into_inner().response.expect("a response");
            let blob = Blob::decode(any.value.as_slice()).expect("a blob");
            assert_eq!(blob.data.len(), 64);
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
        let clock = SystemClock::shared();
        let (_cluster, subject_channel) = start_subject(&clock).await?;
        let (proxy, echo) = start_baseline().await?;
        let warmup = Duration::from_millis(300);
        let measure = Duration::from_secs_f64(args.seconds);
        let mut rows = Vec::new();
        for n in [1usize, 16, 256] {
            if args.only.is_some_and(|only| only != n) {
                continue;
            }
            let (mut chain, mut hop) = (Vec::new(), Vec::new());
            for _ in 0..args.pairs {
                let (through_proxy, one_hop) = if args.skip_baseline {
                    (1.0, 1.0)
                } else {
                    let through_proxy = bare(&proxy, n, warmup, measure).await;
                    let one_hop =
                        if args.skip_subject { 1.0 } else { bare(&echo, n, warmup, measure).await };
                    (through_proxy, one_hop)
                };
                let s = if args.skip_subject {
                    1.0
                } else {
                    subject(&subject_channel, n, warmup, measure).await
                };
                chain.push((through_proxy, s));
                hop.push((one_hop, s));
            }
            rows.push(Row::new("P3", &format!("gateway calls, {n} callers"), &chain, Some(0.8)));
            rows.push(Row::new("P3h", &format!("  vs one-hop echo, {n} callers"), &hop, None));
        }
        report(
            "P3 calls through the gateway (baseline: tonic proxy chain)",
            &rows,
            args.json.as_deref(),
        )
    })
}
