//! [`PostgresStore`]: the [`StateStore`] on PostgreSQL, and its options.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio_postgres::Config;
use verse_core::store::{
    DeleteRequest, FenceKey, SaveRequest, StateStore, StoreError, StoredObject,
};
use verse_core::{Epoch, SharedClock};

use crate::error::{column, epoch_columns, store_error, to_bigint, version_column};
use crate::pool::{self, Pool};
use crate::schema::{self, SchemaName, Sql};

pub use verse_core::store::DEFAULT_TOMBSTONE_RETENTION;

/// Default most connections one store opens at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;

/// Default schema the store keeps its tables in.
pub const DEFAULT_SCHEMA: &str = "verse";

/// Which clock dates writes, for the age of tombstones.
#[derive(Debug, Clone)]
pub enum WriteTime {
    /// The database server's `now()`: one clock for every node sharing the store. Production.
    Database,
    /// Readings of an injected clock (stored as nanoseconds). The clocks of different nodes do
    /// not agree (each [`verse_core::MonoTime`] counts from its own boot), so use this only where
    /// one clock serves every writer: tests and the store conformance suite, which move a
    /// [`verse_core::ManualClock`] themselves.
    Clock(SharedClock),
}

/// How a [`PostgresStore`] connects and keeps its data.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Where the server is and who to be (`tokio_postgres::Config`; TLS is not supported yet:
    /// connections are plain, so keep them on a trusted network or a Unix socket).
    pub config: Config,
    /// The schema holding the store's tables (created if missing).
    pub schema: SchemaName,
    /// Most connections open at once; operations beyond wait for one.
    pub max_connections: usize,
    /// How long a tombstone is kept before [`StateStore::purge_tombstones`] may remove it.
    pub tombstone_retention: Duration,
    /// Which clock dates writes.
    pub write_time: WriteTime,
}

impl PostgresOptions {
    /// Production options for `config`: schema [`DEFAULT_SCHEMA`], [`DEFAULT_MAX_CONNECTIONS`],
    /// [`DEFAULT_TOMBSTONE_RETENTION`] and the database's clock.
    pub fn new(config: Config) -> Self {
        PostgresOptions {
            config,
            schema: SchemaName::new(DEFAULT_SCHEMA).expect("the default schema name is valid"),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tombstone_retention: DEFAULT_TOMBSTONE_RETENTION,
            write_time: WriteTime::Database,
        }
    }
}

/// A [`StateStore`] on PostgreSQL, shared by every node that connects to the same schema.
///
/// Every save and delete is one transaction (invariant 5): it locks the fence row of its key
/// `FOR SHARE`, refuses the write unless the fence is exactly the request's epoch, then inserts
/// or replaces the record only if the stored version is lower. A fence raise updates the same row
/// (a row lock that conflicts with `FOR SHARE`), so a raise and a write racing each other are
/// ordered: a write either commits before the raise returns or reads the raised fence and is
/// refused. Writes to objects of one fence key run in parallel (shared locks).
///
/// Cloning shares the connection pool. Connections are opened on demand; one that breaks is
/// dropped and the operation fails with [`StoreError::Unavailable`] (retry later).
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    schema: SchemaName,
    tombstone_retention: Duration,
    write_time: WriteTime,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .field("pool", &self.inner.pool)
            .field("tombstone_retention", &self.inner.tombstone_retention)
            .field("write_time", &self.inner.write_time)
            .finish()
    }
}

/// A save or delete: the record to write (`state: None` for a tombstone) and its conditions.
struct Write {
    fence: FenceKey,
    epoch: Epoch,
    object_id: String,
    object_type: String,
    version: u64,
    state: Option<Bytes>,
}

/// The `fences.key` of a fence key: `shard/<n>` or `node/<name>`, never equal to each other.
fn fence_key_text(key: &FenceKey) -> String {
    match key {
        FenceKey::Shard(shard) => format!("shard/{}", shard.0),
        FenceKey::Node(node) => format!("node/{node}"),
    }
}

impl PostgresStore {
    /// Connects (one connection, kept in the pool) and creates the schema's tables if missing.
    ///
    /// Fails with [`StoreError::Unavailable`] when the server cannot be reached, and with
    /// [`StoreError::Corrupt`] when the schema holds tables this store cannot use.
    pub async fn connect(options: PostgresOptions) -> Result<PostgresStore, StoreError> {
        let sql = Arc::new(Sql::new(&options.schema));
        let (mut client, connection) =
            options.config.connect(tokio_postgres::NoTls).await.map_err(store_error)?;
        // A separate, short-lived connection for DDL, so the pooled ones prepare their
        // statements against tables that exist.
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "PostgreSQL setup connection ended with an error");
            }
        });
        let created = schema::create_if_missing(&mut client, &options.schema, &sql).await;
        drop(client);
        // The driver ends once the client is gone; awaiting it keeps the task owned.
        if let Err(error) = driver.await {
            tracing::debug!(%error, "PostgreSQL setup connection task failed");
        }
        created?;
        let first = pool::connect(&options.config, &sql).await?;
        let pool = Pool::new(options.config, sql, options.max_connections, first);
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                schema: options.schema,
                tombstone_retention: options.tombstone_retention,
                write_time: options.write_time,
            }),
        })
    }

    /// The schema holding this store's tables.
    pub fn schema(&self) -> &SchemaName {
        &self.inner.schema
    }

    /// The injected clock's reading for a write, or `None` when the database dates writes.
    fn clock_reading(&self) -> Result<Option<i64>, StoreError> {
        match &self.inner.write_time {
            WriteTime::Database => Ok(None),
            WriteTime::Clock(clock) => to_bigint(clock.now().as_nanos(), "clock reading").map(Some),
        }
    }

    /// One save or delete: one transaction checking the fence, then the version.
    async fn write(&self, write: Write) -> Result<(), StoreError> {
        let key = fence_key_text(&write.fence);
        let version = to_bigint(write.version, "version")?;
        let written_at_clock = self.clock_reading()?;
        let state: Option<&[u8]> = write.state.as_deref();

        let mut pooled = self.inner.pool.get().await?;
        let connection = pooled.get();
        let statements = &connection.statements;
        let txn = connection.client.transaction().await.map_err(store_error)?;

        let mut fence_row = txn.query_opt(&statements.fence_lock, &[&key]).await;
        if matches!(fence_row, Ok(None)) && write.epoch == Epoch::ZERO {
            // Epoch zero matches a fence never raised. Create its row so there is something to
            // lock: otherwise a raise inserting the row concurrently would not wait for us.
            txn.execute(&statements.fence_init, &[&key]).await.map_err(store_error)?;
            fence_row = txn.query_opt(&statements.fence_lock, &[&key]).await;
        }
        let current = match fence_row.map_err(store_error)? {
            Some(row) => epoch_columns(&row)?,
            None => Epoch::ZERO,
        };
        if current != write.epoch {
            txn.rollback().await.map_err(store_error)?;
            return Err(StoreError::Fenced { key: write.fence, attempted: write.epoch, current });
        }

        let written = txn
            .execute(
                &statements.write,
                &[&write.object_id, &write.object_type, &version, &state, &written_at_clock],
            )
            .await
            .map_err(store_error)?;
        if written == 0 {
            // The conflicting row is locked by the refused upsert, so this reads what refused it.
            let row = txn
                .query_opt(&statements.stored_version, &[&write.object_id])
                .await
                .map_err(store_error)?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "{} refused a write at version {} but has no record",
                        write.object_id, write.version
                    ))
                })?;
            let stored = version_column(&row, 0)?;
            txn.rollback().await.map_err(store_error)?;
            return Err(StoreError::StaleVersion {
                object_id: write.object_id,
                attempted: write.version,
                stored,
            });
        }
        txn.commit().await.map_err(store_error)
    }
}

#[async_trait]
impl StateStore for PostgresStore {
    async fn fence(&self, key: &FenceKey, epoch: Epoch) -> Result<Epoch, StoreError> {
        let text = fence_key_text(key);
        let generation = to_bigint(epoch.generation, "epoch generation")?;
        let counter = to_bigint(epoch.counter, "epoch counter")?;
        let mut pooled = self.inner.pool.get().await?;
        let connection = pooled.get();
        let raised = connection
            .client
            .query_opt(&connection.statements.fence_raise, &[&text, &generation, &counter])
            .await
            .map_err(store_error)?;
        if let Some(row) = raised {
            return epoch_columns(&row);
        }
        // Not raised: the fence is at or above `epoch`. Fences never fall, so reading it now
        // (after the raise attempt) gives the fence after the call.
        let row = connection
            .client
            .query_opt(&connection.statements.fence_read, &[&text])
            .await
            .map_err(store_error)?
            .ok_or_else(|| StoreError::Corrupt(format!("the fence row of {key} vanished")))?;
        epoch_columns(&row)
    }

    async fn current_fence(&self, key: &FenceKey) -> Result<Epoch, StoreError> {
        let text = fence_key_text(key);
        let mut pooled = self.inner.pool.get().await?;
        let connection = pooled.get();
        let row = connection
            .client
            .query_opt(&connection.statements.fence_read, &[&text])
            .await
            .map_err(store_error)?;
        match row {
            Some(row) => epoch_columns(&row),
            None => Ok(Epoch::ZERO),
        }
    }

    async fn load(&self, object_id: &str) -> Result<Option<StoredObject>, StoreError> {
        let mut pooled = self.inner.pool.get().await?;
        let connection = pooled.get();
        let row = connection
            .client
            .query_opt(&connection.statements.load, &[&object_id])
            .await
            .map_err(store_error)?;
        let Some(row) = row else { return Ok(None) };
        let object_type: String = column(&row, 0)?;
        let version = version_column(&row, 1)?;
        let state: Option<Vec<u8>> = column(&row, 2)?;
        Ok(Some(StoredObject { object_type, version, state: state.map(Bytes::from) }))
    }

    async fn save(&self, req: SaveRequest) -> Result<(), StoreError> {
        self.write(Write {
            fence: req.fence,
            epoch: req.epoch,
            object_id: req.object_id,
            object_type: req.object_type,
            version: req.version,
            state: Some(req.state),
        })
        .await
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), StoreError> {
        self.write(Write {
            fence: req.fence,
            epoch: req.epoch,
            object_id: req.object_id,
            object_type: req.object_type,
            version: req.version,
            state: None,
        })
        .await
    }

    async fn purge_tombstones(&self) -> Result<usize, StoreError> {
        let retention = self.inner.tombstone_retention;
        let mut pooled = self.inner.pool.get().await?;
        let connection = pooled.get();
        let purged = match &self.inner.write_time {
            WriteTime::Database => {
                let micros = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
                connection
                    .client
                    .execute(&connection.statements.purge_database_time, &[&micros])
                    .await
            }
            WriteTime::Clock(clock) => {
                let retention_nanos = u64::try_from(retention.as_nanos()).unwrap_or(u64::MAX);
                // A tombstone goes once `now - written >= retention`, i.e. written at or before
                // `now - retention`; before the clock reached `retention` none can be that old.
                let Some(cutoff) = clock.now().as_nanos().checked_sub(retention_nanos) else {
                    return Ok(0);
                };
                let cutoff = to_bigint(cutoff, "clock reading")?;
                connection.client.execute(&connection.statements.purge_clock_time, &[&cutoff]).await
            }
        }
        .map_err(store_error)?;
        usize::try_from(purged)
            .map_err(|_| StoreError::Corrupt(format!("purged {purged} rows, more than usize")))
    }

    fn is_node_local(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verse_core::ShardId;

    #[test]
    fn fence_keys_of_different_kinds_never_share_text() {
        assert_eq!(fence_key_text(&FenceKey::Shard(ShardId(1))), "shard/1");
        assert_eq!(fence_key_text(&FenceKey::Node("1".to_owned())), "node/1");
        assert_ne!(
            fence_key_text(&FenceKey::Shard(ShardId(1))),
            fence_key_text(&FenceKey::Node("shard/1".to_owned()))
        );
    }
}
