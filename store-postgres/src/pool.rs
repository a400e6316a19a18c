//! A small pool of tokio-postgres connections, each with the store's statements prepared.
//!
//! Written here rather than taken from `deadpool-postgres` because the store needs little (a
//! bound on connections, reuse, dropping broken ones) and wants what a general pool does not
//! give: statements prepared once per connection for this store's schema, and an owner for each
//! connection's driver task (aborted when the connection is dropped, not left detached).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, NoTls, Statement};
use verse_core::StoreError;

use crate::error::store_error;
use crate::schema::Sql;

/// The prepared form of every statement of [`Sql`] a store runs per operation.
pub(crate) struct Statements {
    pub(crate) fence_raise: Statement,
    pub(crate) fence_read: Statement,
    pub(crate) fence_lock: Statement,
    pub(crate) fence_init: Statement,
    pub(crate) write: Statement,
    pub(crate) stored_version: Statement,
    pub(crate) load: Statement,
    pub(crate) purge_database_time: Statement,
    pub(crate) purge_clock_time: Statement,
}

/// One open connection: the client, its prepared statements and the task driving its socket.
pub(crate) struct Connection {
    pub(crate) client: Client,
    pub(crate) statements: Statements,
    driver: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The driver task ends by itself once the client is gone; aborting makes sure it does
        // not outlive its owner if the server never answers the close.
        self.driver.abort();
    }
}

/// Opens a connection and prepares the statements.
pub(crate) async fn connect(config: &Config, sql: &Sql) -> Result<Connection, StoreError> {
    let (client, connection) = config.connect(NoTls).await.map_err(store_error)?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "PostgreSQL connection ended with an error");
        }
    });
    // Prepared together: tokio-postgres pipelines concurrent requests on one connection.
    let prepared = futures::try_join!(
        client.prepare(&sql.fence_raise),
        client.prepare(&sql.fence_read),
        client.prepare(&sql.fence_lock),
        client.prepare(&sql.fence_init),
        client.prepare(&sql.write),
        client.prepare(&sql.stored_version),
        client.prepare(&sql.load),
        client.prepare(&sql.purge_database_time),
        client.prepare(&sql.purge_clock_time),
    );
    let (
        fence_raise,
        fence_read,
        fence_lock,
        fence_init,
        write,
        stored_version,
        load,
        purge_database_time,
        purge_clock_time,
    ) = match prepared {
        Ok(statements) => statements,
        Err(error) => {
            driver.abort();
            return Err(store_error(error));
        }
    };
    let statements = Statements {
        fence_raise,
        fence_read,
        fence_lock,
        fence_init,
        write,
        stored_version,
        load,
        purge_database_time,
        purge_clock_time,
    };
    Ok(Connection { client, statements, driver })
}

/// At most `max` connections, opened on demand and kept while healthy.
pub(crate) struct Pool {
    config: Config,
    sql: Arc<Sql>,
    permits: Semaphore,
    max: usize,
    idle: Mutex<Vec<Connection>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("max", &self.max)
            .field("idle", &self.lock_idle().len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(crate) fn new(config: Config, sql: Arc<Sql>, max: usize, first: Connection) -> Pool {
        let max = max.max(1);
        Pool { config, sql, permits: Semaphore::new(max), max, idle: Mutex::new(vec![first]) }
    }

    fn lock_idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        // A std mutex: held only to push or pop, never across an await. A panic while holding
        // it leaves a plain vector of whole connections, still usable.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection for one operation: an idle healthy one, or a new one while fewer than `max`
    /// are in use; otherwise waits for one to come back (callers bound the wait).
    ///
    /// Cancel safe: dropping the future gives back the permit and closes a half-open connection.
    pub(crate) async fn get(&self) -> Result<PooledConnection<'_>, StoreError> {
        let permit = self.permits.acquire().await.expect("the pool's semaphore is never closed");
        let reused = {
            let mut idle = self.lock_idle();
            let mut found = None;
            while let Some(connection) = idle.pop() {
                if !connection.client.is_closed() {
                    found = Some(connection);
                    break;
                }
            }
            found
        };
        let connection = match reused {
            Some(connection) => connection,
            None => connect(&self.config, &self.sql).await?,
        };
        Ok(PooledConnection { connection: Some(connection), pool: self, _permit: permit })
    }
}

/// A connection lent by the [`Pool`]; goes back to it on drop unless it broke.
pub(crate) struct PooledConnection<'a> {
    connection: Option<Connection>,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
}

impl PooledConnection<'_> {
    /// The connection (present until drop).
    pub(crate) fn get(&mut self) -> &mut Connection {
        self.connection.as_mut().expect("a pooled connection is taken only in drop")
    }
}

impl Drop for PooledConnection<'_> {
    fn drop(&mut self) {
        // A transaction dropped unfinished has queued its ROLLBACK on the connection already,
        // and requests run in order, so the next user starts clean.
        if let Some(connection) = self.connection.take()
            && !connection.client.is_closed()
        {
            self.pool.lock_idle().push(connection);
        }
    }
}
