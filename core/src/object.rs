//! The object model: the [`Object`] trait the `#[verse::object]` macro implements, method
//! tables, payloads and per-type options.
//!
//! The static side of a type (name, constructor, method table, dispatch) is this trait, never
//! used as `dyn`; the runtime holds activations through type-erased handles and monomorphises
//! the activation loop per type.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

use crate::context::CallContext;
use crate::error::CallError;
use crate::reference::RawRef;

mod typed;

pub use typed::TypedMessage;

/// The future of one turn: the response payload or an error.
pub type TurnFuture<'a> = Pin<Box<dyn Future<Output = Result<Payload, CallError>> + Send + 'a>>;

/// The future of an activation or deactivation hook.
pub type HookFuture<'a> = Pin<Box<dyn Future<Output = Result<(), CallError>> + Send + 'a>>;

/// The type URL prefix of every `Any` Verse produces.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// One method of an object type, as the macro records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodInfo {
    /// Wire name (`GetState` for `get_state` unless overridden).
    pub name: &'static str,
    /// Full protobuf name of the request message (`counter.IncrementRequest`).
    pub request_type: String,
    /// Full protobuf name of the response message.
    pub response_type: String,
    /// Whether resending after an unknown outcome is safe (`#[idempotent]`).
    pub idempotent: bool,
}

/// What a node tells about a registered object type (the node protocol's `DescribeType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeDescription {
    /// The type name.
    pub name: &'static str,
    /// The method table.
    pub methods: &'static [MethodInfo],
    /// [`Object::file_descriptor_set`] (empty: none registered).
    pub file_descriptor_set: &'static [u8],
}

/// An object type: implemented by `#[verse::object]` on an `impl` block.
///
/// Hand-written implementations are allowed (the core's own tests use them) but must uphold
/// the method-table contract: `dispatch(i, …)` runs `methods()[i]`.
pub trait Object: Send + Sized + 'static {
    /// The type name (the struct name unless overridden).
    const TYPE_NAME: &'static str;
    /// Whether the type declares a state message (snapshot/restore).
    const HAS_STATE: bool;
    /// The state message (`()` when the type has no state).
    type State: prost::Message + Default + Send + 'static;
    /// The typed reference (`CounterRef` for `Counter`).
    type Ref: From<RawRef>;

    /// The method table.
    fn methods() -> &'static [MethodInfo];

    /// The serialized protobuf `FileDescriptorSet` holding the messages of the method table
    /// (imports included), so gateways can transcode JSON calls (`docs/PROTOCOL.md`); empty
    /// when the type registers none. `#[verse::object(descriptors = EXPR)]` sets it.
    fn file_descriptor_set() -> &'static [u8] {
        &[]
    }

    /// Builds a fresh instance for `id` (before `restore` and `on_activate`).
    fn construct(id: &str) -> Self;

    /// Runs method number `method` on `request`.
    fn dispatch<'a>(
        &'a mut self,
        ctx: &'a CallContext,
        method: usize,
        request: Payload,
    ) -> TurnFuture<'a>;

    /// Called once the activation is ready (state restored), before the first turn.
    fn on_activate<'a>(&'a mut self, ctx: &'a CallContext) -> HookFuture<'a> {
        let _ = ctx;
        Box::pin(std::future::ready(Ok(())))
    }

    /// Called before deactivation (after owned tasks and timers are cancelled, before saving).
    fn on_deactivate<'a>(&'a mut self, ctx: &'a CallContext) -> HookFuture<'a> {
        let _ = ctx;
        Box::pin(std::future::ready(Ok(())))
    }

    /// The state to save.
    fn snapshot(&self) -> Self::State {
        Self::State::default()
    }

    /// Restores saved state into a freshly constructed instance.
    fn restore(&mut self, state: Self::State) {
        let _ = state;
    }
}

/// An encoded message with its type URL (the content of a `google.protobuf.Any`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EncodedMessage {
    /// `type.googleapis.com/<full name>` (only the part after the last `/` is matched).
    pub type_url: String,
    /// The serialized message.
    pub value: Bytes,
}

impl EncodedMessage {
    /// Packs a message with the standard type URL.
    pub fn pack<M: prost::Message + prost::Name>(message: &M) -> Self {
        EncodedMessage {
            type_url: format!("{TYPE_URL_PREFIX}{}", M::full_name()),
            value: Bytes::from(message.encode_to_vec()),
        }
    }

    /// The full message name (after the last `/` of the type URL).
    pub fn full_name(&self) -> &str {
        self.type_url.rsplit('/').next().unwrap_or_default()
    }

    /// Decodes as `M`, checking the type name.
    pub fn unpack<M: prost::Message + prost::Name + Default>(&self) -> Result<M, CallError> {
        check_type_name::<M>(self.full_name())?;
        M::decode(self.value.clone()).map_err(|e| CallError::InvalidArgument {
            message: format!("cannot decode {}: {e}", M::full_name()),
        })
    }
}

/// Whether `full_name` is `M`'s full protobuf name (compared without allocating).
fn is_named<M: prost::Name>(full_name: &str) -> bool {
    if M::PACKAGE.is_empty() {
        return full_name == M::NAME;
    }
    full_name
        .strip_prefix(M::PACKAGE)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|name| name == M::NAME)
}

fn check_type_name<M: prost::Name>(got: &str) -> Result<(), CallError> {
    if !is_named::<M>(got) {
        return Err(CallError::InvalidArgument {
            message: format!("expected message {}, got {got:?}", M::full_name()),
        });
    }
    Ok(())
}

/// A request or response: typed (moved on local calls) or encoded (dynamic and remote calls).
pub enum Payload {
    /// A message moved as is (inline when small: see [`TypedMessage`]).
    Typed(TypedMessage),
    /// An encoded message with its type URL (boxed, so a payload stays four words: mailboxes
    /// stay small).
    Encoded(Box<EncodedMessage>),
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Typed(m) => write!(f, "Payload::Typed({})", m.full_name()),
            Payload::Encoded(m) => write!(f, "Payload::Encoded({})", m.type_url),
        }
    }
}

impl Payload {
    /// Wraps a typed message.
    pub fn typed<M: prost::Message + prost::Name + Send + 'static>(message: M) -> Self {
        Payload::Typed(TypedMessage::new(message))
    }

    /// Wraps an encoded message.
    pub fn encoded(message: EncodedMessage) -> Self {
        Payload::Encoded(Box::new(message))
    }

    /// Takes the message as `M`: downcast when typed (no decode), decoded once when encoded.
    pub fn into_message<M>(self) -> Result<M, CallError>
    where
        M: prost::Message + prost::Name + Default + Send + 'static,
    {
        match self {
            Payload::Typed(message) => message.take::<M>().map_err(|message| {
                let message =
                    format!("expected message {}, got {}", M::full_name(), message.full_name());
                CallError::InvalidArgument { message }
            }),
            Payload::Encoded(encoded) => encoded.unpack::<M>(),
        }
    }

    /// Encodes the payload (no work when it is already encoded).
    pub fn into_encoded(self) -> EncodedMessage {
        match self {
            Payload::Typed(m) => EncodedMessage {
                type_url: format!("{TYPE_URL_PREFIX}{}", m.full_name()),
                value: m.encode(),
            },
            Payload::Encoded(e) => *e,
        }
    }
}

/// When an object may be activated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActivationPolicy {
    /// On the first call (virtual actor).
    #[default]
    OnCall,
    /// Only after an explicit `create`; calls to objects never created fail with
    /// `ObjectNotFound`.
    AfterCreate,
}

/// When state is saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PersistencePolicy {
    /// After every turn that changed the state, before the response is sent: the only mode
    /// under which acknowledged writes survive crashes.
    WriteThrough,
    /// On deactivation (idle, shard move, delete excluded, shutdown).
    #[default]
    OnDeactivation,
    /// Every period (when changed) and on deactivation.
    Periodic(Duration),
}

/// Per-type options, given at registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeOptions {
    /// When activations start.
    pub activation: ActivationPolicy,
    /// Deactivate after this long without a call (`None`: never idle out).
    pub idle_timeout: Option<Duration>,
    /// When state is saved.
    pub persistence: PersistencePolicy,
    /// A turn running longer poisons its activation.
    pub max_turn_duration: Duration,
    /// State is never loaded or saved (lost on deactivation).
    pub ephemeral: bool,
    /// Calls queued per activation before `Overloaded`.
    pub mailbox_capacity: usize,
}

impl Default for TypeOptions {
    fn default() -> Self {
        TypeOptions {
            activation: ActivationPolicy::OnCall,
            idle_timeout: Some(Duration::from_secs(300)),
            persistence: PersistencePolicy::OnDeactivation,
            max_turn_duration: Duration::from_secs(60),
            ephemeral: false,
            mailbox_capacity: 1024,
        }
    }
}

impl TypeOptions {
    /// Sets the activation policy.
    pub fn activation(mut self, policy: ActivationPolicy) -> Self {
        self.activation = policy;
        self
    }
    /// Sets the idle timeout.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }
    /// Sets the persistence policy.
    pub fn persistence(mut self, policy: PersistencePolicy) -> Self {
        self.persistence = policy;
        self
    }
    /// Sets the maximum turn duration.
    pub fn max_turn_duration(mut self, limit: Duration) -> Self {
        self.max_turn_duration = limit;
        self
    }
    /// Marks the type ephemeral.
    pub fn ephemeral(mut self, ephemeral: bool) -> Self {
        self.ephemeral = ephemeral;
        self
    }
    /// Sets the mailbox capacity.
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.mailbox_capacity = capacity.max(1);
        self
    }
}

/// The request a timer delivers to its method (`ctx.timer(period, "Tick")`).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Tick {
    /// How many ticks this timer has delivered before this one.
    #[prost(uint64, tag = "1")]
    pub sequence: u64,
}

impl prost::Name for Tick {
    const NAME: &'static str = "Tick";
    const PACKAGE: &'static str = "verse";
    fn type_url() -> String {
        format!("{TYPE_URL_PREFIX}verse.Tick")
    }
}

/// Converts a method's error type into a [`CallError`] (used by generated code): a
/// `MethodError`, `String` or `&str` becomes [`CallError::Method`]; a `CallError` from a nested
/// call passes through unchanged.
pub fn method_error<E: Into<CallError>>(error: E) -> CallError {
    error.into()
}
