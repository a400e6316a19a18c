//! The store's tables, their idempotent creation, and the SQL text of every statement.
//!
//! All tables live in one PostgreSQL schema named by [`SchemaName`], so several stores (or
//! tests) can share one database without seeing each other:
//!
//! - `fences (key text primary key, generation bigint, counter bigint)`: one row per fence key
//!   (`shard/<n>` or `node/<name>`), the highest epoch the fence was raised to.
//! - `objects (id text primary key, object_type text, version bigint, state bytea,
//!   written_at timestamptz, written_at_clock bigint)`: one row per object; `state` is `NULL`
//!   for a tombstone; `written_at` is the database's `now()` of the last write and
//!   `written_at_clock` the injected clock's reading in nanoseconds when the store was opened
//!   with [`WriteTime::Clock`](crate::WriteTime::Clock) (else `NULL`).
//!
//! Unsigned values (epochs, versions, clock readings) are stored in `bigint` columns that a
//! `CHECK` keeps non-negative, so the tables read plainly in `psql`.

use std::fmt;

use tokio_postgres::Client;
use verse_core::StoreError;

use crate::error::store_error;

/// The longest identifier PostgreSQL keeps whole (`NAMEDATALEN - 1`).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// The PostgreSQL schema a store keeps its tables in: lower-case ASCII letters, digits and `_`,
/// starting with a letter or `_`, at most 63 bytes, and not starting with `pg_`.
///
/// Checked on construction, so the name can be written into SQL text without quoting surprises.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaName(String);

/// Why a string is not a usable [`SchemaName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a usable schema name: use 1 to 63 lower-case ASCII letters, digits and '_', \
     starting with a letter or '_' and not with 'pg_'"
)]
pub struct InvalidSchemaName(pub String);

impl SchemaName {
    /// Checks `name` (see the type's docs).
    pub fn new(name: impl Into<String>) -> Result<SchemaName, InvalidSchemaName> {
        let name = name.into();
        let mut chars = name.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if first_ok && rest_ok && name.len() <= MAX_IDENTIFIER_BYTES && !name.starts_with("pg_") {
            Ok(SchemaName(name))
        } else {
            Err(InvalidSchemaName(name))
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The SQL text of every statement the store runs, with the schema filled in.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) create: String,
    /// `$1` key, `$2` generation, `$3` counter → the fence if it rose (no row if it did not).
    pub(crate) fence_raise: String,
    /// `$1` key → generation, counter.
    pub(crate) fence_read: String,
    /// `$1` key → generation, counter; the row is locked `FOR SHARE` until the transaction ends,
    /// so a concurrent raise (which locks it for update) waits for the write, or the write reads
    /// the raised fence.
    pub(crate) fence_lock: String,
    /// `$1` key: creates the fence row at epoch zero if it is missing (so that a write at epoch
    /// zero has a row to lock).
    pub(crate) fence_init: String,
    /// `$1` id, `$2` type, `$3` version, `$4` state (NULL: tombstone), `$5` clock nanoseconds
    /// (or NULL): inserts, or replaces a record whose version is lower; affects no row
    /// otherwise (and then still locks the stored row until the transaction ends).
    pub(crate) write: String,
    /// `$1` id → version.
    pub(crate) stored_version: String,
    /// `$1` id → type, version, state.
    pub(crate) load: String,
    /// `$1` retention in microseconds: removes tombstones written that long ago or longer by the
    /// database's clock.
    pub(crate) purge_database_time: String,
    /// `$1` cutoff in clock nanoseconds: removes tombstones written at or before it.
    pub(crate) purge_clock_time: String,
}

impl Sql {
    pub(crate) fn new(schema: &SchemaName) -> Sql {
        let fences = format!("\"{schema}\".fences");
        let objects = format!("\"{schema}\".objects");
        let create = format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE IF NOT EXISTS {fences} (
                 key text PRIMARY KEY,
                 generation bigint NOT NULL CHECK (generation >= 0),
                 counter bigint NOT NULL CHECK (counter >= 0)
             );
             CREATE TABLE IF NOT EXISTS {objects} (
                 id text PRIMARY KEY,
                 object_type text NOT NULL,
                 version bigint NOT NULL CHECK (version >= 0),
                 state bytea,
                 written_at timestamptz NOT NULL,
                 written_at_clock bigint CHECK (written_at_clock >= 0)
             );
             CREATE INDEX IF NOT EXISTS objects_tombstones_by_age
                 ON {objects} (written_at) WHERE state IS NULL;"
        );
        Sql {
            create,
            fence_raise: format!(
                "INSERT INTO {fences} AS f (key, generation, counter) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO UPDATE
                     SET generation = EXCLUDED.generation, counter = EXCLUDED.counter
                     WHERE (f.generation, f.counter) < (EXCLUDED.generation, EXCLUDED.counter)
                 RETURNING generation, counter"
            ),
            fence_read: format!("SELECT generation, counter FROM {fences} WHERE key = $1"),
            fence_lock: format!(
                "SELECT generation, counter FROM {fences} WHERE key = $1 FOR SHARE"
            ),
            fence_init: format!(
                "INSERT INTO {fences} (key, generation, counter) VALUES ($1, 0, 0)
                 ON CONFLICT (key) DO NOTHING"
            ),
            write: format!(
                "INSERT INTO {objects} AS o
                     (id, object_type, version, state, written_at, written_at_clock)
                 VALUES ($1, $2, $3, $4, now(), $5)
                 ON CONFLICT (id) DO UPDATE
                     SET object_type = EXCLUDED.object_type, version = EXCLUDED.version,
                         state = EXCLUDED.state, written_at = EXCLUDED.written_at,
                         written_at_clock = EXCLUDED.written_at_clock
                     WHERE o.version < EXCLUDED.version"
            ),
            stored_version: format!("SELECT version FROM {objects} WHERE id = $1"),
            load: format!("SELECT object_type, version, state FROM {objects} WHERE id = $1"),
            purge_database_time: format!(
                "DELETE FROM {objects}
                 WHERE state IS NULL AND written_at <= now() - $1::bigint * interval '1 microsecond'"
            ),
            purge_clock_time: format!(
                "DELETE FROM {objects} WHERE state IS NULL AND written_at_clock <= $1"
            ),
        }
    }
}

/// Creates the schema, tables and index if missing.
///
/// `IF NOT EXISTS` alone is not safe when several stores start at once (two creators can both
/// miss the table and one fails on a catalog unique index), so creation runs in a transaction
/// holding an advisory lock named after the schema.
pub(crate) async fn create_if_missing(
    client: &mut Client,
    schema: &SchemaName,
    sql: &Sql,
) -> Result<(), StoreError> {
    let txn = client.transaction().await.map_err(store_error)?;
    let lock_name = format!("verse-store-postgres:{schema}");
    txn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock_name])
        .await
        .map_err(store_error)?;
    txn.batch_execute(&sql.create).await.map_err(store_error)?;
    txn.commit().await.map_err(store_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        for good in ["verse", "_t", "t_1_2", &"a".repeat(63)] {
            assert_eq!(SchemaName::new(good).unwrap().as_str(), good);
        }
        for bad in ["", "Verse", "1a", "a-b", "a\"b", "pg_x", "é", &"a".repeat(64)] {
            assert!(SchemaName::new(bad).is_err(), "{bad:?}");
        }
    }
}
