//! Per-host clocks and the one global timeline.
//!
//! turmoil advances every host's time equally, which would never exercise the lease margin.
//! Each simulated host therefore gets a [`HostClock`]: turmoil's simulated time with a seeded
//! offset and a seeded rate error. Checkers never use these clocks: they record on the global
//! timeline [`sim_now`] (turmoil's elapsed simulated time), which is comparable across hosts.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use verse_core::clock::Sleep;
use verse_core::{Clock, MonoTime, SharedClock};

/// The global simulated time (turmoil's elapsed time), as seen from inside a host. Outside a
/// host (the harness between steps) it is the last time a host read.
/// A simulation runs on one thread, so the last reading is per thread.
pub fn sim_now() -> Duration {
    thread_local! {
        static LAST: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    }
    match turmoil::sim_elapsed() {
        Some(now) => {
            LAST.with(|last| last.set(last.get().max(now)));
            now
        }
        None => LAST.with(Cell::get),
    }
}

#[derive(Debug)]
struct Inner {
    offset_nanos: u64,
    rate_ppm: i64,
    /// The largest reading handed out, so readings never go back (also outside a host).
    last: AtomicU64,
}

/// A host's clock: `offset + t × (1 + rate)` for global simulated time `t`.
#[derive(Debug, Clone)]
pub struct HostClock {
    inner: Arc<Inner>,
}

impl HostClock {
    /// A clock `offset` ahead of the global timeline, running `rate_ppm` parts per million fast
    /// (negative: slow).
    pub fn new(offset: Duration, rate_ppm: i64) -> Self {
        let offset_nanos = u64::try_from(offset.as_nanos()).unwrap_or(u64::MAX / 2);
        HostClock { inner: Arc::new(Inner { offset_nanos, rate_ppm, last: AtomicU64::new(0) }) }
    }

    /// This clock as the runtime's injected clock.
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }

    /// The rate error in parts per million.
    pub fn rate_ppm(&self) -> i64 {
        self.inner.rate_ppm
    }

    fn local_nanos(&self, sim: Duration) -> u64 {
        let t = i128::try_from(sim.as_nanos()).unwrap_or(i128::MAX / 4);
        let local = i128::from(self.inner.offset_nanos)
            + t
            + t * i128::from(self.inner.rate_ppm) / 1_000_000;
        u64::try_from(local.max(0)).unwrap_or(u64::MAX)
    }

    /// The global-time duration in which this clock advances by `local`.
    fn sim_duration_of(&self, local: Duration) -> Duration {
        let local = local.as_nanos();
        let denominator = u128::try_from(1_000_000 + self.inner.rate_ppm).unwrap_or(1_000_000);
        Duration::from_nanos(u64::try_from(local * 1_000_000 / denominator + 1).unwrap_or(u64::MAX))
    }
}

impl Clock for HostClock {
    fn now(&self) -> MonoTime {
        let reading = self.local_nanos(sim_now());
        let previous = self.inner.last.fetch_max(reading, Ordering::Relaxed);
        MonoTime::from_nanos(reading.max(previous))
    }

    fn sleep_until(&self, deadline: MonoTime) -> Sleep {
        let clock = self.clone();
        Box::pin(async move {
            loop {
                let now = clock.now();
                if now >= deadline {
                    return;
                }
                tokio::time::sleep(clock.sim_duration_of(deadline - now)).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_and_rate_apply() {
        let clock = HostClock::new(Duration::from_secs(5), 1_000);
        assert_eq!(clock.local_nanos(Duration::ZERO), 5_000_000_000);
        assert_eq!(clock.local_nanos(Duration::from_secs(10)), 15_010_000_000);
        let slow = HostClock::new(Duration::ZERO, -5_000);
        assert_eq!(slow.local_nanos(Duration::from_secs(1)), 995_000_000);
        // Sleeping for a local second takes a little longer in global time on a slow clock.
        assert!(slow.sim_duration_of(Duration::from_secs(1)) > Duration::from_secs(1));
    }
}
