//! The node-level timing wheel and its ticker.
//!
//! There is no tokio timer per call or per activation: deadlines of queued and running calls,
//! `max_turn_duration`, idle deactivation, periodic saves and object timers are entries here,
//! bucketed by tick (10 ms by default). The ticker sleeps on the injected clock until the
//! earliest bucket is due and visits only due entries. An activation keeps at most a few
//! entries (it registers again only for a deadline earlier than the one it already has).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::NodeShared;
use super::activation::ActivationShared;
use super::timer::TimerState;
use crate::clock::MonoTime;

/// What a due entry wakes.
pub(crate) enum WheelEntry {
    /// Re-examine an activation's deadlines, turn duration, idleness and periodic save.
    Activation(Weak<ActivationShared>),
    /// Deliver a timer tick.
    Timer(Weak<TimerState>),
}

/// Buckets of entries keyed by tick number.
pub(crate) struct Wheel {
    granularity_nanos: u64,
    buckets: Mutex<BTreeMap<u64, Vec<WheelEntry>>>,
    /// The tick the ticker is sleeping until (`u64::MAX` when idle).
    ticker_target: AtomicU64,
    wakeup: Notify,
}

impl Wheel {
    pub(crate) fn new(granularity: Duration) -> Self {
        let granularity_nanos = u64::try_from(granularity.as_nanos()).unwrap_or(u64::MAX).max(1);
        Wheel {
            granularity_nanos,
            buckets: Mutex::new(BTreeMap::new()),
            ticker_target: AtomicU64::new(u64::MAX),
            wakeup: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Vec<WheelEntry>>> {
        // Plain map updates under a short std lock (never held across an await); a poisoned
        // lock only means a panic elsewhere and the map is still valid.
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tick_of(&self, at: MonoTime) -> u64 {
        at.as_nanos().div_ceil(self.granularity_nanos)
    }

    fn time_of(&self, tick: u64) -> MonoTime {
        MonoTime::from_nanos(tick.saturating_mul(self.granularity_nanos))
    }

    /// Schedules `entry` to be visited at or after `at` (rounded up to the next tick).
    pub(crate) fn schedule(&self, at: MonoTime, entry: WheelEntry) {
        if at == MonoTime::MAX {
            return;
        }
        let tick = self.tick_of(at);
        self.lock().entry(tick).or_default().push(entry);
        if tick < self.ticker_target.load(Ordering::Acquire) {
            self.wakeup.notify_one();
        }
    }

    /// Removes and returns every entry due at `now`.
    fn take_due(&self, now: MonoTime) -> Vec<WheelEntry> {
        let now_tick = now.as_nanos() / self.granularity_nanos;
        let mut buckets = self.lock();
        let mut due = Vec::new();
        while let Some(entry) = buckets.first_entry() {
            if *entry.key() > now_tick {
                break;
            }
            due.extend(entry.remove());
        }
        due
    }

    fn next_due(&self) -> Option<MonoTime> {
        self.lock().keys().next().map(|tick| self.time_of(*tick))
    }

    /// Number of pending entries (tests and metrics).
    pub(crate) fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

/// How often sharded counters are published to the metrics recorder.
const METRICS_EXPORT_PERIOD: Duration = Duration::from_secs(1);

/// The ticker: runs until the node shuts down.
pub(crate) async fn run_ticker(node: Arc<NodeShared>) {
    let wheel = &node.wheel;
    let mut next_export = node.clock.now();
    loop {
        let now = node.clock.now();
        if now >= next_export {
            node.export_metrics();
            next_export = now + METRICS_EXPORT_PERIOD;
        }
        let next = wheel.next_due();
        let target_tick = next.map_or(u64::MAX, |t| wheel.tick_of(t));
        wheel.ticker_target.store(target_tick, Ordering::Release);
        // Re-check after publishing the target: an entry scheduled in between either saw the
        // old (later) target and notified, or is visible now.
        if wheel.next_due() != next {
            continue;
        }
        let wake_at = next.map_or(next_export, |at| at.min(next_export));
        tokio::select! {
            biased;
            _ = node.shutdown.cancelled() => {
                node.export_metrics();
                return;
            }
            _ = wheel.wakeup.notified() => {}
            _ = node.clock.sleep_until(wake_at) => {}
        }
        let now = node.clock.now();
        for entry in wheel.take_due(now) {
            match entry {
                WheelEntry::Activation(weak) => {
                    if let Some(activation) = weak.upgrade() {
                        activation.on_wheel(&node, now);
                    }
                }
                WheelEntry::Timer(weak) => {
                    if let Some(timer) = weak.upgrade() {
                        timer.fire(&node, now);
                    }
                }
            }
        }
    }
}
