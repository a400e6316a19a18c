//! Bounds how long a client waits for an answer, without a tokio timer per call.
//!
//! A `tokio::time::timeout` per call looked free but was not: every waiting call kept an entry
//! in tokio's timer wheel, which each worker consults and updates whenever it parks, and the
//! entries come and go at the call rate. Taking the per-call timer off the path moved P3 at 256
//! callers from 0.84 to 0.92–0.94 (`gateway_calls --pairs 5`, docs/BENCHMARKS.md).
//!
//! Instead, a waiting call registers in a small sharded table (its shard picked by the polling
//! thread, so registrations rarely contend), and one task per [`Watchdog`] sweeps the table
//! every [`SWEEP`]: a call past its bound is marked expired and woken, and fails. A bound is
//! therefore honoured to within one sweep. The sweeper runs only while calls wait: it stops
//! after a sweep that finds the table empty, and the next registration starts it again.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use slab::Slab;
use tokio::time::Instant;

/// How often the sweeper looks for calls past their bound.
pub(crate) const SWEEP: Duration = Duration::from_millis(20);

/// The waits of one client's calls, and the task that ends the ones past their bound.
pub(crate) struct Watchdog {
    shards: Box<[Mutex<Slab<Entry>>]>,
    /// Whether a sweeper task is running (or about to).
    sweeping: AtomicBool,
}

/// One waiting call.
struct Entry {
    expires: Instant,
    waker: Waker,
    expired: bool,
}

/// A wait that outlived its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

impl Watchdog {
    pub(crate) fn new() -> Arc<Self> {
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
        let shards = (threads * 2).next_power_of_two();
        Arc::new(Watchdog {
            shards: (0..shards).map(|_| Mutex::new(Slab::new())).collect(),
            sweeping: AtomicBool::new(false),
        })
    }

    /// Runs `inner` for at most `budget` (plus up to one [`SWEEP`]), measured from the first
    /// time it has to wait.
    pub(crate) fn bound<F: Future + Unpin>(
        self: &Arc<Self>,
        budget: Duration,
        inner: F,
    ) -> Bounded<'_, F> {
        Bounded { watchdog: self, inner, budget, slot: None }
    }

    /// Number of calls waiting.
    pub(crate) fn waiting(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    fn register(self: &Arc<Self>, expires: Instant, waker: &Waker) -> Slot {
        let shard = thread_shard() & (self.shards.len() - 1);
        let key = lock(&self.shards[shard]).insert(Entry {
            expires,
            waker: waker.clone(),
            expired: false,
        });
        if !self.sweeping.swap(true, Ordering::SeqCst) {
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
        Slot { shard, key }
    }

    /// Keeps the slot's waker current; true once the wait has expired.
    fn refresh(&self, slot: Slot, waker: &Waker) -> bool {
        let mut shard = lock(&self.shards[slot.shard]);
        let entry = &mut shard[slot.key];
        if !entry.expired && !entry.waker.will_wake(waker) {
            entry.waker = waker.clone();
        }
        entry.expired
    }

    fn remove(&self, slot: Slot) {
        lock(&self.shards[slot.shard]).remove(slot.key);
    }

    /// Expires and wakes every wait past its bound at `now`; false if nothing waits.
    fn expire(&self, now: Instant) -> bool {
        let mut any = false;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            any |= !shard.is_empty();
            for (_, entry) in shard.iter_mut() {
                if !entry.expired && entry.expires <= now {
                    entry.expired = true;
                    entry.waker.wake_by_ref();
                }
            }
        }
        any
    }
}

fn lock(shard: &Mutex<Slab<Entry>>) -> MutexGuard<'_, Slab<Entry>> {
    // Entries are inserted and removed whole: a poisoned lock leaves valid data.
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

/// The calling thread's shard index (before masking): threads take consecutive numbers.
fn thread_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
    }
    SHARD.with(|shard| {
        shard.get().unwrap_or_else(|| {
            let index = NEXT.fetch_add(1, Ordering::Relaxed);
            shard.set(Some(index));
            index
        })
    })
}

/// The sweeper: ends waits past their bound every [`SWEEP`], until the watchdog is dropped or
/// a sweep finds nothing waiting.
async fn sweep(watchdog: Weak<Watchdog>) {
    // If the task is dropped (its runtime shut down), the next registration starts another.
    let mut running = Running { watchdog: watchdog.clone(), armed: true };
    let mut interval = tokio::time::interval(SWEEP);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(watchdog) = watchdog.upgrade() else { return };
        if watchdog.expire(Instant::now()) {
            continue;
        }
        // Nothing waits: stop, unless a call registered after that look (its registration saw
        // `sweeping` still set and started no sweeper).
        watchdog.sweeping.store(false, Ordering::SeqCst);
        if watchdog.waiting() == 0 || watchdog.sweeping.swap(true, Ordering::SeqCst) {
            running.armed = false;
            return;
        }
    }
}

/// Clears `sweeping` when the sweeper task is dropped before it stopped itself.
struct Running {
    watchdog: Weak<Watchdog>,
    armed: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let (true, Some(watchdog)) = (self.armed, self.watchdog.upgrade()) {
            watchdog.sweeping.store(false, Ordering::SeqCst);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    shard: usize,
    key: usize,
}

/// A future bounded by a [`Watchdog`]: its output, or [`Elapsed`].
pub(crate) struct Bounded<'a, F> {
    watchdog: &'a Arc<Watchdog>,
    inner: F,
    budget: Duration,
    slot: Option<Slot>,
}

impl<F: Future + Unpin> Future for Bounded<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Poll::Ready(output) = Pin::new(&mut this.inner).poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match this.slot {
            None => {
                let expires = Instant::now() + this.budget;
                this.slot = Some(this.watchdog.register(expires, cx.waker()));
            }
            Some(slot) => {
                if this.watchdog.refresh(slot, cx.waker()) {
                    return Poll::Ready(Err(Elapsed));
                }
            }
        }
        Poll::Pending
    }
}

impl<F> Drop for Bounded<'_, F> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.watchdog.remove(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ready_future_passes_through_without_registering() {
        let watchdog = Watchdog::new();
        let output = watchdog.bound(Duration::from_secs(1), std::future::ready(7)).await;
        assert_eq!(output, Ok(7));
        assert_eq!(watchdog.waiting(), 0);
        assert!(
            !watchdog.sweeping.load(Ordering::SeqCst),
            "no sweeper for a call that never waited"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_its_bound_fails_within_one_sweep() {
        let watchdog = Watchdog::new();
        let start = Instant::now();
        let pending = std::future::pending::<()>();
        let output = watchdog.bound(Duration::from_millis(300), pending).await;
        assert_eq!(output, Err(Elapsed));
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(300), "ended early: {waited:?}");
        assert!(waited <= Duration::from_millis(300) + SWEEP, "ended late: {waited:?}");
        assert_eq!(watchdog.waiting(), 0, "the expired wait left its entry behind");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_before_the_bound_wins_and_the_sweeper_stops_when_idle() {
        let watchdog = Watchdog::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = tx.send(5);
        });
        let output = watchdog.bound(Duration::from_secs(1), rx).await;
        assert_eq!(output, Ok(Ok(5)));
        assert_eq!(watchdog.waiting(), 0);
        tokio::time::sleep(SWEEP * 3).await;
        assert!(!watchdog.sweeping.load(Ordering::SeqCst), "the sweeper kept running while idle");
        // A later wait starts a new sweeper and is still bounded.
        let output = watchdog.bound(Duration::from_millis(50), std::future::pending::<()>()).await;
        assert_eq!(output, Err(Elapsed));
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_a_waiting_call_removes_its_entry() {
        let watchdog = Watchdog::new();
        let bounded = watchdog.bound(Duration::from_secs(10), std::future::pending::<()>());
        let outcome = tokio::time::timeout(Duration::from_millis(10), bounded).await;
        assert!(outcome.is_err(), "the pending call finished");
        assert_eq!(watchdog.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn many_waits_expire_independently() {
        let watchdog = Watchdog::new();
        let mut waits = Vec::new();
        for i in 0..64u64 {
            let watchdog = watchdog.clone();
            waits.push(tokio::spawn(async move {
                let start = Instant::now();
                let budget = Duration::from_millis(10 * (i + 1));
                let output = watchdog.bound(budget, std::future::pending::<()>()).await;
                (output, start.elapsed(), budget)
            }));
        }
        for wait in waits {
            let (output, waited, budget) = wait.await.expect("wait task");
            assert_eq!(output, Err(Elapsed));
            assert!(waited >= budget && waited <= budget + SWEEP, "{waited:?} for {budget:?}");
        }
        assert_eq!(watchdog.waiting(), 0);
    }
}
