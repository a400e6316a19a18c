//! Integration tests of `verse-store-postgres` against a real PostgreSQL server (one test
//! binary, one module per concern). Every test uses the binary's one shared server
//! ([`PostgresServer::shared`]) and a schema of its own.

// Test code throughout (clippy's test allowance misses helpers outside `#[test]` functions).
#![allow(clippy::unwrap_used)]

mod concurrency;
mod conformance;
mod durability;

use std::time::Duration;

use verse_core::SharedClock;
use verse_store_postgres::fixture::PostgresServer;
use verse_store_postgres::{PostgresOptions, PostgresStore, SchemaName, WriteTime};

/// Options for a store in `schema` of the shared server, dating writes with `clock`.
fn options(schema: SchemaName, clock: SharedClock, retention: Duration) -> PostgresOptions {
    let mut options = PostgresOptions::new(PostgresServer::shared().config());
    options.schema = schema;
    options.write_time = WriteTime::Clock(clock);
    options.tombstone_retention = retention;
    options
}

/// A store in a fresh schema of the shared server.
async fn fresh_store(prefix: &str, clock: SharedClock, retention: Duration) -> PostgresStore {
    let schema = PostgresServer::shared().unique_schema(prefix);
    PostgresStore::connect(options(schema, clock, retention)).await.unwrap()
}
