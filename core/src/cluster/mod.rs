//! The cluster runtime: a [`Node`] that joins a cluster through a [`Coordinator`], keeps its
//! lease, claims, serves and hands off shards as the leader's targets say, and routes calls
//! for shards it does not serve to their owners through a [`Transport`].
//!
//! [`ClusterNode::start`] registers the node (a new incarnation) and starts three tasks, all
//! owned by the `ClusterNode` and awaited by [`ClusterNode::shutdown`]:
//! - the **lease follower** copies the coordinator's lease status into the node's ownership
//!   table (`lease_valid_until`): admission stops by itself once the proof runs out;
//! - the **shard driver** follows the watch into a [`ClusterView`], feeds it to the sans-IO
//!   [`ShardDecider`](crate::handoff::ShardDecider) and carries out its decisions (claim,
//!   raise the store fence, serve, hand off, release, discard), and publishes the view to the
//!   router;
//! - the **leader** campaigns; while it leads it runs the [`planner`](crate::planner) on every
//!   view change (and periodically) and writes targets fenced by its term.

mod driver;
mod leader;
pub(crate) mod routes;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::MonoTime;
use crate::coordinator::{
    ClusterView, CoordError, Coordinator, LeaseState, MemberFlags, MemberRegistration, MemberRole,
    register_when_free,
};
use crate::epoch::Epoch;
use crate::handoff::Me;
use crate::runtime::Node;
use crate::shardmap::MemberId;
use crate::transport::Transport;

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
    me: Me,
    options: ClusterOptions,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// Shards this node serves or is acquiring or handing off (from the driver).
    owned: watch::Receiver<usize>,
    /// Whether the incarnation's lease is lost (the node must exit or register again).
    lost: watch::Receiver<bool>,
}

impl fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterNode").field("me", &self.me).finish_non_exhaustive()
    }
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
        };
        let clock = shared.clock.clone();
        let deadline = clock.now() + options.register_wait;
        let record = register_when_free(
            &*coordinator,
            registration,
            &*clock,
            Duration::from_millis(200),
            deadline,
        )
        .await?;
        let me = Me { node: record.id.clone(), incarnation: record.incarnation };
        tracing::info!(node = %me.node, incarnation = me.incarnation.0, "registered");
        // Objects pinned to this node are fenced by its incarnation (a new one fences higher).
        shared.ownership.serve_node(Epoch::new(config.generation, record.incarnation.0));
        let routes = Arc::new(Routes::new(me.node.clone(), transport, coordinator.clone()));
        shared.cluster.set(routes.clone()).map_err(|_| ClusterError::NotClustered)?;

        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (lost_tx, lost) = watch::channel(false);
        let (owned_tx, owned) = watch::channel(0usize);
        let (view_tx, view_rx) = watch::channel::<Option<Arc<ClusterView>>>(None);
        tasks.spawn(follow_lease(
            shared.clone(),
            coordinator.clone(),
            me.clone(),
            lost_tx,
            cancel.clone(),
        ));
        let driver = driver::Driver::new(
            shared.clone(),
            coordinator.clone(),
            routes,
            me.clone(),
            options.clone(),
            view_tx,
            owned_tx,
        );
        tasks.spawn(driver.run(lost.clone(), cancel.clone()));
        tasks.spawn(leader::lead(
            coordinator.clone(),
            clock,
            options.clone(),
            view_rx,
            cancel.clone(),
        ));
        Ok(ClusterNode { node, coordinator, me, options, cancel, tasks, owned, lost })
    }

    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// This member's id and incarnation.
    pub fn me(&self) -> &Me {
        &self.me
    }

    /// Shards this node serves, acquires or hands off now.
    pub fn owned_shards(&self) -> usize {
        *self.owned.borrow()
    }

    /// Whether the incarnation's lease was lost (the node serves nothing any more).
    pub fn lease_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Drains: sets the draining flag in this member's record (the leader moves its shards
    /// away) and waits until the node owns nothing, at most `drain_timeout`.
    ///
    /// Errors: the coordinator's (`set_flags`), [`ClusterError::DrainTimedOut`].
    pub async fn drain(&self) -> Result<(), ClusterError> {
        self.coordinator.set_flags(MemberFlags { draining: true, ready: true }).await?;
        let clock = self.node.clock().clone();
        let deadline: MonoTime = clock.now() + self.options.drain_timeout;
        let mut owned = self.owned.clone();
        loop {
            let count = *owned.borrow_and_update();
            if count == 0 {
                tracing::info!(node = %self.me.node, "drained");
                return Ok(());
            }
            if clock.now() >= deadline {
                tracing::warn!(node = %self.me.node, owned = count, "drain timed out");
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
                    tracing::error!(node = %me.node, "lease lost: discarding every shard");
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
