//! The counter example driven in process: a node with the redb state store hosts GoVerse's
//! counter; callers increment counters concurrently, the node shuts down (saving every
//! counter), a new node opens the same store and reads the values back.
//!
//! `cargo run --release -p verse-examples --bin counter-demo`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use verse::prelude::*;
use verse::store::StateStore;
use verse_examples::counter::Counter;
use verse_examples::proto::counter::{GetRequest, IncrementRequest};
use verse_store_redb::{RedbOptions, RedbStore};

const COUNTERS: usize = 100;
const CALLERS: usize = 8;
const INCREMENTS_PER_CALLER: usize = 2_000;

fn start_node(store: Arc<dyn StateStore>) -> anyhow::Result<Node> {
    let options = TypeOptions::default().persistence(PersistencePolicy::OnDeactivation);
    Ok(NodeBuilder::new(NodeConfig::default())
        .store(store)
        .object_with::<Counter>(options)
        .start()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.redb");
    println!("state store: {}", path.display());

    let store = Arc::new(RedbStore::open(&path, RedbOptions::production())?);
    let node = start_node(store.clone())?;
    let client = node.client();

    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..CALLERS {
        let client = client.clone();
        callers.spawn(async move {
            for i in 0..INCREMENTS_PER_CALLER {
                let id = format!("Counter-{}", (caller + i) % COUNTERS);
                client.get::<Counter>(id).increment(IncrementRequest { amount: 1 }).await?;
            }
            Ok::<_, CallError>(())
        });
    }
    while let Some(done) = callers.join_next().await {
        done?.context("increment")?;
    }
    let calls = CALLERS * INCREMENTS_PER_CALLER;
    let elapsed = started.elapsed();
    println!(
        "{calls} increments over {COUNTERS} counters from {CALLERS} callers in {:.3} s ({:.0} calls/s)",
        elapsed.as_secs_f64(),
        calls as f64 / elapsed.as_secs_f64()
    );
    let sample = client.get::<Counter>("Counter-7").get(GetRequest {}).await?;
    println!("{} = {}", sample.name, sample.value);

    println!("shutting down: every active counter saves its state");
    node.shutdown().await;
    drop(node);
    drop(client);
    let store = Arc::into_inner(store).context("store still shared")?;
    store.shutdown()?;

    let store = Arc::new(RedbStore::open(&path, RedbOptions::production())?);
    let node = start_node(store.clone())?;
    let client = node.client().with_timeout(Duration::from_secs(5));
    let mut total = 0i64;
    for i in 0..COUNTERS {
        let counter = client.get::<Counter>(format!("Counter-{i}")).get(GetRequest {}).await?;
        total += i64::from(counter.value);
    }
    println!("after restart: the {COUNTERS} counters hold {total} increments in total");
    ensure!(total == calls as i64, "expected {calls} increments, found {total}");
    node.shutdown().await;
    println!("ok");
    Ok(())
}
