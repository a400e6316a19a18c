//! The activation loop of one object type (monomorphised per type): activate (fence, load,
//! restore, hook), serve turns one at a time, deactivate (cancel owned work, hook, save), and
//! reactivate when work arrived during deactivation.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use tokio_util::task::TaskTracker;

use super::NodeShared;
use super::activation::{
    ActivationShared, CallEnvelope, DeactivateReason, Next, Poison, Poisonable, Reply,
};
use crate::clock::MonoTime;
use crate::context::CallContext;
use crate::epoch::Epoch;
use crate::error::CallError;
use crate::object::{ActivationPolicy, Object, Payload, PersistencePolicy, Tick, TurnFuture};
use crate::runtime::observe::{TurnObserver, TurnRecord};
use crate::store::{DeleteRequest, SaveRequest, StoredObject};

/// Entry point stored in the type registry: spawns the activation's task.
pub(super) fn start<T: Object>(
    tasks: &TaskTracker,
    node: Arc<NodeShared>,
    activation: Arc<ActivationShared>,
) {
    drop(tasks.spawn(run::<T>(node, activation)));
}

// The activation loop's futures are written as functions returning `async move` blocks, not
// `async fn`s (which store their arguments twice: as captured and as locals), and a turn's
// values are scoped so none lives across an await it does not need to: every activation, idle
// or not, holds this future (P6), and a call touches it (P1).

/// A live instance and its persistence bookkeeping.
struct Live<T> {
    object: T,
    epoch: Epoch,
    /// Version of the last stored record (save or tombstone), 0 if none.
    version: u64,
    /// Encoding of the last saved (or loaded) state, to save only when it changed.
    saved: Option<Bytes>,
    /// Method of the current (or last) turn.
    last_method: usize,
}

/// Whether this turn's latency is recorded: the first turn a worker thread starts in each tick
/// of the coarse clock (a few milliseconds). Under load that is a few hundred samples per
/// second per thread, whatever the call rate; at low rates nearly every turn.
fn sample_this_turn(now_coarse: MonoTime) -> bool {
    thread_local! {
        static LAST_SAMPLED: std::cell::Cell<MonoTime> = const { std::cell::Cell::new(MonoTime::ZERO) };
    }
    LAST_SAMPLED.with(|last| {
        let sample = last.get() != now_coarse;
        if sample {
            last.set(now_coarse);
        }
        sample
    })
}

/// How serving ended.
enum Ending {
    Deactivate(DeactivateReason),
    Delete(tokio::sync::oneshot::Sender<Result<(), CallError>>),
    /// A turn was poisoned or write-through state could not be saved: discard unsaved state.
    Discard,
}

#[allow(clippy::manual_async_fn)]
fn run<T: Object>(
    node: Arc<NodeShared>,
    activation: Arc<ActivationShared>,
) -> impl Future<Output = ()> + Send {
    async move {
        loop {
            // Activation, deactivation and saves are boxed: they are rare, and keeping them out of
            // this future keeps every idle activation's task small (P6).
            let Some(mut live) = Box::pin(activate::<T>(&node, &activation)).await else { return };
            let ending = serve::<T>(&node, &activation, &mut live).await;
            let stopping = matches!(ending, Ending::Deactivate(DeactivateReason::Shutdown));
            // A shard leaving this node: queued calls go back unstarted for the router to resend
            // to the shard's next owner, and the slot must not come back here.
            let leaving = matches!(ending, Ending::Deactivate(DeactivateReason::Handoff))
                || matches!(ending, Ending::Discard);
            Box::pin(deactivate::<T>(&node, &activation, live, ending)).await;
            if stopping {
                for work in activation.drain() {
                    work.bounce(CallError::ShuttingDown);
                }
            }
            if leaving {
                for work in activation.drain() {
                    work.bounce(not_served(&activation));
                }
            }
            if !activation.finish_deactivation(&node, !stopping && !leaving) {
                return;
            }
        }
    }
}

fn not_served(activation: &ActivationShared) -> CallError {
    CallError::NotServed { shard: activation.table_shard, epoch: None, hint: None }
}

fn root_context(node: &Arc<NodeShared>, activation: &Arc<ActivationShared>) -> CallContext {
    CallContext {
        node: node.clone(),
        activation: activation.clone(),
        chain: None,
        deadline: MonoTime::MAX,
        caller: None,
    }
}

/// Ends an activation attempt that failed before serving: every queued piece of work gets
/// `error`, and the slot goes away (or retries if work arrived meanwhile and `retry`).
fn abandon(activation: &ActivationShared, error: &CallError, bounce: bool) {
    for work in activation.drain() {
        if bounce {
            work.bounce(error.clone());
        } else {
            work.fail(error.clone());
        }
    }
}

async fn activate<T: Object>(
    node: &Arc<NodeShared>,
    activation: &Arc<ActivationShared>,
) -> Option<Live<T>> {
    loop {
        while let Some(reply) = activation.take_leading_delete() {
            let _ = reply.send(delete_inactive(node, activation).await);
        }
        if activation.is_empty() {
            activation.set_deactivating();
            if !activation.finish_deactivation(node, true) {
                return None;
            }
            continue;
        }
        match try_activate::<T>(node, activation).await {
            Ok(live) => {
                let now = node.clock.now();
                activation.set_active(node, now);
                activation.entry.metrics.activations.add(1);
                activation.entry.metrics.activations_started.add(1);
                return Some(live);
            }
            Err((error, bounce)) => {
                abandon(activation, &error, bounce);
                activation.set_deactivating();
                if !activation.finish_deactivation(node, true) {
                    return None;
                }
            }
        }
    }
}

/// Deletes an object that has no activation: checks its type, leaves a tombstone.
async fn delete_inactive(
    node: &NodeShared,
    activation: &ActivationShared,
) -> Result<(), CallError> {
    let entry = &activation.entry;
    if !entry.persistent() {
        return Ok(());
    }
    let id = &activation.id;
    let store_error = |source| CallError::Store { id: id.to_string(), source };
    let fence = &activation.location.fence;
    let epoch = node.ownership.check(fence, &*node.clock)?;
    if !node.ownership.is_fenced(fence, epoch) {
        let raised = node.store.fence(fence, epoch).await.map_err(store_error)?;
        if raised > epoch {
            return Err(CallError::NotServed {
                shard: activation.table_shard,
                epoch: Some(raised),
                hint: None,
            });
        }
        node.ownership.mark_fenced(fence, epoch);
    }
    let record = node.store.load(id).await.map_err(store_error)?;
    let version = match &record {
        Some(stored) if stored.is_tombstone() => return Ok(()),
        Some(stored) if stored.object_type != entry.name => {
            return Err(CallError::TypeMismatch {
                id: id.to_string(),
                actual: stored.object_type.clone(),
            });
        }
        Some(stored) => stored.version,
        None => return Ok(()),
    };
    let request = DeleteRequest {
        fence: fence.clone(),
        epoch,
        object_id: id.to_string(),
        object_type: entry.name.to_owned(),
        version: version + 1,
    };
    node.store.delete(request).await.map_err(store_error)
}

/// Activation proper. On failure returns the error for queued work and whether that work
/// provably did not start (bounce) or failed for good.
async fn try_activate<T: Object>(
    node: &Arc<NodeShared>,
    activation: &Arc<ActivationShared>,
) -> Result<Live<T>, (CallError, bool)> {
    let entry = &activation.entry;
    let id = &activation.id;
    let fence = &activation.location.fence;
    let epoch = node
        .ownership
        .check(fence, &*node.clock)
        .or_else(|refused| match activation.exempt_chain() {
            // A shard being handed off may activate an object for a call whose chain runs a
            // turn of the shard (the handoff exception).
            Some(chain) => node.ownership.check_for_chain(fence, &*node.clock, Some(&*chain)),
            None => Err(refused),
        })
        .map_err(|e| (e, true))?;
    let mut record: Option<StoredObject> = None;
    if entry.persistent() {
        crate::fault::stall(crate::fault::StallPoint::AfterServeCheck).await;
        if !node.ownership.is_fenced(fence, epoch) {
            let raised = node
                .store
                .fence(fence, epoch)
                .await
                .map_err(|source| (CallError::Store { id: id.to_string(), source }, false))?;
            if raised > epoch {
                // Another owner holds a newer epoch: this node must not serve the shard.
                let error = CallError::NotServed {
                    shard: activation.table_shard,
                    epoch: Some(raised),
                    hint: None,
                };
                return Err((error, true));
            }
            node.ownership.mark_fenced(fence, epoch);
        }
        record = node
            .store
            .load(id)
            .await
            .map_err(|source| (CallError::Store { id: id.to_string(), source }, false))?;
    }
    if let Some(stored) = &record
        && !stored.is_tombstone()
        && stored.object_type != entry.name
    {
        let actual = stored.object_type.clone();
        return Err((CallError::TypeMismatch { id: id.to_string(), actual }, false));
    }
    let exists = record.as_ref().is_some_and(|r| !r.is_tombstone());
    let creating = activation.has_create_queued();
    if entry.options.activation == ActivationPolicy::AfterCreate && !exists && !creating {
        let error =
            CallError::ObjectNotFound { object_type: entry.name.to_owned(), id: id.to_string() };
        return Err((error, false));
    }
    let mut live = Live {
        object: T::construct(id),
        epoch,
        version: record.as_ref().map_or(0, |r| r.version),
        saved: None,
        last_method: 0,
    };
    if let Some(StoredObject { state: Some(bytes), .. }) = &record {
        let state = T::State::decode(bytes.clone()).map_err(|e| {
            let message = format!("cannot decode stored state: {e}");
            (CallError::ActivationFailed { id: id.to_string(), message }, false)
        })?;
        live.object.restore(state);
        live.saved = Some(bytes.clone());
    }
    let ctx = root_context(node, activation);
    live.object.on_activate(&ctx).await.map_err(|e| {
        (CallError::ActivationFailed { id: id.to_string(), message: e.to_string() }, false)
    })?;
    if creating
        && !exists
        && entry.persistent()
        && entry.options.activation == ActivationPolicy::AfterCreate
    {
        // Existence of an after-create object must survive deactivation: store it now.
        save::<T>(node, activation, &mut live, true).await.map_err(|e| (e, false))?;
    }
    Ok(live)
}

/// Saves the state if it changed since the last save (or always, when `force`).
async fn save<T: Object>(
    node: &NodeShared,
    activation: &ActivationShared,
    live: &mut Live<T>,
    force: bool,
) -> Result<(), CallError> {
    if !activation.entry.persistent() {
        return Ok(());
    }
    let encoded = Bytes::from(live.object.snapshot().encode_to_vec());
    if !force && live.saved.as_ref() == Some(&encoded) {
        return Ok(());
    }
    let request = SaveRequest {
        fence: activation.location.fence.clone(),
        epoch: live.epoch,
        object_id: activation.id.to_string(),
        object_type: activation.entry.name.to_owned(),
        version: live.version + 1,
        state: encoded.clone(),
    };
    crate::fault::stall(crate::fault::StallPoint::BeforeSave).await;
    match node.store.save(request).await {
        Ok(()) => {
            live.version += 1;
            live.saved = Some(encoded);
            activation.entry.metrics.saves.increment(1);
            Ok(())
        }
        Err(source) => {
            activation.entry.metrics.save_failures.increment(1);
            tracing::warn!(object = %activation.id, error = %source, "state save failed");
            Err(CallError::Store { id: activation.id.to_string(), source })
        }
    }
}

/// What the loop does instead of a turn.
enum Other {
    /// A periodic save.
    Save,
    /// Nothing to await (a `create` was answered).
    Skip,
    /// Serving ends.
    End(Ending),
}

/// A started turn: its future, its dequeue time and, for sampled turns, a precise start.
type Begun<'a> = (TurnFuture<'a>, MonoTime, Option<MonoTime>);

#[allow(clippy::manual_async_fn)]
fn serve<'a, T: Object>(
    node: &'a Arc<NodeShared>,
    activation: &'a Arc<ActivationShared>,
    live: &'a mut Live<T>,
) -> impl Future<Output = Ending> + Send + 'a {
    async move {
        // One context per activation, refilled for each turn (no per-turn reference counting).
        let mut ctx = root_context(node, activation);
        // Whether the last turn's finish parked the task (see `ActivationShared::finish_and_park`).
        let mut parked = false;
        // A periodic save is due (run at the top of the loop, where no work item is in scope).
        let mut save_due = false;
        loop {
            if std::mem::take(&mut save_due) {
                // A failure is logged and retried at the next period or at deactivation.
                let save = Box::pin(save::<T>(node, activation, live, false));
                let _ = save.await;
            }
            let input = match classify(activation.next(node, std::mem::take(&mut parked)).await) {
                Ok(input) => input,
                Err(Other::Save) => {
                    save_due = true;
                    continue;
                }
                Err(Other::Skip) => continue,
                Err(Other::End(ending)) => return ending,
            };
            let (turn, started, sampled_start) =
                match begin_turn(node, activation, live, &mut ctx, input) {
                    Ok(begun) => begun,
                    Err(ending) => return ending,
                };
            let Some(result) = (Poisonable { turn, activation }).await else {
                observe_turn(node, activation, live.epoch, TurnObserver::turn_finished);
                poisoned(node, activation);
                return Ending::Discard;
            };
            ctx.chain = None;
            ctx.caller = None;
            let (result, ending) = if result.is_ok()
                && activation.entry.options.persistence == PersistencePolicy::WriteThrough
            {
                let saved = Box::pin(write_through::<T>(node, activation, live, result));
                saved.await
            } else {
                (result, None)
            };
            observe_turn(node, activation, live.epoch, TurnObserver::turn_finished);
            parked = finish_turn(node, activation, live, started, sampled_start, result);
            if let Some(ending) = ending {
                return ending;
            }
        }
    }
}

/// The turn the next piece of work asks for, or what else to do.
fn classify(next: Next) -> Result<TurnInput, Other> {
    match next {
        Next::Call(envelope, started) => Ok(TurnInput::call(envelope, started)),
        Next::Tick { method, sequence, now } => Ok(TurnInput::tick(method, sequence, now)),
        Next::Create(reply) => {
            let _ = reply.send(Ok(()));
            Err(Other::Skip)
        }
        Next::Delete(reply) => Err(Other::End(Ending::Delete(reply))),
        Next::Deactivate(DeactivateReason::Discard) => Err(Other::End(Ending::Discard)),
        Next::Deactivate(reason) => Err(Other::End(Ending::Deactivate(reason))),
        Next::Save => Err(Other::Save),
    }
}

/// A turn to run: a call, or a timer tick.
struct TurnInput {
    method: usize,
    payload: Payload,
    deadline: MonoTime,
    chain: Option<Arc<crate::context::CallChain>>,
    identity: Option<Arc<crate::context::CallerIdentity>>,
    started: MonoTime,
}

impl TurnInput {
    fn call(envelope: CallEnvelope, started: MonoTime) -> Self {
        TurnInput {
            method: envelope.method,
            payload: envelope.payload,
            deadline: envelope.deadline,
            chain: envelope.chain,
            identity: envelope.identity,
            started,
        }
    }

    fn tick(method: usize, sequence: u64, now: MonoTime) -> Self {
        TurnInput {
            method,
            payload: Payload::typed(Tick { sequence }),
            deadline: MonoTime::MAX,
            chain: None,
            identity: None,
            started: now,
        }
    }
}

/// Checks ownership (invariant 2: a turn starts only while this node owns the shard at the
/// activation's epoch), fills the context and starts the method's future. Returns the future,
/// the dequeue time and, for sampled turns, a precise start time.
fn begin_turn<'a, T: Object>(
    node: &NodeShared,
    activation: &ActivationShared,
    live: &'a mut Live<T>,
    ctx: &'a mut CallContext,
    input: TurnInput,
) -> Result<Begun<'a>, Ending> {
    let fence = &activation.location.fence;
    match node.ownership.check_for_chain(fence, &*node.clock, input.chain.as_deref()) {
        Ok(epoch) if epoch == live.epoch => {}
        Ok(_) | Err(_) => {
            if let Some(reply) = activation.finish_running(input.started) {
                let _ = reply.send(Reply::Bounced(input.payload, not_served(activation)));
            }
            return Err(Ending::Deactivate(DeactivateReason::Handoff));
        }
    }
    observe_turn(node, activation, live.epoch, TurnObserver::turn_started);
    activation.entry.metrics.methods[input.method].calls.add(1);
    live.last_method = input.method;
    // Turn latency is sampled (see `sample_this_turn`): precise clock reads and a histogram
    // update on every turn cost more than the turn itself.
    let sampled_start = sample_this_turn(input.started).then(|| node.clock.now());
    ctx.chain = input.chain;
    ctx.deadline = input.deadline;
    ctx.caller = input.identity;
    let ctx: &'a CallContext = ctx;
    let turn = T::dispatch(&mut live.object, ctx, input.method, input.payload);
    Ok((turn, input.started, sampled_start))
}

/// Tells the node's turn observer, if any, that a turn of `activation` started or finished.
fn observe_turn(
    node: &NodeShared,
    activation: &ActivationShared,
    epoch: Epoch,
    event: fn(&dyn TurnObserver, &TurnRecord<'_>),
) {
    if let Some(observer) = &node.observer {
        let record = TurnRecord {
            node_id: &node.config.node_id,
            object_type: activation.entry.name,
            object_id: &activation.id,
            epoch,
        };
        event(&**observer, &record);
    }
}

/// The turn was dropped mid-way (it overran `max_turn_duration`, or its shard's handoff timed
/// out or the shard was lost): its caller learns the outcome is unknown, with the cause;
/// unsaved state is discarded by the caller of this function.
fn poisoned(node: &NodeShared, activation: &ActivationShared) {
    let entry = &activation.entry;
    entry.metrics.poisoned.increment(1);
    let limit = entry.options.max_turn_duration;
    let reason = match activation.poison() {
        Some(Poison::TurnLimit) | None => format!("turn exceeded max_turn_duration {limit:?}"),
        Some(Poison::Dropped) => {
            "turn dropped: its shard's handoff timed out or the shard was lost".to_owned()
        }
    };
    tracing::warn!(object = %activation.id, %reason, "activation poisoned");
    if let Some(reply) = activation.finish_running(node.clock.now_coarse()) {
        let error = CallError::OutcomeUnknown { id: activation.id.to_string(), reason };
        let _ = reply.send(Reply::Done(Err(error)));
    }
}

/// Write-through: the save commits before the response is sent. A failed save turns the
/// result into the store error, and the activation reloads the last saved state rather than
/// keep memory that differs from the store.
async fn write_through<T: Object>(
    node: &NodeShared,
    activation: &ActivationShared,
    live: &mut Live<T>,
    result: Result<Payload, CallError>,
) -> (Result<Payload, CallError>, Option<Ending>) {
    match save::<T>(node, activation, live, false).await {
        Ok(()) => (result, None),
        Err(error) => (Err(error), Some(Ending::Discard)),
    }
}

/// Records metrics and sends the response; returns whether the task parked for its next work.
fn finish_turn<T: Object>(
    node: &NodeShared,
    activation: &ActivationShared,
    live: &Live<T>,
    started: MonoTime,
    sampled_start: Option<MonoTime>,
    result: Result<Payload, CallError>,
) -> bool {
    let metrics = &activation.entry.metrics.methods[live.last_method];
    if let Some(start) = sampled_start {
        let finished = node.clock.now();
        metrics.turn_seconds.record(finished.saturating_duration_since(start).as_secs_f64());
    }
    if result.is_err() {
        metrics.errors.increment(1);
    }
    let (reply, parked) = activation.finish_and_park(started);
    if let Some(reply) = reply {
        let _ = reply.send(Reply::Done(result));
    }
    parked
}

async fn deactivate<T: Object>(
    node: &Arc<NodeShared>,
    activation: &Arc<ActivationShared>,
    mut live: Live<T>,
    ending: Ending,
) {
    activation.set_deactivating();
    activation.cancel_owned().await;
    let discard = matches!(ending, Ending::Discard);
    if discard {
        for work in activation.drain() {
            work.bounce(not_served(activation));
        }
    } else {
        let ctx = root_context(node, activation);
        if let Err(error) = live.object.on_deactivate(&ctx).await {
            tracing::warn!(object = %activation.id, %error, "on_deactivate hook failed");
        }
    }
    match ending {
        Ending::Delete(reply) => {
            let result = tombstone(node, activation, live.epoch, live.version).await;
            let _ = reply.send(result);
        }
        Ending::Deactivate(_) => {
            if save::<T>(node, activation, &mut live, false).await.is_err() {
                activation.set_save_failed();
            }
        }
        Ending::Discard => {}
    }
    activation.entry.metrics.activations.add(-1);
}

async fn tombstone(
    node: &NodeShared,
    activation: &ActivationShared,
    epoch: Epoch,
    version: u64,
) -> Result<(), CallError> {
    if !activation.entry.persistent() {
        return Ok(());
    }
    let request = DeleteRequest {
        fence: activation.location.fence.clone(),
        epoch,
        object_id: activation.id.to_string(),
        object_type: activation.entry.name.to_owned(),
        version: version + 1,
    };
    node.store
        .delete(request)
        .await
        .map_err(|source| CallError::Store { id: activation.id.to_string(), source })
}
