//! Test-only fault injection (feature `fault-injection`, off by default): planted-bug switches
//! and seeded stall points.
//!
//! - **Switches** ([`FaultSwitch`]): the simulation proves its checkers bite by turning one of
//!   these on and requiring a checker to fail.
//! - **Stall points** ([`StallPoint`], [`stall`]): places in the runtime where a task may be
//!   held for a while, between a check and the effect it licenses (a serve check and the
//!   store access it allows, a save, a shard release, the processing of a keepalive answer).
//!   The simulation installs a [`StallSource`] that decides, from the seed, whether and how
//!   long each point stalls (sometimes longer than the lease TTL, so a stale owner wakes up
//!   after losing its lease and the epoch fence, invariant 5, is what stops its write).
//!
//! Both are per thread (a simulation runs all its hosts on one thread, so parallel simulations
//! in one test process do not disturb each other). Without the feature every switch reads as
//! off and every stall point is an empty `async fn`, at no cost; [`set`] and
//! [`set_stall_source`] do not exist.

/// A planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultSwitch {
    /// The ownership check admits turns and effects without a proven lease (invariant 2).
    SkipLeaseCheck,
    /// The in-memory store accepts saves and deletes at any epoch (invariant 5).
    SkipEpochFence,
}

impl FaultSwitch {
    #[cfg(feature = "fault-injection")]
    const fn bit(self) -> u8 {
        match self {
            FaultSwitch::SkipLeaseCheck => 1,
            FaultSwitch::SkipEpochFence => 2,
        }
    }
}

#[cfg(feature = "fault-injection")]
thread_local! {
    static SWITCHES: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// Turns `switch` on or off for the current thread.
#[cfg(feature = "fault-injection")]
pub fn set(switch: FaultSwitch, on: bool) {
    SWITCHES.with(|s| {
        let bits = if on { s.get() | switch.bit() } else { s.get() & !switch.bit() };
        s.set(bits);
    });
}

/// Whether `switch` is on for the current thread (always off without the feature).
#[inline]
pub fn is_on(switch: FaultSwitch) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        SWITCHES.with(|s| s.get() & switch.bit() != 0)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = switch;
        false
    }
}

/// A place in the runtime where the simulation may stall the running task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StallPoint {
    /// Between a serve check and the store access it licenses (activation: after the
    /// ownership check, before raising the fence and loading the state).
    AfterServeCheck,
    /// Before a state save (write-through, periodic or at deactivation) reaches the store.
    BeforeSave,
    /// Before the shard driver releases handed-off shards to the coordinator.
    BeforeRelease,
    /// In keepalive handling: after a keepalive's answer arrived, before it is processed
    /// (the lease proof is published late; the next keepalive goes late).
    Keepalive,
}

impl StallPoint {
    /// Every stall point.
    pub const ALL: [StallPoint; 4] = [
        StallPoint::AfterServeCheck,
        StallPoint::BeforeSave,
        StallPoint::BeforeRelease,
        StallPoint::Keepalive,
    ];
}

/// A stall to await: a sleep on the caller's (simulated) runtime.
pub type Stall = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Decides, at each stall point reached on this thread, whether to stall and returns the
/// stall to await.
pub type StallSource = std::rc::Rc<dyn Fn(StallPoint) -> Option<Stall>>;

#[cfg(feature = "fault-injection")]
thread_local! {
    static STALLS: std::cell::RefCell<Option<StallSource>> = const { std::cell::RefCell::new(None) };
}

/// Installs (or, with `None`, removes) the stall source of the current thread.
#[cfg(feature = "fault-injection")]
pub fn set_stall_source(source: Option<StallSource>) {
    STALLS.with(|s| *s.borrow_mut() = source);
}

/// A stall point: awaits the stall the installed source asks for, if any (nothing without
/// the feature, or without a source).
#[inline]
pub async fn stall(point: StallPoint) {
    #[cfg(feature = "fault-injection")]
    {
        // The source is called (and the borrow ends) before the stall is awaited.
        let stall = STALLS.with(|s| s.borrow().as_ref().and_then(|source| source(point)));
        if let Some(stall) = stall {
            stall.await;
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = point;
    }
}

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stall_points_sleep_as_long_as_the_source_says() {
        let seen = Rc::new(Cell::new(0));
        let counter = seen.clone();
        set_stall_source(Some(Rc::new(move |point| {
            counter.set(counter.get() + 1);
            (point == StallPoint::BeforeSave).then(|| -> Stall {
                Box::pin(tokio::time::sleep(std::time::Duration::from_secs(5)))
            })
        })));
        let start = tokio::time::Instant::now();
        stall(StallPoint::Keepalive).await;
        assert_eq!(start.elapsed(), std::time::Duration::ZERO);
        stall(StallPoint::BeforeSave).await;
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(5));
        assert_eq!(seen.get(), 2);
        set_stall_source(None);
        stall(StallPoint::BeforeSave).await;
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(5));
    }

    #[test]
    fn switches_are_per_thread_and_independent() {
        set(FaultSwitch::SkipLeaseCheck, true);
        assert!(is_on(FaultSwitch::SkipLeaseCheck));
        assert!(!is_on(FaultSwitch::SkipEpochFence));
        std::thread::spawn(|| assert!(!is_on(FaultSwitch::SkipLeaseCheck))).join().expect("thread");
        set(FaultSwitch::SkipLeaseCheck, false);
        assert!(!is_on(FaultSwitch::SkipLeaseCheck));
    }
}
