//! Shared benchmark machinery: one `drive()` loop for baselines and subjects, interleaved
//! pairs, medians, and the table/JSON report (targets.md: "How to measure").

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

pub mod echo;
pub mod gateway_cluster;

/// A 64-byte payload message, used in both directions by every benchmark.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Blob {
    /// 64 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
}

impl prost::Name for Blob {
    const NAME: &'static str = "Blob";
    const PACKAGE: &'static str = "bench";
}

impl Blob {
    /// A 64-byte blob.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Blob { data: vec![7u8; 64] }
    }
}

/// Timing of one `drive()` run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Throughput {
    /// Operations completed in the measured window.
    pub ops: u64,
    /// Length of the measured window.
    pub seconds: f64,
}

impl Throughput {
    /// Operations per second.
    pub fn per_second(&self) -> f64 {
        self.ops as f64 / self.seconds
    }
}

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPED: u8 = 2;

/// Runs `concurrency` callers, each repeating `op(caller_index)` back to back, for `warmup`
/// then `measure`; counts operations completed during `measure`. Baselines and subjects go
/// through this same loop.
pub async fn drive<F, Fut>(
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
    op: F,
) -> Throughput
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let op = Arc::new(op);
    let phase = Arc::new(AtomicU8::new(WARMING));
    let total = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for caller in 0..concurrency {
        let (op, phase, total) = (op.clone(), phase.clone(), total.clone());
        tasks.push(tokio::spawn(async move {
            let mut count = 0u64;
            loop {
                match phase.load(Ordering::Relaxed) {
                    STOPPED => break,
                    state => {
                        op(caller).await;
                        if state == MEASURING && phase.load(Ordering::Relaxed) == MEASURING {
                            count += 1;
                        }
                    }
                }
            }
            total.fetch_add(count, Ordering::Relaxed);
        }));
    }
    tokio::time::sleep(warmup).await;
    phase.store(MEASURING, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(measure).await;
    phase.store(STOPPED, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    for task in tasks {
        task.await.expect("caller task");
    }
    Throughput { ops: total.load(Ordering::Relaxed), seconds }
}

/// Median of a non-empty list.
pub fn median(values: &mut [f64]) -> f64 {
    assert!(!values.is_empty(), "median of nothing");
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

/// One row of a report: baseline and subject rates of each pair and the median ratio.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Benchmark id (P1a, P1b, P4, …).
    pub id: String,
    /// Human-readable case.
    pub case: String,
    /// Baseline rates (ops/s) of each pair.
    pub baseline: Vec<f64>,
    /// Subject rates (ops/s) of each pair.
    pub subject: Vec<f64>,
    /// Median of the per-pair ratios subject / baseline.
    pub ratio: f64,
    /// The target ratio, if any.
    pub target: Option<f64>,
}

impl Row {
    /// Builds a row from pairs.
    pub fn new(id: &str, case: &str, pairs: &[(f64, f64)], target: Option<f64>) -> Self {
        let mut ratios: Vec<f64> = pairs.iter().map(|(b, s)| s / b).collect();
        Row {
            id: id.into(),
            case: case.into(),
            baseline: pairs.iter().map(|p| p.0).collect(),
            subject: pairs.iter().map(|p| p.1).collect(),
            ratio: median(&mut ratios),
            target,
        }
    }

    /// Whether the row meets its target.
    pub fn meets_target(&self) -> bool {
        self.target.is_none_or(|t| self.ratio >= t)
    }
}

/// Prints rows as a table and writes them as JSON to `json_path` (if given).
pub fn report(title: &str, rows: &[Row], json_path: Option<&str>) -> anyhow::Result<()> {
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!("\n{title} (profile {profile}, tokio multi-thread, 2 workers, 64 B payloads)");
    println!(
        "{:<5} {:<34} {:>14} {:>14} {:>8} {:>8}",
        "id", "case", "baseline/s", "subject/s", "ratio", "target"
    );
    for row in rows {
        let mut b = row.baseline.clone();
        let mut s = row.subject.clone();
        let target = row.target.map(|t| format!(">={t:.2}")).unwrap_or_else(|| "-".into());
        let mark = if row.meets_target() { "" } else { "  MISSED" };
        println!(
            "{:<5} {:<34} {:>14.0} {:>14.0} {:>8.2} {:>8}{mark}",
            row.id,
            row.case,
            median(&mut b),
            median(&mut s),
            row.ratio,
            target
        );
    }
    if let Some(path) = json_path {
        std::fs::write(path, serde_json::to_string_pretty(rows)?)?;
        println!("wrote {path}");
    }
    Ok(())
}

/// Installs the Prometheus recorder (metrics on, as in `verse node`) with its periodic upkeep
/// (histogram samples are drained every second, as a scraped node's would be); call inside the
/// runtime, before building nodes.
pub fn install_metrics() {
    // An error means a recorder is already installed, which is what we want.
    if let Ok(handle) = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        // Runs for the life of the benchmark process.
        drop(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        }));
    }
}
