//! [`RedbStore`]: the [`StateStore`] on one redb file, and its options.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use redb::Database;
use tokio::sync::{mpsc, oneshot};
use verse_core::executor::run_blocking;
use verse_core::store::{
    DeleteRequest, FenceKey, SaveRequest, StateStore, StoreError, StoredObject,
};
use verse_core::{
    Epoch, InlineExecutor, SharedClock, SharedExecutor, SystemClock, TokioBlockingExecutor,
};

use crate::txn::{self, WriteOp, WriteOutcome, WriteResult};
use crate::writer::{self, PauseGate, WriteCounters, WriteRequest};

pub use verse_core::store::DEFAULT_TOMBSTONE_RETENTION;
/// Default capacity of the writer thread's queue, in requests.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Default largest number of requests committed in one transaction.
pub const DEFAULT_MAX_BATCH: usize = 256;

/// How writes reach the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Production: one dedicated writer thread, owned by the store and joined when it closes,
    /// takes requests from a bounded queue and commits several per transaction (group commit).
    ///
    /// A full queue makes writers wait asynchronously for room (backpressure; callers bound the
    /// wait with their own deadline, as for every store call).
    WriterThread {
        /// Requests the queue holds before writers wait.
        queue_capacity: usize,
        /// Most requests applied in one transaction (one fsync).
        max_batch: usize,
    },
    /// Simulation: no thread; each write is its own transaction, run through
    /// [`RedbOptions::executor`] (with [`InlineExecutor`], on the calling task).
    Inline,
}

impl WriteMode {
    /// A writer thread with the default queue capacity and batch limit.
    pub const fn writer_thread() -> Self {
        WriteMode::WriterThread {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// How a [`RedbStore`] runs.
#[derive(Debug, Clone)]
pub struct RedbOptions {
    /// How writes reach the file.
    pub mode: WriteMode,
    /// How long a tombstone is kept before [`StateStore::purge_tombstones`] may remove it.
    pub tombstone_retention: Duration,
    /// Where write times come from (tombstone age). Write times are readings of this clock,
    /// stored in the file: after a reboot [`SystemClock`] restarts lower, so tombstones written
    /// before it look younger than they are and are kept longer, never purged early.
    pub clock: SharedClock,
    /// Where reads run (and writes, in [`WriteMode::Inline`]): `spawn_blocking` in production.
    pub executor: SharedExecutor,
}

impl RedbOptions {
    /// Production: writer thread, reads on tokio's blocking pool, the system clock, default
    /// retention.
    pub fn production() -> Self {
        RedbOptions {
            mode: WriteMode::writer_thread(),
            tombstone_retention: DEFAULT_TOMBSTONE_RETENTION,
            clock: SystemClock::shared(),
            executor: Arc::new(TokioBlockingExecutor),
        }
    }

    /// Simulation: everything inline on the calling task with the given clock, default
    /// retention.
    pub fn inline(clock: SharedClock) -> Self {
        RedbOptions {
            mode: WriteMode::Inline,
            tombstone_retention: DEFAULT_TOMBSTONE_RETENTION,
            clock,
            executor: Arc::new(InlineExecutor),
        }
    }
}

/// Counters of the write path (monotonic since the store opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteStats {
    /// Write requests (fence, save, delete, purge) handed to the writer.
    pub submitted: u64,
    /// Write transactions run (each holds one or more requests).
    pub transactions: u64,
    /// Transactions committed (each one fsync); a transaction in which every request was
    /// refused or changed nothing is aborted instead.
    pub commits: u64,
}

/// Holds the writer thread before its next transaction until dropped (see
/// [`RedbStore::pause_writes`]).
#[must_use = "writes resume as soon as the pause is dropped"]
#[derive(Debug)]
pub struct WritePause {
    gate: Option<Arc<PauseGate>>,
}

impl Drop for WritePause {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.resume();
        }
    }
}

/// The writer thread and the sending side of its queue.
struct Writer {
    requests: Option<mpsc::Sender<WriteRequest>>,
    thread: Option<JoinHandle<()>>,
    gate: Arc<PauseGate>,
}

/// A [`StateStore`] on one embedded redb file (node-local).
///
/// Every save, delete and fence is one write transaction that checks the fence and the version
/// and writes (invariant 5); with [`WriteMode::WriterThread`] several requests share one
/// transaction, each checked against the state the earlier ones left, and a refused request
/// writes nothing. A write is answered only after its transaction committed (fsync).
///
/// Closing (drop or [`RedbStore::shutdown`]) closes the queue, lets the writer thread finish
/// what is queued and joins it; that wait blocks the closing thread briefly.
pub struct RedbStore {
    db: Arc<Database>,
    clock: SharedClock,
    executor: SharedExecutor,
    tombstone_retention: Duration,
    counters: Arc<WriteCounters>,
    writer: Option<Writer>,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("writer_thread", &self.writer.is_some())
            .field("tombstone_retention", &self.tombstone_retention)
            .field("stats", &self.write_stats())
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (or creates) the redb file at `path`.
    ///
    /// Blocks on file I/O: call it at startup, or through the executor.
    pub fn open(path: impl AsRef<Path>, options: RedbOptions) -> Result<RedbStore, StoreError> {
        let db = Database::create(path.as_ref()).map_err(txn::store_error)?;
        RedbStore::from_database(db, options)
    }

    /// Wraps an already opened database, e.g. one on a custom [`redb::StorageBackend`] (the
    /// simulation's) or an anonymous temporary file. Creates the store's tables if missing.
    ///
    /// Blocks on file I/O like [`RedbStore::open`].
    pub fn from_database(db: Database, options: RedbOptions) -> Result<RedbStore, StoreError> {
        txn::create_tables(&db)?;
        let db = Arc::new(db);
        let counters = Arc::new(WriteCounters::default());
        let writer = match options.mode {
            WriteMode::Inline => None,
            WriteMode::WriterThread { queue_capacity, max_batch } => {
                let (sender, receiver) = mpsc::channel(queue_capacity.max(1));
                let gate = Arc::new(PauseGate::default());
                let thread =
                    writer::spawn(db.clone(), receiver, max_batch, counters.clone(), gate.clone())
                        .map_err(|e| {
                            StoreError::Unavailable(format!("cannot start the writer thread: {e}"))
                        })?;
                Some(Writer { requests: Some(sender), thread: Some(thread), gate })
            }
        };
        Ok(RedbStore {
            db,
            clock: options.clock,
            executor: options.executor,
            tombstone_retention: options.tombstone_retention,
            counters,
            writer,
        })
    }

    /// Counters of the write path.
    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            submitted: self.counters.submitted.load(Ordering::Relaxed),
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            commits: self.counters.commits.load(Ordering::Relaxed),
        }
    }

    /// Holds the writer thread before its next transaction until the returned guard drops;
    /// requests queue up meanwhile (and then wait for room). Makes group commit observable in
    /// tests, and gives a quiet file (no commit in progress or starting) for a copy.
    ///
    /// Has no effect in [`WriteMode::Inline`], where writes run on their callers. A pause never
    /// delays closing the store.
    pub fn pause_writes(&self) -> WritePause {
        let gate = self.writer.as_ref().map(|writer| writer.gate.clone());
        if let Some(gate) = &gate {
            gate.pause();
        }
        WritePause { gate }
    }

    /// Closes the store: lets the writer thread apply what is queued and joins it.
    ///
    /// Dropping the store does the same; this also reports a writer thread that panicked.
    pub fn shutdown(mut self) -> Result<(), StoreError> {
        self.stop_writer()
    }

    fn stop_writer(&mut self) -> Result<(), StoreError> {
        let Some(mut writer) = self.writer.take() else {
            return Ok(());
        };
        // Closing the queue ends the thread once it is drained.
        drop(writer.requests.take());
        writer.gate.close();
        match writer.thread.take().map(JoinHandle::join) {
            Some(Err(_)) => Err(StoreError::Corrupt("the redb writer thread panicked".into())),
            _ => Ok(()),
        }
    }

    async fn write(&self, op: WriteOp) -> WriteResult {
        match &self.writer {
            Some(writer) => {
                let sender = writer.requests.as_ref().expect("the queue stays open until close");
                let (reply, answer) = oneshot::channel();
                sender.send(WriteRequest { op, reply }).await.map_err(|_| {
                    StoreError::Unavailable("the redb writer thread stopped".into())
                })?;
                self.counters.submitted.fetch_add(1, Ordering::Relaxed);
                answer.await.map_err(|_| {
                    StoreError::Unavailable(
                        "the redb writer thread stopped before answering".into(),
                    )
                })?
            }
            None => {
                self.counters.submitted.fetch_add(1, Ordering::Relaxed);
                let db = self.db.clone();
                let counters = self.counters.clone();
                let job = move || {
                    let (mut results, end) = txn::apply_batch(&db, std::slice::from_ref(&op));
                    counters.record(end);
                    results.pop().expect("one result per operation")
                };
                run_blocking(&*self.executor, job).await.map_err(executor_gone)?
            }
        }
    }

    async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        run_blocking(&*self.executor, move || read(&db)).await.map_err(executor_gone)?
    }
}

fn executor_gone(_: verse_core::executor::JobDropped) -> StoreError {
    StoreError::Unavailable("the blocking executor is shutting down".into())
}

fn unexpected(outcome: WriteOutcome) -> StoreError {
    StoreError::Corrupt(format!("the writer answered with an unexpected outcome {outcome:?}"))
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        if let Err(err) = self.stop_writer() {
            tracing::error!(error = %err, "closing the redb store");
        }
    }
}

#[async_trait]
impl StateStore for RedbStore {
    async fn fence(&self, key: &FenceKey, epoch: Epoch) -> Result<Epoch, StoreError> {
        match self.write(WriteOp::Fence { key: key.clone(), epoch }).await? {
            WriteOutcome::Fence(current) => Ok(current),
            other => Err(unexpected(other)),
        }
    }

    async fn current_fence(&self, key: &FenceKey) -> Result<Epoch, StoreError> {
        let key = key.clone();
        self.read(move |db| txn::load_fence(db, &key)).await
    }

    async fn load(&self, object_id: &str) -> Result<Option<StoredObject>, StoreError> {
        let object_id = object_id.to_owned();
        self.read(move |db| txn::load_object(db, &object_id)).await
    }

    async fn save(&self, req: SaveRequest) -> Result<(), StoreError> {
        let now = self.clock.now();
        match self.write(WriteOp::Save { req, now }).await? {
            WriteOutcome::Written => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), StoreError> {
        let now = self.clock.now();
        match self.write(WriteOp::Delete { req, now }).await? {
            WriteOutcome::Written => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn purge_tombstones(&self) -> Result<usize, StoreError> {
        let op = WriteOp::Purge { now: self.clock.now(), retention: self.tombstone_retention };
        match self.write(op).await? {
            WriteOutcome::Purged(count) => Ok(count),
            other => Err(unexpected(other)),
        }
    }

    fn is_node_local(&self) -> bool {
        true
    }
}
