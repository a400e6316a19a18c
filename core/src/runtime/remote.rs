//! The router's cluster side: calls, creates and deletes for shards this node does not serve
//! go to the node that does (or holds until this node serves), under the retry rule; and the
//! runtime's half of a handoff (stop admitting a shard, deactivate its activations saving
//! their state) or of a lost shard (drop its activations unsaved).
//!
//! Nothing here runs on the local hot path: the router comes here only after
//! [`Ownership::check`](super::ownership::Ownership::check) refused.

use std::sync::Arc;
use std::time::Duration;

use super::NodeShared;
use super::activation::{ActivationShared, DeactivateReason};
use super::ownership::Location;
use crate::clock::MonoTime;
use crate::cluster::routes::{Route, Routes};
use crate::context::{CallChain, CallerIdentity};
use crate::error::CallError;
use crate::object::{EncodedMessage, Payload};
use crate::shard::ShardId;
use crate::shardmap::{MemberId, ShardEntry};
use crate::store::FenceKey;
use crate::transport::RemoteCall;

/// Longest wait of a held call before it looks at ownership and routes again (a wake-up
/// normally comes sooner, when serving starts or the view changes).
const HOLD_RECHECK: Duration = Duration::from_millis(50);

/// Create or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlKind {
    /// `create`.
    Create,
    /// `delete`.
    Delete,
}

/// How a call sent elsewhere ended.
pub(crate) enum Elsewhere {
    /// Answered (by another node, or refused for good).
    Done(Result<Payload, CallError>),
    /// This node serves the shard now: run it locally with this payload.
    Local(Payload),
}

/// The parts of a call the remote path needs.
pub(crate) struct ElsewhereCall<'a> {
    pub(crate) object_type: &'a str,
    /// Method wire name.
    pub(crate) method: &'a str,
    /// Whether the method may run twice (resent after `OutcomeUnknown`).
    pub(crate) idempotent: bool,
    pub(crate) id: &'a Arc<str>,
    pub(crate) location: &'a Location,
    pub(crate) chain: Option<&'a Arc<CallChain>>,
    pub(crate) identity: Option<&'a Arc<CallerIdentity>>,
    pub(crate) one_way: bool,
    pub(crate) forward: bool,
    pub(crate) deadline: MonoTime,
}

/// What to do after a refusal or with no route.
enum Step {
    /// Try again (after the backoff).
    Retry,
    /// Send to this peer.
    Send { node: MemberId, address: String },
    /// Hold until this node serves or the route changes.
    Hold,
}

impl NodeShared {
    /// The shard of a location (pinned objects of this node have none to route).
    fn routed_shard(location: &Location) -> Option<ShardId> {
        match &location.fence {
            FenceKey::Shard(shard) => Some(*shard),
            FenceKey::Node(_) => None,
        }
    }

    /// One routing decision for `shard`; `Err` when the call must bounce to its caller
    /// (an incoming call this node will not serve).
    #[allow(clippy::too_many_arguments)]
    fn next_step(
        &self,
        routes: &Routes,
        location: &Location,
        fresh: Option<&ShardEntry>,
        avoid: Option<&MemberId>,
        forward: bool,
        chain: Option<&CallChain>,
    ) -> Result<Step, CallError> {
        let shard = match &location.fence {
            FenceKey::Shard(shard) => *shard,
            // This node's own pinned objects: served here soon (or never, if it stops).
            FenceKey::Node(node) if *node == self.config.node_id => return Ok(Step::Hold),
            // Another node's pinned objects go to that node only, while it lives.
            FenceKey::Node(node) => {
                return match routes.node_address(node) {
                    Some(address) if forward => {
                        Ok(Step::Send { node: MemberId::from(node.as_str()), address })
                    }
                    Some(_) => Err(CallError::NotServed {
                        shard: u32::MAX,
                        epoch: None,
                        hint: Some(node.clone()),
                    }),
                    None => Err(CallError::NodeNotFound { node: node.clone() }),
                };
            }
        };
        let chained = chain.is_some_and(|chain| chain.includes_shard(shard.0));
        match routes.route(shard, fresh, avoid, chained) {
            Route::Hold => Ok(Step::Hold),
            Route::Remote { node, address } if forward => Ok(Step::Send { node, address }),
            Route::Unknown if forward => Ok(Step::Retry),
            Route::Remote { node, .. } => Err(CallError::NotServed {
                shard: shard.0,
                epoch: None,
                hint: Some(node.as_str().to_owned()),
            }),
            Route::Unknown => Err(CallError::NotServed { shard: shard.0, epoch: None, hint: None }),
            Route::PinnedToAbsent(node) => Err(CallError::ShardPinnedToAbsentNode {
                shard: shard.0,
                node: node.as_str().to_owned(),
            }),
        }
    }

    /// Waits until serving or routes change, at most [`HOLD_RECHECK`] and never past
    /// `deadline`.
    async fn hold(&self, routes: &Routes, deadline: MonoTime) {
        let mut changes = routes.subscribe();
        let wake = (self.clock.now() + HOLD_RECHECK).min(deadline);
        tokio::select! {
            _ = changes.changed() => {}
            () = self.clock.sleep_until(wake) => {}
        }
    }

    /// After a refusal: every second one re-reads the shard's entry linearizably (the watch
    /// may lag behind the move that caused it).
    async fn refresh(
        &self,
        routes: &Routes,
        location: &Location,
        attempt: u32,
    ) -> Option<ShardEntry> {
        let shard = Self::routed_shard(location)?;
        if attempt < 2 {
            return None;
        }
        routes.coordinator.read_entry(shard).await.ok()
    }

    /// Routes a call this node does not serve now: to the owner (or target) through the
    /// transport, or held here while this node is about to serve it. Resends only what
    /// provably did not start, or what is idempotent, until the deadline.
    pub(crate) async fn call_elsewhere(
        self: &Arc<Self>,
        routes: &Routes,
        call: ElsewhereCall<'_>,
        payload: Payload,
    ) -> Elsewhere {
        let mut payload = Some(payload);
        let mut encoded: Option<EncodedMessage> = None;
        let mut attempt: u32 = 0;
        let mut fresh: Option<ShardEntry> = None;
        let mut refused_by: Option<MemberId> = None;
        loop {
            if self.clock.now() >= call.deadline {
                return Elsewhere::Done(Err(CallError::DeadlineExceeded {
                    id: call.id.to_string(),
                }));
            }
            match self.ownership.check(&call.location.fence, &*self.clock) {
                Ok(_) => {
                    let payload = payload
                        .take()
                        .or_else(|| encoded.take().map(Payload::encoded))
                        .unwrap_or_else(|| Payload::encoded(EncodedMessage::default()));
                    return Elsewhere::Local(payload);
                }
                Err(CallError::NotServed { .. }) => {}
                Err(error) => return Elsewhere::Done(Err(error)),
            }
            let step = self.next_step(
                routes,
                call.location,
                fresh.take().as_ref(),
                refused_by.as_ref(),
                call.forward,
                call.chain.map(|chain| &**chain),
            );
            let (node, address) = match step {
                Err(error) => return Elsewhere::Done(Err(error)),
                Ok(Step::Hold) => {
                    self.hold(routes, call.deadline).await;
                    continue;
                }
                Ok(Step::Retry) => {
                    attempt += 1;
                    fresh = self.refresh(routes, call.location, attempt.max(2)).await;
                    self.backoff(attempt.max(3), call.deadline).await;
                    continue;
                }
                Ok(Step::Send { node, address }) => (node, address),
            };
            let request = match (&encoded, payload.take()) {
                (Some(request), _) => request.clone(),
                (None, Some(payload)) => encoded.insert(payload.into_encoded()).clone(),
                (None, None) => EncodedMessage::default(),
            };
            let remote = RemoteCall {
                object_type: call.object_type.to_owned(),
                id: call.id.to_string(),
                method: call.method.to_owned(),
                request,
                deadline: call.deadline,
                chain: chain_links(call.chain),
                identity: call.identity.map(|identity| (**identity).clone()),
                one_way: call.one_way,
            };
            match routes.transport.call(&address, remote).await {
                Ok(response) => return Elsewhere::Done(Ok(Payload::encoded(response))),
                Err(error) if error.provably_not_started() => {
                    tracing::debug!(%error, peer = %address, id = %call.id, "resending a call that did not start");
                    refused_by = Some(node);
                }
                Err(CallError::OutcomeUnknown { .. }) if call.idempotent => {
                    refused_by = Some(node);
                }
                Err(error) => return Elsewhere::Done(Err(error)),
            }
            attempt += 1;
            fresh = self.refresh(routes, call.location, attempt).await;
            self.backoff(attempt, call.deadline).await;
        }
    }

    /// Routes a create or delete this node does not serve now. Both are idempotent, so any
    /// failure but a final answer is resent until the deadline. `None`: serve it locally.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn control_elsewhere(
        self: &Arc<Self>,
        routes: &Routes,
        object_type: &str,
        id: &Arc<str>,
        location: &Location,
        kind: ControlKind,
        forward: bool,
        deadline: MonoTime,
    ) -> Option<Result<(), CallError>> {
        let mut attempt: u32 = 0;
        let mut fresh: Option<ShardEntry> = None;
        let mut refused_by: Option<MemberId> = None;
        loop {
            if self.clock.now() >= deadline {
                return Some(Err(CallError::DeadlineExceeded { id: id.to_string() }));
            }
            match self.ownership.check(&location.fence, &*self.clock) {
                Ok(_) => return None,
                Err(CallError::NotServed { .. }) => {}
                Err(error) => return Some(Err(error)),
            }
            let step = self.next_step(
                routes,
                location,
                fresh.take().as_ref(),
                refused_by.as_ref(),
                forward,
                None,
            );
            let (node, address) = match step {
                Err(error) => return Some(Err(error)),
                Ok(Step::Hold) => {
                    self.hold(routes, deadline).await;
                    continue;
                }
                Ok(Step::Retry) => {
                    attempt += 1;
                    fresh = self.refresh(routes, location, attempt.max(2)).await;
                    self.backoff(attempt.max(3), deadline).await;
                    continue;
                }
                Ok(Step::Send { node, address }) => (node, address),
            };
            let result = match kind {
                ControlKind::Create => {
                    routes.transport.create(&address, object_type, id, deadline).await
                }
                ControlKind::Delete => {
                    routes.transport.delete(&address, object_type, id, deadline).await
                }
            };
            match result {
                Ok(()) => return Some(Ok(())),
                Err(error)
                    if error.provably_not_started()
                        || matches!(error, CallError::OutcomeUnknown { .. }) =>
                {
                    refused_by = Some(node);
                }
                Err(error) => return Some(Err(error)),
            }
            attempt += 1;
            fresh = self.refresh(routes, location, attempt).await;
            self.backoff(attempt, deadline).await;
        }
    }

    /// The activations whose state `shard` fences (objects pinned to this node that share the
    /// table are not the shard's).
    fn shard_activations(&self, shard: ShardId) -> Vec<Arc<ActivationShared>> {
        let fence = FenceKey::Shard(shard);
        self.table(shard.0)
            .iter()
            .filter(|s| s.0.location.fence == fence)
            .map(|s| s.0.clone())
            .collect()
    }

    /// The runtime's half of a handoff: stops admitting calls for `shard` (new calls get
    /// `NotServed`; queued calls go back unstarted), lets running turns finish, deactivates
    /// every activation of the shard saving its state, and waits until they are gone. After
    /// `timeout` the remaining turns are poisoned (dropped, nothing saved, callers get
    /// `OutcomeUnknown`). Returns whether every save succeeded.
    pub(crate) async fn hand_off_shard(&self, shard: ShardId, timeout: Duration) -> bool {
        // Calls whose awaited chain runs a turn of this shard are still admitted (the handoff
        // exception), so nested calls back into the shard do not deadlock the handoff.
        self.ownership.begin_leaving(shard);
        let started = self.clock.now();
        let mut poisoned = false;
        let mut seen: Vec<Arc<ActivationShared>> = Vec::new();
        loop {
            let activations = self.shard_activations(shard);
            if activations.is_empty() {
                self.ownership.stop_serving(shard);
                return !poisoned && !seen.iter().any(|a| a.save_failed());
            }
            for activation in &activations {
                if !seen.iter().any(|s| Arc::ptr_eq(s, activation)) {
                    seen.push(activation.clone());
                }
            }
            let overdue = self.clock.now() >= started + timeout;
            for activation in &activations {
                activation.request_deactivation(DeactivateReason::Handoff);
                if overdue {
                    activation.poison_now();
                }
            }
            if overdue && !poisoned {
                tracing::warn!(shard = shard.0, ?timeout, "handoff timed out; poisoning turns");
                poisoned = true;
            }
            // Polled: the slots leave their table once their save committed.
            self.clock.sleep_until(self.clock.now() + Duration::from_millis(2)).await;
        }
    }

    /// Ownership of `shard` is lost without a handoff: stop admitting and drop its
    /// activations unsaved (running turns are dropped at their next poll).
    pub(crate) fn discard_shard(&self, shard: ShardId) {
        self.ownership.stop_serving(shard);
        for activation in self.shard_activations(shard) {
            activation.request_deactivation(DeactivateReason::Discard);
            activation.poison_now();
        }
    }
}

impl NodeShared {
    /// The lease of this node's incarnation is lost: drop the activations of objects pinned
    /// to this node unsaved (a new incarnation fences them higher).
    pub(crate) fn discard_pinned(&self) {
        for table in 0..self.config.shard_count {
            let pinned: Vec<Arc<ActivationShared>> = self
                .table(table)
                .iter()
                .filter(|s| matches!(s.0.location.fence, FenceKey::Node(_)))
                .map(|s| s.0.clone())
                .collect();
            for activation in pinned {
                activation.request_deactivation(DeactivateReason::Discard);
                activation.poison_now();
            }
        }
    }
}

/// The call chain as the transport carries it: `(object id, shard)`, root first.
fn chain_links(chain: Option<&Arc<CallChain>>) -> Vec<(String, u32)> {
    let Some(chain) = chain else { return Vec::new() };
    let mut links: Vec<(String, u32)> =
        chain.iter().map(|link| (link.object_id.to_string(), link.shard)).collect();
    links.reverse();
    links
}
