//! Routing for a member that hosts no objects (a gateway): calls, creates and deletes go to the
//! node serving the object's shard, from the cached [`ClusterView`], under the same retry rule
//! and the same route choice ([`super::routes::route_for`]) and backoff as a node's router.
//!
//! The retry rule (invariant 8): a request is sent again only when it provably did not start
//! (`NotServed`, `Overloaded`, `NotDelivered`: [`CallError::provably_not_started`]); any other
//! failure after it left is returned (`OutcomeUnknown` …), except for creates, deletes and
//! calls the caller marks idempotent, which are resent after `OutcomeUnknown` too. From the
//! second refusal on, the shard's entry is re-read linearizably (the watch may lag behind the
//! move that caused it); retries continue until the deadline.

use std::sync::Arc;

use crate::clock::{MonoTime, SharedClock};
use crate::context::CallerIdentity;
use crate::coordinator::{ClusterView, Coordinator, MemberRole};
use crate::error::CallError;
use crate::object::EncodedMessage;
use crate::shard::{Placement, place};
use crate::shardmap::{MemberId, ShardEntry};
use crate::transport::{RemoteCall, Transport};

use super::routes::{Route, Routes, backoff};

/// A call a [`Router`] sends.
#[derive(Debug, Clone)]
pub struct RoutedCall {
    /// Object type name.
    pub object_type: String,
    /// Object id.
    pub id: String,
    /// Method wire name.
    pub method: String,
    /// The encoded request (`Any` content).
    pub request: EncodedMessage,
    /// The caller's deadline on the router's clock.
    pub deadline: MonoTime,
    /// Who called.
    pub identity: Option<CallerIdentity>,
    /// Whether the method may run twice (resent after `OutcomeUnknown`). A gateway does not
    /// know the method tables of the types it routes to, so it passes `false`.
    pub idempotent: bool,
}

/// Create or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Create,
    Delete,
}

/// The router of a non-hosting member: see the module docs.
pub struct Router {
    routes: Routes,
    clock: SharedClock,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("routes", &self.routes).finish_non_exhaustive()
    }
}

/// Where one attempt goes.
enum Step {
    Send { node: MemberId, address: String },
    Wait,
}

impl Router {
    /// A router for member `me` (never a shard target) over `transport`, re-reading entries
    /// from `coordinator`. It routes nothing until a view is published.
    pub fn new(
        me: MemberId,
        transport: Arc<dyn Transport>,
        coordinator: Arc<dyn Coordinator>,
        clock: SharedClock,
    ) -> Self {
        Router { routes: Routes::new(me, transport, coordinator), clock }
    }

    /// Replaces the cached view (the member's watch follower calls this on every change).
    pub fn publish(&self, view: Arc<ClusterView>) {
        self.routes.publish(view);
    }

    /// The cached view, once one was published.
    pub fn view(&self) -> Option<Arc<ClusterView>> {
        self.routes.current_view()
    }

    /// Live node members (not gateways) of the cached view: `(id, node-protocol address)`.
    pub fn live_nodes(&self) -> Vec<(MemberId, String)> {
        let Some(view) = self.view() else { return Vec::new() };
        view.members()
            .values()
            .filter(|m| m.role == MemberRole::Node)
            .filter_map(|m| m.addresses.first().map(|a| (m.id.clone(), a.clone())))
            .collect()
    }

    /// One routing decision for object `id`.
    fn step(
        &self,
        id: &str,
        fresh: Option<&ShardEntry>,
        avoid: Option<&MemberId>,
    ) -> Result<Step, CallError> {
        let Some(view) = self.view() else { return Ok(Step::Wait) };
        match place(id, view.map().shard_count()).map_err(CallError::from)? {
            Placement::Shard(shard) => match self.routes.route(shard, fresh, avoid, false) {
                Route::Remote { node, address } => Ok(Step::Send { node, address }),
                // A non-hosting member is never a target: nobody serves the shard yet.
                Route::Hold | Route::Unknown => Ok(Step::Wait),
                Route::PinnedToAbsent(node) => Err(CallError::ShardPinnedToAbsentNode {
                    shard: shard.0,
                    node: node.as_str().to_owned(),
                }),
            },
            Placement::Node(node) => {
                let member = view.members().get(&MemberId::from(node.as_str()));
                match member
                    .filter(|m| m.role == MemberRole::Node)
                    .and_then(|m| m.addresses.first())
                {
                    Some(address) => Ok(Step::Send {
                        node: MemberId::from(node.as_str()),
                        address: address.clone(),
                    }),
                    None => Err(CallError::NodeNotFound { node }),
                }
            }
        }
    }

    /// Re-reads the shard's entry linearizably from the second refusal on.
    async fn refresh(&self, id: &str, attempt: u32) -> Option<ShardEntry> {
        if attempt < 2 {
            return None;
        }
        let view = self.view()?;
        match place(id, view.map().shard_count()) {
            Ok(Placement::Shard(shard)) => self.routes.coordinator.read_entry(shard).await.ok(),
            _ => None,
        }
    }

    /// Sends `call` to the node serving its object and returns the answer (module docs for
    /// the retry rule). Errors: the callee's, `DeadlineExceeded`, `OutcomeUnknown`,
    /// `InvalidObjectId`, `NodeNotFound`.
    pub async fn call(&self, call: RoutedCall) -> Result<EncodedMessage, CallError> {
        let mut attempt: u32 = 0;
        let mut fresh: Option<ShardEntry> = None;
        let mut refused_by: Option<MemberId> = None;
        loop {
            if self.clock.now() >= call.deadline {
                return Err(CallError::DeadlineExceeded { id: call.id });
            }
            let (node, address) =
                match self.step(&call.id, fresh.take().as_ref(), refused_by.as_ref())? {
                    Step::Send { node, address } => (node, address),
                    Step::Wait => {
                        attempt += 1;
                        fresh = self.refresh(&call.id, attempt.max(2)).await;
                        backoff(&*self.clock, attempt.max(3), call.deadline).await;
                        continue;
                    }
                };
            let remote = RemoteCall {
                object_type: call.object_type.clone(),
                id: call.id.clone(),
                method: call.method.clone(),
                request: call.request.clone(),
                deadline: call.deadline,
                chain: Vec::new(),
                identity: call.identity.clone(),
                one_way: false,
            };
            match self.routes.transport.call(&address, remote).await {
                Ok(response) => return Ok(response),
                Err(error) if error.provably_not_started() => {
                    tracing::debug!(%error, peer = %address, "resending a call that did not start");
                    refused_by = Some(node);
                }
                Err(CallError::OutcomeUnknown { .. }) if call.idempotent => refused_by = Some(node),
                Err(error) => return Err(error),
            }
            attempt += 1;
            fresh = self.refresh(&call.id, attempt).await;
            backoff(&*self.clock, attempt, call.deadline).await;
        }
    }

    /// Creates object `id` of `object_type` on the node serving it (idempotent: resent after
    /// any failure but a final answer, until `deadline`).
    pub async fn create(
        &self,
        object_type: &str,
        id: &str,
        deadline: MonoTime,
    ) -> Result<(), CallError> {
        self.control(Control::Create, object_type, id, deadline).await
    }

    /// Deletes object `id` of `object_type` on the node serving it (idempotent, as
    /// [`Router::create`]); deleting an absent object succeeds.
    pub async fn delete(
        &self,
        object_type: &str,
        id: &str,
        deadline: MonoTime,
    ) -> Result<(), CallError> {
        self.control(Control::Delete, object_type, id, deadline).await
    }

    async fn control(
        &self,
        kind: Control,
        object_type: &str,
        id: &str,
        deadline: MonoTime,
    ) -> Result<(), CallError> {
        let mut attempt: u32 = 0;
        let mut fresh: Option<ShardEntry> = None;
        let mut refused_by: Option<MemberId> = None;
        loop {
            if self.clock.now() >= deadline {
                return Err(CallError::DeadlineExceeded { id: id.to_owned() });
            }
            let (node, address) = match self.step(id, fresh.take().as_ref(), refused_by.as_ref())? {
                Step::Send { node, address } => (node, address),
                Step::Wait => {
                    attempt += 1;
                    fresh = self.refresh(id, attempt.max(2)).await;
                    backoff(&*self.clock, attempt.max(3), deadline).await;
                    continue;
                }
            };
            let transport = &self.routes.transport;
            let result = match kind {
                Control::Create => transport.create(&address, object_type, id, deadline).await,
                Control::Delete => transport.delete(&address, object_type, id, deadline).await,
            };
            match result {
                Ok(()) => return Ok(()),
                Err(error)
                    if error.provably_not_started()
                        || matches!(error, CallError::OutcomeUnknown { .. }) =>
                {
                    refused_by = Some(node);
                }
                Err(error) => return Err(error),
            }
            attempt += 1;
            fresh = self.refresh(id, attempt).await;
            backoff(&*self.clock, attempt, deadline).await;
        }
    }
}
