//! The injected clock (invariant 10): the only way runtime logic reads time.
//!
//! Production uses [`SystemClock`], which reads `CLOCK_BOOTTIME` so suspended time counts (a
//! lease must not look valid after the machine slept through its expiry). Tests and the
//! simulation use [`ManualClock`], whose time moves only when told to.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::ops::{Add, Sub};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// A reading of a monotonic clock, in nanoseconds since an arbitrary origin of that clock.
///
/// Readings of different clocks are not comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MonoTime {
    nanos: u64,
}

impl MonoTime {
    /// The origin of the clock.
    pub const ZERO: MonoTime = MonoTime { nanos: 0 };
    /// A time later than any reading (used for "no deadline").
    pub const MAX: MonoTime = MonoTime { nanos: u64::MAX };

    /// A reading `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        MonoTime { nanos }
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.nanos
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: MonoTime) -> Duration {
        Duration::from_nanos(self.nanos.saturating_sub(earlier.nanos))
    }

    /// `self + d`, saturating at [`MonoTime::MAX`].
    pub fn saturating_add(self, d: Duration) -> MonoTime {
        let add = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        MonoTime { nanos: self.nanos.saturating_add(add) }
    }

    /// `self - d`, saturating at [`MonoTime::ZERO`].
    pub fn saturating_sub(self, d: Duration) -> MonoTime {
        let sub = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        MonoTime { nanos: self.nanos.saturating_sub(sub) }
    }
}

impl Add<Duration> for MonoTime {
    type Output = MonoTime;
    fn add(self, d: Duration) -> MonoTime {
        self.saturating_add(d)
    }
}

impl Sub<MonoTime> for MonoTime {
    type Output = Duration;
    fn sub(self, earlier: MonoTime) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl fmt::Display for MonoTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}s", self.nanos as f64 / 1e9)
    }
}

/// A boxed future returned by [`Clock::sleep_until`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The source of time for all runtime logic.
///
/// `now` is monotonic and never fails. `sleep_until` is cancel safe (dropping the future
/// cancels the sleep) and completes at or after the requested instant of *this* clock.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current reading.
    fn now(&self) -> MonoTime;
    /// A cheaper reading that may lag [`Clock::now`] by a few milliseconds (and, right after
    /// the machine resumes from suspend, by the suspended time for up to 100 ms of awake time).
    /// Good for deadlines and idleness (10 ms granularity); never for lease decisions.
    fn now_coarse(&self) -> MonoTime {
        self.now()
    }
    /// A future that completes once `now() >= deadline`.
    fn sleep_until(&self, deadline: MonoTime) -> Sleep;
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The production clock: `CLOCK_BOOTTIME`, which keeps counting while the machine is suspended.
///
/// Sleeps use tokio's timer (which does not count suspended time); after a suspension they may
/// complete late, never early, because the deadline is re-checked against `CLOCK_BOOTTIME`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl SystemClock {
    /// A shared handle to the system clock.
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

/// Reads a Linux clock in nanoseconds.
fn read_clock(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec and the clock ids used here are supported by
    // every Linux kernel this runs on; clock_gettime writes only into `ts`.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock}) failed");
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Reads `CLOCK_BOOTTIME`.
fn boottime_now() -> MonoTime {
    MonoTime::from_nanos(read_clock(libc::CLOCK_BOOTTIME))
}

/// `CLOCK_BOOTTIME − CLOCK_MONOTONIC` (the suspended time so far), refreshed every 100 ms of
/// coarse time; `u64::MAX` until first measured.
static SUSPEND_OFFSET_NANOS: AtomicU64 = AtomicU64::new(u64::MAX);
/// `CLOCK_MONOTONIC_COARSE` reading of the last offset refresh.
static OFFSET_REFRESHED_AT: AtomicU64 = AtomicU64::new(0);
const OFFSET_REFRESH_NANOS: u64 = 100_000_000;

/// A coarse `CLOCK_BOOTTIME`: `CLOCK_MONOTONIC_COARSE` (a few ns, jiffy resolution) plus the
/// suspended time measured at the last refresh. Never ahead of `boottime_now()`.
fn boottime_coarse() -> MonoTime {
    let coarse = read_clock(libc::CLOCK_MONOTONIC_COARSE);
    let mut offset = SUSPEND_OFFSET_NANOS.load(Ordering::Relaxed);
    if offset == u64::MAX
        || coarse.saturating_sub(OFFSET_REFRESHED_AT.load(Ordering::Relaxed)) > OFFSET_REFRESH_NANOS
    {
        // Boot time first: the offset then errs small, so coarse readings never run ahead.
        let boot = read_clock(libc::CLOCK_BOOTTIME);
        let monotonic = read_clock(libc::CLOCK_MONOTONIC);
        offset = boot.saturating_sub(monotonic);
        SUSPEND_OFFSET_NANOS.store(offset, Ordering::Relaxed);
        OFFSET_REFRESHED_AT.store(coarse, Ordering::Relaxed);
    }
    MonoTime::from_nanos(coarse.saturating_add(offset))
}

impl Clock for SystemClock {
    fn now(&self) -> MonoTime {
        boottime_now()
    }

    fn now_coarse(&self) -> MonoTime {
        boottime_coarse()
    }

    fn sleep_until(&self, deadline: MonoTime) -> Sleep {
        Box::pin(async move {
            loop {
                let now = boottime_now();
                if now >= deadline {
                    return;
                }
                tokio::time::sleep(deadline - now).await;
            }
        })
    }
}

/// A clock that moves only when a test (or the simulation) advances it.
///
/// Cloning gives another handle to the same time.
#[derive(Clone, Default)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualInner>>,
}

#[derive(Default)]
struct ManualInner {
    now: MonoTime,
    next_sleeper: u64,
    sleepers: BTreeMap<(MonoTime, u64), Waker>,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock").field("now", &self.now()).finish()
    }
}

impl ManualClock {
    /// A manual clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A manual clock starting at `start`.
    pub fn starting_at(start: MonoTime) -> Self {
        let clock = Self::default();
        clock.lock().now = start;
        clock
    }

    /// A shared handle to this clock.
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManualInner> {
        // A poisoned lock means a test already panicked; keep going with the data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves time forward by `by` and wakes every sleeper whose deadline has come.
    pub fn advance(&self, by: Duration) {
        let target = self.now() + by;
        self.set(target);
    }

    /// Sets the time (never backwards) and wakes due sleepers.
    pub fn set(&self, to: MonoTime) {
        let wakers: Vec<Waker> = {
            let mut inner = self.lock();
            if to > inner.now {
                inner.now = to;
            }
            let now = inner.now;
            let due: Vec<(MonoTime, u64)> =
                inner.sleepers.range(..=(now, u64::MAX)).map(|(k, _)| *k).collect();
            due.iter().filter_map(|k| inner.sleepers.remove(k)).collect()
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// The earliest pending sleep deadline, if any.
    pub fn next_deadline(&self) -> Option<MonoTime> {
        self.lock().sleepers.keys().next().map(|(t, _)| *t)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> MonoTime {
        self.lock().now
    }

    fn sleep_until(&self, deadline: MonoTime) -> Sleep {
        Box::pin(ManualSleep { clock: self.clone(), deadline, key: None })
    }
}

struct ManualSleep {
    clock: ManualClock,
    deadline: MonoTime,
    key: Option<(MonoTime, u64)>,
}

impl Future for ManualSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut inner = this.clock.lock();
        if inner.now >= this.deadline {
            if let Some(key) = this.key.take() {
                inner.sleepers.remove(&key);
            }
            return Poll::Ready(());
        }
        let key = match this.key {
            Some(key) => key,
            None => {
                inner.next_sleeper += 1;
                let key = (this.deadline, inner.next_sleeper);
                this.key = Some(key);
                key
            }
        };
        inner.sleepers.insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.clock.lock().sleepers.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_readings_never_run_ahead_and_stay_close() {
        let clock = SystemClock;
        for _ in 0..1000 {
            let coarse = clock.now_coarse();
            let precise = clock.now();
            assert!(coarse <= precise, "{coarse} vs {precise}");
            assert!(precise - coarse < Duration::from_millis(50), "{coarse} vs {precise}");
        }
    }

    #[test]
    fn system_clock_is_monotonic() {
        let clock = SystemClock;
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
        assert!(a > MonoTime::ZERO);
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_advanced() {
        let clock = ManualClock::new();
        let sleep = clock.sleep_until(MonoTime::ZERO + Duration::from_secs(5));
        let handle = tokio::spawn(sleep);
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(4));
        tokio::task::yield_now().await;
        assert!(!handle.is_finished());
        clock.advance(Duration::from_secs(1));
        handle.await.expect("sleep task");
        assert_eq!(clock.now(), MonoTime::from_nanos(5_000_000_000));
        assert_eq!(clock.next_deadline(), None);
    }
}
