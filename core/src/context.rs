//! The context of a turn: who is calling, the deadline, the awaited call chain, and the
//! object's handles for nested calls, owned tasks and timers.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::MonoTime;
use crate::error::CallError;
use crate::object::{EncodedMessage, Object};
use crate::push::PushError;
use crate::reference::{Caller, RawRef};
use crate::runtime::activation::ActivationShared;
use crate::runtime::{Client, NodeShared, TimerHandle};

/// The longest awaited call chain (number of objects waiting on each other).
pub const MAX_CHAIN_DEPTH: usize = 64;

/// One link of an awaited call chain: an object whose turn is waiting on a nested call.
///
/// Chains are allocated only for nested calls; a root call has none.
#[derive(Debug)]
pub struct CallChain {
    /// The waiting object's id.
    pub object_id: Arc<str>,
    /// The shard (or hash shard of a node-pinned object) of that object.
    pub shard: u32,
    /// The rest of the chain, towards the root caller.
    pub parent: Option<Arc<CallChain>>,
    /// Number of links including this one.
    pub depth: usize,
}

impl CallChain {
    /// Extends `parent` with a waiting object.
    pub fn push(parent: Option<Arc<CallChain>>, object_id: Arc<str>, shard: u32) -> Arc<Self> {
        let depth = parent.as_ref().map_or(0, |p| p.depth) + 1;
        Arc::new(CallChain { object_id, shard, parent, depth })
    }

    /// Iterates from this link towards the root.
    pub fn iter(&self) -> impl Iterator<Item = &CallChain> {
        std::iter::successors(Some(self), |link| link.parent.as_deref())
    }

    /// Whether `object_id` is waiting anywhere on this chain.
    pub fn contains(&self, object_id: &str) -> bool {
        self.iter().any(|link| &*link.object_id == object_id)
    }

    /// Whether a turn of `shard` is waiting anywhere on this chain.
    pub fn includes_shard(&self, shard: u32) -> bool {
        self.iter().any(|link| link.shard == shard)
    }

    /// The chain's ids from the root caller to this link.
    pub fn ids_from_root(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.iter().map(|l| l.object_id.to_string()).collect();
        ids.reverse();
        ids
    }
}

/// Checks that calling `target` from `chain` neither re-enters a waiting object nor exceeds
/// [`MAX_CHAIN_DEPTH`].
pub fn check_chain(chain: Option<&CallChain>, target: &str) -> Result<(), CallError> {
    let Some(chain) = chain else { return Ok(()) };
    if chain.contains(target) {
        let mut ids = chain.ids_from_root();
        ids.push(target.to_owned());
        return Err(CallError::Cycle { chain: ids });
    }
    if chain.depth >= MAX_CHAIN_DEPTH {
        return Err(CallError::ChainTooDeep { limit: MAX_CHAIN_DEPTH });
    }
    Ok(())
}

/// Who made a call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerIdentity {
    /// The client id (`<gateway-id>/<session>`), if the call came from a client session.
    /// Client ids are secrets: never log them in full.
    pub client_id: Option<String>,
    /// The authenticated principal, if any.
    pub principal: Option<String>,
    /// Roles granted to the principal.
    pub roles: Vec<String>,
}

/// The context of one turn. `Sync`, so it can be shared by futures inside the turn.
pub struct CallContext {
    pub(crate) node: Arc<NodeShared>,
    pub(crate) activation: Arc<ActivationShared>,
    pub(crate) chain: Option<Arc<CallChain>>,
    pub(crate) deadline: MonoTime,
    pub(crate) caller: Option<Arc<CallerIdentity>>,
}

impl fmt::Debug for CallContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallContext")
            .field("object_type", &self.object_type())
            .field("id", &self.id())
            .field("deadline", &self.deadline)
            .field("chain_depth", &self.chain.as_ref().map_or(0, |c| c.depth))
            .finish()
    }
}

impl CallContext {
    /// The object's id.
    pub fn id(&self) -> &str {
        &self.activation.id
    }

    /// The object's type name.
    pub fn object_type(&self) -> &str {
        self.activation.entry.name
    }

    /// The id of the node running this turn.
    pub fn node_id(&self) -> &str {
        &self.node.config.node_id
    }

    /// Who called, when known (`None` for timers, tasks and calls from inside the node).
    pub fn caller(&self) -> Option<&CallerIdentity> {
        self.caller.as_deref()
    }

    /// The current time of the node's clock.
    pub fn now(&self) -> MonoTime {
        self.node.clock.now()
    }

    /// The caller's deadline ([`MonoTime::MAX`] for timer ticks).
    pub fn deadline(&self) -> MonoTime {
        self.deadline
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(self.now())
    }

    /// The awaited chain of callers waiting on this turn (`None` for a root call).
    pub fn chain(&self) -> Option<&CallChain> {
        self.chain.as_deref()
    }

    fn nested_caller(&self) -> Caller {
        Caller {
            node: self.node.clone(),
            chain: Some(CallChain::push(
                self.chain.clone(),
                self.activation.id.clone(),
                self.activation.table_shard,
            )),
            deadline: Some(self.deadline),
            timeout: None,
            identity: self.caller.clone(),
        }
    }

    /// A typed reference for an awaited nested call: it carries this turn's chain (cycles fail
    /// at once) and remaining deadline.
    pub fn get<T: Object>(&self, id: impl Into<String>) -> T::Ref {
        T::Ref::from(RawRef::new(self.nested_caller(), T::TYPE_NAME, id.into()))
    }

    /// A reference to this object for one-way sends to itself (awaited calls to itself are
    /// cycles).
    pub fn raw_ref(&self, object_type: &str, id: impl Into<String>) -> RawRef {
        RawRef::new(self.nested_caller(), object_type, id.into())
    }

    /// A root client of this node, for work that starts new chains.
    pub fn client(&self) -> Client {
        Client::new(self.node.clone())
    }

    /// Spawns background work owned by this activation: it is cancelled before the
    /// deactivation save. The closure gets a root [`Client`] (calls from it start new chains).
    pub fn spawn<F, Fut>(&self, work: F)
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let future = work(self.client());
        self.activation.spawn_owned(&self.node, Box::pin(future));
    }

    /// Runs blocking work (file or CPU-heavy) on the node's injected blocking executor and
    /// awaits its result, without blocking the turn's worker thread.
    pub async fn run_blocking<R, F>(&self, work: F) -> Result<R, CallError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        crate::executor::run_blocking(&*self.node.executor, work)
            .await
            .map_err(|_| CallError::ShuttingDown)
    }

    /// Pushes `message` (packed as `Any` with its `type.googleapis.com` URL) to the client
    /// session `client_id` (`<gateway-id>/<session>`, e.g. the caller's
    /// [`CallerIdentity::client_id`]). Returns at once: the message is queued for the stream the
    /// gateway keeps with this node, or buffered briefly while that stream is not open yet.
    /// Delivery is at most once (see [`crate::push`]).
    ///
    /// Errors: [`PushError::InvalidClientId`], [`PushError::UnknownGateway`] (no live gateway
    /// of that id), [`PushError::Full`], [`PushError::NoSink`], [`PushError::Closed`].
    pub fn push<M: prost::Message + prost::Name>(
        &self,
        client_id: &str,
        message: &M,
    ) -> Result<(), PushError> {
        self.push_encoded(client_id, EncodedMessage::pack(message))
    }

    /// [`CallContext::push`] with an already packed message.
    pub fn push_encoded(&self, client_id: &str, message: EncodedMessage) -> Result<(), PushError> {
        self.node.push(self.object_type(), self.id(), Some(client_id), message).map(|_| ())
    }

    /// Pushes `message` to each of `client_ids`; returns the ids that failed with their
    /// errors (empty: every push was queued). The message is encoded once.
    pub fn push_many<'a, M: prost::Message + prost::Name>(
        &self,
        client_ids: impl IntoIterator<Item = &'a str>,
        message: &M,
    ) -> Vec<(String, PushError)> {
        let encoded = EncodedMessage::pack(message);
        client_ids
            .into_iter()
            .filter_map(|client_id| {
                self.push_encoded(client_id, encoded.clone())
                    .err()
                    .map(|error| (client_id.to_owned(), error))
            })
            .collect()
    }

    /// Pushes `message` to every session of every gateway with a stream open to this node;
    /// returns how many gateways accepted it.
    ///
    /// Errors: [`PushError::NoSink`].
    pub fn broadcast<M: prost::Message + prost::Name>(
        &self,
        message: &M,
    ) -> Result<usize, PushError> {
        self.node.push(self.object_type(), self.id(), None, EncodedMessage::pack(message))
    }

    /// Starts a timer: every `period`, a turn runs `method` (wire name) with a
    /// [`crate::object::Tick`] request. Ticks do not count as activity for idle deactivation.
    /// The timer ends with the activation or when the handle is cancelled.
    pub fn timer(&self, period: Duration, method: &str) -> Result<TimerHandle, CallError> {
        self.activation.start_timer(&self.node, period, method)
    }
}
