//! Object timers: `ctx.timer(period, method)` delivers a [`crate::object::Tick`] turn every
//! period through the activation's mailbox, driven by the node's wheel (no tokio timer).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::NodeShared;
use super::activation::{ActivationShared, Work};
use super::wheel::WheelEntry;
use crate::clock::MonoTime;

/// The shared state of one timer.
pub(crate) struct TimerState {
    pub(crate) method: usize,
    pub(crate) period: Duration,
    pub(crate) sequence: AtomicU64,
    pub(crate) cancelled: AtomicBool,
    pub(crate) activation: Weak<ActivationShared>,
}

impl TimerState {
    /// Delivers a tick (unless cancelled or the mailbox is full) and schedules the next one.
    pub(crate) fn fire(self: &Arc<Self>, node: &NodeShared, now: MonoTime) {
        if self.cancelled.load(Ordering::Acquire) {
            return;
        }
        let Some(activation) = self.activation.upgrade() else { return };
        let sequence = self.sequence.fetch_add(1, Ordering::AcqRel);
        let tick = Work::Tick { method: self.method, sequence };
        if !activation.push_tick(tick) {
            // Full mailbox or the activation is going away: this tick is skipped, not queued
            // behind (ticks are periodic, a late one would only bunch up).
            metrics::counter!("verse_timer_ticks_skipped_total", "type" => activation.entry.name)
                .increment(1);
            if activation.is_gone() {
                return;
            }
        }
        node.wheel.schedule(now + self.period, WheelEntry::Timer(Arc::downgrade(self)));
    }
}

/// A handle to a running timer; dropping it does not stop the timer (the activation owns it).
#[derive(Clone)]
pub struct TimerHandle {
    pub(crate) state: Arc<TimerState>,
}

impl std::fmt::Debug for TimerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerHandle")
            .field("period", &self.state.period)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl TimerHandle {
    /// Stops the timer: no tick is queued after this returns (one already queued still runs).
    pub fn cancel(&self) {
        self.state.cancelled.store(true, Ordering::Release);
    }

    /// Whether the timer was cancelled (by the handle or by deactivation).
    pub fn is_cancelled(&self) -> bool {
        self.state.cancelled.load(Ordering::Acquire)
    }
}
