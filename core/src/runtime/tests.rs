//! Runtime tests on a manual clock with a hand-written object type (the macro is not used
//! here, so these also show that `Object` can be implemented by hand).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::{ManualClock, MonoTime};
use crate::context::CallContext;
use crate::error::CallError;
use crate::object::{
    ActivationPolicy, EncodedMessage, MethodInfo, Object, Payload, PersistencePolicy, Tick,
    TurnFuture, TypeOptions,
};
use crate::reference::RawRef;
use crate::runtime::{Client, Node, NodeBuilder, NodeConfig};
use crate::store::{MemoryStore, StateStore};

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Num {
    #[prost(int64, tag = "1")]
    pub value: i64,
    #[prost(string, tag = "2")]
    pub route: String,
}

impl prost::Name for Num {
    const NAME: &'static str = "Num";
    const PACKAGE: &'static str = "test";
}

/// Per-object test hooks, found by object id.
#[derive(Default)]
struct Hooks {
    gate: Notify,
    log: Mutex<Vec<i64>>,
    ticks: AtomicUsize,
    task_dropped: AtomicBool,
    activations: AtomicUsize,
    deactivations: AtomicUsize,
}

fn hooks(id: &str) -> Arc<Hooks> {
    static HOOKS: OnceLock<Mutex<HashMap<String, Arc<Hooks>>>> = OnceLock::new();
    let map = HOOKS.get_or_init(Default::default);
    map.lock().unwrap().entry(id.to_owned()).or_default().clone()
}

struct Probe {
    total: i64,
    hooks: Arc<Hooks>,
}

const ADD: usize = 0;
const WAIT: usize = 1;
const ROUTE: usize = 2;
const TICK: usize = 3;
const START_TIMER: usize = 4;
const SPAWN: usize = 5;

struct DropFlag(Arc<Hooks>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.task_dropped.store(true, Ordering::SeqCst);
    }
}

impl Probe {
    async fn route(&mut self, ctx: &CallContext, req: Num) -> Result<Num, CallError> {
        match req.route.split_once(',') {
            Some((next, rest)) => {
                let next_req = Num { value: req.value, route: rest.to_owned() };
                ctx.get::<Probe>(next).raw().call("Route", next_req).await
            }
            None if !req.route.is_empty() => {
                let next_req = Num { value: req.value, route: String::new() };
                ctx.get::<Probe>(req.route.as_str()).raw().call("Add", next_req).await
            }
            None => {
                self.total += req.value;
                Ok(Num { value: self.total, route: String::new() })
            }
        }
    }
}

#[derive(Clone, Debug)]
struct ProbeRef(RawRef);
impl From<RawRef> for ProbeRef {
    fn from(raw: RawRef) -> Self {
        ProbeRef(raw)
    }
}
impl ProbeRef {
    fn raw(&self) -> &RawRef {
        &self.0
    }
    async fn add(&self, value: i64) -> Result<i64, CallError> {
        let reply: Num =
            self.0.call_indexed(ADD, "Add", Num { value, route: String::new() }).await?;
        Ok(reply.value)
    }
}

impl Object for Probe {
    const TYPE_NAME: &'static str = "Probe";
    const HAS_STATE: bool = true;
    type State = Num;
    type Ref = ProbeRef;

    fn methods() -> &'static [MethodInfo] {
        static METHODS: OnceLock<Vec<MethodInfo>> = OnceLock::new();
        METHODS.get_or_init(|| {
            ["Add", "Wait", "Route", "Tick", "StartTimer", "Spawn"]
                .into_iter()
                .map(|name| MethodInfo {
                    name,
                    request_type: "test.Num".into(),
                    response_type: "test.Num".into(),
                    idempotent: false,
                })
                .collect()
        })
    }

    fn construct(id: &str) -> Self {
        Probe { total: 0, hooks: hooks(id) }
    }

    fn dispatch<'a>(
        &'a mut self,
        ctx: &'a CallContext,
        method: usize,
        request: Payload,
    ) -> TurnFuture<'a> {
        Box::pin(async move {
            if method == TICK {
                let _tick: Tick = request.into_message()?;
                self.hooks.ticks.fetch_add(1, Ordering::SeqCst);
                return Ok(Payload::typed(Num::default()));
            }
            let req: Num = request.into_message()?;
            let reply = match method {
                ADD => {
                    self.hooks.log.lock().unwrap().push(req.value);
                    self.total += req.value;
                    Num { value: self.total, route: String::new() }
                }
                WAIT => {
                    self.total += req.value;
                    self.hooks.gate.notified().await;
                    Num { value: self.total, route: String::new() }
                }
                ROUTE => self.route(ctx, req).await?,
                START_TIMER => {
                    ctx.timer(Duration::from_millis(req.value as u64), "Tick")?;
                    Num::default()
                }
                SPAWN => {
                    let flag = DropFlag(self.hooks.clone());
                    ctx.spawn(|_client| async move {
                        let _flag = flag;
                        std::future::pending::<()>().await;
                    });
                    Num::default()
                }
                _ => {
                    return Err(CallError::UnknownMethod {
                        object_type: "Probe".into(),
                        method: method.to_string(),
                    });
                }
            };
            Ok(Payload::typed(reply))
        })
    }

    fn on_activate<'a>(&'a mut self, _ctx: &'a CallContext) -> crate::object::HookFuture<'a> {
        self.hooks.activations.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }

    fn on_deactivate<'a>(&'a mut self, _ctx: &'a CallContext) -> crate::object::HookFuture<'a> {
        self.hooks.deactivations.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }

    fn snapshot(&self) -> Num {
        Num { value: self.total, route: String::new() }
    }

    fn restore(&mut self, state: Num) {
        self.total = state.value;
    }
}

/// A second type, for type-mismatch tests.
struct Other;
impl Object for Other {
    const TYPE_NAME: &'static str = "Other";
    const HAS_STATE: bool = false;
    type State = ();
    type Ref = ProbeRef;
    fn methods() -> &'static [MethodInfo] {
        &[]
    }
    fn construct(_id: &str) -> Self {
        Other
    }
    fn dispatch<'a>(
        &'a mut self,
        _ctx: &'a CallContext,
        _method: usize,
        _request: Payload,
    ) -> TurnFuture<'a> {
        Box::pin(async { Err(CallError::from("no methods")) })
    }
}

struct Harness {
    clock: ManualClock,
    store: MemoryStore,
    node: Node,
}

impl Harness {
    fn new(options: TypeOptions) -> Self {
        let clock = ManualClock::starting_at(MonoTime::from_nanos(1_000_000_000));
        let store = MemoryStore::new(clock.shared(), Duration::from_secs(3600), true);
        let node = Self::node(&clock, &store, options);
        Harness { clock, store, node }
    }

    fn node(clock: &ManualClock, store: &MemoryStore, options: TypeOptions) -> Node {
        NodeBuilder::new(NodeConfig { shard_count: 64, ..NodeConfig::default() })
            .clock(clock.shared())
            .store(Arc::new(store.clone()))
            .object_with::<Probe>(options)
            .object::<Other>()
            .start()
            .unwrap()
    }

    fn client(&self) -> Client {
        self.node.client()
    }

    /// Advances the manual clock and lets the ticker and activations run.
    async fn advance(&self, by: Duration) {
        self.clock.advance(by);
        settle().await;
    }
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

fn unique(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{name}-{}", NEXT.fetch_add(1, Ordering::SeqCst))
}

#[tokio::test]
async fn turns_run_one_at_a_time_in_arrival_order() {
    let h = Harness::new(TypeOptions::default());
    let id = unique("order");
    let probe = h.client().get::<Probe>(id.clone());
    // The first turn blocks on the gate; the others queue behind it in order.
    let blocked = tokio::spawn({
        let probe = probe.clone();
        async move {
            probe.raw().call::<Num, Num>("Wait", Num { value: 100, route: String::new() }).await
        }
    });
    settle().await;
    let mut adds = Vec::new();
    for value in 1..=5 {
        let probe = probe.clone();
        adds.push(tokio::spawn(async move { probe.add(value).await }));
        settle().await;
    }
    assert!(hooks(&id).log.lock().unwrap().is_empty(), "no turn may start while one is running");
    hooks(&id).gate.notify_one();
    assert_eq!(blocked.await.unwrap().unwrap().value, 100);
    let totals: Vec<i64> =
        futures::future::join_all(adds).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert_eq!(*hooks(&id).log.lock().unwrap(), vec![1, 2, 3, 4, 5]);
    assert_eq!(totals, vec![101, 103, 106, 110, 115]);
    h.node.shutdown().await;
}

#[tokio::test]
async fn a_full_mailbox_answers_overloaded_at_once() {
    let h = Harness::new(TypeOptions::default().mailbox_capacity(2));
    let id = unique("full");
    let probe = h.client().get::<Probe>(id.clone());
    let blocked = tokio::spawn({
        let probe = probe.clone();
        async move { probe.raw().call::<Num, Num>("Wait", Num::default()).await }
    });
    settle().await;
    let queued: Vec<_> = (0..2)
        .map(|v| {
            let probe = probe.clone();
            tokio::spawn(async move { probe.add(v).await })
        })
        .collect();
    settle().await;
    assert!(matches!(probe.add(9).await, Err(CallError::Overloaded { .. })));
    hooks(&id).gate.notify_one();
    blocked.await.unwrap().unwrap();
    for q in queued {
        q.await.unwrap().unwrap();
    }
    h.node.shutdown().await;
}

#[tokio::test]
async fn deadlines_expire_queued_calls_without_running_them_and_never_cancel_a_running_turn() {
    let h = Harness::new(TypeOptions::default());
    let id = unique("deadline");
    let client = h.client().with_timeout(Duration::from_secs(2));
    let probe = client.get::<Probe>(id.clone());
    let running = tokio::spawn({
        let probe = probe.clone();
        async move { probe.raw().call::<Num, Num>("Wait", Num { value: 1, route: String::new() }).await }
    });
    settle().await;
    let queued = tokio::spawn({
        let probe = probe.clone();
        async move { probe.add(50).await }
    });
    settle().await;
    h.advance(Duration::from_millis(2_100)).await;
    assert!(matches!(running.await.unwrap(), Err(CallError::DeadlineExceeded { .. })));
    assert!(matches!(queued.await.unwrap(), Err(CallError::DeadlineExceeded { .. })));
    // The running turn was not cancelled: it completes once released, the queued one never ran.
    hooks(&id).gate.notify_one();
    settle().await;
    assert_eq!(h.client().get::<Probe>(id.clone()).add(0).await.unwrap(), 1);
    assert!(hooks(&id).log.lock().unwrap().iter().all(|v| *v != 50));
    h.node.shutdown().await;
}

#[tokio::test]
async fn an_overlong_turn_poisons_the_activation_and_the_next_call_reloads_the_last_save() {
    let options = TypeOptions::default()
        .max_turn_duration(Duration::from_secs(1))
        .persistence(PersistencePolicy::WriteThrough);
    let h = Harness::new(options);
    let id = unique("poison");
    let probe = h.client().get::<Probe>(id.clone());
    assert_eq!(probe.add(5).await.unwrap(), 5);
    let stuck = tokio::spawn({
        let probe = probe.clone();
        async move {
            probe.raw().call::<Num, Num>("Wait", Num { value: 1000, route: String::new() }).await
        }
    });
    settle().await;
    let queued = tokio::spawn({
        let probe = probe.clone();
        async move { probe.add(1).await }
    });
    settle().await;
    h.advance(Duration::from_millis(1_100)).await;
    assert!(matches!(stuck.await.unwrap(), Err(CallError::OutcomeUnknown { .. })));
    // The queued call was handed back unstarted and re-routed to a fresh activation that
    // restored the last save (5), not the poisoned turn's unsaved 1005.
    assert_eq!(queued.await.unwrap().unwrap(), 6);
    assert_eq!(hooks(&id).activations.load(Ordering::SeqCst), 2);
    h.node.shutdown().await;
}

#[tokio::test]
async fn call_cycles_fail_at_once_with_the_chain() {
    let h = Harness::new(TypeOptions::default());
    let (a, b) = (unique("cycle-a"), unique("cycle-b"));
    let probe = h.client().get::<Probe>(a.clone());
    // a routes to b, b routes back to a: a is waiting on b, so b's call to a is a cycle.
    let route = format!("{b},{a}");
    let error = probe.raw().call::<Num, Num>("Route", Num { value: 1, route }).await.unwrap_err();
    assert_eq!(error, CallError::Cycle { chain: vec![a.clone(), b.clone(), a.clone()] });
    // a -> b -> c works.
    let c = unique("cycle-c");
    let ok: Num =
        probe.raw().call("Route", Num { value: 3, route: format!("{b},{c}") }).await.unwrap();
    assert_eq!(ok.value, 3);
    h.node.shutdown().await;
}

#[tokio::test]
async fn chains_deeper_than_the_limit_fail() {
    let h = Harness::new(TypeOptions::default());
    let ids: Vec<String> = (0..70).map(|i| unique(&format!("deep{i}"))).collect();
    let route = ids[1..].join(",");
    let probe = h.client().get::<Probe>(ids[0].clone());
    let error = probe.raw().call::<Num, Num>("Route", Num { value: 1, route }).await.unwrap_err();
    assert_eq!(error, CallError::ChainTooDeep { limit: crate::context::MAX_CHAIN_DEPTH });
    h.node.shutdown().await;
}

#[tokio::test]
async fn idle_activations_deactivate_and_save() {
    let options = TypeOptions::default().idle_timeout(Some(Duration::from_secs(10)));
    let h = Harness::new(options);
    let id = unique("idle");
    let probe = h.client().get::<Probe>(id.clone());
    probe.add(7).await.unwrap();
    assert!(h.node.is_active(&id));
    h.advance(Duration::from_secs(5)).await;
    assert!(h.node.is_active(&id));
    probe.add(1).await.unwrap();
    h.advance(Duration::from_secs(9)).await;
    assert!(h.node.is_active(&id), "activity restarts the idle period");
    h.advance(Duration::from_secs(2)).await;
    assert!(!h.node.is_active(&id));
    assert_eq!(hooks(&id).deactivations.load(Ordering::SeqCst), 1);
    let stored = h.store.load(&id).await.unwrap().unwrap();
    assert_eq!(stored.object_type, "Probe");
    assert_eq!(probe.add(0).await.unwrap(), 8, "reactivation restores the saved state");
    h.node.shutdown().await;
}

#[tokio::test]
async fn create_delete_and_type_identity() {
    let h = Harness::new(TypeOptions::default().persistence(PersistencePolicy::WriteThrough));
    let client = h.client();
    let id = unique("life");
    client.create("Probe", &id).await.unwrap();
    client.create("Probe", &id).await.unwrap();
    assert_eq!(
        client.create("Other", &id).await,
        Err(CallError::TypeMismatch { id: id.clone(), actual: "Probe".into() })
    );
    client.get::<Probe>(id.clone()).add(3).await.unwrap();
    assert_eq!(
        client.delete("Other", &id).await,
        Err(CallError::TypeMismatch { id: id.clone(), actual: "Probe".into() })
    );
    client.delete("Probe", &id).await.unwrap();
    assert!(!h.node.is_active(&id));
    let tomb = h.store.load(&id).await.unwrap().unwrap();
    assert!(tomb.is_tombstone());
    // Deleting an absent object succeeds; the next activation starts fresh above the tombstone.
    client.delete("Probe", &id).await.unwrap();
    client.delete("Probe", &unique("never")).await.unwrap();
    assert_eq!(client.get::<Probe>(id.clone()).add(1).await.unwrap(), 1);
    assert!(h.store.load(&id).await.unwrap().unwrap().version > tomb.version);
    // Stored identity survives deactivation: another type cannot take the id.
    h.node.shutdown().await;
    let node = Harness::node(&h.clock, &h.store, TypeOptions::default());
    let error = node.client().create("Other", &id).await;
    assert_eq!(error, Ok(()), "Other has no state, so it cannot see the stored record");
    node.shutdown().await;
}

#[tokio::test]
async fn unknown_types_and_methods_are_named_in_errors() {
    let h = Harness::new(TypeOptions::default());
    let client = h.client();
    let encoded = EncodedMessage::pack(&Num::default());
    assert_eq!(
        client.call_encoded("Nope", "x", "Add", encoded.clone()).await,
        Err(CallError::UnknownType { object_type: "Nope".into() })
    );
    assert_eq!(
        client.call_encoded("Probe", "x", "Nope", encoded).await,
        Err(CallError::UnknownMethod { object_type: "Probe".into(), method: "Nope".into() })
    );
    let wrong = EncodedMessage::pack(&Tick { sequence: 1 });
    assert!(matches!(
        client.call_encoded("Probe", "x", "Add", wrong).await,
        Err(CallError::InvalidArgument { .. })
    ));
    assert!(matches!(
        client.call_encoded("Probe", "", "Add", EncodedMessage::default()).await,
        Err(CallError::InvalidObjectId(_))
    ));
    assert!(matches!(
        client
            .call_encoded("Probe", "elsewhere/x", "Add", EncodedMessage::pack(&Num::default()))
            .await,
        Err(CallError::NodeNotFound { .. })
    ));
    h.node.shutdown().await;
}

#[tokio::test]
async fn after_create_types_refuse_calls_to_objects_never_created() {
    let h = Harness::new(
        TypeOptions::default()
            .activation(ActivationPolicy::AfterCreate)
            .persistence(PersistencePolicy::WriteThrough),
    );
    let client = h.client();
    let id = unique("strict");
    assert_eq!(
        client.get::<Probe>(id.clone()).add(1).await,
        Err(CallError::ObjectNotFound { object_type: "Probe".into(), id: id.clone() })
    );
    client.create("Probe", &id).await.unwrap();
    assert_eq!(client.get::<Probe>(id.clone()).add(1).await, Ok(1));
    // Existence survives a restart because create stored the object.
    h.node.shutdown().await;
    let node = Harness::node(
        &h.clock,
        &h.store,
        TypeOptions::default().activation(ActivationPolicy::AfterCreate),
    );
    assert_eq!(node.client().get::<Probe>(id.clone()).add(1).await, Ok(2));
    node.shutdown().await;
}

#[tokio::test]
async fn timers_tick_as_turns_and_owned_work_is_cancelled_before_the_save() {
    let h = Harness::new(TypeOptions::default().idle_timeout(Some(Duration::from_secs(30))));
    let id = unique("timer");
    let probe = h.client().get::<Probe>(id.clone());
    let _: Num =
        probe.raw().call("StartTimer", Num { value: 1000, route: String::new() }).await.unwrap();
    let _: Num = probe.raw().call("Spawn", Num::default()).await.unwrap();
    for _ in 0..3 {
        h.advance(Duration::from_millis(1000)).await;
    }
    assert_eq!(hooks(&id).ticks.load(Ordering::SeqCst), 3);
    assert!(!hooks(&id).task_dropped.load(Ordering::SeqCst));
    // Ticks do not count as activity: the object idles out 30 s after its last call.
    for _ in 0..28 {
        h.advance(Duration::from_millis(1000)).await;
    }
    assert!(!h.node.is_active(&id));
    assert!(hooks(&id).task_dropped.load(Ordering::SeqCst), "owned task cancelled");
    let ticks = hooks(&id).ticks.load(Ordering::SeqCst);
    h.advance(Duration::from_secs(5)).await;
    assert_eq!(hooks(&id).ticks.load(Ordering::SeqCst), ticks, "timer ended with the activation");
    h.node.shutdown().await;
}

#[tokio::test]
async fn shutdown_saves_every_activation() {
    let h = Harness::new(TypeOptions::default());
    let ids: Vec<String> = (0..20).map(|i| unique(&format!("save{i}"))).collect();
    for (i, id) in ids.iter().enumerate() {
        h.client().get::<Probe>(id.clone()).add(i as i64 + 1).await.unwrap();
    }
    assert_eq!(h.node.activation_count(), 20);
    h.node.shutdown().await;
    for (i, id) in ids.iter().enumerate() {
        let stored = h.store.load(id).await.unwrap().unwrap();
        let state: Num = prost::Message::decode(stored.state.unwrap()).unwrap();
        assert_eq!(state.value, i as i64 + 1);
    }
    assert!(matches!(
        h.client().get::<Probe>(ids[0].clone()).add(1).await,
        Err(CallError::ShuttingDown)
    ));
}

#[tokio::test]
async fn state_is_saved_only_when_it_changed() {
    let h = Harness::new(TypeOptions::default().persistence(PersistencePolicy::WriteThrough));
    let id = unique("changed");
    let probe = h.client().get::<Probe>(id.clone());
    probe.add(2).await.unwrap();
    let v1 = h.store.load(&id).await.unwrap().unwrap().version;
    probe.add(0).await.unwrap();
    probe.add(0).await.unwrap();
    assert_eq!(h.store.load(&id).await.unwrap().unwrap().version, v1);
    probe.add(1).await.unwrap();
    assert_eq!(h.store.load(&id).await.unwrap().unwrap().version, v1 + 1);
    h.node.shutdown().await;
}

#[tokio::test]
async fn wheel_entries_stay_bounded_under_many_calls() {
    let h = Harness::new(TypeOptions::default());
    let probe = h.client().get::<Probe>(unique("wheel"));
    for _ in 0..1000 {
        probe.add(1).await.unwrap();
    }
    // One entry for the first deadline (later deadlines are covered by it) plus the idle check.
    assert!(h.node.wheel_entries() <= 3, "wheel has {} entries", h.node.wheel_entries());
    h.node.shutdown().await;
}

/// A store whose saves can be held until released, to observe what happens while a save is
/// in flight.
#[derive(Debug, Clone)]
struct GatedStore {
    inner: MemoryStore,
    hold: Arc<std::sync::atomic::AtomicBool>,
    released: Arc<Notify>,
    saves_started: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl StateStore for GatedStore {
    async fn fence(
        &self,
        key: &crate::store::FenceKey,
        epoch: crate::epoch::Epoch,
    ) -> Result<crate::epoch::Epoch, crate::store::StoreError> {
        self.inner.fence(key, epoch).await
    }
    async fn current_fence(
        &self,
        key: &crate::store::FenceKey,
    ) -> Result<crate::epoch::Epoch, crate::store::StoreError> {
        self.inner.current_fence(key).await
    }
    async fn load(
        &self,
        id: &str,
    ) -> Result<Option<crate::store::StoredObject>, crate::store::StoreError> {
        self.inner.load(id).await
    }
    async fn save(&self, req: crate::store::SaveRequest) -> Result<(), crate::store::StoreError> {
        self.saves_started.fetch_add(1, Ordering::SeqCst);
        if self.hold.load(Ordering::SeqCst) {
            self.released.notified().await;
        }
        self.inner.save(req).await
    }
    async fn delete(
        &self,
        req: crate::store::DeleteRequest,
    ) -> Result<(), crate::store::StoreError> {
        self.inner.delete(req).await
    }
    async fn purge_tombstones(&self) -> Result<usize, crate::store::StoreError> {
        self.inner.purge_tombstones().await
    }
    fn is_node_local(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_call_during_deactivation_waits_for_the_save_then_reactivates() {
    let clock = ManualClock::starting_at(MonoTime::from_nanos(1_000_000_000));
    let store = GatedStore {
        inner: MemoryStore::new(clock.shared(), Duration::from_secs(3600), true),
        hold: Arc::default(),
        released: Arc::default(),
        saves_started: Arc::default(),
    };
    let node = NodeBuilder::new(NodeConfig { shard_count: 64, ..NodeConfig::default() })
        .clock(clock.shared())
        .store(Arc::new(store.clone()))
        .object_with::<Probe>(TypeOptions::default().idle_timeout(Some(Duration::from_secs(5))))
        .start()
        .unwrap();
    let id = unique("deactivating");
    let probe = node.client().get::<Probe>(id.clone());
    assert_eq!(probe.add(4).await.unwrap(), 4);
    store.hold.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(6));
    settle().await;
    assert_eq!(store.saves_started.load(Ordering::SeqCst), 1, "idle deactivation is saving");
    assert!(node.is_active(&id), "the slot stays until the save commits");
    let waiting = tokio::spawn({
        let probe = probe.clone();
        async move { probe.add(1).await }
    });
    settle().await;
    assert!(!waiting.is_finished(), "a call during Deactivating waits");
    assert_eq!(
        hooks(&id).activations.load(Ordering::SeqCst),
        1,
        "no new activation before the save"
    );
    store.hold.store(false, Ordering::SeqCst);
    store.released.notify_one();
    assert_eq!(waiting.await.unwrap().unwrap(), 5, "reactivated from the committed save");
    assert_eq!(hooks(&id).activations.load(Ordering::SeqCst), 2);
    node.shutdown().await;
}

#[tokio::test]
async fn periodic_persistence_saves_changed_state_every_period() {
    let h = Harness::new(
        TypeOptions::default().persistence(PersistencePolicy::Periodic(Duration::from_secs(10))),
    );
    let id = unique("periodic");
    let probe = h.client().get::<Probe>(id.clone());
    probe.add(3).await.unwrap();
    assert!(h.store.load(&id).await.unwrap().is_none(), "nothing saved before the period");
    h.advance(Duration::from_secs(11)).await;
    let first = h.store.load(&id).await.unwrap().expect("saved after one period");
    probe.add(2).await.unwrap();
    h.advance(Duration::from_secs(10)).await;
    let second = h.store.load(&id).await.unwrap().unwrap();
    assert_eq!(second.version, first.version + 1);
    h.advance(Duration::from_secs(10)).await;
    assert_eq!(
        h.store.load(&id).await.unwrap().unwrap().version,
        second.version,
        "unchanged state is not saved again"
    );
    h.node.shutdown().await;
}

#[tokio::test]
async fn write_through_commits_before_the_response() {
    let h = Harness::new(TypeOptions::default().persistence(PersistencePolicy::WriteThrough));
    let id = unique("wt");
    let probe = h.client().get::<Probe>(id.clone());
    for expected in 1..=5 {
        assert_eq!(probe.add(1).await.unwrap(), expected);
        let stored = h.store.load(&id).await.unwrap().unwrap();
        let state: Num = prost::Message::decode(stored.state.unwrap()).unwrap();
        assert_eq!(state.value, expected, "acknowledged means stored");
    }
    h.node.shutdown().await;
}

#[test]
fn call_context_is_sync() {
    fn assert_sync<T: Sync>() {}
    assert_sync::<CallContext>();
}

#[tokio::test]
async fn incoming_calls_carry_deadline_and_chain() {
    use crate::runtime::IncomingCall;
    let h = Harness::new(TypeOptions::default());
    let id = unique("incoming");
    let call = |chain: Vec<(String, u32)>, remaining: Duration| IncomingCall {
        object_type: "Probe".into(),
        id: id.clone(),
        method: "Add".into(),
        request: EncodedMessage::pack(&Num { value: 2, route: String::new() }),
        remaining,
        chain,
        identity: None,
        one_way: false,
    };
    let reply = h
        .node
        .serve_incoming(call(vec![("caller".into(), 1)], Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(reply.unpack::<Num>().unwrap().value, 2);
    // The object itself waiting up the remote chain: a cycle, refused at once.
    let error = h
        .node
        .serve_incoming(call(vec![(id.clone(), 3), ("x".into(), 4)], Duration::from_secs(5)))
        .await;
    assert_eq!(error, Err(CallError::Cycle { chain: vec![id.clone(), "x".into(), id.clone()] }));
    // No time left: the call never runs.
    let expired = h.node.serve_incoming(call(Vec::new(), Duration::ZERO)).await;
    assert!(matches!(expired, Err(CallError::DeadlineExceeded { .. })));
    h.node.shutdown().await;
}

/// The router's cluster side on the `mockall` coordinator and a scripted transport.
mod routing {
    use std::collections::VecDeque;

    use async_trait::async_trait;

    use super::*;
    use crate::clock::SystemClock;
    use crate::cluster::routes::Routes;
    use crate::coordinator::{
        ClusterConfig, ClusterSnapshot, ClusterView, MemberFlags, MemberRecord, MemberRole,
        MockCoordinator, Revision,
    };
    use crate::epoch::Epoch;
    use crate::runtime::IncomingCall;
    use crate::shardmap::{Incarnation, OwnerRecord, ShardEntry, ShardMap, TargetRecord};
    use crate::transport::{RemoteCall, Transport};

    /// Answers calls from a script and records the peers called.
    #[derive(Default)]
    struct ScriptedTransport {
        answers: Mutex<VecDeque<Result<EncodedMessage, CallError>>>,
        peers: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Transport for ScriptedTransport {
        async fn call(&self, peer: &str, _call: RemoteCall) -> Result<EncodedMessage, CallError> {
            self.peers.lock().unwrap().push(peer.to_owned());
            self.answers.lock().unwrap().pop_front().unwrap_or(Err(CallError::ShuttingDown))
        }
        async fn create(&self, peer: &str, _: &str, _: &str, _: MonoTime) -> Result<(), CallError> {
            self.peers.lock().unwrap().push(peer.to_owned());
            Ok(())
        }
        async fn delete(&self, peer: &str, _: &str, _: &str, _: MonoTime) -> Result<(), CallError> {
            self.peers.lock().unwrap().push(peer.to_owned());
            Ok(())
        }
    }

    fn member(id: &str) -> MemberRecord {
        MemberRecord {
            id: id.into(),
            incarnation: Incarnation(1),
            addresses: vec![format!("{id}:1")],
            role: MemberRole::Node,
            version: String::new(),
            start_time_unix_ms: 0,
            flags: MemberFlags::default(),
            node_local_store: false,
        }
    }

    fn owned_by(shard: crate::shard::ShardId, node: &str) -> ShardEntry {
        ShardEntry {
            shard,
            target: Some(TargetRecord::planned(node)),
            owner: Some(OwnerRecord {
                node: node.into(),
                incarnation: Incarnation(1),
                epoch: Epoch::new(1, 2),
                released: false,
            }),
        }
    }

    /// A clustered node that serves nothing, with every shard owned by `b` in its view.
    fn clustered(
        coordinator: MockCoordinator,
        transport: Arc<ScriptedTransport>,
    ) -> (Node, Arc<Routes>) {
        let clock = SystemClock::shared();
        let store = MemoryStore::new(clock.clone(), Duration::from_secs(3600), false);
        let node = NodeBuilder::new(NodeConfig { shard_count: 64, ..NodeConfig::default() })
            .clustered()
            .clock(clock)
            .store(Arc::new(store))
            .object::<Probe>()
            .start()
            .unwrap();
        let mut map = ShardMap::new(64);
        for shard in 0..64 {
            let entry = owned_by(crate::shard::ShardId(shard), "b");
            map.set_target(entry.shard, entry.target);
            map.set_owner(entry.shard, entry.owner);
        }
        let view = ClusterView::new(ClusterSnapshot {
            revision: Revision(1),
            config: ClusterConfig { shard_count: 64, generation: 1 },
            members: ["a", "b", "c"].iter().map(|m| (MemberId::from(*m), member(m))).collect(),
            leader: None,
            map,
            pins: Default::default(),
        });
        let routes = Arc::new(Routes::new("node-1".into(), transport, Arc::new(coordinator)));
        routes.publish(Arc::new(view));
        node.shared().cluster.set(routes.clone()).unwrap();
        (node, routes)
    }

    use crate::shardmap::MemberId;

    fn answer(value: i64) -> EncodedMessage {
        EncodedMessage::pack(&Num { value, route: "remote".into() })
    }

    #[tokio::test]
    async fn calls_go_to_the_owner_and_after_refusals_to_the_re_read_owner() {
        let transport = Arc::new(ScriptedTransport::default());
        transport.answers.lock().unwrap().extend([
            Err(CallError::NotServed { shard: 0, epoch: None, hint: None }),
            Err(CallError::NotDelivered { peer: "b:1".into(), reason: "refused".into() }),
            Ok(answer(42)),
        ]);
        let mut coordinator = MockCoordinator::new();
        coordinator.expect_read_entry().times(1).returning(|shard| Ok(owned_by(shard, "c")));
        let (node, _routes) = clustered(coordinator, transport.clone());
        let value = node.client().get::<Probe>("x").add(1).await.unwrap();
        assert_eq!(value, 42);
        assert_eq!(*transport.peers.lock().unwrap(), ["b:1", "b:1", "c:1"]);
        assert!(!node.is_active("x"), "nothing runs on a node that does not own the shard");
        node.shutdown().await;
    }

    #[tokio::test]
    async fn a_call_that_may_have_run_is_not_resent() {
        let transport = Arc::new(ScriptedTransport::default());
        let unknown = CallError::OutcomeUnknown { id: "x".into(), reason: "reset".into() };
        transport.answers.lock().unwrap().extend([Err(unknown.clone()), Ok(answer(1))]);
        let (node, _routes) = clustered(MockCoordinator::new(), transport.clone());
        let result = node.client().get::<Probe>("x").add(1).await;
        assert_eq!(result, Err(unknown));
        assert_eq!(transport.peers.lock().unwrap().len(), 1);
        node.shutdown().await;
    }

    #[tokio::test]
    async fn incoming_calls_bounce_with_a_hint_instead_of_hopping_again() {
        let transport = Arc::new(ScriptedTransport::default());
        let (node, _routes) = clustered(MockCoordinator::new(), transport.clone());
        let call = IncomingCall {
            object_type: "Probe".into(),
            id: "x".into(),
            method: "Add".into(),
            request: answer(1),
            remaining: Duration::from_secs(5),
            chain: Vec::new(),
            identity: None,
            one_way: false,
        };
        let result = node.serve_incoming(call).await;
        assert!(
            matches!(&result, Err(CallError::NotServed { hint: Some(hint), .. }) if hint == "b"),
            "{result:?}"
        );
        assert!(transport.peers.lock().unwrap().is_empty());
        // Create and delete are idempotent and routed the same way.
        node.client().create("Probe", "y").await.unwrap();
        assert_eq!(*transport.peers.lock().unwrap(), ["b:1"]);
        node.shutdown().await;
    }

    #[tokio::test]
    async fn a_target_holds_calls_until_it_serves() {
        let transport = Arc::new(ScriptedTransport::default());
        let (node, routes) = clustered(MockCoordinator::new(), transport.clone());
        // The view now names this node target of every shard: calls wait here.
        let mut map = ShardMap::new(64);
        for shard in 0..64 {
            map.set_target(crate::shard::ShardId(shard), Some(TargetRecord::planned("node-1")));
        }
        routes.publish(Arc::new(ClusterView::new(ClusterSnapshot {
            revision: Revision(2),
            config: ClusterConfig { shard_count: 64, generation: 1 },
            members: ["node-1"].iter().map(|m| (MemberId::from(*m), member(m))).collect(),
            leader: None,
            map,
            pins: Default::default(),
        })));
        let client = node.client();
        let held = tokio::spawn(async move { client.get::<Probe>("x").add(5).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!held.is_finished(), "the call is held, not bounced");
        let shared = node.shared();
        let shard = crate::runtime::shard_of(&node, "x").unwrap();
        shared.ownership.set_lease_valid_until(shared.clock.now() + Duration::from_secs(60));
        shared.ownership.serve(shard, Epoch::new(1, 3));
        routes.bump();
        assert_eq!(held.await.unwrap(), Ok(5));
        assert!(transport.peers.lock().unwrap().is_empty());
        node.shutdown().await;
    }

    #[tokio::test]
    async fn objects_pinned_to_another_node_go_to_that_node_only() {
        let transport = Arc::new(ScriptedTransport::default());
        transport.answers.lock().unwrap().push_back(Ok(answer(9)));
        let (node, _routes) = clustered(MockCoordinator::new(), transport.clone());
        // A call from here goes to node c, whatever owns the id's hash shard (b).
        assert_eq!(node.client().get::<Probe>("c/pinned").add(1).await, Ok(9));
        assert_eq!(*transport.peers.lock().unwrap(), ["c:1"]);
        assert!(!node.is_active("c/pinned"));
        // Arriving here from elsewhere, it bounces with c as the hint.
        let incoming = |id: &str| IncomingCall {
            object_type: "Probe".into(),
            id: id.into(),
            method: "Add".into(),
            request: answer(1),
            remaining: Duration::from_secs(5),
            chain: Vec::new(),
            identity: None,
            one_way: false,
        };
        let bounced = node.serve_incoming(incoming("c/pinned")).await;
        assert!(
            matches!(&bounced, Err(CallError::NotServed { hint: Some(h), .. }) if h == "c"),
            "{bounced:?}"
        );
        // A node that is not a live member: NodeNotFound, nothing sent.
        let absent = node.client().get::<Probe>("gone/pinned").add(1).await;
        assert_eq!(absent, Err(CallError::NodeNotFound { node: "gone".into() }));
        let absent = node.serve_incoming(incoming("gone/pinned")).await;
        assert_eq!(absent, Err(CallError::NodeNotFound { node: "gone".into() }));
        assert_eq!(transport.peers.lock().unwrap().len(), 1);
        node.shutdown().await;
    }

    #[tokio::test]
    async fn types_unknown_here_route_by_the_view() {
        let transport = Arc::new(ScriptedTransport::default());
        transport.answers.lock().unwrap().push_back(Ok(answer(5)));
        let (node, _routes) = clustered(MockCoordinator::new(), transport.clone());
        let client = node.client();
        let request = EncodedMessage::pack(&Num::default());
        let reply = client.call_encoded("Elsewhere", "e-1", "Get", request.clone()).await;
        assert_eq!(reply, Ok(answer(5)));
        assert_eq!(*transport.peers.lock().unwrap(), ["b:1"]);
        client.create("Elsewhere", "e-2").await.unwrap();
        client.delete("Elsewhere", "e-2").await.unwrap();
        assert_eq!(transport.peers.lock().unwrap().len(), 3);
        // Arriving from elsewhere: bounced towards the owner, never forwarded again.
        let call = IncomingCall {
            object_type: "Elsewhere".into(),
            id: "e-1".into(),
            method: "Get".into(),
            request: request.clone(),
            remaining: Duration::from_secs(5),
            chain: Vec::new(),
            identity: None,
            one_way: false,
        };
        let bounced = node.serve_incoming(call).await;
        assert!(
            matches!(&bounced, Err(CallError::NotServed { hint: Some(h), .. }) if h == "b"),
            "{bounced:?}"
        );
        // Where this node serves the id itself, the type is unknown.
        let shared = node.shared();
        let shard = crate::runtime::shard_of(&node, "e-1").unwrap();
        shared.ownership.set_lease_valid_until(shared.clock.now() + Duration::from_secs(60));
        shared.ownership.serve(shard, Epoch::new(1, 3));
        let unknown = client.call_encoded("Elsewhere", "e-1", "Get", request).await;
        assert_eq!(unknown, Err(CallError::UnknownType { object_type: "Elsewhere".into() }));
        assert_eq!(transport.peers.lock().unwrap().len(), 3);
        node.shutdown().await;
    }

    /// Waits for `done` (a liveness bound of 10 s).
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        for _ in 0..2000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{what} did not happen within 10 s");
    }

    #[tokio::test]
    async fn a_shard_being_handed_off_admits_calls_whose_chain_runs_a_turn_of_it() {
        use crate::store::FenceKey;
        let transport = Arc::new(ScriptedTransport::default());
        let (node, _routes) = clustered(MockCoordinator::new(), transport.clone());
        let shared = node.shared().clone();
        let x = unique("leaving-x");
        let shard_of = |id: &str| crate::runtime::shard_of(&node, id).unwrap();
        let shard_x = shard_of(&x);
        let same: Vec<String> = (0..).map(|i| format!("{x}-{i}")).take(2000).collect();
        let y = same.iter().find(|id| shard_of(id) == shard_x).unwrap().clone();
        let z = same.iter().filter(|id| shard_of(id) == shard_x).nth(1).unwrap().clone();
        let w = same.iter().find(|id| shard_of(id) != shard_x).unwrap().clone();
        shared.ownership.set_lease_valid_until(shared.clock.now() + Duration::from_secs(60));
        // The store fences are raised first, as the shard driver does before serving.
        shared.store.fence(&FenceKey::Shard(shard_x), Epoch::new(1, 3)).await.unwrap();
        shared.store.fence(&FenceKey::Shard(shard_of(&w)), Epoch::new(1, 4)).await.unwrap();
        shared.ownership.serve(shard_x, Epoch::new(1, 3));
        shared.ownership.serve(shard_of(&w), Epoch::new(1, 4));
        assert_ne!(shard_of(&z), shard_of(&w));
        let client = node.client();
        // w (another shard) is busy in a gated turn; x's turn calls w, which calls y (x's
        // shard): the chain y sees is [x, w].
        let busy = {
            let (client, w) = (client.clone(), w.clone());
            tokio::spawn(async move {
                let req = Num { value: 0, route: String::new() };
                client.get::<Probe>(w).raw().call::<Num, Num>("Wait", req).await
            })
        };
        eventually("w running", || node.is_active(&w)).await;
        let nested = {
            let (client, x, route) = (client.clone(), x.clone(), format!("{w},{y}"));
            tokio::spawn(async move {
                let req = Num { value: 7, route };
                client.get::<Probe>(x).raw().call::<Num, Num>("Route", req).await
            })
        };
        let shard_w = shard_of(&w);
        let w_has_queued = || {
            let table = shared.table(shard_w.0);
            table.get(w.as_str()).is_some_and(|slot| !slot.0.is_empty())
        };
        eventually("x's call queued behind w's running turn", w_has_queued).await;
        // The handoff of x's shard starts while x's turn waits for w.
        let handoff = {
            let shared = shared.clone();
            tokio::spawn(
                async move { shared.hand_off_shard(shard_x, Duration::from_secs(30)).await },
            )
        };
        let key = FenceKey::Shard(shard_x);
        eventually("the shard leaving", || shared.ownership.check(&key, &*shared.clock).is_err())
            .await;
        // A call from another chain is refused here and routed away (to b, which the
        // scripted transport answers with an error): z is not activated.
        let refused = client.clone().with_timeout(Duration::from_millis(300)).get::<Probe>(&z);
        assert!(refused.add(1).await.is_err());
        assert!(!transport.peers.lock().unwrap().is_empty());
        assert!(!node.is_active(&z));
        // w goes on: its nested call into the leaving shard is admitted (y activates and
        // runs), x's turn finishes, and only then does the handoff finish.
        hooks(&w).gate.notify_one();
        let answer = tokio::time::timeout(Duration::from_secs(10), nested).await;
        assert_eq!(answer.unwrap().unwrap().unwrap().value, 7);
        assert_eq!(*hooks(&y).log.lock().unwrap(), [7]);
        let handed_off = tokio::time::timeout(Duration::from_secs(10), handoff).await;
        assert!(handed_off.unwrap().unwrap(), "every save succeeded");
        assert!(!node.is_active(&x) && !node.is_active(&y));
        // y's state was saved at the leaving epoch before the shard was released.
        let stored = shared.store.load(&y).await.unwrap().unwrap();
        assert_eq!(stored.version, 1);
        // Once handed off, even a chain through the shard is refused.
        let chain = crate::context::CallChain::push(None, Arc::from(x.as_str()), shard_x.0);
        let refused = shared.ownership.check_for_chain(&key, &*shared.clock, Some(&*chain));
        assert!(refused.is_err());
        busy.abort();
        node.shutdown().await;
    }

    /// The shared state of a scripted coordinator: registrations hand out incarnations 1, 2,
    /// …; claims succeed at the next epoch and show up in later snapshots.
    #[derive(Default)]
    struct Scripted {
        incarnation: u64,
        epoch: u64,
        map: Option<ShardMap>,
        claims: Vec<(u32, Option<u64>, Epoch)>,
    }

    #[tokio::test]
    async fn a_lost_lease_discards_everything_and_a_new_incarnation_claims_again() {
        use crate::cluster::{ClusterNode, ClusterOptions};
        use crate::coordinator::{
            ClaimOutcome, CoordError, LeaseState, LeaseStatus, MemberRegistration,
        };
        use futures::StreamExt;

        let script = Arc::new(Mutex::new(Scripted::default()));
        let clock = SystemClock::shared();
        let (lease_tx, lease_rx) = tokio::sync::watch::channel(LeaseStatus::UNREGISTERED);
        let lease_tx = Arc::new(lease_tx);
        let proven = {
            let clock = clock.clone();
            move |incarnation: u64| LeaseStatus {
                incarnation: Some(Incarnation(incarnation)),
                state: LeaseState::Proven,
                valid_until: clock.now() + Duration::from_secs(3600),
                granted_ttl: Duration::from_secs(10),
            }
        };
        let mut coordinator = MockCoordinator::new();
        coordinator
            .expect_join_cluster()
            .returning(|count| Ok(ClusterConfig { shard_count: count, generation: 1 }));
        {
            let (script, lease_tx, proven) = (script.clone(), lease_tx.clone(), proven.clone());
            coordinator.expect_register().returning(move |r: MemberRegistration| {
                let mut script = script.lock().unwrap();
                script.incarnation += 1;
                lease_tx.send_replace(proven(script.incarnation));
                let mut record = member(r.id.as_str());
                record.incarnation = Incarnation(script.incarnation);
                Ok(record)
            });
        }
        coordinator.expect_lease_status().returning(move || lease_rx.clone());
        {
            let script = script.clone();
            coordinator.expect_snapshot().returning(move || {
                let mut script = script.lock().unwrap();
                let incarnation = script.incarnation;
                let map = script.map.get_or_insert_with(|| {
                    let mut map = ShardMap::new(64);
                    for shard in 0..64 {
                        let target = Some(TargetRecord::planned("node-1"));
                        map.set_target(crate::shard::ShardId(shard), target);
                    }
                    map
                });
                let mut me = member("node-1");
                me.incarnation = Incarnation(incarnation);
                Ok(ClusterSnapshot {
                    revision: Revision(1),
                    config: ClusterConfig { shard_count: 64, generation: 1 },
                    members: [(me.id.clone(), me)].into_iter().collect(),
                    leader: None,
                    map: map.clone(),
                    pins: Default::default(),
                })
            });
        }
        coordinator.expect_watch().returning(|_| Ok(futures::stream::pending().boxed()));
        coordinator.expect_campaign().returning(|| Err(CoordError::NotRegistered));
        {
            let script = script.clone();
            coordinator.expect_claim().returning(move |claims| {
                let mut script = script.lock().unwrap();
                let incarnation = Incarnation(script.incarnation);
                let mut outcomes = Vec::new();
                for claim in claims {
                    script.epoch += 1;
                    let epoch = Epoch::new(1, script.epoch);
                    let owner =
                        OwnerRecord { node: "node-1".into(), incarnation, epoch, released: false };
                    let previous = claim.expected_owner.as_ref().map(|o| o.incarnation.0);
                    script.claims.push((claim.shard.0, previous, epoch));
                    if let Some(map) = script.map.as_mut() {
                        map.set_owner(claim.shard, Some(owner.clone()));
                    }
                    outcomes.push(ClaimOutcome { shard: claim.shard, result: Ok(owner) });
                }
                Ok(outcomes)
            });
        }
        coordinator.expect_deregister().returning(|| Ok(()));
        coordinator.expect_resign().returning(|_| Ok(()));

        let store = MemoryStore::new(clock.clone(), Duration::from_secs(3600), false);
        let node = Arc::new(
            NodeBuilder::new(NodeConfig { shard_count: 64, ..NodeConfig::default() })
                .clustered()
                .clock(clock.clone())
                .store(Arc::new(store))
                .object::<Probe>()
                .start()
                .unwrap(),
        );
        let mut options = ClusterOptions::new("node-1:1");
        options.reregister_interval = Duration::from_millis(10);
        let transport = Arc::new(ScriptedTransport::default());
        let cluster = ClusterNode::start(node.clone(), Arc::new(coordinator), transport, options)
            .await
            .unwrap();
        let settle = async |what: &str, done: &dyn Fn() -> bool| {
            for _ in 0..500 {
                if done() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("{what} did not happen");
        };
        settle("serving every shard", &|| cluster.owned_shards() == 64 && cluster.is_ready()).await;
        assert_eq!(cluster.me().incarnation, Incarnation(1));
        assert_eq!(node.client().get::<Probe>("x").add(3).await, Ok(3));
        assert!(node.is_active("x"));

        // The coordinator says the lease is gone: everything is discarded, then the node
        // registers again and claims every shard again, at a higher epoch.
        lease_tx.send_replace(LeaseStatus {
            state: LeaseState::Lost,
            valid_until: MonoTime::ZERO,
            ..proven(1)
        });
        settle("re-registering", &|| cluster.me().incarnation == Incarnation(2)).await;
        settle("serving again", &|| cluster.owned_shards() == 64 && cluster.is_ready()).await;
        assert!(!cluster.lease_lost());
        {
            let script = script.lock().unwrap();
            assert_eq!(script.claims.len(), 128, "every shard claimed once per incarnation");
            let again: Vec<_> = script.claims[64..].iter().collect();
            assert!(
                again.iter().all(|(_, previous, epoch)| *previous == Some(1) && epoch.counter > 64),
                "the new incarnation claims over its predecessor, epoch + 1"
            );
        }
        // The old activation was discarded unsaved: "x" starts again from nothing.
        assert_eq!(node.client().get::<Probe>("x").add(1).await, Ok(1));
        cluster.shutdown().await;
        node.shutdown().await;
    }
}

/// Records turn events as `(started, object id, epoch counter)`.
#[derive(Default)]
struct RecordingObserver {
    events: Mutex<Vec<(bool, String, u64)>>,
}

impl crate::runtime::observe::TurnObserver for RecordingObserver {
    fn turn_started(&self, turn: &crate::runtime::observe::TurnRecord<'_>) {
        assert_eq!(turn.object_type, "Probe");
        self.events.lock().unwrap().push((true, turn.object_id.to_owned(), turn.epoch.counter));
    }
    fn turn_finished(&self, turn: &crate::runtime::observe::TurnRecord<'_>) {
        self.events.lock().unwrap().push((false, turn.object_id.to_owned(), turn.epoch.counter));
    }
}

#[tokio::test]
async fn the_turn_observer_sees_every_turn_start_and_finish_in_pairs_poisoned_turns_included() {
    let clock = ManualClock::starting_at(MonoTime::from_nanos(1_000_000_000));
    let store = MemoryStore::new(clock.shared(), Duration::from_secs(3600), true);
    let observer = Arc::new(RecordingObserver::default());
    let options = TypeOptions::default()
        .max_turn_duration(Duration::from_secs(1))
        .persistence(PersistencePolicy::WriteThrough);
    let node = NodeBuilder::new(NodeConfig { shard_count: 64, ..NodeConfig::default() })
        .clock(clock.shared())
        .store(Arc::new(store.clone()))
        .object_with::<Probe>(options)
        .turn_observer(observer.clone())
        .start()
        .unwrap();
    let id = unique("observed");
    let probe = node.client().get::<Probe>(id.clone());
    assert_eq!(probe.add(2).await.unwrap(), 2);
    assert_eq!(probe.add(3).await.unwrap(), 5);
    let stuck = tokio::spawn({
        let probe = probe.clone();
        async move { probe.raw().call::<Num, Num>("Wait", Num { value: 1, route: String::new() }).await }
    });
    settle().await;
    {
        let events = observer.events.lock().unwrap();
        assert_eq!(events.len(), 5, "two finished turns and one running: {events:?}");
        assert!(events[4].0, "the running turn has started and not finished");
    }
    clock.advance(Duration::from_millis(1_100));
    settle().await;
    assert!(matches!(stuck.await.unwrap(), Err(CallError::OutcomeUnknown { .. })));
    let events = observer.events.lock().unwrap().clone();
    let starts: Vec<bool> = events.iter().map(|e| e.0).collect();
    assert_eq!(starts, vec![true, false, true, false, true, false]);
    assert!(events.iter().all(|(_, object, _)| *object == id));
    // A local node serves every shard at one epoch, the same for every turn.
    assert!(events.windows(2).all(|w| w[0].2 == w[1].2));
    node.shutdown().await;
}
