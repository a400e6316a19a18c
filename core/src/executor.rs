//! The injected blocking executor (invariant 10).
//!
//! Blocking work (redb commits, fsync, CPU-heavy encoding) never runs on an async worker
//! directly. Production hands it to tokio's blocking pool; the simulation runs it inline, so a
//! simulated host never spawns threads and stays deterministic.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A unit of blocking work.
pub type BlockingJob = Box<dyn FnOnce() + Send + 'static>;

/// Runs blocking work off the async workers.
///
/// `execute` must run the job exactly once (unless the process is shutting down, in which
/// case dropping it is allowed). It never blocks the caller for long: production queues the
/// job; the inline executor runs it before returning, which is only correct where blocking is
/// simulated (no real I/O latency).
pub trait BlockingExecutor: Send + Sync + fmt::Debug + 'static {
    /// Runs `job` on a thread where blocking is allowed.
    fn execute(&self, job: BlockingJob);
}

/// A shared executor handle.
pub type SharedExecutor = Arc<dyn BlockingExecutor>;

/// Production executor: tokio's blocking pool (`spawn_blocking`).
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioBlockingExecutor;

impl BlockingExecutor for TokioBlockingExecutor {
    fn execute(&self, job: BlockingJob) {
        // The JoinHandle is dropped on purpose: callers learn the outcome through their own
        // channel inside `job`, and tokio waits for blocking tasks on runtime shutdown.
        drop(tokio::task::spawn_blocking(job));
    }
}

/// Simulation and unit-test executor: runs the job inline on the calling thread.
#[derive(Debug, Default, Clone, Copy)]
pub struct InlineExecutor;

impl BlockingExecutor for InlineExecutor {
    fn execute(&self, job: BlockingJob) {
        job();
    }
}

/// Error returned by [`run_blocking`] when the job was dropped without running.
#[derive(Debug, thiserror::Error)]
#[error("blocking job was dropped before it finished (executor shutting down)")]
pub struct JobDropped;

/// Runs `f` on `executor` and returns its result asynchronously.
///
/// Cancel safety: dropping the returned future does not cancel the job; it still runs to
/// completion and its result is discarded.
pub fn run_blocking<T, F>(
    executor: &dyn BlockingExecutor,
    f: F,
) -> Pin<Box<dyn Future<Output = Result<T, JobDropped>> + Send + 'static>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    executor.execute(Box::new(move || {
        // The receiver may be gone (caller cancelled); the result is then discarded.
        let _ = tx.send(f());
    }));
    Box::pin(async move { rx.await.map_err(|_| JobDropped) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inline_and_tokio_executors_return_results() {
        let inline = run_blocking(&InlineExecutor, || 2 + 2)
            .await
            .expect("inline job");
        assert_eq!(inline, 4);
        let pooled = run_blocking(&TokioBlockingExecutor, || "done")
            .await
            .expect("pooled job");
        assert_eq!(pooled, "done");
    }
}
