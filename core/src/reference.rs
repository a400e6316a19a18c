//! References to objects: [`RawRef`] (object type + id bound to a caller), which generated typed
//! references (`CounterRef`) wrap, and [`ObjectRef`], the id-only form kept in object state.
//!
//! A `RawRef` calls either through a node (a [`Caller`]: in-process routing, typed messages
//! moved without encoding) or through a [`RemoteBackend`] outside the cluster (the gateway
//! client of `verse-gateway`), which carries encoded messages by wire name. Generated typed
//! references work the same over both.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::Either;

use crate::clock::MonoTime;
use crate::context::{CallChain, CallContext, CallerIdentity};
use crate::error::CallError;
use crate::object::{EncodedMessage, Object, Payload};
use crate::runtime::{ActivationCache, CallRequest, MethodTarget, NodeShared, TypeTarget};

/// Who a reference calls on behalf of: the node to route through, the awaited chain, the
/// deadline and the caller identity.
#[derive(Clone)]
pub struct Caller {
    pub(crate) node: Arc<NodeShared>,
    pub(crate) chain: Option<Arc<CallChain>>,
    /// `None`: the node's default deadline from the time of each call.
    pub(crate) deadline: Option<MonoTime>,
    /// Relative deadline of each call when `deadline` is `None` (default: the node's).
    pub(crate) timeout: Option<std::time::Duration>,
    pub(crate) identity: Option<Arc<CallerIdentity>>,
}

/// The future a [`RemoteBackend`] call returns.
pub type RemoteFuture<'a> =
    Pin<Box<dyn Future<Output = Result<EncodedMessage, CallError>> + Send + 'a>>;

/// Carries references' calls from outside the cluster (a gateway client): each call is
/// `(object type, id, method wire name, encoded request)` and answers the encoded response
/// or the call's [`CallError`].
pub trait RemoteBackend: Send + Sync + 'static {
    /// Calls `method` of object `id` of `object_type` with `request`.
    fn call<'a>(
        &'a self,
        object_type: &'a str,
        id: &'a str,
        method: &'a str,
        request: EncodedMessage,
    ) -> RemoteFuture<'a>;
}

/// An untyped reference: object type and id bound to a caller.
#[derive(Clone)]
pub struct RawRef {
    via: Via,
    id: Arc<str>,
}

/// What a [`RawRef`] calls through.
#[derive(Clone)]
enum Via {
    Node { caller: Caller, target: TypeTarget, cache: ActivationCache },
    Remote { backend: Arc<dyn RemoteBackend>, object_type: Arc<str> },
}

impl fmt::Debug for RawRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawRef({}/{})", self.object_type(), self.id)
    }
}

impl RawRef {
    pub(crate) fn new(caller: Caller, object_type: &str, id: String) -> Self {
        let target = caller.node.type_target(object_type);
        RawRef::with_target(caller, target, id)
    }

    pub(crate) fn with_target(caller: Caller, target: TypeTarget, id: String) -> Self {
        RawRef {
            via: Via::Node { caller, target, cache: ActivationCache::default() },
            id: Arc::from(id),
        }
    }

    /// A reference whose calls go through `backend` (outside the cluster). One-way sends
    /// through a backend wait for the call to complete and drop its response: the backend's
    /// protocol may have no one-way call.
    pub fn remote(
        backend: Arc<dyn RemoteBackend>,
        object_type: &str,
        id: impl Into<String>,
    ) -> Self {
        RawRef {
            via: Via::Remote { backend, object_type: Arc::from(object_type) },
            id: Arc::from(id.into()),
        }
    }

    /// The object id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The object type name.
    pub fn object_type(&self) -> &str {
        match &self.via {
            Via::Node { target, .. } => target.name(),
            Via::Remote { object_type, .. } => object_type,
        }
    }

    /// Sends one call: through the node, or encoded through the backend. The calls below
    /// return their futures from plain functions rather than being `async fn`s: an `async fn`
    /// stores its arguments twice (captured and as locals), and these futures are created and
    /// moved on every call (see `runtime::call`).
    fn dispatch(
        &self,
        method: MethodTarget,
        payload: Payload,
        one_way: bool,
    ) -> impl Future<Output = Result<Payload, CallError>> + Send + '_ {
        match &self.via {
            Via::Node { caller, target, cache } => {
                let request = CallRequest {
                    cache: Some(cache),
                    target,
                    id: &self.id,
                    method,
                    payload,
                    deadline: caller.deadline,
                    timeout: caller.timeout,
                    chain: if one_way { None } else { caller.chain.clone() },
                    identity: caller.identity.clone(),
                    one_way,
                    forward: true,
                };
                Either::Left(caller.node.call(request))
            }
            Via::Remote { backend, object_type } => Either::Right(async move {
                let name = match &method {
                    MethodTarget::Name(name) => &**name,
                    MethodTarget::Index(_, name) => *name,
                };
                let response =
                    backend.call(object_type, &self.id, name, payload.into_encoded()).await?;
                Ok(Payload::encoded(response))
            }),
        }
    }

    /// Calls `method` (wire name) with a typed request and waits for the typed response.
    /// Local calls move the messages (no encoding).
    pub fn call<Req, Resp>(
        &self,
        method: &str,
        request: Req,
    ) -> impl Future<Output = Result<Resp, CallError>> + Send + '_
    where
        Req: prost::Message + prost::Name + Send + 'static,
        Resp: prost::Message + prost::Name + Default + Send + 'static,
    {
        let method = MethodTarget::Name(Arc::from(method));
        let call = self.dispatch(method, Payload::typed(request), false);
        call.map(|result| result?.into_message::<Resp>())
    }

    /// Calls method number `index` of the type's method table (named `name`): the path of
    /// generated typed references, which skips the method-name lookup.
    pub fn call_indexed<Req, Resp>(
        &self,
        index: usize,
        name: &'static str,
        request: Req,
    ) -> impl Future<Output = Result<Resp, CallError>> + Send + '_
    where
        Req: prost::Message + prost::Name + Send + 'static,
        Resp: prost::Message + prost::Name + Default + Send + 'static,
    {
        let method = MethodTarget::Index(index, name);
        let call = self.dispatch(method, Payload::typed(request), false);
        call.map(|result| result?.into_message::<Resp>())
    }

    /// Sends method number `index` (named `name`) one way: no response, and the call starts a
    /// new chain. Returns once the call is queued (or fails to be).
    pub fn send_indexed<Req>(
        &self,
        index: usize,
        name: &'static str,
        request: Req,
    ) -> impl Future<Output = Result<(), CallError>> + Send + '_
    where
        Req: prost::Message + prost::Name + Send + 'static,
    {
        let method = MethodTarget::Index(index, name);
        let call = self.dispatch(method, Payload::typed(request), true);
        call.map(|result| result.map(drop))
    }

    /// Sends `method` (wire name) one way.
    pub fn send<Req>(
        &self,
        method: &str,
        request: Req,
    ) -> impl Future<Output = Result<(), CallError>> + Send + '_
    where
        Req: prost::Message + prost::Name + Send + 'static,
    {
        let method = MethodTarget::Name(Arc::from(method));
        let call = self.dispatch(method, Payload::typed(request), true);
        call.map(|result| result.map(drop))
    }

    /// Calls `method` with an encoded request (the dynamic path); the response comes back
    /// encoded.
    pub fn call_encoded(
        &self,
        method: &str,
        request: EncodedMessage,
    ) -> impl Future<Output = Result<EncodedMessage, CallError>> + Send + '_ {
        let method = MethodTarget::Name(Arc::from(method));
        let call = self.dispatch(method, Payload::encoded(request), false);
        call.map(|result| Ok(result?.into_encoded()))
    }
}

/// An id-only reference to an object of type `T`, for keeping in object state; bind it to a
/// caller at each call with [`ObjectRef::bind`].
pub struct ObjectRef<T> {
    id: String,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for ObjectRef<T> {
    fn clone(&self) -> Self {
        ObjectRef { id: self.id.clone(), _type: PhantomData }
    }
}

impl<T> fmt::Debug for ObjectRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectRef({})", self.id)
    }
}

impl<T: Object> ObjectRef<T> {
    /// A reference to the object `id`.
    pub fn new(id: impl Into<String>) -> Self {
        ObjectRef { id: id.into(), _type: PhantomData }
    }

    /// The object id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The typed reference bound to the current turn's context.
    pub fn bind(&self, ctx: &CallContext) -> T::Ref {
        ctx.get::<T>(self.id.clone())
    }
}
