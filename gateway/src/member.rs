//! The gateway as a cluster member: registration (role `Gateway`, never a placement
//! candidate), the lease (registering again as a new incarnation after it is lost), the view
//! (followed from the coordinator's watch and published to the [`Router`]), and one push
//! stream per live node (`OpenPushStream`), whose items go to the sessions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost_types::Any;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use verse_core::cluster::Router;
use verse_core::coordinator::{
    ClusterView, Coordinator, LeaseState, MemberFlags, MemberRegistration, MemberRole,
    register_when_free,
};
use verse_core::{MemberId, MonoTime, SharedClock};
use verse_transport::NodeClient;

use crate::session::Sessions;

/// When the follower last heard from the watch (node-clock nanoseconds; 0: never).
#[derive(Debug, Default)]
pub(crate) struct ViewSeen(AtomicU64);

impl ViewSeen {
    fn seen(&self, now: MonoTime) {
        self.0.store(now.as_nanos().max(1), Ordering::Release);
    }

    /// Whether the view is younger than `bound` at `now`.
    pub(crate) fn current(&self, now: MonoTime, bound: Duration) -> bool {
        let at = self.0.load(Ordering::Acquire);
        at != 0 && now.saturating_duration_since(MonoTime::from_nanos(at)) < bound
    }
}

/// What the member tasks share.
pub(crate) struct Member {
    pub(crate) id: String,
    pub(crate) address: String,
    pub(crate) coordinator: Arc<dyn Coordinator>,
    pub(crate) router: Arc<Router>,
    pub(crate) client: Arc<NodeClient>,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) clock: SharedClock,
    pub(crate) seen: Arc<ViewSeen>,
    pub(crate) register_wait: Duration,
}

impl Member {
    fn registration(&self) -> MemberRegistration {
        MemberRegistration {
            id: MemberId::from(self.id.as_str()),
            addresses: vec![self.address.clone()],
            role: MemberRole::Gateway,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            start_time_unix_ms: 0,
            flags: MemberFlags { draining: false, ready: true },
            node_local_store: false,
        }
    }

    /// Registers (waiting up to `register_wait` for an earlier record to expire).
    pub(crate) async fn register(&self) -> Result<(), verse_core::CoordError> {
        let deadline = self.clock.now() + self.register_wait;
        let record = register_when_free(
            &*self.coordinator,
            self.registration(),
            &*self.clock,
            Duration::from_millis(200),
            deadline,
        )
        .await?;
        tracing::info!(gateway = %self.id, incarnation = record.incarnation.0, "gateway registered");
        Ok(())
    }

    /// Registers again whenever the lease is lost, until cancelled.
    pub(crate) async fn keep_lease(self: Arc<Self>, cancel: CancellationToken) {
        let mut status = self.coordinator.lease_status();
        loop {
            let lost = status.borrow_and_update().state == LeaseState::Lost;
            if lost {
                tracing::error!(gateway = %self.id, "lease lost; registering again");
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        registered = self.register() => match registered {
                            Ok(()) => break,
                            Err(error) => tracing::warn!(%error, "registering again failed"),
                        },
                    }
                    let retry = self.clock.now() + Duration::from_secs(1);
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = self.clock.sleep_until(retry) => {}
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = status.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Follows the watch into the router's view until cancelled (resyncing after errors).
    pub(crate) async fn follow_view(
        self: Arc<Self>,
        nodes: watch::Sender<BTreeMap<MemberId, String>>,
        cancel: CancellationToken,
    ) {
        loop {
            let followed = tokio::select! {
                () = cancel.cancelled() => return,
                followed = ClusterView::follow(&*self.coordinator) => followed,
            };
            match followed {
                Ok((mut view, mut stream)) => {
                    self.seen.seen(self.clock.now());
                    self.publish(&view, &nodes);
                    loop {
                        let applied = tokio::select! {
                            () = cancel.cancelled() => return,
                            applied = view.apply_next(&mut stream) => applied,
                        };
                        match applied {
                            Ok(Some(_)) => {
                                self.seen.seen(self.clock.now());
                                self.publish(&view, &nodes);
                            }
                            Ok(None) | Err(_) => {
                                tracing::warn!("cluster watch ended; following again");
                                break;
                            }
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot follow the cluster view; retrying"),
            }
            let retry = self.clock.now() + Duration::from_millis(200);
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.clock.sleep_until(retry) => {}
            }
        }
    }

    fn publish(&self, view: &ClusterView, nodes: &watch::Sender<BTreeMap<MemberId, String>>) {
        self.router.publish(Arc::new(view.clone()));
        let live: BTreeMap<MemberId, String> = self.router.live_nodes().into_iter().collect();
        nodes.send_if_modified(|current| {
            let changed = *current != live;
            if changed {
                *current = live;
            }
            changed
        });
    }

    /// Keeps one push stream open to every live node (opened when a node appears, closed when
    /// it leaves the view) until cancelled.
    pub(crate) async fn push_streams(
        self: Arc<Self>,
        mut nodes: watch::Receiver<BTreeMap<MemberId, String>>,
        cancel: CancellationToken,
    ) {
        let tasks = TaskTracker::new();
        let mut open: BTreeMap<MemberId, (String, CancellationToken)> = BTreeMap::new();
        loop {
            let live = nodes.borrow_and_update().clone();
            open.retain(|node, (address, stop)| {
                let keep = live.get(node) == Some(address);
                if !keep {
                    stop.cancel();
                }
                keep
            });
            for (node, address) in live {
                if open.contains_key(&node) {
                    continue;
                }
                let stop = cancel.child_token();
                tasks.spawn(self.clone().push_stream(address.clone(), stop.clone()));
                open.insert(node, (address, stop));
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                changed = nodes.changed() => if changed.is_err() { break },
            }
        }
        tasks.close();
        tasks.wait().await;
    }

    /// One node's push stream, reopened with backoff until stopped.
    async fn push_stream(self: Arc<Self>, address: String, stop: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            let opened = tokio::select! {
                () = stop.cancelled() => return,
                opened = self.client.open_push_stream(&address, &self.id) => opened,
            };
            match opened {
                Ok(mut stream) => {
                    tracing::debug!(peer = %address, "push stream open");
                    failures = 0;
                    loop {
                        let next = tokio::select! {
                            () = stop.cancelled() => return,
                            next = stream.message() => next,
                        };
                        match next {
                            Ok(Some(push)) => {
                                let item = push
                                    .message
                                    .map(|p| Any { type_url: p.type_url, value: p.value.to_vec() })
                                    .unwrap_or_default();
                                self.sessions.deliver(&push.client_id, item);
                            }
                            Ok(None) => break,
                            Err(status) => {
                                tracing::debug!(%status, peer = %address, "push stream broke");
                                break;
                            }
                        }
                    }
                }
                Err(error) => {
                    failures += 1;
                    tracing::debug!(%error, peer = %address, "cannot open a push stream");
                }
            }
            let delay = Duration::from_millis(100u64 << failures.min(5));
            let retry = self.clock.now() + delay;
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.clock.sleep_until(retry) => {}
            }
        }
    }

    /// Removes sessions past their grace every second until cancelled.
    pub(crate) async fn sweep_sessions(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let next = self.clock.now() + Duration::from_secs(1);
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.clock.sleep_until(next) => {}
            }
            self.sessions.sweep();
        }
    }
}
