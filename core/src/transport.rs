//! The [`Transport`] trait: how a node sends calls, creates and deletes to another node.
//!
//! The core routes a call to the node that owns its shard; when that node is another process,
//! the call goes through a `Transport` (`verse-transport`'s `NodeClient` over gRPC in
//! production). Implementations classify failures by the retry rule (invariant 8):
//! - the callee's own typed error comes back as is (`NotServed`, `Overloaded`, a method
//!   error, …);
//! - [`CallError::NotDelivered`] only when the call provably never reached a callee that could
//!   start it (connect failure, refused stream, GOAWAY below the call's stream);
//! - anything else after the request left is [`CallError::OutcomeUnknown`] (or
//!   `DeadlineExceeded` once the caller's deadline passed).
//!
//! Timeouts: the caller's deadline bounds every request; the implementation owns the wait.
//! Cancel safety: dropping a future cancels the request; whether a call ran is then unknown.

use async_trait::async_trait;

use crate::clock::MonoTime;
use crate::context::CallerIdentity;
use crate::error::CallError;
use crate::object::EncodedMessage;

/// A call to send to another node.
#[derive(Debug, Clone)]
pub struct RemoteCall {
    /// Object type name.
    pub object_type: String,
    /// Object id.
    pub id: String,
    /// Method wire name.
    pub method: String,
    /// The encoded request.
    pub request: EncodedMessage,
    /// The caller's deadline on the node's clock (the remaining time is measured from it when
    /// the call is sent).
    pub deadline: MonoTime,
    /// The awaited call chain, root first: `(object id, shard)` of each waiting object.
    pub chain: Vec<(String, u32)>,
    /// Who called.
    pub identity: Option<CallerIdentity>,
    /// One way (the callee answers once the call is queued).
    pub one_way: bool,
}

/// Sends calls, creates and deletes to a peer node by its advertised address.
///
/// Object safe: the runtime holds it as `Arc<dyn Transport>`. See the module docs for the
/// error classification every implementation keeps.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends `call` to `peer` and waits for its response, at most until its deadline.
    async fn call(&self, peer: &str, call: RemoteCall) -> Result<EncodedMessage, CallError>;

    /// Creates object `id` of `object_type` on `peer` (idempotent: safe to resend).
    async fn create(
        &self,
        peer: &str,
        object_type: &str,
        id: &str,
        deadline: MonoTime,
    ) -> Result<(), CallError>;

    /// Deletes object `id` of `object_type` on `peer` (idempotent: safe to resend).
    async fn delete(
        &self,
        peer: &str,
        object_type: &str,
        id: &str,
        deadline: MonoTime,
    ) -> Result<(), CallError>;
}
