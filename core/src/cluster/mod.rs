//! The cluster runtime: a [`Node`] that joins a cluster through a [`Coordinator`], keeps its
//! lease, claims, serves and hands off shards as the leader's targets say, and routes calls
//! for shards it does not serve to their owners through a [`Transport`].
//!
//! [`ClusterNode::start`] registers the node (a new incarnation) and starts a supervisor task,
//! owned by the `ClusterNode` and awaited by [`ClusterNode::shutdown`]. For each incarnation
//! the supervisor runs three parts:
//! - the **lease follower** copies the coordinator's lease status into the node's ownership
//!   table (`lease_valid_until`): admission stops by itself once the proof runs out;
//! - the **shard driver** follows the watch into a [`ClusterView`], feeds it to the sans-IO
//!   [`ShardDecider`](crate::handoff::ShardDecider) and carries out its decisions (claim,
//!   raise the store fence, serve, hand off, release, discard), and publishes the view to the
//!   router;
//! - the **leader** campaigns; while it leads it runs the [`planner`](crate::planner) on every
//!   view change (and periodically) and writes targets fenced by its term.
//!
//! When the lease is **lost** (the coordinator says it is gone, e.g. after an outage longer
//! than the TTL) the driver discards every shard and every object pinned to this node,
//! unsaved; the supervisor then registers again as a new incarnation (which owns nothing and
//! claims again, epoch + 1, even shards naming its node id) and runs the three parts again,
//! so the node serves again once the coordinator is back. [`ClusterNode::is_ready`] is the
//! node's readiness: registered, lease Proven, watch current.
//!
//! A member that hosts no objects (a gateway) routes with a [`Router`]: the same route choice,
//! retry rule and backoff over a view it publishes itself.

mod driver;
mod leader;
mod router;
pub(crate) mod routes;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::MonoTime;
use crate::coordinator::{
    ClusterView, CoordError, Coordinator, LeaseState, MemberFlags, MemberRecord,
    MemberRegistration, MemberRole, register_when_free,
};
use crate::epoch::Epoch;
use crate::handoff::Me;
use crate::runtime::{Node, NodeShared};
use crate::shard::ShardId;
use crate::shardmap::MemberId;
use crate::transport::Transport;

pub use self::router::{RoutedCall, Router};
use self::routes::Routes;

/// How a clustered node behaves. Numbers are defaults; tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// The node-protocol address other members reach this node at (`host:port`).
    pub address: String,
    /// The software version recorded in the member record.
    pub version: String,
    /// How long registration waits for an earlier incarnation's record to expire.
    pub register_wait: Duration,
    /// A handoff whose turns have not finished by then poisons them.
    pub handoff_timeout: Duration,
    /// A draining node leaves after this long even if it still owns shards.
    pub drain_timeout: Duration,
    /// The leader re-plans at least this often (besides every view change).
    pub plan_interval: Duration,
    /// The driver re-evaluates every shard at least this often (retries of failed claims,
    /// fences and releases).
    pub evaluate_interval: Duration,
    /// At most this many shards in flight (owner and target both live and different).
    pub max_in_flight: usize,
    /// The watch counts as current while its last event (a progress notification included)
    /// is younger than this; readiness needs it current.
    pub watch_stale_after: Duration,
    /// How long re-registration after a lost lease waits between attempts.
    pub reregister_interval: Duration,
    /// The leader gives up a move whose live target has not claimed the shard for this
    /// long (longer than `handoff_timeout`: a handoff may take that long).
    pub claim_timeout: Duration,
    /// A given-up move (to that target) is not planned again for this long.
    pub move_backoff: Duration,
    /// Whether a node whose state store is node-local may join a cluster that has another
    /// object-hosting node (its state is then lost whenever a shard moves).
    pub allow_state_loss: bool,
}

impl ClusterOptions {
    /// Defaults for a node reachable at `address`.
    pub fn new(address: impl Into<String>) -> Self {
        ClusterOptions {
            address: address.into(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            register_wait: Duration::from_secs(60),
            handoff_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(120),
            plan_interval: Duration::from_secs(1),
            evaluate_interval: Duration::from_millis(500),
            max_in_flight: 64,
            watch_stale_after: Duration::from_secs(10),
            reregister_interval: Duration::from_secs(1),
            claim_timeout: Duration::from_secs(60),
            move_backoff: Duration::from_secs(60),
            allow_state_loss: false,
        }
    }
}

/// Why the cluster runtime could not start or drain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The node was not built with [`NodeBuilder::clustered`](crate::NodeBuilder::clustered),
    /// or a cluster runtime already runs on it.
    #[error("the node is not a clustered node, or is already in a cluster")]
    NotClustered,
    /// The cluster's shard count differs from the node's.
    #[error("the cluster has {cluster} shards; the node has {node}")]
    ShardCount {
        /// The cluster's.
        cluster: u32,
        /// The node's.
        node: u32,
    },
    /// A coordinator operation failed.
    #[error(transparent)]
    Coordinator(#[from] CoordError),
    /// This node's state store is node-local and another node hosts objects: shards moving
    /// between them would lose state (allowed only with `allow_state_loss`).
    #[error(
        "this node's state store is node-local (memory or redb) and node {other} also hosts \
         objects: state would be lost whenever a shard moves; use a shared store (PostgreSQL) \
         or set allow_state_loss = true"
    )]
    NodeLocalStore {
        /// Another object-hosting node.
        other: String,
    },
    /// Another object-hosting node keeps its objects' state in a node-local store: shards
    /// moving from it to this node would lose their state (allowed only with
    /// `allow_state_loss`).
    #[error(
        "node {other} keeps its objects' state in a node-local store (memory or redb): shards \
         moving from it to this node would lose their state; give {other} a shared store \
         (PostgreSQL) or set allow_state_loss = true"
    )]
    OtherNodeLocalStore {
        /// The node with the node-local store.
        other: String,
    },
    /// Operator pins fix shards on this node: draining it would leave them unowned, so it is
    /// refused unless the caller unpins them ([`ClusterNode::drain_unpinning`]).
    #[error(
        "the node holds {} pinned shard(s) (first: {}); unpin them or drain with unpinning",
        shards.len(),
        shards.first().map_or(0, |s| s.0)
    )]
    HoldsPins {
        /// The shards pinned to this node.
        shards: Vec<ShardId>,
    },
    /// The drain did not finish within `drain_timeout` (the node still owns shards).
    #[error("drain timed out owning {owned} shards")]
    DrainTimedOut {
        /// Shards still owned.
        owned: usize,
    },
}

/// A node in a cluster: see the module docs.
pub struct ClusterNode {
    node: Arc<Node>,
    coordinator: Arc<dyn Coordinator>,
    options: ClusterOptions,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// The current incarnation.
    me: watch::Receiver<Me>,
    /// Shards this node serves or is acquiring or handing off (from the driver).
    owned: watch::Receiver<usize>,
    /// Whether the current incarnation's lease is lost (until registered again).
    lost: watch::Receiver<bool>,
    /// When the driver last heard from the watch.
    watch_seen: Arc<WatchSeen>,
}

impl fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterNode").field("me", &*self.me.borrow()).finish_non_exhaustive()
    }
}

/// The node-clock instant of the last watch event the driver applied (0: none yet).
#[derive(Debug, Default)]
pub(crate) struct WatchSeen(AtomicU64);

impl WatchSeen {
    /// Records that the watch delivered something (or was opened) at `now`.
    pub(crate) fn seen(&self, now: MonoTime) {
        self.0.store(now.as_nanos().max(1), Ordering::Release);
    }

    /// Whether the last event is younger than `bound` at `now`.
    pub(crate) fn current(&self, now: MonoTime, bound: Duration) -> bool {
        let at = self.0.load(Ordering::Acquire);
        at != 0 && now.saturating_duration_since(MonoTime::from_nanos(at)) < bound
    }
}

/// Refuses a join that would lose state when shards move: `Err(NodeLocalStore)` if this
/// node's store is node-local (`local`) and another node hosts objects, and
/// `Err(OtherNodeLocalStore)` if another node keeps its state in a node-local store.
async fn refuse_state_loss(
    coordinator: &dyn Coordinator,
    me: &MemberId,
    local: bool,
) -> Result<(), ClusterError> {
    let snapshot = coordinator.snapshot().await?;
    let mut others =
        snapshot.members.values().filter(|m| m.role == MemberRole::Node && &m.id != me);
    if local {
        if let Some(other) = others.next() {
            return Err(ClusterError::NodeLocalStore { other: other.id.to_string() });
        }
        return Ok(());
    }
    match others.find(|m| m.node_local_store) {
        Some(other) => Err(ClusterError::OtherNodeLocalStore { other: other.id.to_string() }),
        None => Ok(()),
    }
}

/// What the supervisor needs to run incarnations one after another.
struct Supervisor {
    shared: Arc<NodeShared>,
    coordinator: Arc<dyn Coordinator>,
    routes: Arc<Routes>,
    options: ClusterOptions,
    registration: MemberRegistration,
    generation: u64,
    me: watch::Sender<Me>,
    owned: Arc<watch::Sender<usize>>,
    lost: watch::Sender<bool>,
    watch_seen: Arc<WatchSeen>,
}

impl ClusterNode {
    /// Joins the cluster: checks the shard count (`join_cluster`), registers a new
    /// incarnation (waiting up to `register_wait` for an earlier one's record to expire),
    /// and starts the lease follower, the shard driver and the leader (module docs).
    ///
    /// Errors: [`ClusterError::NotClustered`], [`ClusterError::ShardCount`], and the
    /// coordinator's (after `register_wait`, a retryable one is returned as is).
    pub async fn start(
        node: Arc<Node>,
        coordinator: Arc<dyn Coordinator>,
        transport: Arc<dyn Transport>,
        options: ClusterOptions,
    ) -> Result<ClusterNode, ClusterError> {
        let shared = node.shared().clone();
        if !shared.clustered || shared.cluster.get().is_some() {
            return Err(ClusterError::NotClustered);
        }
        let shard_count = shared.config.shard_count;
        let config = coordinator.join_cluster(shard_count).await?;
        if config.shard_count != shard_count {
            return Err(ClusterError::ShardCount {
                cluster: config.shard_count,
                node: shard_count,
            });
        }
        let registration = MemberRegistration {
            id: MemberId::new(shared.config.node_id.clone()),
            addresses: vec![options.address.clone()],
            role: MemberRole::Node,
            version: options.version.clone(),
            start_time_unix_ms: 0,
            flags: MemberFlags { draining: false, ready: true },
            node_local_store: shared.store.is_node_local(),
        };
        let clock = shared.clock.clone();
        let deadline = clock.now() + options.register_wait;
        let record = register_when_free(
            &*coordinator,
            registration.clone(),
            &*clock,
            Duration::from_millis(200),
            deadline,
        )
        .await?;
        if !options.allow_state_loss {
            // Checked after registering, so two nodes starting together both see each other
            // (and both refuse).
            let local = shared.store.is_node_local();
            if let Err(error) = refuse_state_loss(&*coordinator, &record.id, local).await {
                if let Err(left) = coordinator.deregister().await {
                    tracing::warn!(error = %left, "deregistering after refusing to join failed");
                }
                return Err(error);
            }
        }
        let me = Me { node: record.id.clone(), incarnation: record.incarnation };
        let routes = Arc::new(Routes::new(me.node.clone(), transport, coordinator.clone()));
        shared.cluster.set(routes.clone()).map_err(|_| ClusterError::NotClustered)?;

        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (me_tx, me_rx) = watch::channel(me);
        let (lost_tx, lost) = watch::channel(false);
        let (owned_tx, owned) = watch::channel(0usize);
        let watch_seen = Arc::new(WatchSeen::default());
        let supervisor = Supervisor {
            shared,
            coordinator: coordinator.clone(),
            routes,
            options: options.clone(),
            registration,
            generation: config.generation,
            me: me_tx,
            owned: Arc::new(owned_tx),
            lost: lost_tx,
            watch_seen: watch_seen.clone(),
        };
        tasks.spawn(supervisor.run(record, cancel.clone()));
        Ok(ClusterNode {
            node,
            coordinator,
            options,
            cancel,
            tasks,
            me: me_rx,
            owned,
            lost,
            watch_seen,
        })
    }

    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// This member's id and current incarnation (a new one after a lost lease).
    pub fn me(&self) -> Me {
        self.me.borrow().clone()
    }

    /// Readiness: registered (the current incarnation's lease is not lost), the lease
    /// *Proven* now, and the watch current (its last event, progress notifications included,
    /// younger than `watch_stale_after`).
    pub fn is_ready(&self) -> bool {
        if *self.lost.borrow() {
            return false;
        }
        let now = self.node.clock().now();
        let incarnation = self.me.borrow().incarnation;
        let lease = *self.coordinator.lease_status().borrow();
        lease.incarnation == Some(incarnation)
            && lease.state == LeaseState::Proven
            && lease.valid_until > now
            && self.watch_seen.current(now, self.options.watch_stale_after)
    }

    /// Shards this node serves, acquires or hands off now.
    pub fn owned_shards(&self) -> usize {
        *self.owned.borrow()
    }

    /// Whether the current incarnation's lease was lost: the node serves nothing until it
    /// registered again as a new incarnation.
    pub fn lease_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Drains: sets the draining flag in this member's record (the leader moves its shards
    /// away) and waits until the node owns nothing, at most `drain_timeout`. Refused (nothing
    /// changes) while operator pins fix shards on this node.
    ///
    /// Errors: [`ClusterError::HoldsPins`], the coordinator's (`snapshot`, `set_flags`),
    /// [`ClusterError::DrainTimedOut`].
    pub async fn drain(&self) -> Result<(), ClusterError> {
        let pins = self.pins_here().await?;
        if !pins.is_empty() {
            return Err(ClusterError::HoldsPins { shards: pins });
        }
        self.drain_unpinning().await
    }

    /// Drains after removing every operator pin to this node (their shards then move like
    /// the others). Errors: as [`ClusterNode::drain`], without `HoldsPins`.
    pub async fn drain_unpinning(&self) -> Result<(), ClusterError> {
        for shard in self.pins_here().await? {
            tracing::info!(shard = shard.0, "unpinning to drain");
            self.coordinator.unpin(shard).await?;
        }
        self.coordinator.set_flags(MemberFlags { draining: true, ready: true }).await?;
        let clock = self.node.clock().clone();
        let deadline: MonoTime = clock.now() + self.options.drain_timeout;
        let mut owned = self.owned.clone();
        loop {
            let count = *owned.borrow_and_update();
            if count == 0 {
                tracing::info!(node = %self.me.borrow().node, "drained");
                return Ok(());
            }
            if clock.now() >= deadline {
                tracing::warn!(node = %self.me.borrow().node, owned = count, "drain timed out");
                return Err(ClusterError::DrainTimedOut { owned: count });
            }
            tokio::select! {
                changed = owned.changed() => {
                    if changed.is_err() {
                        return Err(ClusterError::DrainTimedOut { owned: count });
                    }
                }
                () = clock.sleep_until(deadline) => {}
            }
        }
    }

    /// The shards operator pins fix on this node.
    async fn pins_here(&self) -> Result<Vec<ShardId>, ClusterError> {
        let me = self.me.borrow().node.clone();
        let snapshot = self.coordinator.snapshot().await?;
        Ok(snapshot.pins.iter().filter(|(_, node)| **node == me).map(|(shard, _)| *shard).collect())
    }

    /// Leaves the cluster: stops the tasks (and awaits them), stops admitting calls for the
    /// shards still served, and ends the lease (its record, and any leadership, go). Shut
    /// the node's server and the node down afterwards. Drain first to hand shards off.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let shared = self.node.shared();
        shared.ownership.set_lease_valid_until(MonoTime::ZERO);
        shared.ownership.stop_serving_node();
        if let Some(routes) = shared.cluster.get() {
            routes.bump();
        }
        if let Err(error) = self.coordinator.deregister().await {
            tracing::warn!(%error, "deregistration failed; the lease will expire by itself");
        }
    }
}

impl Supervisor {
    /// Runs incarnations one after another until cancelled: serve under `record`, and after
    /// a lost lease register again.
    async fn run(self, mut record: MemberRecord, cancel: CancellationToken) {
        loop {
            self.run_incarnation(&record, &cancel).await;
            if cancel.is_cancelled() {
                return;
            }
            match self.register_again(&cancel).await {
                Some(fresh) => record = fresh,
                None => return,
            }
        }
    }

    /// Serves one incarnation until its lease is lost (everything discarded) or cancelled.
    async fn run_incarnation(&self, record: &MemberRecord, cancel: &CancellationToken) {
        let me = Me { node: record.id.clone(), incarnation: record.incarnation };
        tracing::info!(node = %me.node, incarnation = me.incarnation.0, "registered");
        self.me.send_replace(me.clone());
        // Objects pinned to this node are fenced by its incarnation (a new one fences higher).
        self.shared.ownership.serve_node(Epoch::new(self.generation, record.incarnation.0));
        self.lost.send_replace(false);
        let stop = cancel.child_token();
        let parts = TaskTracker::new();
        let (lost_tx, lost_rx) = watch::channel(false);
        let (view_tx, view_rx) = watch::channel::<Option<Arc<ClusterView>>>(None);
        parts.spawn(follow_lease(
            self.shared.clone(),
            self.coordinator.clone(),
            me.clone(),
            lost_tx,
            stop.clone(),
        ));
        parts.spawn(leader::lead(
            self.coordinator.clone(),
            self.shared.clock.clone(),
            self.options.clone(),
            view_rx,
            stop.clone(),
        ));
        let driver = driver::Driver::new(
            self.shared.clone(),
            self.coordinator.clone(),
            self.routes.clone(),
            me,
            self.options.clone(),
            view_tx,
            self.owned.clone(),
            self.watch_seen.clone(),
        );
        // The driver returns once cancelled, or once the lease is lost and it discarded
        // every shard; only then do the other parts stop.
        driver.run(lost_rx.clone(), stop.clone()).await;
        stop.cancel();
        parts.close();
        parts.wait().await;
        if *lost_rx.borrow() && !cancel.is_cancelled() {
            self.shared.ownership.stop_serving_node();
            self.shared.discard_pinned();
            self.routes.bump();
            self.lost.send_replace(true);
        }
    }

    /// Registers a new incarnation, retrying every `reregister_interval`; `None` when
    /// cancelled first.
    async fn register_again(&self, cancel: &CancellationToken) -> Option<MemberRecord> {
        let clock = self.shared.clock.clone();
        loop {
            let attempt = async {
                let deadline = clock.now() + self.options.register_wait;
                register_when_free(
                    &*self.coordinator,
                    self.registration.clone(),
                    &*clock,
                    Duration::from_millis(200),
                    deadline,
                )
                .await
            };
            tokio::select! {
                () = cancel.cancelled() => return None,
                registered = attempt => match registered {
                    Ok(record) => return Some(record),
                    Err(error) => tracing::warn!(%error, "registering again failed; retrying"),
                },
            }
            let retry = clock.now() + self.options.reregister_interval;
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = clock.sleep_until(retry) => {}
            }
        }
    }
}

/// Copies the lease status into the ownership table until the lease is lost or the task is
/// cancelled.
async fn follow_lease(
    shared: Arc<crate::runtime::NodeShared>,
    coordinator: Arc<dyn Coordinator>,
    me: Me,
    lost: watch::Sender<bool>,
    cancel: CancellationToken,
) {
    let mut status = coordinator.lease_status();
    loop {
        let current = *status.borrow_and_update();
        if current.incarnation == Some(me.incarnation) {
            match current.state {
                LeaseState::Proven | LeaseState::Unproven => {
                    shared.ownership.set_lease_valid_until(current.valid_until);
                }
                LeaseState::Lost => {
                    shared.ownership.set_lease_valid_until(MonoTime::ZERO);
                    tracing::error!(node = %me.node, incarnation = me.incarnation.0, "lease lost");
                    let _ = lost.send(true);
                    return;
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = status.changed() => if changed.is_err() { return },
        }
    }
}
