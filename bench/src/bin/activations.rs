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
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        install_metrics();
        let warmup = Duration::from_millis(200);
        let measure = Duration::from_secs_f64(args.seconds);
        let mut fresh = Vec::new();
        let mut redb = Vec::new();
        for round in 0..args.pairs {
            let b = baseline(warmup, measure).await;
            let s = subject_fresh(round, warmup, measure).await?;
            fresh.push((b, s));
            let b = baseline(warmup, measure).await;
            let s = subject_redb(round, warmup, measure).await?;
            redb.push((b, s));
        }
        let rows = vec![
            Row::new("P4", "activations, no stored state, 16 activators", &fresh, Some(0.5)),
            Row::new("P4r", "activations, redb store (no target)", &redb, None),
        ];
        report("P4 activations", &rows, args.json.as_deref())
    })
}
