//! P1: local calls to active objects, against bare mpsc + oneshot request/response.
//!
//! Shapes: (a) N callers → 1 object (baseline: 1 server task), (b) N callers → N objects
//! (baseline: N server tasks), N = 1, 16, 256. Median ratio of interleaved pairs.
//!
//! `cargo run --release -p verse-bench --bin local_calls -- --pairs 5`

use std::time::Duration;

use clap::Parser;
use tokio::sync::{mpsc, oneshot};
use verse::prelude::*;
use verse_bench::{Blob, Row, drive, install_metrics, report};

use verse_bench::echo::{Echo, EchoRef};

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
    /// Only these cases, e.g. `b16` (for profiling); default all.
    #[arg(long)]
    only: Option<String>,
    /// Skip baselines (for profiling the subject alone; ratios become meaningless).
    #[arg(long)]
    skip_baseline: bool,
    /// Skip subjects (for profiling the baseline alone; ratios become meaningless).
    #[arg(long)]
    skip_subject: bool,
}

type Request = (Blob, oneshot::Sender<Blob>);

/// The baseline server: answers each request with a fresh 64-byte blob.
fn spawn_server() -> mpsc::Sender<Request> {
    let (tx, mut rx) = mpsc::channel::<Request>(1024);
    tokio::spawn(async move {
        while let Some((req, reply)) = rx.recv().await {
            let _ = reply.send(Blob { data: req.data });
        }
    });
    tx
}

async fn baseline(callers: usize, servers: usize, warmup: Duration, measure: Duration) -> f64 {
    // Leaked (a few per run of this short-lived program) rather than shared through an `Arc`:
    // cloning an `Arc` per call would make every call of both sides bounce one reference
    // count between the worker threads, which measures the driver, not the calls.
    let senders: &'static [mpsc::Sender<Request>] =
        Vec::leak((0..servers).map(|_| spawn_server()).collect());
    drive(callers, warmup, measure, move |caller| async move {
        let (reply_tx, reply_rx) = oneshot::channel();
        let tx = &senders[caller % senders.len()];
        tx.send((Blob::new(), reply_tx)).await.expect("server alive");
        let reply = reply_rx.await.expect("reply");
        assert_eq!(reply.data.len(), 64);
    })
    .await
    .per_second()
}

async fn subject(
    node: &Node,
    callers: usize,
    objects: usize,
    round: usize,
    warmup: Duration,
    measure: Duration,
) -> f64 {
    let client = node.client();
    // Leaked like the baseline's senders (see there).
    let refs: &'static [EchoRef] =
        Vec::leak((0..objects).map(|i| client.get::<Echo>(format!("echo-{round}-{i}"))).collect());
    drive(callers, warmup, measure, move |caller| async move {
        let echo = &refs[caller % refs.len()];
        let reply = echo.echo(Blob::new()).await.expect("echo call");
        assert_eq!(reply.data.len(), 64);
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
        let node = NodeBuilder::new(NodeConfig::default()).object::<Echo>().start()?;
        let warmup = Duration::from_millis(300);
        let measure = Duration::from_secs_f64(args.seconds);
        let mut rows = Vec::new();
        for (shape, label) in [("a", "N callers -> 1 object"), ("b", "N callers -> N objects")] {
            for n in [1usize, 16, 256] {
                if args.only.as_ref().is_some_and(|only| *only != format!("{shape}{n}")) {
                    continue;
                }
                let targets = if shape == "a" { 1 } else { n };
                let mut pairs = Vec::new();
                for round in 0..args.pairs {
                    let b = if args.skip_baseline {
                        1.0
                    } else {
                        baseline(n, targets, warmup, measure).await
                    };
                    let s = if args.skip_subject {
                        1.0
                    } else {
                        subject(&node, n, targets, round, warmup, measure).await
                    };
                    pairs.push((b, s));
                }
                let target = match (shape, n) {
                    ("a", 1) | ("b", _) => 0.5,
                    _ => 0.4,
                };
                rows.push(Row::new(
                    &format!("P1{shape}"),
                    &format!("{label}, N={n}"),
                    &pairs,
                    Some(target),
                ));
            }
        }
        node.shutdown().await;
        report("P1 local calls", &rows, args.json.as_deref())
    })
}
