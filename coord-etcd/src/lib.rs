//! `verse-coord-etcd`: the [`Coordinator`] on etcd.
//!
//! One [`EtcdCoordinator`] is one process's client. Membership records live under the member's
//! lease (its id is the incarnation) and a background task keeps the lease alive by the lease
//! rule ([`verse_core::coordinator::LeaseTracker`]); leadership is a leased key under
//! `election/` whose create revision is the term; every write is a transaction with compares
//! (claims also compare the claimant's member key lease), at most 128 operations per
//! transaction; the watch is one prefix watch with progress requests, reconnection and resync.
//! The key layout is in `docs/COORDINATOR.md`.

mod keepalive;
mod keys;
mod ops;
mod watch;

#[cfg(feature = "fixture")]
pub mod fixture;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::sync::watch as tokio_watch;
use verse_core::clock::SharedClock;
use verse_core::coordinator::{ConnectionHealth, CoordError, LeaseRule, LeaseStatus, MemberRecord};
use verse_core::{Clock, Incarnation};

use keys::Keys;

/// At most this many operations (and compares) per etcd transaction (etcd's `--max-txn-ops`
/// default).
pub const MAX_TXN_OPS: usize = 128;

/// How an [`EtcdCoordinator`] connects and behaves.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// etcd client endpoints (`http://host:port`).
    pub endpoints: Vec<String>,
    /// The key prefix of this cluster (e.g. `/verse/prod`).
    pub prefix: String,
    /// The TTL asked for member leases.
    pub lease_ttl: Duration,
    /// Bound on every request (a request that takes longer fails `Unavailable`).
    pub request_timeout: Duration,
    /// A watch with no event and no progress for this long resyncs.
    pub watch_stall_timeout: Duration,
    /// The lease rule's constants.
    pub lease_rule: LeaseRule,
    /// The clock for the lease rule and timeouts.
    pub clock: SharedClock,
}

impl EtcdOptions {
    /// Defaults for `endpoints` and `prefix`: TTL 10 s, request timeout 5 s, stall timeout
    /// 10 s, the default lease rule, the system clock.
    pub fn new(endpoints: Vec<String>, prefix: impl Into<String>) -> Self {
        EtcdOptions {
            endpoints,
            prefix: prefix.into(),
            lease_ttl: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            watch_stall_timeout: Duration::from_secs(10),
            lease_rule: LeaseRule::default(),
            clock: verse_core::SystemClock::shared(),
        }
    }
}

/// The member this client registered, and its keepalive task.
struct Registered {
    record: MemberRecord,
    lease: i64,
    keepalive: tokio::task::JoinHandle<()>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

struct Inner {
    client: Client,
    keys: Keys,
    options: EtcdOptions,
    /// Held only for short, non-async sections (never across an await).
    registered: Mutex<Option<Registered>>,
    lease_status: tokio_watch::Sender<LeaseStatus>,
    connected: AtomicBool,
}

/// The [`Coordinator`] on etcd (see the crate docs).
///
/// Dropping it stops the keepalive (the lease then expires after its TTL; call
/// [`Coordinator::deregister`] first to end it at once).
pub struct EtcdCoordinator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EtcdCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCoordinator").field("prefix", &self.inner.keys.prefix()).finish()
    }
}

impl EtcdCoordinator {
    /// Connects (lazily: no request is made yet). Requests carry etcd's `require_leader`, so a
    /// member cut off from the etcd quorum fails fast instead of reading stale data.
    ///
    /// Errors: `Unavailable` when the endpoints are invalid.
    pub async fn connect(options: EtcdOptions) -> Result<Self, CoordError> {
        let connect = ConnectOptions::new()
            .with_require_leader(true)
            .with_connect_timeout(options.request_timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(|e| CoordError::Unavailable(format!("connect: {e}")))?;
        let (lease_status, _) = tokio_watch::channel(LeaseStatus::UNREGISTERED);
        Ok(EtcdCoordinator {
            inner: Arc::new(Inner {
                client,
                keys: Keys::new(&options.prefix),
                options,
                registered: Mutex::new(None),
                lease_status,
                connected: AtomicBool::new(true),
            }),
        })
    }

    /// The underlying etcd client (for tools and tests).
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }
}

impl Inner {
    fn clock(&self) -> &dyn Clock {
        &*self.options.clock
    }

    fn registered(&self) -> Result<(MemberRecord, i64), CoordError> {
        let registered = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        registered.as_ref().map(|r| (r.record.clone(), r.lease)).ok_or(CoordError::NotRegistered)
    }

    fn incarnation(&self) -> Option<Incarnation> {
        self.lease_status.borrow().incarnation
    }

    fn set_health(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    fn health(&self) -> ConnectionHealth {
        if self.connected.load(Ordering::Relaxed) {
            ConnectionHealth::Connected
        } else {
            ConnectionHealth::Disconnected
        }
    }

    /// Runs one etcd request within the request timeout, recording connection health.
    async fn request<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, CoordError> {
        let deadline = self.clock().now() + self.options.request_timeout;
        let result = tokio::select! {
            result = request => result,
            () = self.clock().sleep_until(deadline) => {
                self.set_health(false);
                return Err(CoordError::Unavailable(format!("{what}: timed out")));
            }
        };
        match result {
            Ok(value) => {
                self.set_health(true);
                Ok(value)
            }
            Err(error) => {
                let lease_gone = error.to_string().contains("requested lease not found");
                match (lease_gone, self.incarnation()) {
                    (true, Some(incarnation)) => Err(CoordError::LeaseLost(incarnation)),
                    _ => {
                        self.set_health(false);
                        Err(CoordError::Unavailable(format!("{what}: {error}")))
                    }
                }
            }
        }
    }
}
