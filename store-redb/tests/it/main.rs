//! Integration tests of `verse-store-redb` (one test binary, one module per concern).

// Test code throughout (clippy's test allowance misses helpers outside `#[test]` functions).
#![allow(clippy::unwrap_used)]

mod batching;
mod conformance;
mod durability;

use std::sync::Arc;
use std::time::Duration;

use verse_core::{InlineExecutor, ManualClock, SharedClock, TokioBlockingExecutor};
use verse_store_redb::{RedbOptions, RedbStore, WriteMode};

/// A store on an anonymous temporary file (gone when the store closes).
fn temp_store(options: RedbOptions) -> RedbStore {
    let file = tempfile::tempfile().unwrap();
    let backend = redb::backends::FileBackend::new(file).unwrap();
    let db = redb::Database::builder().create_with_backend(backend).unwrap();
    RedbStore::from_database(db, options).unwrap()
}

/// Production-shaped options (writer thread, blocking pool) on a manual clock.
fn writer_thread_options(clock: SharedClock, retention: Duration) -> RedbOptions {
    RedbOptions {
        mode: WriteMode::writer_thread(),
        tombstone_retention: retention,
        clock,
        executor: Arc::new(TokioBlockingExecutor),
    }
}

/// Simulation-shaped options (no thread, inline executor).
fn inline_options(clock: SharedClock, retention: Duration) -> RedbOptions {
    RedbOptions {
        mode: WriteMode::Inline,
        tombstone_retention: retention,
        clock,
        executor: Arc::new(InlineExecutor),
    }
}

fn manual_clock() -> SharedClock {
    ManualClock::new().shared()
}
