//! P5: push from one object to 1,000 connected clients on one gateway, against a bare tonic
//! server-stream fan-out to 1,000 subscribers in the same layout.
//!
//! Subject: 1,000 gRPC clients, each on its own connection, `Register` with a gateway (in this
//! process, registered with an embedded single-voter Raft coordinator); one `Broadcaster`
//! object on a clustered node pushes each published 64-byte blob to every session through the
//! node's push stream to the gateway (`CallContext::broadcast`), and the gateway fans it out to
//! the sessions' queues and `Register` streams. Baseline: a tonic service whose `Subscribe`
//! returns a server stream per subscriber (a bounded tokio mpsc each); publishing sends the
//! blob to every subscriber's channel. Both are driven the same way: a publisher keeps at most
//! `--window` messages in flight (published minus fully delivered), receivers count what they
//! read; the figure is deliveries per second (messages × receivers).
//!
//! `cargo run --release -p verse-bench --bin push_fanout -- --pairs 5`

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{Stream, StreamExt};
use tokio::sync::{Mutex, mpsc};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use verse::clock::{SharedClock, SystemClock};
use verse::prelude::*;
use verse_bench::gateway_cluster::{GatewayCluster, listen};
use verse_bench::{Blob, Row, install_metrics, report};
use verse_gateway::proto::Empty;
use verse_gateway::proto::gate_service_client::GateServiceClient;

#[allow(missing_docs, clippy::all)]
mod proto {
    tonic::include_proto!("bench.echo.v1");
}

use proto::EchoBlob;
use proto::bare_fanout_client::BareFanoutClient;
use proto::bare_fanout_server::{BareFanout, BareFanoutServer};

/// The pushing object: every `Publish` goes to every session of every gateway.
#[derive(Default)]
struct Broadcaster;

#[verse::object]
impl Broadcaster {
    async fn publish(&mut self, ctx: &CallContext, req: Blob) -> Result<Blob, MethodError> {
        let gateways =
            ctx.broadcast(&req).map_err(|error| MethodError::new(14, error.to_string()))?;
        if gateways == 0 {
            return Err(MethodError::new(14, "no gateway stream open"));
        }
        Ok(Blob { data: Vec::new() })
    }
}

/// One subscriber's bounded channel.
type Subscriber = mpsc::Sender<Result<EchoBlob, Status>>;

/// The baseline: one bounded channel per subscriber.
#[derive(Default, Clone)]
struct Fanout {
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
}

type BlobStream = Pin<Box<dyn Stream<Item = Result<EchoBlob, Status>> + Send>>;

#[tonic::async_trait]
impl BareFanout for Fanout {
    type SubscribeStream = BlobStream;

    async fn subscribe(&self, _request: Request<EchoBlob>) -> Result<Response<BlobStream>, Status> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.subscribers.lock().await.push(tx);
        Ok(Response::new(Box::pin(tokio_stream_from(rx))))
    }
}

fn tokio_stream_from<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

impl Fanout {
    async fn publish(&self, blob: EchoBlob) {
        let subscribers = self.subscribers.lock().await.clone();
        for subscriber in subscribers {
            // A closed subscriber is not counted as delivered; none close during a run.
            let _ = subscriber.send(Ok(blob.clone())).await;
        }
    }
}

#[derive(Parser)]
struct Args {
    /// Interleaved (baseline, subject) runs.
    #[arg(long, default_value_t = 5)]
    pairs: usize,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Connected clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Messages in flight (published, not yet delivered to every client).
    #[arg(long, default_value_t = 16)]
    window: u64,
    /// Write the rows as JSON here.
    #[arg(long)]
    json: Option<String>,
}

/// Per-subscriber queue of the baseline (the gateway's per-session buffer is larger).
const QUEUE: usize = 64;

async fn channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?)
}

/// Deliveries counted by the receivers; the publisher sleeps on `changed` while its window
/// is full (no busy polling: the publisher must not take a core from the fan-out).
#[derive(Default)]
struct Delivered {
    count: AtomicU64,
    changed: tokio::sync::Notify,
}

impl Delivered {
    fn add(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Waits for a delivery (or returns at once if one happened since the last wait).
    async fn wait(&self) {
        self.changed.notified().await;
    }
}

/// Runs the publisher for `measure` after `warmup`, keeping at most `window` messages in
/// flight; returns deliveries per second during `measure`.
async fn drive_fanout<F, Fut>(
    counter: &Delivered,
    clients: u64,
    window: u64,
    warmup: Duration,
    measure: Duration,
    publish: F,
) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let delivered = &counter.count;
    let base = delivered.load(Ordering::Relaxed);
    let mut published = 0u64;
    let start = Instant::now();
    let mut measuring_from: Option<(Instant, u64)> = None;
    loop {
        let now = Instant::now();
        if measuring_from.is_none() && now.duration_since(start) >= warmup {
            measuring_from = Some((now, delivered.load(Ordering::Relaxed)));
        }
        if let Some((from, count)) = measuring_from
            && now.duration_since(from) >= measure
        {
            let got = delivered.load(Ordering::Relaxed) - count;
            // Drain what is in flight so the next run starts clean.
            let target = base + published * clients;
            let drain = Instant::now();
            while delivered.load(Ordering::Relaxed) < target {
                assert!(drain.elapsed() < Duration::from_secs(30), "deliveries stalled");
                counter.wait().await;
            }
            return got as f64 / now.duration_since(from).as_secs_f64();
        }
        let done = delivered.load(Ordering::Relaxed) - base;
        if published * clients - done < window * clients {
            publish().await;
            published += 1;
        } else {
            counter.wait().await;
        }
    }
}

/// The baseline's server, and its subscribers counting into `delivered`.
async fn start_baseline(clients: usize, delivered: Arc<Delivered>) -> anyhow::Result<Fanout> {
    let fanout = Fanout::default();
    let (incoming, addr) = listen().await?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(BareFanoutServer::new(fanout.clone()))
            .serve_with_incoming(incoming),
    );
    for _ in 0..clients {
        let mut client = BareFanoutClient::new(channel(addr).await?);
        let mut stream = client.subscribe(EchoBlob::default()).await?.into_inner();
        let delivered = delivered.clone();
        tokio::spawn(async move {
            while let Some(Ok(blob)) = stream.next().await {
                assert_eq!(blob.data.len(), 64);
                delivered.add();
            }
        });
    }
    anyhow::ensure!(fanout.subscribers.lock().await.len() == clients, "subscribers missing");
    Ok(fanout)
}

/// Starts the subject's cluster with `clients` registered clients counting into `delivered`,
/// and waits until a published message reaches every client.
async fn start_subject(
    clock: &SharedClock,
    clients: usize,
    delivered: Arc<Delivered>,
) -> anyhow::Result<GatewayCluster> {
    let cluster = GatewayCluster::start(clock, 16, |node| node.object::<Broadcaster>()).await?;
    let gateway_addr = cluster.gateway_addr;
    for _ in 0..clients {
        let mut client = GateServiceClient::new(channel(gateway_addr).await?);
        let mut stream = client.register(Empty {}).await?.into_inner();
        anyhow::ensure!(stream.next().await.is_some(), "no RegisterResponse");
        let delivered = delivered.clone();
        tokio::spawn(async move {
            while let Some(Ok(item)) = stream.next().await {
                assert_eq!(item.value.len(), 66, "a 64-byte blob");
                delivered.add();
            }
        });
    }
    anyhow::ensure!(cluster.sessions() == clients, "sessions missing");
    // Publish until one message reaches every client (the node's push stream is open).
    let broadcaster = cluster.node.client().get::<Broadcaster>("broadcaster");
    let started = Instant::now();
    loop {
        let before = delivered.count.load(Ordering::Relaxed);
        if broadcaster.publish(Blob::new()).await.is_ok() {
            let target = before + clients as u64;
            let wait = Instant::now();
            while delivered.count.load(Ordering::Relaxed) < target
                && wait.elapsed() < Duration::from_secs(10)
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if delivered.count.load(Ordering::Relaxed) >= target {
                break;
            }
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "pushes never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(cluster)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        install_metrics();
        let clock = SystemClock::shared();
        let bare_delivered = Arc::new(Delivered::default());
        let fanout = start_baseline(args.clients, bare_delivered.clone()).await?;
        let subject_delivered = Arc::new(Delivered::default());
        let subject = start_subject(&clock, args.clients, subject_delivered.clone()).await?;
        let broadcaster = subject.node.client().get::<Broadcaster>("broadcaster");
        let warmup = Duration::from_millis(300);
        let measure = Duration::from_secs_f64(args.seconds);
        let clients = args.clients as u64;
        let mut pairs = Vec::new();
        for _ in 0..args.pairs {
            let blob = EchoBlob { data: bytes::Bytes::from(Blob::new().data) };
            let b = drive_fanout(&bare_delivered, clients, args.window, warmup, measure, || {
                fanout.publish(blob.clone())
            })
            .await;
            let s = drive_fanout(&subject_delivered, clients, args.window, warmup, measure, || {
                let broadcaster = broadcaster.clone();
                async move {
                    broadcaster.publish(Blob::new()).await.expect("publish");
                }
            })
            .await;
            pairs.push((b, s));
        }
        let rows = [Row::new(
            "P5",
            &format!("push to {} clients (deliveries/s)", args.clients),
            &pairs,
            Some(0.5),
        )];
        report(
            "P5 push fan-out (baseline: tonic server-stream fan-out)",
            &rows,
            args.json.as_deref(),
        )
    })
}
