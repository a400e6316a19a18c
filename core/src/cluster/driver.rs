//! The shard driver: follows the coordinator's watch into a [`ClusterView`], feeds it to the
//! [`ShardDecider`] and carries out its decisions against the coordinator, the state store
//! and the node's ownership table.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::routes::Routes;
use super::{ClusterOptions, WatchSeen};
use crate::coordinator::{ClaimRequest, ClusterView, Coordinator, ReleaseRequest, WatchStream};
use crate::epoch::Epoch;
use crate::handoff::{Decision, Me, ShardDecider, ShardRole};
use crate::runtime::NodeShared;
use crate::shard::ShardId;
use crate::shardmap::{Incarnation, MemberId, OwnerRecord, ShardMap};
use crate::store::FenceKey;

/// What this node knows about its own owner records before the watch shows them: the view
/// may lag behind this node's own claims and releases, and the decider must only see views
/// that include them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Known {
    /// Claimed: the view's owner record is older while its epoch is lower.
    Claimed(OwnerRecord),
    /// Released: the view still shows this record unreleased.
    Released(OwnerRecord),
}

impl Known {
    /// The owner record to use instead of the view's, or `None` once the view caught up.
    fn patch(&self, in_view: Option<&OwnerRecord>) -> Option<OwnerRecord> {
        match self {
            Known::Claimed(mine) => {
                in_view.is_none_or(|o| o.epoch < mine.epoch).then(|| mine.clone())
            }
            Known::Released(mine) => {
                let unreleased = OwnerRecord { released: false, ..mine.clone() };
                (in_view == Some(&unreleased)).then(|| mine.clone())
            }
        }
    }
}

/// The shard driver's state (one task).
pub(super) struct Driver {
    shared: Arc<NodeShared>,
    coordinator: Arc<dyn Coordinator>,
    routes: Arc<Routes>,
    me: Me,
    options: ClusterOptions,
    decider: ShardDecider,
    known: BTreeMap<ShardId, Known>,
    /// Releases that failed with a retryable error, retried at the next evaluation.
    pending_releases: BTreeMap<ShardId, Epoch>,
    handoffs: JoinSet<(ShardId, bool)>,
    view_tx: watch::Sender<Option<Arc<ClusterView>>>,
    owned_tx: Arc<watch::Sender<usize>>,
    watch_seen: Arc<WatchSeen>,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        shared: Arc<NodeShared>,
        coordinator: Arc<dyn Coordinator>,
        routes: Arc<Routes>,
        me: Me,
        options: ClusterOptions,
        view_tx: watch::Sender<Option<Arc<ClusterView>>>,
        owned_tx: Arc<watch::Sender<usize>>,
        watch_seen: Arc<WatchSeen>,
    ) -> Self {
        Driver {
            shared,
            coordinator,
            routes,
            decider: ShardDecider::new(me.clone()),
            me,
            options,
            known: BTreeMap::new(),
            pending_releases: BTreeMap::new(),
            handoffs: JoinSet::new(),
            view_tx,
            owned_tx,
            watch_seen,
        }
    }

    /// Opens the view and its watch, retrying until it succeeds; `None` when cancelled or
    /// the lease is lost first.
    async fn follow(
        &self,
        lost: &mut watch::Receiver<bool>,
        cancel: &CancellationToken,
    ) -> Option<(ClusterView, WatchStream)> {
        loop {
            if *lost.borrow_and_update() {
                return None;
            }
            tokio::select! {
                () = cancel.cancelled() => return None,
                changed = lost.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    continue;
                }
                followed = ClusterView::follow(&*self.coordinator) => match followed {
                    Ok(followed) => {
                        self.watch_seen.seen(self.shared.clock.now());
                        return Some(followed);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot follow the cluster view; retrying");
                    }
                },
            }
            let retry = self.shared.clock.now() + Duration::from_millis(200);
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = self.shared.clock.sleep_until(retry) => {}
            }
        }
    }

    /// The task: runs until cancelled or the lease is lost (then every shard is discarded
    /// before it returns); every handoff it started is awaited before it returns.
    pub(super) async fn run(mut self, mut lost: watch::Receiver<bool>, cancel: CancellationToken) {
        self.serve(&mut lost, &cancel).await;
        if *lost.borrow() && !cancel.is_cancelled() {
            tracing::error!(node = %self.me.node, "lease lost: discarding every shard");
            for decision in self.decider.on_lease_lost() {
                if let Decision::Discard { shard } = decision {
                    self.shared.discard_shard(shard);
                }
            }
            self.known.clear();
            self.pending_releases.clear();
            self.routes.bump();
            self.publish_owned();
        }
        self.handoffs.shutdown().await;
    }

    /// Follows the view and carries out decisions until cancelled or the lease is lost.
    async fn serve(&mut self, lost: &mut watch::Receiver<bool>, cancel: &CancellationToken) {
        let Some((mut view, mut stream)) = self.follow(lost, cancel).await else { return };
        self.evaluate(&view).await;
        let mut next_evaluation = self.shared.clock.now() + self.options.evaluate_interval;
        loop {
            let clock = self.shared.clock.clone();
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                changed = lost.changed() => {
                    // The follower ends only when cancelled or when the lease is lost.
                    if changed.is_err() || *lost.borrow() {
                        return;
                    }
                }
                Some(joined) = self.handoffs.join_next(), if !self.handoffs.is_empty() => {
                    if let Ok((shard, saved)) = joined {
                        let decisions = self.decider.on_handoff_finished(shard, saved);
                        self.execute(&view, decisions).await;
                        self.publish_owned();
                    }
                }
                applied = view.apply_next(&mut stream) => {
                    match applied {
                        Ok(Some(_)) => {
                            self.watch_seen.seen(clock.now());
                            // Apply everything already delivered before deciding once.
                            while let Some(Some(Ok(event))) = stream.next().now_or_never() {
                                if let Err(error) = view.apply(&event) {
                                    tracing::error!(%error, "watch event rejected; resyncing");
                                    break;
                                }
                            }
                            self.evaluate(&view).await;
                        }
                        Ok(None) | Err(_) => {
                            tracing::warn!("cluster watch ended; following again");
                            let Some((fresh, fresh_stream)) = self.follow(lost, cancel).await else { return };
                            view = fresh;
                            stream = fresh_stream;
                            self.evaluate(&view).await;
                        }
                    }
                }
                () = clock.sleep_until(next_evaluation) => {
                    next_evaluation = clock.now() + self.options.evaluate_interval;
                    self.evaluate(&view).await;
                }
            }
        }
    }

    /// The view as the decider must see it: this node's own claims and releases included.
    fn patched_map<'a>(&mut self, view: &'a ClusterView) -> Cow<'a, ShardMap> {
        if self.known.is_empty() {
            return Cow::Borrowed(view.map());
        }
        let mut map = view.map().clone();
        self.known.retain(|shard, known| {
            match known.patch(view.map().entry(*shard).owner.as_ref()) {
                Some(owner) => {
                    map.set_owner(*shard, Some(owner));
                    true
                }
                None => false,
            }
        });
        Cow::Owned(map)
    }

    /// Re-evaluates every shard against `view`, carries out the decisions, and publishes the
    /// view to the router and the leader.
    async fn evaluate(&mut self, view: &ClusterView) {
        if !self.pending_releases.is_empty() {
            let releases = std::mem::take(&mut self.pending_releases);
            let decisions = releases
                .into_iter()
                .map(|(shard, epoch)| Decision::Release { shard, epoch })
                .collect();
            self.execute(view, decisions).await;
        }
        let live: BTreeMap<MemberId, Incarnation> =
            view.members().iter().map(|(id, record)| (id.clone(), record.incarnation)).collect();
        let map = self.patched_map(view).into_owned();
        let decisions = self.decider.on_view(&map, &live);
        let shared_view = Arc::new(view.clone());
        self.routes.publish(shared_view.clone());
        self.execute_on(&map, decisions).await;
        self.publish_owned();
        self.view_tx.send_replace(Some(shared_view));
    }

    async fn execute(&mut self, view: &ClusterView, decisions: Vec<Decision>) {
        let map = self.patched_map(view).into_owned();
        self.execute_on(&map, decisions).await;
    }

    /// Carries out decisions (and those their results produce) in order; claims and releases
    /// of one round go to the coordinator as one batch.
    async fn execute_on(&mut self, map: &ShardMap, decisions: Vec<Decision>) {
        let mut queue: std::collections::VecDeque<Decision> = decisions.into();
        while !queue.is_empty() {
            let mut claims = Vec::new();
            let mut releases = Vec::new();
            while let Some(decision) = queue.pop_front() {
                match decision {
                    Decision::Claim { shard, expected_owner } => {
                        match map.entry(shard).target.clone() {
                            Some(expected_target) => {
                                claims.push(ClaimRequest { shard, expected_target, expected_owner })
                            }
                            None => queue.extend(self.decider.on_claim_result(shard, None)),
                        }
                    }
                    Decision::Release { shard, epoch } => {
                        releases.push(ReleaseRequest { shard, epoch });
                    }
                    Decision::RaiseFence { shard, epoch } => {
                        queue.extend(self.raise_fence(shard, epoch).await);
                    }
                    Decision::Serve { shard, epoch } => {
                        tracing::debug!(node = %self.me.node, shard = shard.0, %epoch, "serving");
                        self.shared.ownership.serve(shard, epoch);
                        self.routes.bump();
                    }
                    Decision::StartHandoff { shard, epoch } => {
                        tracing::debug!(node = %self.me.node, shard = shard.0, %epoch, "handing off");
                        // Leaving, not stopped: new calls are refused at once, but calls whose
                        // awaited chain runs a turn of this shard are still admitted (the
                        // handoff exception; `stop_serving` here would refuse them too, and a
                        // nested call back into the shard would hold the handoff until
                        // `handoff_timeout` poisons the turn that waits for it).
                        self.shared.ownership.begin_leaving(shard);
                        self.routes.bump();
                        let shared = self.shared.clone();
                        let timeout = self.options.handoff_timeout;
                        self.handoffs.spawn(async move {
                            (shard, shared.hand_off_shard(shard, timeout).await)
                        });
                    }
                    Decision::Discard { shard } => {
                        tracing::debug!(node = %self.me.node, shard = shard.0, "discarding");
                        self.shared.discard_shard(shard);
                        self.routes.bump();
                    }
                    Decision::ReportMoveFailed { shard } => {
                        // Reported by keeping the shard: the leader sees its target not
                        // claim it while this owner lives, and after claim_timeout cancels
                        // and backs off the move (leader::StuckMoves).
                        tracing::warn!(node = %self.me.node, shard = shard.0, "move failed: a save failed during handoff");
                    }
                }
            }
            if !claims.is_empty() {
                queue.extend(self.claim(claims).await);
            }
            if !releases.is_empty() {
                self.release(releases).await;
            }
        }
    }

    async fn claim(&mut self, claims: Vec<ClaimRequest>) -> Vec<Decision> {
        let shards: Vec<ShardId> = claims.iter().map(|c| c.shard).collect();
        let mut decisions = Vec::new();
        match self.coordinator.claim(claims).await {
            Ok(outcomes) => {
                for outcome in outcomes {
                    match outcome.result {
                        Ok(owner) => {
                            let epoch = owner.epoch;
                            self.known.insert(outcome.shard, Known::Claimed(owner));
                            decisions
                                .extend(self.decider.on_claim_result(outcome.shard, Some(epoch)));
                        }
                        Err(rejection) => {
                            tracing::debug!(shard = outcome.shard.0, %rejection, "claim refused");
                            decisions.extend(self.decider.on_claim_result(outcome.shard, None));
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "claim batch failed");
                for shard in shards {
                    decisions.extend(self.decider.on_claim_result(shard, None));
                }
            }
        }
        decisions
    }

    async fn raise_fence(&mut self, shard: ShardId, epoch: Epoch) -> Vec<Decision> {
        match self.shared.store.fence(&FenceKey::Shard(shard), epoch).await {
            Ok(fence) => self.decider.on_fence_raised(shard, epoch, fence),
            Err(error) => {
                // Not serving; the next evaluation sees the shard ours and fences again.
                tracing::warn!(shard = shard.0, %error, "raising the store fence failed");
                let unknown = Epoch::new(u64::MAX, u64::MAX);
                self.decider.on_fence_raised(shard, epoch, unknown)
            }
        }
    }

    async fn release(&mut self, releases: Vec<ReleaseRequest>) {
        crate::fault::stall(crate::fault::StallPoint::BeforeRelease).await;
        match self.coordinator.release(releases.clone()).await {
            Ok(outcomes) => {
                for outcome in outcomes {
                    match outcome.result {
                        Ok(owner) => {
                            self.known.insert(outcome.shard, Known::Released(owner));
                        }
                        Err(not_owner) => {
                            tracing::warn!(shard = outcome.shard.0, %not_owner, "release refused");
                        }
                    }
                    self.decider.on_released(outcome.shard);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "release batch failed; retrying");
                for release in releases {
                    self.pending_releases.insert(release.shard, release.epoch);
                }
            }
        }
    }

    /// Publishes how many shards this node serves, acquires or hands off.
    fn publish_owned(&self) {
        let count = (0..self.shared.config.shard_count)
            .filter(|shard| self.decider.role(ShardId(*shard)) != ShardRole::Idle)
            .count();
        self.owned_tx.send_replace(count);
    }
}
