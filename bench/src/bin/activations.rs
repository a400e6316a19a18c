//! P4: activation rate. Each operation is the first call to a new object id, answered, with
//! the object left active (on_activate, ownership check and idle tracking included), from 16
//! activators. Baseline: spawn a task + channel + one round trip, the task kept alive. Beside
//! it (no target): the same with a persistent type on the redb store.
//!
//! `cargo run --release -p verse-bench --bin activations -- --pairs 5`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use tokio::sync::{mpsc, oneshot};
use verse::prelude::*;
use verse_bench::{Blob, Row, drive, install_metrics, report};

/// A type with no stored state.
#[derive(Default)]
struct Fresh {
    activated: bool,
}

#[verse::object]
impl Fresh {
    #[on_activate]
    async fn activated(&mut self, _ctx: &CallContext) -> Result<(), MethodError> {
        self.activated = true;
        Ok(())
    }

    async fn touch(&mut self, _ctx: &CallContext, req: Blob) -> Result<Blob, MethodError> {
        assert!(self.activated);
        Ok(req)
    }
}

/// A persistent type (loaded from the store on activation).
#[derive(Default)]
struct Stored {
    data: Vec<u8>,
}

#[verse::object]
impl Stored {
    #[snapshot]
    fn snapshot(&self) -> Blob {
        Blob { data: self.data.clone() }
    }

    #[restore]
    fn restore(&mut self, state: Blob) {
        self.data = state.data;
    }

    async fn touch(&mut self, _ctx: &CallContext, req: Blob) -> Result<Blob, MethodError> {
        Ok(req)
    }
}

#[derive(Parser)]
struct Args {
    /// Interleaved (baseline, subject) pairs.
    #[arg(long, default_value_t = 5)]
    pairs: usize,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Write the rows as JSON here.
    #[arg(long)]
    json: Option<String>,
    /// Internal: measure one run (`baseline`, `fresh` or `redb`) in this process and print
    /// its rate. The parent runs every measurement in a fresh process, so one run's millions
    /// of freed allocations do not slow the next (they did, by up to 4x over five rounds).
    #[arg(long, hide = true)]
    one: Option<String>,
}

/// Runs one measurement in a child process and reads its rate.
fn measure_in_child(kind: &str, seconds: f64) -> anyhow::Result<f64> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .args(["--one", kind, "--seconds", &seconds.to_string()])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "child {kind} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout)?;
    Ok(text.trim().parse()?)
}

const ACTIVATORS: usize = 16;

type Request = (Blob, oneshot::Sender<Blob>);

async fn baseline(warmup: Duration, measure: Duration) -> f64 {
    // Senders are kept so every spawned task stays alive (like an active object).
    let keep: Arc<Mutex<Vec<mpsc::Sender<Request>>>> = Arc::default();
    let kept = keep.clone();
    let rate = drive(ACTIVATORS, warmup, measure, move |_| {
        let keep = kept.clone();
        async move {
            let (tx, mut rx) = mpsc::channel::<Request>(1024);
            tokio::spawn(async move {
                while let Some((req, reply)) = rx.recv().await {
                    let _ = reply.send(req);
                }
            });
            let (reply_tx, reply_rx) = oneshot::channel();
            tx.send((Blob::new(), reply_tx)).await.expect("task alive");
            reply_rx.await.expect("reply");
            keep.lock().expect("keep lock").push(tx);
        }
    })
    .await
    .per_second();
    drop(keep);
    rate
}

async fn subject_fresh(round: usize, warmup: Duration, measure: Duration) -> anyhow::Result<f64> {
    let node = NodeBuilder::new(NodeConfig::default()).object::<Fresh>().start()?;
    let client = node.client();
    let next = Arc::new(AtomicU64::new(0));
    let rate = drive(ACTIVATORS, warmup, measure, move |_| {
        let id = format!("fresh-{round}-{}", next.fetch_add(1, Ordering::Relaxed));
        let object = client.get::<Fresh>(id);
        async move {
            object.touch(Blob::new()).await.expect("first call");
        }
    })
    .await
    .per_second();
    node.shutdown().await;
    Ok(rate)
}

async fn subject_redb(round: usize, warmup: Duration, measure: Duration) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = verse_store_redb::RedbStore::open(
        dir.path().join("state.redb"),
        verse_store_redb::RedbOptions::production(),
    )?;
    let node = NodeBuilder::new(NodeConfig::default())
        .store(Arc::new(store))
        .object::<Stored>()
        .start()?;
    let client = node.client();
    let next = Arc::new(AtomicU64::new(0));
    let rate = drive(ACTIVATORS, warmup, measure, move |_| {
        let id = format!("stored-{round}-{}", next.fetch_add(1, Ordering::Relaxed));
        let object = client.get::<Stored>(id);
        async move {
            object.touch(Blob::new()).await.expect("first call");
        }
    })
    .await
    .per_second();
    node.shutdown().await;
    Ok(rate)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(kind) = args.one.as_deref() {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let rate = runtime.block_on(async move {
            install_metrics();
            let warmup = Duration::from_millis(200);
            let measure = Duration::from_secs_f64(args.seconds);
            match kind {
                "baseline" => Ok(baseline(warmup, measure).await),
                "fresh" => subject_fresh(0, warmup, measure).await,
                "redb" => subject_redb(0, warmup, measure).await,
                other => anyhow::bail!("unknown run {other:?}"),
            }
        })?;
        println!("{rate}");
        return Ok(());
    }
    let mut fresh = Vec::new();
    let mut redb = Vec::new();
    for _ in 0..args.pairs {
        let b = measure_in_child("baseline", args.seconds)?;
        let s = measure_in_child("fresh", args.seconds)?;
        fresh.push((b, s));
        let b = measure_in_child("baseline", args.seconds)?;
        let s = measure_in_child("redb", args.seconds)?;
        redb.push((b, s));
    }
    let rows = vec![
        Row::new("P4", "activations, no stored state, 16 activators", &fresh, Some(0.5)),
        Row::new("P4r", "activations, redb store (no target)", &redb, None),
    ];
    report("P4 activations (each run in a fresh process)", &rows, args.json.as_deref())
}
