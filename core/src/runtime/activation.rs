//! Activations: the one slot per object id on a node, its mailbox, and the loop that runs its
//! turns one at a time.
//!
//! Slot phases: Activating → Active → Deactivating → Gone. Work pushed while Activating or
//! Deactivating waits in the mailbox; a deactivation whose mailbox is not empty when its save
//! has committed starts a new activation in the same task, so a new activation never starts
//! before the previous save committed. The mailbox allocates nothing while empty (its capacity
//! is released when drained), and the activation has no timer of its own: the node wheel
//! drives deadlines, turn limits, idleness and periodic saves.

mod validate;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::timer::{TimerHandle, TimerState};
use super::wheel::WheelEntry;
use super::{NodeShared, TypeEntry};
use crate::clock::MonoTime;
use crate::context::{CallChain, CallerIdentity};
use crate::error::CallError;
use crate::object::{Payload, PersistencePolicy};
use crate::runtime::ownership::Location;

/// Why a running turn is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Poison {
    /// It ran longer than `max_turn_duration`.
    TurnLimit = 1,
    /// Its shard's handoff timed out, or the node lost the shard or its lease.
    Dropped = 2,
}

/// The answer to one call.
pub(crate) enum Reply {
    /// The call ran (or failed before running with a final error).
    Done(Result<Payload, CallError>),
    /// The call provably did not start; its payload comes back for the router to resend.
    Bounced(Payload, CallError),
}

/// The sending side of a reply slot.
pub(crate) type ReplyTx = oneshot::Sender<Reply>;

/// A call waiting in a mailbox.
pub(crate) struct CallEnvelope {
    pub(crate) method: usize,
    pub(crate) payload: Payload,
    pub(crate) deadline: MonoTime,
    pub(crate) chain: Option<Arc<CallChain>>,
    pub(crate) identity: Option<Arc<CallerIdentity>>,
    pub(crate) reply: Option<ReplyTx>,
}

/// Anything an activation processes in order.
pub(crate) enum Work {
    /// A method call.
    Call(CallEnvelope),
    /// `create`: activates if needed, then answers.
    Create(oneshot::Sender<Result<(), CallError>>),
    /// `delete`: deactivates, writes a tombstone, answers.
    Delete(oneshot::Sender<Result<(), CallError>>),
    /// Placeholder left behind once work has been handed over (never queued).
    Nothing,
    /// A timer tick.
    Tick {
        /// The timer's method.
        method: usize,
        /// Tick number.
        sequence: u64,
    },
}

impl Work {
    fn deadline(&self) -> MonoTime {
        match self {
            Work::Call(env) => env.deadline,
            _ => MonoTime::MAX,
        }
    }

    /// Whether this is a call whose awaited chain includes a turn of `shard` (admitted by a
    /// shard that is being handed off: the handoff exception).
    fn is_exempt_for(&self, shard: u32) -> bool {
        matches!(self, Work::Call(env) if env.chain.as_ref().is_some_and(|c| c.includes_shard(shard)))
    }

    /// Answers the work as not started (the activation is leaving without running it).
    pub(crate) fn bounce(self, error: CallError) {
        match self {
            Work::Call(env) => {
                if let Some(reply) = env.reply {
                    let _ = reply.send(Reply::Bounced(env.payload, error));
                }
            }
            Work::Create(reply) | Work::Delete(reply) => {
                let _ = reply.send(Err(error));
            }
            Work::Tick { .. } | Work::Nothing => {}
        }
    }

    /// Answers the work with a final error.
    pub(crate) fn fail(self, error: CallError) {
        match self {
            Work::Call(env) => {
                if let Some(reply) = env.reply {
                    let _ = reply.send(Reply::Done(Err(error)));
                }
            }
            Work::Create(reply) | Work::Delete(reply) => {
                let _ = reply.send(Err(error));
            }
            Work::Tick { .. } | Work::Nothing => {}
        }
    }
}

/// Slot phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Activating,
    Active,
    Deactivating,
    Gone,
}

/// Why an activation is asked to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeactivateReason {
    Idle,
    Shutdown,
    /// The shard is handed off: save, and bounce queued work unstarted (`NotServed`).
    Handoff,
    /// Ownership was lost: drop the state unsaved, bounce queued work unstarted.
    Discard,
}

impl DeactivateReason {
    /// Whether the activation ends at once, without waiting to be idle.
    fn is_forced(self) -> bool {
        self != DeactivateReason::Idle
    }
}

/// The call whose turn is running.
struct Running {
    is_call: bool,
    started: MonoTime,
    deadline: MonoTime,
    reply: Option<ReplyTx>,
}

struct Mailbox {
    queue: Queue,
    phase: Phase,
    running: Option<Running>,
    last_activity: MonoTime,
    /// Earliest time a wheel entry for this activation is pending (`MAX`: none).
    wheel_at: MonoTime,
    next_save: MonoTime,
    deactivate: Option<DeactivateReason>,
    save_due: bool,
    /// The activation task's waker, kept across wakes (woken by reference, so the same task
    /// never clones it again).
    waker: Option<Waker>,
    /// Whether the task is waiting for work (only then does a push wake it).
    parked: bool,
}

/// The mailbox FIFO: one inline slot, so the usual single queued call allocates nothing, and
/// an overflow queue whose capacity is released as soon as it drains (an idle activation holds
/// no queue memory).
#[derive(Default)]
struct Queue {
    /// The oldest item, when the overflow is empty or holds only newer items.
    head: Option<Work>,
    overflow: VecDeque<Work>,
}

impl Queue {
    fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.overflow.len()
    }

    fn is_empty(&self) -> bool {
        self.head.is_none() && self.overflow.is_empty()
    }

    fn push_back(&mut self, work: Work) {
        if self.is_empty() {
            self.head = Some(work);
        } else {
            self.overflow.push_back(work);
        }
    }

    fn pop_front(&mut self) -> Option<Work> {
        let work = self.head.take().or_else(|| self.overflow.pop_front());
        if self.overflow.is_empty() && self.overflow.capacity() > 0 {
            self.overflow = VecDeque::new();
        }
        work
    }

    fn front(&self) -> Option<&Work> {
        self.head.as_ref().or_else(|| self.overflow.front())
    }

    fn iter(&self) -> impl Iterator<Item = &Work> {
        self.head.iter().chain(self.overflow.iter())
    }

    fn take_all(&mut self) -> Vec<Work> {
        let mut all = Vec::with_capacity(self.len());
        all.extend(self.head.take());
        all.extend(std::mem::take(&mut self.overflow));
        all
    }

    /// Moves the oldest call whose chain includes `shard` to the front; whether there was one.
    fn front_exempt(&mut self, shard: u32) -> bool {
        if !self.iter().any(|w| w.is_exempt_for(shard)) {
            return false;
        }
        let mut all = self.take_all();
        if let Some(position) = all.iter().position(|w| w.is_exempt_for(shard)) {
            let work = all.remove(position);
            all.insert(0, work);
        }
        for work in all {
            self.push_back(work);
        }
        true
    }

    fn retain(&mut self, keep: impl Fn(&Work) -> bool) {
        for work in self.take_all() {
            if keep(&work) {
                self.push_back(work);
            }
        }
    }
}

impl Mailbox {
    /// Wakes the activation task if it waits for work.
    fn wake(&mut self) {
        if self.parked {
            self.parked = false;
            if let Some(waker) = &self.waker {
                waker.wake_by_ref();
            }
        }
    }

    /// Keeps the task's waker (cloned only when it changed).
    fn set_waker(&mut self, waker: &Waker) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.waker = Some(waker.clone());
        }
    }

    /// No call is running or queued (queued timer ticks do not keep an object active).
    fn is_idle(&self) -> bool {
        let running_call = self.running.as_ref().is_some_and(|r| r.is_call);
        !running_call && self.queue.iter().all(|w| matches!(w, Work::Tick { .. }))
    }
}

/// Background work owned by an activation (allocated on first use).
#[derive(Default)]
struct Owned {
    tasks: JoinSet<()>,
    timers: Vec<Arc<TimerState>>,
}

/// The shared, type-erased part of an activation.
pub(crate) struct ActivationShared {
    pub(crate) id: Arc<str>,
    pub(crate) entry: Arc<TypeEntry>,
    pub(crate) location: Location,
    pub(crate) table_shard: u32,
    mailbox: Mutex<Mailbox>,
    /// Why the running turn is poisoned ([`Poison`] as a byte; 0: it is not).
    poisoned: AtomicU8,
    gone: AtomicBool,
    /// A deactivation save failed (a handoff must not release the shard).
    save_failed: AtomicBool,
    owned: Mutex<Option<Box<Owned>>>,
}

/// Why a push was refused.
pub(crate) enum PushError {
    /// The activation is gone: look the slot up again.
    Gone(Work),
    /// The mailbox is full.
    Full,
}

impl ActivationShared {
    pub(crate) fn new(id: Arc<str>, entry: Arc<TypeEntry>, location: Location) -> Self {
        let table_shard = location.table_shard;
        ActivationShared {
            id,
            entry,
            location,
            table_shard,
            mailbox: Mutex::new(Mailbox {
                queue: Queue::default(),
                phase: Phase::Activating,
                running: None,
                last_activity: MonoTime::ZERO,
                wheel_at: MonoTime::MAX,
                next_save: MonoTime::MAX,
                deactivate: None,
                save_due: false,
                waker: None,
                parked: false,
            }),
            poisoned: AtomicU8::new(0),
            gone: AtomicBool::new(false),
            save_failed: AtomicBool::new(false),
            owned: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Mailbox> {
        // Short critical sections over plain data, never across an await; std mutex is cheaper
        // than tokio's here. A poisoned lock means a panic elsewhere: the data stays valid.
        self.mailbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn phase(&self) -> Phase {
        self.lock().phase
    }

    /// A lock-free hint that the slot is gone (may lag; `push` is the authority).
    pub(crate) fn is_gone_hint(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.phase() == Phase::Gone
    }

    /// Queues work. Never blocks: a full mailbox answers at once.
    pub(crate) fn push(self: &Arc<Self>, node: &NodeShared, work: Work) -> Result<(), PushError> {
        let deadline = work.deadline();
        let schedule;
        {
            let mut mailbox = self.lock();
            if mailbox.phase == Phase::Gone {
                return Err(PushError::Gone(work));
            }
            if mailbox.queue.len() >= self.entry.options.mailbox_capacity {
                return Err(PushError::Full);
            }
            schedule = deadline < mailbox.wheel_at;
            if schedule {
                mailbox.wheel_at = deadline;
            }
            mailbox.queue.push_back(work);
            mailbox.wake();
        }
        if schedule {
            node.wheel.schedule(deadline, WheelEntry::Activation(Arc::downgrade(self)));
        }
        Ok(())
    }

    /// Queues a timer tick; false if it was not queued.
    pub(crate) fn push_tick(&self, tick: Work) -> bool {
        {
            let mut mailbox = self.lock();
            let accepting = matches!(mailbox.phase, Phase::Active | Phase::Activating);
            if !accepting || mailbox.queue.len() >= self.entry.options.mailbox_capacity {
                return false;
            }
            mailbox.queue.push_back(tick);
            mailbox.wake();
        }
        true
    }

    /// Asks the activation to deactivate at its next dequeue. A forced reason replaces an
    /// idle one.
    pub(crate) fn request_deactivation(&self, reason: DeactivateReason) {
        let mut mailbox = self.lock();
        match mailbox.deactivate {
            Some(current) if current.is_forced() => {}
            _ => mailbox.deactivate = Some(reason),
        }
        mailbox.wake();
    }

    /// Poisons the running turn now (handoff timeout, lease loss): it is dropped at its next
    /// poll and nothing is saved.
    pub(crate) fn poison_now(&self) {
        self.poisoned.store(Poison::Dropped as u8, Ordering::Release);
        let mailbox = self.lock();
        if let Some(waker) = &mailbox.waker {
            waker.wake_by_ref();
        }
    }

    /// Records that a deactivation save failed.
    pub(crate) fn set_save_failed(&self) {
        self.save_failed.store(true, Ordering::Release);
    }

    /// Whether a deactivation save failed.
    pub(crate) fn save_failed(&self) -> bool {
        self.save_failed.load(Ordering::Acquire)
    }

    /// The wheel visits this activation: expire calls, poison an overlong turn, start idle
    /// deactivation or a periodic save, and schedule the next visit.
    pub(crate) fn on_wheel(self: &Arc<Self>, node: &NodeShared, now: MonoTime) {
        let options = &self.entry.options;
        let mut expired: Vec<ReplyTx> = Vec::new();
        let mut wake = false;
        let next;
        {
            let mut mailbox = self.lock();
            mailbox.wheel_at = MonoTime::MAX;
            if mailbox.phase == Phase::Gone {
                return;
            }
            let mut kept = Queue::default();
            for work in mailbox.queue.take_all() {
                match work {
                    Work::Call(mut env) if env.deadline <= now => {
                        if let Some(reply) = env.reply.take() {
                            expired.push(reply);
                        }
                    }
                    other => kept.push_back(other),
                }
            }
            mailbox.queue = kept;
            let mut earliest = MonoTime::MAX;
            for work in mailbox.queue.iter() {
                earliest = earliest.min(work.deadline());
            }
            if let Some(running) = mailbox.running.as_mut() {
                if running.deadline <= now {
                    if let Some(reply) = running.reply.take() {
                        expired.push(reply);
                    }
                } else if running.reply.is_some() {
                    earliest = earliest.min(running.deadline);
                }
                let limit = running.started + options.max_turn_duration;
                if now >= limit {
                    self.poisoned.store(Poison::TurnLimit as u8, Ordering::Release);
                    // The task is inside the turn (not parked): wake it so the turn is
                    // polled, sees the poison and is dropped.
                    if let Some(waker) = &mailbox.waker {
                        waker.wake_by_ref();
                    }
                } else {
                    earliest = earliest.min(limit);
                }
            }
            if mailbox.phase == Phase::Active {
                if let Some(idle) = options.idle_timeout {
                    let idle_at = mailbox.last_activity + idle;
                    let idle_now = mailbox.is_idle();
                    if idle_now && now >= idle_at {
                        mailbox.deactivate.get_or_insert(DeactivateReason::Idle);
                        wake = true;
                    } else {
                        earliest = earliest.min(idle_at.max(now + Duration::from_millis(1)));
                    }
                }
                if let PersistencePolicy::Periodic(period) = options.persistence {
                    if now >= mailbox.next_save {
                        mailbox.save_due = true;
                        mailbox.next_save = now + period;
                        wake = true;
                    }
                    earliest = earliest.min(mailbox.next_save);
                }
            }
            next = earliest;
            if next < MonoTime::MAX {
                mailbox.wheel_at = next;
            }
            if wake {
                mailbox.wake();
            }
        }
        let id = &self.id;
        for reply in expired {
            let _ =
                reply.send(Reply::Done(Err(CallError::DeadlineExceeded { id: id.to_string() })));
        }
        if next < MonoTime::MAX {
            node.wheel.schedule(next, WheelEntry::Activation(Arc::downgrade(self)));
        }
    }

    /// Marks the activation Active after a successful activation and arms its wheel entry.
    pub(crate) fn set_active(self: &Arc<Self>, node: &NodeShared, now: MonoTime) {
        let options = &self.entry.options;
        let mut at = MonoTime::MAX;
        if let Some(idle) = options.idle_timeout {
            at = at.min(now + idle);
        }
        let mut mailbox = self.lock();
        mailbox.phase = Phase::Active;
        mailbox.last_activity = now;
        mailbox.running = None;
        if let PersistencePolicy::Periodic(period) = options.persistence {
            mailbox.next_save = now + period;
            at = at.min(mailbox.next_save);
        }
        // Queued calls may carry deadlines that were already registered.
        let schedule = at < mailbox.wheel_at;
        if schedule {
            mailbox.wheel_at = at;
        }
        drop(mailbox);
        self.poisoned.store(0, Ordering::Release);
        if schedule {
            node.wheel.schedule(at, WheelEntry::Activation(Arc::downgrade(self)));
        }
    }

    /// Takes the next piece of work (cancel safe: nothing is taken until it returns Ready).
    /// `parked`: the task was parked by [`finish_and_park`](Self::finish_and_park), so the
    /// first poll returns `Pending` without looking (any push since has woken the task).
    pub(crate) fn next<'a>(
        self: &'a Arc<Self>,
        node: &'a NodeShared,
        parked: bool,
    ) -> NextWork<'a> {
        NextWork { activation: self, node, parked }
    }

    fn poll_next(self: &Arc<Self>, node: &NodeShared, cx: &mut Context<'_>) -> Poll<Next> {
        let mut schedule = None;
        let result = {
            let mut mailbox = self.lock();
            // Kept current even when work is ready at once, so the wheel can always wake the
            // task (to poison a turn) without a waker of its own.
            mailbox.set_waker(cx.waker());
            // A shard being handed off still runs calls whose awaited chain runs a turn of
            // it (the handoff exception), one at a time, before it deactivates.
            let mut exempt_only = false;
            if let Some(reason) = mailbox.deactivate {
                let exempt = reason == DeactivateReason::Handoff
                    && self.fence_shard().is_some_and(|shard| mailbox.queue.front_exempt(shard));
                if exempt {
                    exempt_only = true;
                } else if reason.is_forced() || mailbox.is_idle() {
                    mailbox.deactivate = None;
                    mailbox.phase = Phase::Deactivating;
                    return Poll::Ready(Next::Deactivate(reason));
                } else {
                    // Work arrived after the idle decision: the object is not idle any more.
                    mailbox.deactivate = None;
                }
            }
            if !exempt_only && mailbox.save_due {
                mailbox.save_due = false;
                return Poll::Ready(Next::Save);
            }
            let mut result = Poll::Pending;
            let mut taken = 0usize;
            loop {
                if exempt_only && taken > 0 {
                    // The exempt call had expired: decide again (deactivate or the next one).
                    cx.waker().wake_by_ref();
                    break;
                }
                let Some(work) = mailbox.queue.pop_front() else { break };
                taken += 1;
                match work {
                    Work::Call(mut env) => {
                        let now = node.clock.now_coarse();
                        if env.deadline <= now {
                            if let Some(reply) = env.reply.take() {
                                let error = CallError::DeadlineExceeded { id: self.id.to_string() };
                                let _ = reply.send(Reply::Done(Err(error)));
                            }
                            continue;
                        }
                        let limit = now + self.entry.options.max_turn_duration;
                        if limit < mailbox.wheel_at {
                            mailbox.wheel_at = limit;
                            schedule = Some(limit);
                        }
                        mailbox.running = Some(Running {
                            is_call: true,
                            started: now,
                            deadline: env.deadline,
                            reply: env.reply.take(),
                        });
                        mailbox.last_activity = now;
                        result = Poll::Ready(Next::Call(env, now));
                        break;
                    }
                    Work::Nothing => {}
                    Work::Tick { method, sequence } => {
                        let now = node.clock.now_coarse();
                        let limit = now + self.entry.options.max_turn_duration;
                        if limit < mailbox.wheel_at {
                            mailbox.wheel_at = limit;
                            schedule = Some(limit);
                        }
                        mailbox.running = Some(Running {
                            is_call: false,
                            started: now,
                            deadline: MonoTime::MAX,
                            reply: None,
                        });
                        result = Poll::Ready(Next::Tick { method, sequence, now });
                        break;
                    }
                    Work::Create(reply) => {
                        result = Poll::Ready(Next::Create(reply));
                        break;
                    }
                    Work::Delete(reply) => {
                        mailbox.phase = Phase::Deactivating;
                        result = Poll::Ready(Next::Delete(reply));
                        break;
                    }
                }
            }
            if result.is_pending() {
                mailbox.parked = true;
            }
            result
        };
        if let Some(at) = schedule {
            node.wheel.schedule(at, WheelEntry::Activation(Arc::downgrade(self)));
        }
        result
    }

    /// Completes the running call: takes its reply slot (empty if the wheel already answered
    /// the caller with a deadline error).
    pub(crate) fn finish_running(&self, now: MonoTime) -> Option<ReplyTx> {
        Self::finish(&mut self.lock(), now)
    }

    fn finish(mailbox: &mut Mailbox, now: MonoTime) -> Option<ReplyTx> {
        let running = mailbox.running.take()?;
        if running.is_call {
            // Timer ticks are not activity: only calls keep an object from idling out.
            mailbox.last_activity = mailbox.last_activity.max(now);
        }
        running.reply
    }

    /// Completes the running turn like [`finish_running`](Self::finish_running) and, under the
    /// same lock, parks the task when nothing waits for it (no queued work, no deactivation
    /// request, no save due). Returns the reply slot and whether the task parked; a parked
    /// task's next [`next`](Self::next) may return `Pending` at once, without taking the lock
    /// again: a push wakes it through the waker its last `next` poll kept, which is this same
    /// task's (the activation loop is one spawned task for its whole life).
    pub(crate) fn finish_and_park(&self, now: MonoTime) -> (Option<ReplyTx>, bool) {
        let mut mailbox = self.lock();
        let reply = Self::finish(&mut mailbox, now);
        let park = mailbox.queue.is_empty()
            && mailbox.deactivate.is_none()
            && !mailbox.save_due
            && mailbox.waker.is_some();
        if park {
            mailbox.parked = true;
        }
        (reply, park)
    }

    /// Whether the running turn has been poisoned.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire) != 0
    }

    /// Why the running turn was poisoned, if it was.
    pub(crate) fn poison(&self) -> Option<Poison> {
        match self.poisoned.load(Ordering::Acquire) {
            0 => None,
            x if x == Poison::TurnLimit as u8 => Some(Poison::TurnLimit),
            _ => Some(Poison::Dropped),
        }
    }

    /// Whether the mailbox is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().queue.is_empty()
    }

    /// The shard whose epoch fences this activation (none for objects pinned to a node).
    fn fence_shard(&self) -> Option<u32> {
        match &self.location.fence {
            crate::store::FenceKey::Shard(shard) => Some(shard.0),
            crate::store::FenceKey::Node(_) => None,
        }
    }

    /// The chain of the oldest queued call whose chain includes a turn of this activation's
    /// shard (such a call may activate it while the shard is being handed off).
    pub(crate) fn exempt_chain(&self) -> Option<Arc<CallChain>> {
        let shard = self.fence_shard()?;
        let mailbox = self.lock();
        mailbox.queue.iter().find(|w| w.is_exempt_for(shard)).and_then(|w| match w {
            Work::Call(env) => env.chain.clone(),
            _ => None,
        })
    }

    /// Whether a `create` waits in the mailbox.
    pub(crate) fn has_create_queued(&self) -> bool {
        self.lock().queue.iter().any(|w| matches!(w, Work::Create(_)))
    }

    /// Takes a `delete` at the head of the mailbox of a slot that is not active yet (deleting
    /// an inactive object must not activate it).
    pub(crate) fn take_leading_delete(&self) -> Option<oneshot::Sender<Result<(), CallError>>> {
        let mut mailbox = self.lock();
        if !matches!(mailbox.queue.front(), Some(Work::Delete(_))) {
            return None;
        }
        match mailbox.queue.pop_front() {
            Some(Work::Delete(reply)) => Some(reply),
            _ => None,
        }
    }

    /// Drains the mailbox (activation ending with work still queued).
    pub(crate) fn drain(&self) -> Vec<Work> {
        let mut mailbox = self.lock();
        mailbox.queue.take_all()
    }

    /// Moves to Deactivating (delete and poison paths).
    pub(crate) fn set_deactivating(&self) {
        self.lock().phase = Phase::Deactivating;
    }

    /// After a deactivation's save: either goes Gone and leaves the table (mailbox empty), or
    /// returns to Activating for the work that arrived meanwhile. Returns whether to reactivate.
    pub(crate) fn finish_deactivation(
        self: &Arc<Self>,
        node: &NodeShared,
        allow_reactivation: bool,
    ) -> bool {
        let mut table = node.table(self.table_shard);
        let mut mailbox = self.lock();
        // Ticks queued for the ended activation's timers die with it.
        mailbox.queue.retain(|w| !matches!(w, Work::Tick { .. }));
        if allow_reactivation && !mailbox.queue.is_empty() {
            mailbox.phase = Phase::Activating;
            return true;
        }
        mailbox.phase = Phase::Gone;
        self.gone.store(true, Ordering::Relaxed);
        drop(mailbox);
        if let Some(current) = table.get(self.id.as_ref())
            && Arc::ptr_eq(&current.0, self)
        {
            table.remove(self.id.as_ref());
        }
        false
    }

    /// Spawns owned background work.
    pub(crate) fn spawn_owned(
        &self,
        node: &NodeShared,
        work: Pin<Box<dyn Future<Output = ()> + Send + 'static>>,
    ) {
        let _ = node;
        let mut owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        owned.get_or_insert_with(Box::default).tasks.spawn(work);
    }

    /// Starts an owned timer.
    pub(crate) fn start_timer(
        self: &Arc<Self>,
        node: &NodeShared,
        period: Duration,
        method: &str,
    ) -> Result<TimerHandle, CallError> {
        let index = self.entry.method_index(method)?;
        let period = period.max(node.wheel_granularity());
        let state = Arc::new(TimerState {
            method: index,
            period,
            sequence: Default::default(),
            cancelled: AtomicBool::new(false),
            activation: Arc::downgrade(self),
        });
        {
            let mut owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
            let owned = owned.get_or_insert_with(Box::default);
            owned.timers.retain(|t| !t.cancelled.load(Ordering::Acquire));
            owned.timers.push(state.clone());
        }
        node.wheel.schedule(node.clock.now() + period, WheelEntry::Timer(Arc::downgrade(&state)));
        Ok(TimerHandle { state })
    }

    /// Cancels owned timers and tasks and waits for the tasks to end (before the save).
    pub(crate) async fn cancel_owned(&self) {
        let owned = self.owned.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut owned) = owned {
            for timer in &owned.timers {
                timer.cancelled.store(true, Ordering::Release);
            }
            owned.tasks.shutdown().await;
        }
    }
}

/// What the activation loop does next.
pub(crate) enum Next {
    Call(CallEnvelope, MonoTime),
    Tick { method: usize, sequence: u64, now: MonoTime },
    Create(oneshot::Sender<Result<(), CallError>>),
    Delete(oneshot::Sender<Result<(), CallError>>),
    Deactivate(DeactivateReason),
    Save,
}

/// Future returned by [`ActivationShared::next`].
pub(crate) struct NextWork<'a> {
    activation: &'a Arc<ActivationShared>,
    node: &'a NodeShared,
    parked: bool,
}

impl Future for NextWork<'_> {
    type Output = Next;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Next> {
        if std::mem::take(&mut self.parked) {
            return Poll::Pending;
        }
        self.activation.poll_next(self.node, cx)
    }
}

/// Wraps a turn so that a poisoned activation drops it at its next poll.
pub(crate) struct Poisonable<'a, F> {
    pub(crate) turn: F,
    pub(crate) activation: &'a ActivationShared,
}

impl<F: Future + Unpin> Future for Poisonable<'_, F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.activation.is_poisoned() {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.turn).poll(cx).map(Some)
    }
}
