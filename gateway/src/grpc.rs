//! `gate.GateService` over tonic: GoVerse's client protocol (`client-protocol.md`) and Verse's
//! resumable `RegisterWithResume`.
//!
//! Each accepted connection is tagged with a [`ConnectionId`] ([`TaggedIo`], tonic's
//! connect-info), so a call can be checked against the connection its session's `Register`
//! stream is open on (the binding rule).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use prost::{Message, Name};
use prost_types::Any;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};
use verse_core::cluster::RoutedCall;
use verse_core::{CallerIdentity, EncodedMessage};

use crate::proto::gate_service_server::GateService;
use crate::proto::{
    CallObjectRequest, CallObjectResponse, CreateObjectRequest, CreateObjectResponse,
    DeleteObjectRequest, DeleteObjectResponse, Empty, RegisterResponse, ReliableCallObjectRequest,
    ReliableCallObjectResponse, ResumeRequest, SequencedItem,
};
use crate::session::{Attachment, ConnectionId, Credentials, Principal, ResumeError};
use crate::status::{GateError, reliable_status, to_status};
use crate::{Bind, GatewayShared};

/// The gate protocol's codec: prost's, except that a message that does not decode is
/// `INVALID_ARGUMENT` "malformed message: …" (malformed input, `client-protocol.md`) instead
/// of tonic's default `INTERNAL`. Messages above `GatewayConfig::grpc_max_message` never reach
/// it: tonic refuses them with `OUT_OF_RANGE`.
#[derive(Debug, Clone)]
pub struct GateCodec<T, U>(tonic_prost::ProstCodec<T, U>);

impl<T, U> Default for GateCodec<T, U> {
    fn default() -> Self {
        GateCodec(tonic_prost::ProstCodec::default())
    }
}

impl<T, U> tonic::codec::Codec for GateCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = GateDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        GateDecoder(self.0.decoder())
    }
}

/// [`GateCodec`]'s decoder.
#[derive(Debug, Clone)]
pub struct GateDecoder<U>(tonic_prost::ProstDecoder<U>);

impl<U: Message + Default> tonic::codec::Decoder for GateDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, Self::Error> {
        self.0.decode(buf).map_err(|status| {
            Status::invalid_argument(format!("malformed message: {}", status.message()))
        })
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        self.0.buffer_settings()
    }
}

/// The message of the binding rule's refusal.
pub const NOT_BOUND: &str = "client id not bound to this connection";

/// The message of the binding rule's refusal under `Bind::Principal`.
pub const NOT_BOUND_PRINCIPAL: &str = "client id not bound to this principal";

/// An accepted connection tagged with its [`ConnectionId`].
#[derive(Debug)]
pub struct TaggedIo<IO> {
    io: IO,
    id: ConnectionId,
}

impl<IO> TaggedIo<IO> {
    /// Tags `io` with a fresh connection id.
    pub fn new(io: IO) -> Self {
        TaggedIo { io, id: ConnectionId::fresh() }
    }
}

impl<IO> Connected for TaggedIo<IO> {
    type ConnectInfo = ConnectionId;
    fn connect_info(&self) -> ConnectionId {
        self.id
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for TaggedIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for TaggedIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The tonic service.
#[derive(Debug, Clone)]
pub struct GateGrpc {
    pub(crate) shared: Arc<GatewayShared>,
}

fn credentials(metadata: &MetadataMap) -> Credentials {
    let headers = metadata
        .iter()
        .filter_map(|entry| match entry {
            tonic::metadata::KeyAndValueRef::Ascii(key, value) => {
                Some((key.as_str().to_ascii_lowercase(), value.to_str().ok()?.to_owned()))
            }
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .collect();
    Credentials { headers }
}

fn connection<T>(request: &Request<T>) -> Option<ConnectionId> {
    request.extensions().get::<ConnectionId>().copied()
}

fn pack<M: Message + Name>(message: &M) -> Any {
    Any { type_url: M::type_url(), value: message.encode_to_vec() }
}

type AnyStream = Pin<Box<dyn Stream<Item = Result<Any, Status>> + Send>>;
type SequencedStream = Pin<Box<dyn Stream<Item = Result<SequencedItem, Status>> + Send>>;

/// The items of an attached session after `after`, in order, until the stream is replaced
/// (resumed elsewhere), the client goes away, or `stop` (the
/// gateway stopping: push streams never end by themselves, so graceful shutdown would wait
/// forever); the attachment detaches on drop.
pub(crate) fn session_items(
    attachment: Attachment,
    after: u64,
    stop: CancellationToken,
) -> impl Stream<Item = (u64, Any)> + Send {
    let latest = attachment.session().subscribe();
    futures::stream::unfold(
        (attachment, latest, after, std::collections::VecDeque::new()),
        move |(attachment, mut latest, mut after, mut ready)| {
            let stop = stop.clone();
            async move {
                loop {
                    if stop.is_cancelled() {
                        return None;
                    }
                    if let Some((seq, item)) = ready.pop_front() {
                        after = seq;
                        return Some(((seq, item), (attachment, latest, after, ready)));
                    }
                    if !attachment.is_current() {
                        return None;
                    }
                    latest.borrow_and_update();
                    attachment.session().read_after_into(after, &mut ready);
                    if ready.is_empty() {
                        tokio::select! {
                            changed = latest.changed() => if changed.is_err() { return None },
                            () = stop.cancelled() => return None,
                        }
                    }
                }
            }
        },
    )
}

impl GateGrpc {
    fn principal(&self, metadata: &MetadataMap) -> Result<Principal, GateError> {
        let auth = &self.shared.auth;
        let credentials =
            if auth.reads_credentials() { credentials(metadata) } else { Credentials::default() };
        auth.authenticate(&credentials).map_err(GateError::Unauthenticated)
    }

    /// The caller identity of a call: anonymous (empty id, unless sessions are required) or
    /// the session bound to this connection (`Bind::Connection`) or to the call's
    /// authenticated principal (`Bind::Principal`).
    fn identity(
        &self,
        client_id: &str,
        connection: Option<ConnectionId>,
        metadata: &MetadataMap,
    ) -> Result<CallerIdentity, GateError> {
        if client_id.is_empty() {
            if self.shared.config.require_session {
                return Err(GateError::PermissionDenied("a client session is required".into()));
            }
            let principal = self.principal(metadata)?;
            self.shared.anonymous_calls.increment(1);
            return Ok(CallerIdentity {
                client_id: None,
                principal: principal.name,
                roles: principal.roles,
            });
        }
        let session = self.shared.sessions.get(client_id);
        let bound = match (&session, self.shared.config.bind) {
            (None, _) => false,
            (Some(session), Bind::Connection) => connection.is_some_and(|c| session.bound_to(c)),
            (Some(session), Bind::Principal) => &self.principal(metadata)? == session.principal(),
        };
        match session {
            Some(session) if bound => Ok(CallerIdentity {
                client_id: Some(session.client_id().to_owned()),
                principal: session.principal().name.clone(),
                roles: session.principal().roles.clone(),
            }),
            _ => {
                metrics::counter!("verse_gateway_binding_refused_total").increment(1);
                let message = match self.shared.config.bind {
                    Bind::Connection => NOT_BOUND,
                    Bind::Principal => NOT_BOUND_PRINCIPAL,
                };
                Err(GateError::PermissionDenied(message.into()))
            }
        }
    }

    fn serving(&self) -> Result<(), GateError> {
        if self.shared.stopping.is_cancelled() {
            return Err(GateError::Unavailable("the gateway is stopping".into()));
        }
        Ok(())
    }

    async fn call(
        &self,
        identity: CallerIdentity,
        object_type: String,
        id: String,
        method: String,
        request: Option<Any>,
        timeout: Option<std::time::Duration>,
    ) -> Result<Any, GateError> {
        if object_type.is_empty() || id.is_empty() || method.is_empty() {
            return Err(GateError::InvalidArgument("a call needs type, id and method".into()));
        }
        let principal =
            Principal { name: identity.principal.clone(), roles: identity.roles.clone() };
        self.shared
            .auth
            .authorize_call(&principal, &object_type, &id, &method)
            .map_err(GateError::PermissionDenied)?;
        let request = request
            .ok_or_else(|| GateError::InvalidArgument(format!("call to {id}: no request")))?;
        if request.type_url.is_empty() {
            return Err(GateError::InvalidArgument(format!(
                "call to {id}: request has no type url"
            )));
        }
        let timeout = timeout.unwrap_or(self.shared.config.default_deadline);
        let idempotent = self.shared.idempotent(&object_type, &method);
        let call = RoutedCall {
            object_type,
            id,
            method,
            request: EncodedMessage { type_url: request.type_url, value: request.value.into() },
            deadline: self.shared.clock.now() + timeout,
            identity: Some(identity),
            idempotent,
        };
        let response = self.shared.router.call(call).await?;
        Ok(Any { type_url: response.type_url, value: response.value.to_vec() })
    }
}

/// The gRPC deadline a client sent (`grpc-timeout`), if any.
fn grpc_timeout(metadata: &MetadataMap) -> Option<std::time::Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => std::time::Duration::from_secs(amount.saturating_mul(3600)),
        "M" => std::time::Duration::from_secs(amount.saturating_mul(60)),
        "S" => std::time::Duration::from_secs(amount),
        "m" => std::time::Duration::from_millis(amount),
        "u" => std::time::Duration::from_micros(amount),
        "n" => std::time::Duration::from_nanos(amount),
        _ => return None,
    })
}

#[tonic::async_trait]
impl GateService for GateGrpc {
    type RegisterStream = AnyStream;

    async fn register(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::RegisterStream>, Status> {
        self.serving().map_err(|e| to_status(&e))?;
        let principal = self.principal(request.metadata()).map_err(|e| to_status(&e))?;
        let connection = connection(&request).unwrap_or(ConnectionId(0));
        let attachment = self.shared.sessions.open(principal, connection);
        let first =
            pack(&RegisterResponse { client_id: attachment.session().client_id().to_owned() });
        let items = futures::StreamExt::map(
            session_items(attachment, 0, self.shared.stopping.clone()),
            |(_, item)| Ok(item),
        );
        let stream = futures::StreamExt::chain(futures::stream::once(async { Ok(first) }), items);
        Ok(Response::new(Box::pin(stream)))
    }

    type RegisterWithResumeStream = SequencedStream;

    async fn register_with_resume(
        &self,
        request: Request<ResumeRequest>,
    ) -> Result<Response<Self::RegisterWithResumeStream>, Status> {
        self.serving().map_err(|e| to_status(&e))?;
        let principal = self.principal(request.metadata()).map_err(|e| to_status(&e))?;
        let connection = connection(&request).unwrap_or(ConnectionId(0));
        let resume = request.into_inner();
        let (attachment, after) = if resume.client_id.is_empty() {
            (self.shared.sessions.open(principal, connection), 0)
        } else {
            match self.shared.sessions.resume(&resume.client_id, &principal, connection) {
                Ok(attachment) => (attachment, resume.last_seq),
                // Unknown (or expired) sessions get a new session, as the protocol says.
                Err(ResumeError::Unknown) => (self.shared.sessions.open(principal, connection), 0),
                Err(ResumeError::OtherPrincipal) => {
                    return Err(Status::permission_denied("session belongs to another principal"));
                }
            }
        };
        let first = SequencedItem {
            seq: 0,
            item: Some(pack(&RegisterResponse {
                client_id: attachment.session().client_id().to_owned(),
            })),
        };
        let items = futures::StreamExt::map(
            session_items(attachment, after, self.shared.stopping.clone()),
            |(seq, item)| Ok(SequencedItem { seq, item: Some(item) }),
        );
        let stream = futures::StreamExt::chain(futures::stream::once(async { Ok(first) }), items);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn call_object(
        &self,
        request: Request<CallObjectRequest>,
    ) -> Result<Response<CallObjectResponse>, Status> {
        self.serving().map_err(|e| to_status(&e))?;
        let connection = connection(&request);
        let timeout = grpc_timeout(request.metadata());
        let identity = self
            .identity(&request.get_ref().client_id, connection, request.metadata())
            .map_err(|e| to_status(&e))?;
        let call = request.into_inner();
        let response = self
            .call(identity, call.r#type, call.id, call.method, call.request, timeout)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(CallObjectResponse { response: Some(response) }))
    }

    async fn create_object(
        &self,
        request: Request<CreateObjectRequest>,
    ) -> Result<Response<CreateObjectResponse>, Status> {
        self.serving().map_err(|e| to_status(&e))?;
        self.principal(request.metadata()).map_err(|e| to_status(&e))?;
        let timeout =
            grpc_timeout(request.metadata()).unwrap_or(self.shared.config.default_deadline);
        let create = request.into_inner();
        if create.r#type.is_empty() {
            return Err(Status::invalid_argument("CreateObject requires type"));
        }
        let id = if create.id.is_empty() {
            format!("{}-{}", create.r#type, self.shared.rng.hex_token(16))
        } else {
            create.id
        };
        let deadline = self.shared.clock.now() + timeout;
        self.shared
            .router
            .create(&create.r#type, &id, deadline)
            .await
            .map_err(|e| to_status(&GateError::Call(e)))?;
        Ok(Response::new(CreateObjectResponse { id }))
    }

    async fn delete_object(
        &self,
        request: Request<DeleteObjectRequest>,
    ) -> Result<Response<DeleteObjectResponse>, Status> {
        self.serving().map_err(|e| to_status(&e))?;
        self.principal(request.metadata()).map_err(|e| to_status(&e))?;
        let timeout =
            grpc_timeout(request.metadata()).unwrap_or(self.shared.config.default_deadline);
        let delete = request.into_inner();
        if delete.r#type.is_empty() {
            return Err(Status::invalid_argument("DeleteObject requires type"));
        }
        if delete.id.is_empty() {
            return Err(Status::invalid_argument("DeleteObject requires id"));
        }
        let deadline = self.shared.clock.now() + timeout;
        self.shared
            .router
            .delete(&delete.r#type, &delete.id, deadline)
            .await
            .map_err(|e| to_status(&GateError::Call(e)))?;
        Ok(Response::new(DeleteObjectResponse {}))
    }

    async fn reliable_call_object(
        &self,
        request: Request<ReliableCallObjectRequest>,
    ) -> Result<Response<ReliableCallObjectResponse>, Status> {
        // Errors are in-band; reliable calls (dedup by call id) are a later issue, so every
        // call is SKIPPED: it never runs.
        let reliable = request.into_inner();
        let skipped = |error: GateError| ReliableCallObjectResponse {
            response: None,
            error: error.to_string(),
            status: reliable_status(&error).to_owned(),
        };
        let refusal = match self.serving() {
            Err(error) => error,
            Ok(()) if reliable.call_id.is_empty() => {
                GateError::InvalidArgument("reliable call needs a call id".into())
            }
            Ok(()) => GateError::InvalidArgument("reliable calls are not supported yet".into()),
        };
        Ok(Response::new(skipped(refusal)))
    }
}
