//! `verse-store-postgres`: the Verse [`StateStore`](verse_core::StateStore) on PostgreSQL.
//!
//! A shared store: every node of a cluster connects to the same database, so an object's state
//! follows it when its shard moves. Writes are fenced (invariant 5) inside one transaction each:
//! the fence row of the write's key is locked `FOR SHARE` and must hold exactly the write's
//! epoch, and the record is replaced only by a higher version. See [`PostgresStore`].
//!
//! The driver is `tokio-postgres`, with a small pool of its own
//! ([`PostgresOptions::max_connections`]). Tables live in one schema ([`SchemaName`]), created if
//! missing, so stores (and tests) can share a database. Connections are plain TCP or Unix socket:
//! TLS is not supported yet. With the `fixture` feature, `fixture::PostgresServer` runs a
//! throwaway server for tests and benches.
//!
//! ```no_run
//! use verse_store_postgres::{Config, PostgresOptions, PostgresStore};
//! # async fn run() -> Result<(), verse_core::StoreError> {
//! let config: Config =
//!     "host=db.internal user=verse dbname=verse".parse().expect("a valid connection string");
//! let store = PostgresStore::connect(PostgresOptions::new(config)).await?;
//! # drop(store);
//! # Ok(())
//! # }
//! ```

mod error;
mod pool;
mod schema;
mod store;

#[cfg(feature = "fixture")]
pub mod fixture;

pub use schema::{InvalidSchemaName, SchemaName};
pub use store::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_SCHEMA, DEFAULT_TOMBSTONE_RETENTION, PostgresOptions,
    PostgresStore, WriteTime,
};
/// The driver's connection settings, re-exported so users need not name the driver crate.
pub use tokio_postgres::Config;
