//! The node runtime: type registry, per-shard activation tables, routing of calls, create and
//! delete, the wheel's ticker, and shutdown.

pub(crate) mod activation;
mod call;
mod lifecycle;
mod metrics;
pub mod observe;
pub(crate) mod ownership;
mod remote;
pub(crate) mod timer;
pub mod validate;
pub(crate) mod wheel;

use std::any::TypeId;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::activation::{ActivationShared, DeactivateReason, PushError, Work};
use self::metrics::TypeMetrics;
use self::observe::TurnObserver;
use self::ownership::{Location, Ownership};
pub(crate) use self::remote::ControlKind;
use self::remote::{Elsewhere, ElsewhereCall};
pub use self::timer::TimerHandle;
use self::wheel::Wheel;
use crate::clock::{MonoTime, SharedClock, SystemClock};
use crate::cluster::routes::Routes;
use crate::context::{CallChain, CallerIdentity, check_chain};
use crate::epoch::Epoch;
use crate::error::CallError;
use crate::executor::{SharedExecutor, TokioBlockingExecutor};
use crate::object::{EncodedMessage, MethodInfo, Object, Payload, TypeDescription, TypeOptions};
use crate::push::{PushMessage, PushSink, gateway_of};
use crate::reference::{Caller, RawRef};
use crate::rng::RandomSource;
use crate::shard::{DEFAULT_SHARD_COUNT, Placement, ShardId, hash_shard, place};
use crate::store::{FenceKey, MemoryStore, StateStore};

/// Node configuration (the parts the single-node runtime uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's id (objects `<node-id>/…` are pinned to it).
    pub node_id: String,
    /// Number of shards (8192 unless the cluster says otherwise).
    pub shard_count: u32,
    /// Deadline of root calls that name none.
    pub default_deadline: Duration,
    /// Granularity of the timing wheel (deadline precision).
    pub tick: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: "node-1".into(),
            shard_count: DEFAULT_SHARD_COUNT,
            default_deadline: Duration::from_secs(30),
            tick: Duration::from_millis(10),
        }
    }
}

/// Errors building a node.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    /// Two registered types share a name.
    #[error("object type {0:?} registered twice")]
    DuplicateType(String),
    /// The configuration is invalid.
    #[error("invalid node configuration: {0}")]
    InvalidConfig(String),
}

/// Starts the monomorphised activation loop of one type.
/// Spawns an activation's task (monomorphised per type, so the task holds the activation
/// loop's future inline: no box per activation).
type StartFn = fn(&TaskTracker, Arc<NodeShared>, Arc<ActivationShared>);

/// A registered object type.
pub(crate) struct TypeEntry {
    pub(crate) name: &'static str,
    pub(crate) rust_type: TypeId,
    pub(crate) options: TypeOptions,
    pub(crate) methods: &'static [MethodInfo],
    method_names: HashMap<&'static str, usize>,
    pub(crate) has_state: bool,
    file_descriptor_set: &'static [u8],
    start: StartFn,
    pub(crate) metrics: TypeMetrics,
}

impl fmt::Debug for TypeEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypeEntry").field("name", &self.name).finish_non_exhaustive()
    }
}

impl TypeEntry {
    fn new<T: Object>(options: TypeOptions) -> Self {
        let methods = T::methods();
        TypeEntry {
            name: T::TYPE_NAME,
            rust_type: TypeId::of::<T>(),
            options,
            methods,
            method_names: methods.iter().enumerate().map(|(i, m)| (m.name, i)).collect(),
            has_state: T::HAS_STATE,
            file_descriptor_set: T::file_descriptor_set(),
            start: lifecycle::start::<T>,
            metrics: TypeMetrics::new(T::TYPE_NAME, methods),
        }
    }

    /// Whether state is loaded and saved for this type.
    pub(crate) fn persistent(&self) -> bool {
        self.has_state && !self.options.ephemeral
    }

    pub(crate) fn method_index(&self, name: &str) -> Result<usize, CallError> {
        self.method_names.get(name).copied().ok_or_else(|| CallError::UnknownMethod {
            object_type: self.name.to_owned(),
            method: name.to_owned(),
        })
    }

    fn resolve(&self, method: &MethodTarget) -> Result<usize, CallError> {
        match method {
            MethodTarget::Index(index, name) => {
                // Generated references pass the `&'static str` of the method table itself, so
                // the pointer comparison usually decides without comparing bytes.
                let same = |m: &MethodInfo| std::ptr::eq(m.name, *name) || m.name == *name;
                if self.methods.get(*index).is_some_and(same) {
                    Ok(*index)
                } else {
                    self.method_index(name)
                }
            }
            MethodTarget::Name(name) => self.method_index(name),
        }
    }
}

/// The object type a reference targets.
#[derive(Clone, Debug)]
pub(crate) enum TypeTarget {
    /// A type registered on this node.
    Known(Arc<TypeEntry>),
    /// A type known only by name (unknown here).
    Named(Arc<str>),
}

impl TypeTarget {
    pub(crate) fn name(&self) -> &str {
        match self {
            TypeTarget::Known(entry) => entry.name,
            TypeTarget::Named(name) => name,
        }
    }
}

/// The method a call targets.
#[derive(Clone, Debug)]
pub(crate) enum MethodTarget {
    /// Index into the method table, with its wire name (checked against the table).
    Index(usize, &'static str),
    /// Wire name.
    Name(Arc<str>),
}

/// Whether a node serves a shard ([`Node::shard_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardStatus {
    /// Served at this epoch: calls are admitted.
    Serving(Epoch),
    /// Being handed off at this epoch: new calls are refused (`NotServed`), except calls
    /// whose awaited chain runs a turn of the shard; running turns finish and activations
    /// save before the release.
    HandingOff(Epoch),
    /// Not served here.
    NotServing,
}

/// The activation a reference called last, kept while it lives so repeated calls skip the
/// placement and the shard table (re-resolved once it is gone). Read without a lock: a call
/// writes nothing to its reference, so references that sit side by side in memory and are
/// called from different threads do not contend for the same cache line.
#[derive(Default)]
pub(crate) struct ActivationCache {
    slot: ArcSwapOption<ActivationShared>,
}

impl ActivationCache {
    /// Runs `f` on the cached activation, if there is one that may still be live (without
    /// cloning it: the reference count of a hot activation is shared with its own task).
    fn with<R>(&self, f: impl FnOnce(&Arc<ActivationShared>) -> R) -> Option<R> {
        let slot = self.slot.load();
        slot.as_ref().filter(|a| !a.is_gone_hint()).map(f)
    }

    fn set(&self, activation: Arc<ActivationShared>) {
        self.slot.store(Some(activation));
    }
}

impl Clone for ActivationCache {
    fn clone(&self) -> Self {
        ActivationCache { slot: ArcSwapOption::new(self.slot.load_full()) }
    }
}

impl fmt::Debug for ActivationCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ActivationCache")
    }
}

/// A call as the router sees it.
pub(crate) struct CallRequest<'a> {
    pub(crate) cache: Option<&'a ActivationCache>,
    pub(crate) target: &'a TypeTarget,
    pub(crate) id: &'a Arc<str>,
    pub(crate) method: MethodTarget,
    pub(crate) payload: Payload,
    pub(crate) deadline: Option<MonoTime>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) chain: Option<Arc<CallChain>>,
    pub(crate) identity: Option<Arc<CallerIdentity>>,
    pub(crate) one_way: bool,
    /// Whether the router may send the call to another node (false for calls that arrived
    /// from another node: they bounce with `NotServed` instead of hopping again).
    pub(crate) forward: bool,
}

/// A shard's activation slots, keyed by the activation's own id (one pointer per entry: an
/// idle activation costs 8 bytes here, not a key and a value).
type Table = HashSet<Slot>;

/// A table entry: an activation, hashed and compared by its object id.
#[derive(Clone)]
pub(crate) struct Slot(pub(crate) Arc<ActivationShared>);

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for Slot {}

impl std::hash::Hash for Slot {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Must hash exactly like the `str` it borrows as.
        self.0.id.as_ref().hash(state);
    }
}

impl std::borrow::Borrow<str> for Slot {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

/// Everything a node's activations share.
pub(crate) struct NodeShared {
    pub(crate) config: NodeConfig,
    pub(crate) clock: SharedClock,
    pub(crate) rng: RandomSource,
    pub(crate) executor: SharedExecutor,
    pub(crate) store: Arc<dyn StateStore>,
    types: BTreeMap<&'static str, Arc<TypeEntry>>,
    tables: Box<[Mutex<Table>]>,
    pub(crate) ownership: Ownership,
    pub(crate) wheel: Wheel,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    /// Whether ownership comes from a cluster (set at build time).
    pub(crate) clustered: bool,
    /// Routes to other nodes, once the cluster runtime started (read only off the local
    /// hot path, after an ownership check refused).
    pub(crate) cluster: OnceLock<Arc<Routes>>,
    /// Sees every turn's start and end (invariant checkers), if installed.
    pub(crate) observer: Option<Arc<dyn TurnObserver>>,
    /// Where pushes go (none: pushes fail with `PushError::NoSink`).
    pub(crate) push: Option<Arc<dyn PushSink>>,
}

impl fmt::Debug for NodeShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node").field("node_id", &self.config.node_id).finish_non_exhaustive()
    }
}

impl NodeShared {
    pub(crate) fn table(&self, shard: u32) -> MutexGuard<'_, Table> {
        // Per-shard tables keep contention local; entries are replaced whole, so a poisoned
        // lock (a panic elsewhere) leaves valid data.
        self.tables[shard as usize].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the sharded metric counters of every type.
    pub(crate) fn export_metrics(&self) {
        for entry in self.types.values() {
            entry.metrics.export();
        }
    }

    pub(crate) fn wheel_granularity(&self) -> Duration {
        self.config.tick
    }

    /// Hands a push from object `(object_type, object_id)` to the sink: to `client_id`'s
    /// gateway, or (`client_id` = `None`) to every gateway. Counted in `verse_push_total`.
    pub(crate) fn push(
        &self,
        object_type: &str,
        object_id: &str,
        client_id: Option<&str>,
        message: EncodedMessage,
    ) -> Result<usize, crate::push::PushError> {
        let outcome = self.push_inner(object_type, object_id, client_id, message);
        crate::push::count(&outcome.as_ref().map(|_| ()).map_err(Clone::clone));
        outcome
    }

    fn push_inner(
        &self,
        object_type: &str,
        object_id: &str,
        client_id: Option<&str>,
        message: EncodedMessage,
    ) -> Result<usize, crate::push::PushError> {
        let sink = self.push.as_ref().ok_or(crate::push::PushError::NoSink)?;
        let mut push = PushMessage {
            client_id: String::new(),
            object_type: object_type.to_owned(),
            object_id: object_id.to_owned(),
            message,
        };
        let Some(client_id) = client_id else { return Ok(sink.broadcast(push)) };
        let gateway = gateway_of(client_id)?;
        // Without a view (an unclustered node, or before the first view) nothing is known:
        // let the sink buffer briefly.
        let live =
            self.cluster.get().and_then(|routes| routes.gateway_live(gateway)).unwrap_or(true);
        push.client_id = client_id.to_owned();
        sink.push(gateway, push, live).map(|()| 1)
    }

    pub(crate) fn type_target(&self, name: &str) -> TypeTarget {
        match self.types.get(name) {
            Some(entry) => TypeTarget::Known(entry.clone()),
            None => TypeTarget::Named(Arc::from(name)),
        }
    }

    fn locate(&self, id: &str) -> Result<Location, CallError> {
        match place(id, self.config.shard_count)? {
            Placement::Shard(shard) => {
                Ok(Location { fence: FenceKey::Shard(shard), table_shard: shard.0 })
            }
            Placement::Node(node) => {
                // Another node's objects: routed to it in a cluster (the ownership check
                // never admits them here), unknown on a single node.
                if node != self.config.node_id && !self.clustered {
                    return Err(CallError::NodeNotFound { node });
                }
                let table_shard = hash_shard(id, self.config.shard_count).0;
                Ok(Location { fence: FenceKey::Node(node), table_shard })
            }
        }
    }

    fn known<'a>(&self, target: &'a TypeTarget) -> Result<&'a Arc<TypeEntry>, CallError> {
        match target {
            TypeTarget::Known(entry) => Ok(entry),
            TypeTarget::Named(name) => {
                Err(CallError::UnknownType { object_type: name.to_string() })
            }
        }
    }

    /// Finds or creates the activation slot for `id` and queues `work` in it.
    fn enqueue(
        self: &Arc<Self>,
        entry: &Arc<TypeEntry>,
        id: &Arc<str>,
        location: &Location,
        mut work: Work,
    ) -> Result<Arc<ActivationShared>, CallError> {
        loop {
            let (activation, created) = {
                let mut table = self.table(location.table_shard);
                match table.get(id.as_ref()).map(|slot| &slot.0) {
                    Some(existing) => {
                        if !Arc::ptr_eq(&existing.entry, entry) {
                            return Err(CallError::TypeMismatch {
                                id: id.to_string(),
                                actual: existing.entry.name.to_owned(),
                            });
                        }
                        (existing.clone(), false)
                    }
                    None => {
                        let activation = Arc::new(ActivationShared::new(
                            id.clone(),
                            entry.clone(),
                            location.clone(),
                        ));
                        table.insert(Slot(activation.clone()));
                        (activation, true)
                    }
                }
            };
            let pushed = activation.push(self, work);
            if created {
                (entry.start)(&self.tasks, self.clone(), activation.clone());
            }
            match pushed {
                Ok(()) => return Ok(activation),
                Err(PushError::Gone(returned)) => work = returned,
                Err(PushError::Full) => return Err(self.overloaded(entry, id)),
            }
        }
    }

    /// A call for a type not registered on this node: in a cluster it goes where the view
    /// routes the id (the node serving it may know the type); where this node serves the id
    /// itself, or outside a cluster, the type is unknown.
    pub(super) async fn call_unknown_type(
        self: &Arc<Self>,
        request: CallRequest<'_>,
        unknown: CallError,
    ) -> Result<Payload, CallError> {
        let Some(routes) = self.cluster.get() else { return Err(unknown) };
        check_chain(request.chain.as_deref(), request.id)?;
        let location = self.locate(request.id)?;
        let chain = request.chain.as_deref();
        if self.ownership.check_for_chain(&location.fence, &*self.clock, chain).is_ok() {
            return Err(unknown);
        }
        let deadline = request.deadline.unwrap_or_else(|| {
            self.clock.now_coarse() + request.timeout.unwrap_or(self.config.default_deadline)
        });
        let method = match &request.method {
            MethodTarget::Index(_, name) => *name,
            MethodTarget::Name(name) => &**name,
        };
        let call = ElsewhereCall {
            object_type: request.target.name(),
            method,
            idempotent: false,
            id: request.id,
            location: &location,
            chain: request.chain.as_ref(),
            identity: request.identity.as_ref(),
            one_way: request.one_way,
            forward: request.forward,
            deadline,
        };
        match Box::pin(self.call_elsewhere(routes, call, request.payload)).await {
            Elsewhere::Done(result) => result,
            // This node serves the id now, and does not know the type.
            Elsewhere::Local(_) => Err(unknown),
        }
    }

    pub(super) fn overloaded(&self, entry: &TypeEntry, id: &str) -> CallError {
        entry.metrics.overloads.increment(1);
        CallError::Overloaded { id: id.to_owned() }
    }

    /// Waits before resending a bounced call: immediately the first times (the slot is being
    /// replaced), then exponentially up to 100 ms, never past the deadline.
    pub(super) async fn backoff(&self, attempt: u32, deadline: MonoTime) {
        crate::cluster::routes::backoff(&*self.clock, attempt, deadline).await;
    }

    async fn control(
        self: &Arc<Self>,
        object_type: &str,
        id: &str,
        kind: ControlKind,
        forward: bool,
    ) -> Result<(), CallError> {
        let target = self.type_target(object_type);
        let location = self.locate(id)?;
        let id: Arc<str> = Arc::from(id);
        let deadline = self.clock.now() + self.config.default_deadline;
        let entry = match (self.known(&target), self.cluster.get()) {
            (Ok(entry), _) => entry,
            (Err(unknown), Some(routes)) => {
                // Not registered here: where the view routes the id (see call_unknown_type).
                if self.ownership.check(&location.fence, &*self.clock).is_ok() {
                    return Err(unknown);
                }
                let done = Box::pin(self.control_elsewhere(
                    routes,
                    object_type,
                    &id,
                    &location,
                    kind,
                    forward,
                    deadline,
                ))
                .await;
                return done.unwrap_or(Err(unknown));
            }
            (Err(unknown), None) => return Err(unknown),
        };
        let mut attempt = 0;
        loop {
            if let Err(error) = self.ownership.check(&location.fence, &*self.clock) {
                let routes = match self.cluster.get() {
                    Some(routes) if matches!(error, CallError::NotServed { .. }) => routes,
                    _ => return Err(error),
                };
                let done = Box::pin(self.control_elsewhere(
                    routes, entry.name, &id, &location, kind, forward, deadline,
                ))
                .await;
                match done {
                    Some(result) => return result,
                    None => continue,
                }
            }
            let (tx, rx) = oneshot::channel();
            let work = match kind {
                ControlKind::Create => Work::Create(tx),
                ControlKind::Delete => Work::Delete(tx),
            };
            self.enqueue(entry, &id, &location, work)?;
            match rx.await {
                Ok(Err(error)) if error.provably_not_started() && self.clock.now() < deadline => {
                    attempt += 1;
                    self.backoff(attempt, deadline).await;
                }
                Ok(result) => return result,
                Err(_) => {
                    return Err(CallError::OutcomeUnknown {
                        id: id.to_string(),
                        reason: "the activation ended without answering".into(),
                    });
                }
            }
        }
    }

    fn static_entry<T: Object>(&self) -> Option<&Arc<TypeEntry>> {
        self.types.get(T::TYPE_NAME).filter(|e| e.rust_type == TypeId::of::<T>())
    }
}

/// Builds a node: configuration, object types with their options, and the injected clock,
/// random source, blocking executor and state store.
pub struct NodeBuilder {
    config: NodeConfig,
    types: Vec<Arc<TypeEntry>>,
    clock: Option<SharedClock>,
    rng: Option<RandomSource>,
    executor: Option<SharedExecutor>,
    store: Option<Arc<dyn StateStore>>,
    clustered: bool,
    observer: Option<Arc<dyn TurnObserver>>,
    push: Option<Arc<dyn PushSink>>,
}

impl fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeBuilder").field("config", &self.config).finish_non_exhaustive()
    }
}

impl NodeBuilder {
    /// A builder with `config` and no types.
    pub fn new(config: NodeConfig) -> Self {
        NodeBuilder {
            config,
            types: Vec::new(),
            clock: None,
            rng: None,
            executor: None,
            store: None,
            clustered: false,
            observer: None,
            push: None,
        }
    }

    /// Builds a node for a cluster: it serves nothing until a
    /// [`ClusterNode`](crate::cluster::ClusterNode) started on it claims shards and proves
    /// its lease. Without this option the node owns every shard on its own.
    pub fn clustered(mut self) -> Self {
        self.clustered = true;
        self
    }

    /// Registers `T` with default options.
    pub fn object<T: Object>(self) -> Self {
        self.object_with::<T>(TypeOptions::default())
    }

    /// Registers `T` with `options`.
    pub fn object_with<T: Object>(mut self, options: TypeOptions) -> Self {
        self.types.push(Arc::new(TypeEntry::new::<T>(options)));
        self
    }

    /// Injects the clock (default: [`SystemClock`]).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Injects the random source (default: seeded from the OS).
    pub fn rng(mut self, rng: RandomSource) -> Self {
        self.rng = Some(rng);
        self
    }

    /// Injects the blocking executor (default: tokio's blocking pool).
    pub fn executor(mut self, executor: SharedExecutor) -> Self {
        self.executor = Some(executor);
        self
    }

    /// Injects the state store (default: an in-memory store).
    pub fn store(mut self, store: Arc<dyn StateStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Installs a turn observer (invariant checkers; see [`observe`]).
    pub fn turn_observer(mut self, observer: Arc<dyn TurnObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Injects the push sink objects' pushes go to (`verse-transport`'s `PushHub`; default:
    /// none, pushes fail with [`crate::push::PushError::NoSink`]).
    pub fn push_sink(mut self, sink: Arc<dyn PushSink>) -> Self {
        self.push = Some(sink);
        self
    }

    /// Starts the node (spawns its ticker on the current tokio runtime).
    pub fn start(self) -> Result<Node, BuildError> {
        let config = self.config;
        if config.shard_count == 0 {
            return Err(BuildError::InvalidConfig("shard_count must be positive".into()));
        }
        if config.node_id.is_empty() || config.node_id.contains('/') {
            return Err(BuildError::InvalidConfig("node_id must be non-empty without '/'".into()));
        }
        let mut types = BTreeMap::new();
        for entry in self.types {
            if types.insert(entry.name, entry.clone()).is_some() {
                return Err(BuildError::DuplicateType(entry.name.to_owned()));
            }
        }
        let clock = self.clock.unwrap_or_else(SystemClock::shared);
        let store = self.store.unwrap_or_else(|| {
            Arc::new(MemoryStore::new(
                clock.clone(),
                crate::store::DEFAULT_TOMBSTONE_RETENTION,
                true,
            ))
        });
        let shared = Arc::new(NodeShared {
            wheel: Wheel::new(config.tick),
            ownership: if self.clustered {
                Ownership::cluster(&config.node_id, config.shard_count)
            } else {
                Ownership::local_all(&config.node_id, config.shard_count)
            },
            tables: (0..config.shard_count).map(|_| Mutex::new(HashSet::new())).collect(),
            config,
            clock,
            rng: self.rng.unwrap_or_else(RandomSource::from_os),
            executor: self.executor.unwrap_or_else(|| Arc::new(TokioBlockingExecutor)),
            store,
            types,
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            clustered: self.clustered,
            cluster: OnceLock::new(),
            observer: self.observer,
            push: self.push,
        });
        let ticker = tokio::spawn(wheel::run_ticker(shared.clone()));
        Ok(Node { shared, ticker: Mutex::new(Some(ticker)) })
    }
}

/// A running node: hosts activations of its registered types.
pub struct Node {
    shared: Arc<NodeShared>,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

/// A call that arrived from another process (a node or a gateway), as a transport hands it
/// to the node.
#[derive(Debug, Clone)]
pub struct IncomingCall {
    /// Object type name.
    pub object_type: String,
    /// Object id.
    pub id: String,
    /// Method wire name.
    pub method: String,
    /// The encoded request (`Any` content).
    pub request: EncodedMessage,
    /// Time left before the caller's deadline, as the caller measured it when sending
    /// (invariant 7: turned into a local instant on receipt).
    pub remaining: Duration,
    /// The awaited call chain, root first: `(object id, shard)` of each waiting object.
    pub chain: Vec<(String, u32)>,
    /// Who called.
    pub identity: Option<CallerIdentity>,
    /// One way (no response expected).
    pub one_way: bool,
}

impl Node {
    /// Serves a call that arrived over a transport: the deadline becomes a local instant now,
    /// the chain is rebuilt (cycles and depth are checked as for local calls), and the request
    /// is decoded once, at the object.
    pub async fn serve_incoming(&self, call: IncomingCall) -> Result<EncodedMessage, CallError> {
        let deadline = self.shared.clock.now_coarse() + call.remaining;
        let mut chain: Option<Arc<CallChain>> = None;
        for (object_id, shard) in call.chain {
            chain = Some(CallChain::push(chain, Arc::from(object_id), shard));
        }
        let target = self.shared.type_target(&call.object_type);
        let id: Arc<str> = Arc::from(call.id);
        let request = CallRequest {
            cache: None,
            target: &target,
            id: &id,
            method: MethodTarget::Name(Arc::from(call.method)),
            payload: Payload::encoded(call.request),
            deadline: Some(deadline),
            timeout: None,
            chain,
            identity: call.identity.map(Arc::new),
            one_way: call.one_way,
            forward: false,
        };
        Ok(self.shared.call(request).await?.into_encoded())
    }

    /// Serves a `create` that arrived over a transport (never forwarded to another node).
    pub async fn serve_create(&self, object_type: &str, id: &str) -> Result<(), CallError> {
        self.shared.control(object_type, id, ControlKind::Create, false).await
    }

    /// Serves a `delete` that arrived over a transport (never forwarded to another node).
    pub async fn serve_delete(&self, object_type: &str, id: &str) -> Result<(), CallError> {
        self.shared.control(object_type, id, ControlKind::Delete, false).await
    }

    pub(crate) fn shared(&self) -> &Arc<NodeShared> {
        &self.shared
    }

    /// A root client calling through this node.
    pub fn client(&self) -> Client {
        Client::new(self.shared.clone())
    }

    /// The node id.
    pub fn id(&self) -> &str {
        &self.shared.config.node_id
    }

    /// The clock the node runs on.
    pub fn clock(&self) -> &SharedClock {
        &self.shared.clock
    }

    /// The method table and message descriptors of registered type `object_type` (`None`
    /// when it is not registered here).
    pub fn describe_type(&self, object_type: &str) -> Option<TypeDescription> {
        self.shared.types.get(object_type).map(|entry| TypeDescription {
            name: entry.name,
            methods: entry.methods,
            file_descriptor_set: entry.file_descriptor_set,
        })
    }

    /// Number of activation slots (any phase but gone).
    pub fn activation_count(&self) -> usize {
        (0..self.shared.config.shard_count).map(|s| self.shared.table(s).len()).sum()
    }

    /// `(object type, object id)` of up to `limit` activation slots, in shard order (for
    /// introspection).
    pub fn activations(&self, limit: usize) -> Vec<(String, String)> {
        let mut listed = Vec::new();
        for shard in 0..self.shared.config.shard_count {
            if listed.len() >= limit {
                break;
            }
            let table = self.shared.table(shard);
            let room = limit - listed.len();
            listed.extend(
                table.iter().take(room).map(|s| (s.0.entry.name.to_owned(), s.0.id.to_string())),
            );
        }
        listed
    }

    /// Whether this node serves `shard` now, hands it off, or neither (for operators and
    /// tests; the answer may change right after it is read). `None` for a shard outside the
    /// node's shard count.
    pub fn shard_status(&self, shard: ShardId) -> Option<ShardStatus> {
        let ownership = &self.shared.ownership;
        if shard.0 >= ownership.shard_count() {
            return None;
        }
        let counters = ownership.counters(shard.0);
        let epoch = |counter| Epoch::new(ownership.generation(), counter);
        Some(match (counters.served, counters.leaving) {
            (0, 0) => ShardStatus::NotServing,
            (0, leaving) => ShardStatus::HandingOff(epoch(leaving)),
            (served, _) => ShardStatus::Serving(epoch(served)),
        })
    }

    /// Whether `id` has an activation slot here.
    pub fn is_active(&self, id: &str) -> bool {
        let Ok(location) = self.shared.locate(id) else { return false };
        self.shared.table(location.table_shard).contains(id)
    }

    /// Pending wheel entries (for tests of timer hygiene).
    pub fn wheel_entries(&self) -> usize {
        self.shared.wheel.len()
    }

    /// Stops admitting calls, deactivates every activation (running turns finish, state is
    /// saved), waits for every owned task, then stops the ticker.
    pub async fn shutdown(&self) {
        self.shared.ownership.stop();
        let activations: Vec<Arc<ActivationShared>> = (0..self.shared.config.shard_count)
            .flat_map(|s| {
                self.shared.table(s).iter().map(|slot| slot.0.clone()).collect::<Vec<_>>()
            })
            .collect();
        for activation in activations {
            activation.request_deactivation(DeactivateReason::Shutdown);
        }
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        self.shared.shutdown.cancel();
        let ticker = self.ticker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(ticker) = ticker {
            let _ = ticker.await;
        }
    }
}

/// A root caller: calls made through it start new chains and get the default deadline (30 s)
/// unless told otherwise.
#[derive(Clone)]
pub struct Client {
    node: Arc<NodeShared>,
    identity: Option<Arc<CallerIdentity>>,
    timeout: Option<Duration>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("node", &self.node.config.node_id).finish_non_exhaustive()
    }
}

impl Client {
    pub(crate) fn new(node: Arc<NodeShared>) -> Self {
        Client { node, identity: None, timeout: None }
    }

    /// The same client with another deadline for each call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The same client calling as `identity`.
    pub fn with_identity(mut self, identity: CallerIdentity) -> Self {
        self.identity = Some(Arc::new(identity));
        self
    }

    fn caller(&self) -> Caller {
        Caller {
            node: self.node.clone(),
            chain: None,
            deadline: None,
            timeout: self.timeout,
            identity: self.identity.clone(),
        }
    }

    /// A typed reference to object `id` of type `T`.
    pub fn get<T: Object>(&self, id: impl Into<String>) -> T::Ref {
        let caller = self.caller();
        let raw = match self.node.static_entry::<T>() {
            Some(entry) => RawRef::with_target(caller, TypeTarget::Known(entry.clone()), id.into()),
            None => RawRef::new(caller, T::TYPE_NAME, id.into()),
        };
        T::Ref::from(raw)
    }

    /// An untyped reference (the dynamic path).
    pub fn raw(&self, object_type: &str, id: impl Into<String>) -> RawRef {
        RawRef::new(self.caller(), object_type, id.into())
    }

    /// Calls `(type, id, method)` with an encoded request: the gateways' path. The request is
    /// decoded once, at the object.
    pub async fn call_encoded(
        &self,
        object_type: &str,
        id: &str,
        method: &str,
        request: EncodedMessage,
    ) -> Result<EncodedMessage, CallError> {
        self.raw(object_type, id).call_encoded(method, request).await
    }

    /// Creates object `id` of `object_type` (idempotent for the same type; `TypeMismatch` for
    /// another). Activates it.
    pub async fn create(&self, object_type: &str, id: &str) -> Result<(), CallError> {
        self.node.control(object_type, id, ControlKind::Create, true).await
    }

    /// Deletes object `id`: deactivates it and leaves a tombstone. Succeeds for absent
    /// objects; `TypeMismatch` if it has another type.
    pub async fn delete(&self, object_type: &str, id: &str) -> Result<(), CallError> {
        self.node.control(object_type, id, ControlKind::Delete, true).await
    }

    /// A fresh object id for `object_type`: `<Type>-<32 hex digits>` from the node's random
    /// source.
    pub fn new_object_id(&self, object_type: &str) -> String {
        format!("{object_type}-{}", self.node.rng.hex_token(16))
    }
}

/// Shard placement of an id under this node's shard count (for tests and tools).
pub fn shard_of(node: &Node, id: &str) -> Option<ShardId> {
    match place(id, node.shared.config.shard_count) {
        Ok(Placement::Shard(shard)) => Some(shard),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
