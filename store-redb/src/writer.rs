//! The dedicated writer thread of one redb file: group commit.
//!
//! redb allows one write transaction at a time and every commit is an fsync (about 0.35 ms on
//! the machines measured), so committing each write alone caps a node at a few thousand writes
//! per second. The writer thread takes whatever is queued when it becomes free (up to a batch
//! limit), applies it in one transaction and answers each request after the commit.
//!
//! The queue is a bounded tokio channel: async callers `send().await`, so a full queue makes
//! them wait for room (backpressure, cancel safe: a send that is dropped while waiting queues
//! nothing), and the thread takes requests with `blocking_recv`. The thread ends when every
//! sender is gone and the queue is drained; the store joins it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use redb::Database;
use tokio::sync::{mpsc, oneshot};

use crate::txn::{self, BatchEnd, WriteOp, WriteResult};

/// A write operation and where to send its answer.
#[derive(Debug)]
pub(crate) struct WriteRequest {
    pub(crate) op: WriteOp,
    pub(crate) reply: oneshot::Sender<WriteResult>,
}

/// Counters of the write path, shared by the store and the writer thread.
#[derive(Debug, Default)]
pub(crate) struct WriteCounters {
    pub(crate) submitted: AtomicU64,
    pub(crate) transactions: AtomicU64,
    pub(crate) commits: AtomicU64,
}

impl WriteCounters {
    pub(crate) fn record(&self, end: BatchEnd) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        if end == BatchEnd::Committed {
            self.commits.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Holds the writer before its next transaction while any pause is held (see
/// [`crate::RedbStore::pause_writes`]); ignored once the store is closing, so a forgotten
/// pause can never hang shutdown.
#[derive(Debug, Default)]
pub(crate) struct PauseGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    pauses: usize,
    closing: bool,
}

impl PauseGate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        // Plain counters: still meaningful after a panic elsewhere. A std mutex because the
        // waiter is a plain thread and no critical section awaits.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn pause(&self) {
        self.lock().pauses += 1;
    }

    pub(crate) fn resume(&self) {
        let mut state = self.lock();
        state.pauses = state.pauses.saturating_sub(1);
        drop(state);
        self.changed.notify_all();
    }

    pub(crate) fn close(&self) {
        self.lock().closing = true;
        self.changed.notify_all();
    }

    fn wait_until_open(&self) {
        let mut state = self.lock();
        while state.pauses > 0 && !state.closing {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Spawns the writer thread for `db`.
pub(crate) fn spawn(
    db: Arc<Database>,
    requests: mpsc::Receiver<WriteRequest>,
    max_batch: usize,
    counters: Arc<WriteCounters>,
    gate: Arc<PauseGate>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("verse-redb-writer".to_owned())
        .spawn(move || run(&db, requests, max_batch, &counters, &gate))
}

fn run(
    db: &Database,
    mut requests: mpsc::Receiver<WriteRequest>,
    max_batch: usize,
    counters: &WriteCounters,
    gate: &PauseGate,
) {
    let max_batch = max_batch.max(1);
    let mut ops = Vec::with_capacity(max_batch);
    let mut replies = Vec::with_capacity(max_batch);
    while let Some(first) = requests.blocking_recv() {
        gate.wait_until_open();
        ops.push(first.op);
        replies.push(first.reply);
        while ops.len() < max_batch {
            let Ok(next) = requests.try_recv() else { break };
            ops.push(next.op);
            replies.push(next.reply);
        }
        let (results, end) = txn::apply_batch(db, &ops);
        counters.record(end);
        debug_assert_eq!(results.len(), replies.len(), "one answer per request");
        for (reply, result) in replies.drain(..).zip(results) {
            // The caller may have given up waiting; the write stands regardless.
            let _ = reply.send(result);
        }
        ops.clear();
    }
    tracing::debug!("redb writer thread stopped: all senders gone and the queue drained");
}
