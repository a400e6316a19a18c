//! P6: memory per idle activation, with a counting allocator, over 1,000,000 idle activations
//! in the default configuration (idle deactivation armed, metrics on), divided by N, minus the
//! size of the user's struct. Target ≤ 1 KiB.
//!
//! `cargo run --release -p verse-bench --bin idle_memory -- --objects 1000000`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use clap::Parser;
use verse::prelude::*;
use verse_bench::{Blob, install_metrics};

/// Counts live heap bytes.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A small user object.
#[derive(Default)]
struct Idle {
    touched: u64,
}

#[verse::object]
impl Idle {
    async fn touch(&mut self, _ctx: &CallContext, _req: Blob) -> Result<Blob, MethodError> {
        self.touched += 1;
        Ok(Blob::default())
    }
}

#[derive(Parser)]
struct Args {
    /// Number of idle activations.
    #[arg(long, default_value_t = 1_000_000)]
    objects: usize,
    /// Write the result as JSON here.
    #[arg(long)]
    json: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        install_metrics();
        let node = NodeBuilder::new(NodeConfig::default()).object::<Idle>().start()?;
        let client = node.client();
        // Warm one activation so lazily created globals are not counted.
        client.get::<Idle>("warm").touch(Blob::default()).await?;
        let ids: Vec<String> = (0..args.objects).map(|i| format!("idle-{i}")).collect();
        let before = LIVE_BYTES.load(Ordering::Relaxed);
        let started = Instant::now();
        let mut in_flight = tokio::task::JoinSet::new();
        for chunk in ids.chunks(args.objects.div_ceil(64)) {
            let client = client.clone();
            let chunk = chunk.to_vec();
            in_flight.spawn(async move {
                for id in chunk {
                    client.get::<Idle>(id).touch(Blob::default()).await.expect("touch");
                }
            });
        }
        while let Some(done) = in_flight.join_next().await {
            done?;
        }
        let elapsed = started.elapsed();
        let after = LIVE_BYTES.load(Ordering::Relaxed);
        let active = node.activation_count();
        let per = (after - before) as f64 / args.objects as f64;
        let user = std::mem::size_of::<Idle>() as f64;
        println!("P6 idle activation memory (counting allocator, default config, metrics on)");
        println!("activations: {active} (created in {:.1} s)", elapsed.as_secs_f64());
        println!("live heap growth: {} bytes", after - before);
        println!("per activation: {per:.0} B, minus size_of user struct ({user} B): {:.0} B (target <= 1024 B)", per - user);
        if let Some(path) = args.json {
            let json = serde_json::json!({ "id": "P6", "objects": args.objects, "bytes_per_activation": per - user, "target": 1024 });
            std::fs::write(&path, json.to_string())?;
        }
        drop(ids);
        node.shutdown().await;
        drop(client);
        drop(node);
        let left = LIVE_BYTES.load(Ordering::Relaxed) - before;
        println!("after shutdown and drop: {left} bytes still live (leak check; small is good)");
        Ok(())
    })
}
