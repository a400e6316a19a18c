//! Routing one call: admission (ownership and lease), the activation's mailbox, the reply, and
//! resending what provably did not start, until the deadline.
//!
//! The first attempt runs synchronously in [`NodeShared::call`]; the future it returns holds
//! only what waiting and retrying need. Every typed reference call creates that future and
//! moves it a few times (into the reference's futures, into the caller's task), so its size is
//! part of the cost of a local call (P1): keep large temporaries out of it (build them in
//! synchronous functions, and box rare awaits in statements of their own). The common case, a
//! call queued in an activation here, waits in [`Waiting`]: the attempt's state and the reply
//! channel, under 100 bytes; only a call that must be resent boxes the retry loop.

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::future::Either;
use tokio::sync::oneshot;

use super::activation::{CallEnvelope, PushError, Reply, Work};
use super::remote::{Elsewhere, ElsewhereCall};
use super::{ActivationCache, CallRequest, NodeShared, TypeEntry};
use crate::clock::MonoTime;
use crate::cluster::routes::Routes;
use crate::context::{CallChain, CallerIdentity, check_chain};
use crate::error::CallError;
use crate::object::{EncodedMessage, Payload};

/// A call whose type and method are resolved: what each attempt needs.
#[derive(Clone)]
struct Routed<'a> {
    node: &'a Arc<NodeShared>,
    cache: Option<&'a ActivationCache>,
    entry: &'a Arc<TypeEntry>,
    id: &'a Arc<str>,
    method: usize,
    deadline: MonoTime,
    chain: Option<Arc<CallChain>>,
    identity: Option<Arc<CallerIdentity>>,
    one_way: bool,
    forward: bool,
}

/// What an attempt leaves to do.
enum Step<'a> {
    /// The call's outcome.
    Done(Result<Payload, CallError>),
    /// Queued here: wait for the reply.
    Await(oneshot::Receiver<Reply>),
    /// Not served here: through the cluster's routes.
    Elsewhere(&'a Routes, Payload),
}

impl NodeShared {
    /// Routes a call. Resends calls that provably did not start until the deadline.
    pub(crate) fn call<'a>(
        self: &'a Arc<Self>,
        request: CallRequest<'a>,
    ) -> impl Future<Output = Result<Payload, CallError>> + Send + 'a {
        let entry = match self.known(request.target) {
            Ok(entry) => entry,
            Err(unknown) => {
                return Either::Left(Box::pin(self.call_unknown_type(request, unknown)));
            }
        };
        let outcome = match self.route(entry, request) {
            Ok((routed, payload, now)) => match routed.attempt(payload, now) {
                Step::Await(reply) => {
                    return Either::Right(Either::Right(Waiting(Wait::Reply(routed, reply))));
                }
                Step::Done(result) => result,
                step @ Step::Elsewhere(..) => {
                    let call = Box::pin(routed.finish(step, 0));
                    return Either::Right(Either::Right(Waiting(Wait::Retry(call))));
                }
            },
            Err(error) => Err(error),
        };
        Either::Right(Either::Left(std::future::ready(outcome)))
    }

    /// Resolves the method, checks the chain and fixes the deadline.
    fn route<'a>(
        self: &'a Arc<Self>,
        entry: &'a Arc<TypeEntry>,
        request: CallRequest<'a>,
    ) -> Result<(Routed<'a>, Payload, MonoTime), CallError> {
        let method = entry.resolve(&request.method)?;
        check_chain(request.chain.as_deref(), request.id)?;
        let now = self.clock.now_coarse();
        let deadline = request
            .deadline
            .unwrap_or_else(|| now + request.timeout.unwrap_or(self.config.default_deadline));
        let routed = Routed {
            node: self,
            cache: request.cache,
            entry,
            id: request.id,
            method,
            deadline,
            chain: request.chain,
            identity: request.identity,
            one_way: request.one_way,
            forward: request.forward,
        };
        Ok((routed, request.payload, now))
    }
}

impl<'a> Routed<'a> {
    /// One attempt: queues the call in its activation here (through the reference's cached
    /// activation while it lives, else through the activation table), or finds it is not
    /// served here.
    fn attempt(&self, payload: Payload, now: MonoTime) -> Step<'a> {
        let node = self.node;
        if now >= self.deadline {
            return Step::Done(Err(CallError::DeadlineExceeded { id: self.id.to_string() }));
        }
        let (reply_tx, reply_rx) = if self.one_way {
            (None, None)
        } else {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        };
        let envelope = CallEnvelope {
            method: self.method,
            payload,
            deadline: self.deadline,
            chain: self.chain.clone(),
            identity: self.identity.clone(),
            reply: reply_tx,
        };
        let queued = || match reply_rx {
            Some(reply) => Step::Await(reply),
            None => Step::Done(Ok(Payload::encoded(EncodedMessage::default()))),
        };
        let mut work = Work::Call(envelope);
        let chain = self.chain.as_deref();
        // Fast path: the reference's cached activation, while it lives.
        if let Some(cache) = self.cache {
            let pushed = cache.with(|activation| {
                node.ownership.check_for_chain(&activation.location.fence, &*node.clock, chain)?;
                Ok::<_, CallError>(
                    activation.push(node, std::mem::replace(&mut work, Work::Nothing)),
                )
            });
            match pushed {
                Some(Err(error)) => return self.refused(error, work),
                Some(Ok(Ok(()))) => return queued(),
                Some(Ok(Err(PushError::Gone(returned)))) => work = returned,
                Some(Ok(Err(PushError::Full))) => {
                    return Step::Done(Err(node.overloaded(self.entry, self.id)));
                }
                None => {}
            }
        }
        let location = match node.locate(self.id) {
            Ok(location) => location,
            Err(error) => return Step::Done(Err(error)),
        };
        if let Err(error) = node.ownership.check_for_chain(&location.fence, &*node.clock, chain) {
            return self.refused(error, work);
        }
        match node.enqueue(self.entry, self.id, &location, work) {
            Ok(activation) => {
                if let Some(cache) = self.cache {
                    cache.set(activation);
                }
                queued()
            }
            Err(error) => Step::Done(Err(error)),
        }
    }

    /// Not admitted here: in a cluster, another node serves it (or this one soon).
    fn refused(&self, error: CallError, work: Work) -> Step<'a> {
        match (self.node.cluster.get(), error, work) {
            (Some(routes), CallError::NotServed { .. }, Work::Call(envelope)) => {
                Step::Elsewhere(routes, envelope.payload)
            }
            (_, error, _) => Step::Done(Err(error)),
        }
    }

    /// Waits for the outcome, resending the call while it provably did not start. (A block
    /// rather than an `async fn`, whose arguments would be stored twice: as captured and as
    /// locals.)
    #[allow(clippy::manual_async_fn)]
    fn finish(
        self,
        mut step: Step<'a>,
        mut attempt: u32,
    ) -> impl Future<Output = Result<Payload, CallError>> + Send + 'a {
        async move {
            loop {
                let payload = match step {
                    Step::Done(result) => return result,
                    Step::Await(reply) => {
                        let returned = match self.on_reply(reply.await) {
                            ControlFlow::Break(outcome) => return outcome,
                            ControlFlow::Continue(returned) => returned,
                        };
                        attempt += 1;
                        let backoff = Box::pin(self.node.backoff(attempt, self.deadline));
                        backoff.await;
                        returned
                    }
                    Step::Elsewhere(routes, payload) => {
                        let elsewhere = Box::pin(self.elsewhere(routes, payload));
                        match elsewhere.await {
                            Elsewhere::Done(result) => return result,
                            Elsewhere::Local(returned) => {
                                attempt += 1;
                                returned
                            }
                        }
                    }
                };
                step = self.attempt(payload, self.node.clock.now_coarse());
            }
        }
    }

    /// Resends a call that a reply bounced as provably not started, after a backoff.
    async fn resend(self, returned: Payload) -> Result<Payload, CallError> {
        let backoff = Box::pin(self.node.backoff(1, self.deadline));
        backoff.await;
        let step = self.attempt(returned, self.node.clock.now_coarse());
        self.finish(step, 1).await
    }

    /// What a reply means: the call's outcome, or (bounced before it started) the payload to
    /// resend. An activation that ended without answering leaves the outcome unknown.
    fn on_reply(
        &self,
        received: Result<Reply, oneshot::error::RecvError>,
    ) -> ControlFlow<Result<Payload, CallError>, Payload> {
        match received {
            Ok(Reply::Done(result)) => ControlFlow::Break(result),
            Ok(Reply::Bounced(returned, error)) if error.provably_not_started() => {
                ControlFlow::Continue(returned)
            }
            Ok(Reply::Bounced(_, error)) => ControlFlow::Break(Err(error)),
            Err(_) => ControlFlow::Break(Err(CallError::OutcomeUnknown {
                id: self.id.to_string(),
                reason: "the activation ended without answering".into(),
            })),
        }
    }

    /// Sends the call through the cluster's routes.
    async fn elsewhere(&self, routes: &Routes, payload: Payload) -> Elsewhere {
        let location = match self.node.locate(self.id) {
            Ok(location) => location,
            Err(error) => return Elsewhere::Done(Err(error)),
        };
        let info = &self.entry.methods[self.method];
        let call = ElsewhereCall {
            object_type: self.entry.name,
            method: info.name,
            idempotent: info.idempotent,
            id: self.id,
            location: &location,
            chain: self.chain.as_ref(),
            identity: self.identity.as_ref(),
            one_way: self.one_way,
            forward: self.forward,
            deadline: self.deadline,
        };
        self.node.call_elsewhere(routes, call, payload).await
    }
}

/// A call's future past its first attempt (see the module docs).
struct Waiting<'a>(Wait<'a>);

/// A boxed call future (the rare paths).
type BoxedCall<'a> = Pin<Box<dyn Future<Output = Result<Payload, CallError>> + Send + 'a>>;

enum Wait<'a> {
    /// Queued in an activation here: waiting for its reply.
    Reply(Routed<'a>, oneshot::Receiver<Reply>),
    /// Being resent, or sent through the cluster's routes.
    Retry(BoxedCall<'a>),
}

impl Future for Waiting<'_> {
    type Output = Result<Payload, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.0 {
                Wait::Retry(call) => return call.as_mut().poll(cx),
                Wait::Reply(routed, reply) => {
                    let returned = match routed.on_reply(ready!(Pin::new(reply).poll(cx))) {
                        ControlFlow::Break(outcome) => return Poll::Ready(outcome),
                        ControlFlow::Continue(returned) => returned,
                    };
                    let resend = Box::pin(routed.clone().resend(returned));
                    this.0 = Wait::Retry(resend);
                }
            }
        }
    }
}
