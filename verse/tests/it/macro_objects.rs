//! Objects declared with `#[verse::object]`, run on a real node: method tables, dispatch, hooks,
//! state, constructors, errors, nested and one-way calls, and the dynamic path.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use verse::clock::SystemClock;
use verse::prelude::*;
use verse::store::MemoryStore;
use verse::{EncodedMessage, MethodInfo, Object};

macro_rules! test_message_name {
    ($($message:ident),*) => {$(
        impl prost::Name for $message {
            const NAME: &'static str = stringify!($message);
            const PACKAGE: &'static str = "test";
        }
    )*};
}

#[derive(Clone, PartialEq, prost::Message)]
struct Amount {
    #[prost(int64, tag = "1")]
    value: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
struct Text {
    #[prost(string, tag = "1")]
    text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Flag {
    #[prost(bool, tag = "1")]
    set: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CounterState {
    #[prost(int64, tag = "1")]
    total: i64,
}

test_message_name!(Amount, Empty, Text, Flag, CounterState);

/// Persistent, with an activation hook, default and overridden wire names, several error types.
#[derive(Default)]
struct Counter {
    total: i64,
    activated: bool,
}

#[verse::object]
impl Counter {
    /// Adds to the total and returns it.
    async fn add(&mut self, _ctx: &CallContext, request: Amount) -> Result<Amount, MethodError> {
        self.total += request.value;
        Ok(Amount { value: self.total })
    }

    #[idempotent]
    async fn get_total(&mut self, _ctx: &CallContext, _request: Empty) -> Result<Amount, String> {
        Ok(Amount { value: self.total })
    }

    #[method(name = "Explode")]
    async fn fail(&mut self, _ctx: &CallContext, _request: Empty) -> Result<Empty, MethodError> {
        Err(MethodError::new(7, "boom"))
    }

    async fn was_activated(&mut self, _ctx: &CallContext, _: Empty) -> Result<Flag, CallError> {
        Ok(Flag { set: self.activated })
    }

    #[on_activate]
    async fn activate(&mut self, _ctx: &CallContext) -> Result<(), MethodError> {
        self.activated = true;
        Ok(())
    }

    #[snapshot]
    fn save(&self) -> CounterState {
        CounterState { total: self.total }
    }

    #[restore]
    fn load(&mut self, state: CounterState) {
        self.total = state.total;
    }

    /// A plain helper: left as it is.
    fn doubled(&self) -> i64 {
        self.total * 2
    }
}

/// No state, an `#[init]` constructor, an overridden type name and a crate-visible reference.
struct Greeter {
    id: String,
}

#[verse::object(name = "Greeting", vis = pub(crate))]
impl Greeter {
    #[init]
    fn new(id: &str) -> Self {
        Greeter { id: id.to_owned() }
    }

    async fn hello(&mut self, _ctx: &CallContext, request: Text) -> Result<Text, MethodError> {
        Ok(Text { text: format!("hello {} from {}", request.text, self.id) })
    }
}

/// Forwards to a `Counter` through a nested call; a nested `CallError` passes through.
#[derive(Default)]
struct Relay;

#[verse::object]
impl Relay {
    async fn forward(&mut self, ctx: &CallContext, request: Amount) -> Result<Amount, CallError> {
        ctx.get::<Counter>(format!("{}-counter", ctx.id())).add(request).await
    }
}

static TRACKER_DEACTIVATIONS: AtomicUsize = AtomicUsize::new(0);

/// Declared through `verse-core` directly (`crate = …`), with a deactivation hook.
#[derive(Default)]
struct Tracker;

#[verse::object(crate = ::verse_core)]
impl Tracker {
    async fn touch(&mut self, _ctx: &CallContext, request: Empty) -> Result<Empty, MethodError> {
        Ok(request)
    }

    #[on_deactivate]
    async fn deactivate(&mut self, _ctx: &CallContext) -> Result<(), MethodError> {
        TRACKER_DEACTIVATIONS.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn start(store: Option<MemoryStore>) -> Node {
    let persistent = TypeOptions::default().persistence(PersistencePolicy::WriteThrough);
    let mut builder = NodeBuilder::new(NodeConfig::default())
        .object_with::<Counter>(persistent)
        .object::<Greeter>()
        .object::<Relay>()
        .object::<Tracker>();
    if let Some(store) = store {
        builder = builder.store(Arc::new(store));
    }
    builder.start().expect("node starts")
}

fn names(methods: &[MethodInfo]) -> Vec<&str> {
    methods.iter().map(|m| m.name).collect()
}

#[test]
fn method_table_has_wire_names_types_and_idempotency() {
    let methods = Counter::methods();
    assert_eq!(names(methods), ["Add", "GetTotal", "Explode", "WasActivated"]);
    assert_eq!(methods[0].request_type, "test.Amount");
    assert_eq!(methods[0].response_type, "test.Amount");
    assert_eq!(methods[1].request_type, "test.Empty");
    let idempotent: Vec<bool> = methods.iter().map(|m| m.idempotent).collect();
    assert_eq!(idempotent, [false, true, false, false]);

    assert_eq!(Counter::TYPE_NAME, "Counter");
    const { assert!(Counter::HAS_STATE) };
    assert_eq!(Greeter::TYPE_NAME, "Greeting");
    const { assert!(!Greeter::HAS_STATE) };
    assert_eq!(names(Greeter::methods()), ["Hello"]);
    assert_eq!(Counter { total: 4, ..Counter::default() }.doubled(), 8);
}

#[tokio::test]
async fn typed_calls_run_methods_and_hooks() {
    let node = start(None);
    let client = node.client();
    let counter = client.get::<Counter>("counter-1");
    assert_eq!(counter.id(), "counter-1");
    assert_eq!(counter.raw().object_type(), "Counter");

    let first = counter.was_activated(Empty {}).await.expect("call succeeds");
    assert!(first.set, "on_activate ran before the first call");
    assert_eq!(counter.add(Amount { value: 2 }).await.expect("add"), Amount { value: 2 });
    assert_eq!(counter.add(Amount { value: 3 }).await.expect("add"), Amount { value: 5 });
    assert_eq!(counter.get_total(Empty {}).await.expect("get"), Amount { value: 5 });
    node.shutdown().await;
}

#[tokio::test]
async fn method_errors_cross_as_call_errors() {
    let node = start(None);
    let counter = node.client().get::<Counter>("counter-errors");
    let error = counter.fail(Empty {}).await.expect_err("the method fails");
    assert_eq!(error, CallError::Method { code: 7, message: "boom".into() });
    node.shutdown().await;
}

#[tokio::test]
async fn init_constructor_sees_the_id() {
    let node = start(None);
    let greeter = node.client().get::<Greeter>("greeter-7");
    assert_eq!(greeter.raw().object_type(), "Greeting");
    let reply = greeter.hello(Text { text: "ann".into() }).await.expect("hello");
    assert_eq!(reply.text, "hello ann from greeter-7");
    node.shutdown().await;
}

#[tokio::test]
async fn nested_calls_go_through_the_context() {
    let node = start(None);
    let client = node.client();
    let relay = client.get::<Relay>("relay-1");
    assert_eq!(relay.forward(Amount { value: 4 }).await.expect("forward"), Amount { value: 4 });
    assert_eq!(relay.forward(Amount { value: 1 }).await.expect("forward"), Amount { value: 5 });
    let counter = client.get::<Counter>("relay-1-counter");
    assert_eq!(counter.get_total(Empty {}).await.expect("get"), Amount { value: 5 });
    node.shutdown().await;
}

#[tokio::test]
async fn one_way_sends_run_in_mailbox_order() {
    let node = start(None);
    let counter = node.client().get::<Counter>("counter-send");
    counter.send_add(Amount { value: 10 }).await.expect("queued");
    counter.send_add(Amount { value: 1 }).await.expect("queued");
    // The mailbox is FIFO: this call runs after both sends.
    assert_eq!(counter.get_total(Empty {}).await.expect("get"), Amount { value: 11 });
    node.shutdown().await;
}

#[tokio::test]
async fn dynamic_calls_use_wire_names_and_encoded_messages() {
    let node = start(None);
    let client = node.client();
    let request = EncodedMessage::pack(&Amount { value: 3 });
    let response = client.call_encoded("Counter", "counter-dyn", "Add", request).await;
    let response = response.expect("dynamic call succeeds");
    assert_eq!(response.full_name(), "test.Amount");
    assert_eq!(response.unpack::<Amount>().expect("unpacks"), Amount { value: 3 });

    let request = EncodedMessage::pack(&Empty {});
    let error = client.call_encoded("Counter", "counter-dyn", "Explode", request).await;
    assert_eq!(error, Err(CallError::Method { code: 7, message: "boom".into() }));

    let request = EncodedMessage::pack(&Empty {});
    let error = client.call_encoded("Counter", "counter-dyn", "add", request).await;
    assert!(matches!(error, Err(CallError::UnknownMethod { .. })), "{error:?}");

    let wrong_type = EncodedMessage::pack(&Text { text: "x".into() });
    let error = client.call_encoded("Counter", "counter-dyn", "Add", wrong_type).await;
    assert!(matches!(error, Err(CallError::InvalidArgument { .. })), "{error:?}");
    node.shutdown().await;
}

#[tokio::test]
async fn state_is_restored_on_the_next_activation() {
    let store = MemoryStore::new(SystemClock::shared(), Duration::from_secs(3600), true);
    let node = start(Some(store.clone()));
    let counter = node.client().get::<Counter>("counter-persist");
    counter.add(Amount { value: 41 }).await.expect("add");
    assert_eq!(store.len(), 1, "write-through saved before answering");
    node.shutdown().await;

    let node = start(Some(store));
    let counter = node.client().get::<Counter>("counter-persist");
    assert_eq!(counter.get_total(Empty {}).await.expect("get"), Amount { value: 41 });
    node.shutdown().await;
}

#[tokio::test]
async fn deactivation_hook_runs_on_shutdown() {
    let node = start(None);
    let tracker = node.client().get::<Tracker>("tracker-1");
    tracker.touch(Empty {}).await.expect("touch");
    assert_eq!(TRACKER_DEACTIVATIONS.load(Ordering::SeqCst), 0);
    node.shutdown().await;
    assert_eq!(TRACKER_DEACTIVATIONS.load(Ordering::SeqCst), 1);
}
