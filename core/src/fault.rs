//! Test-only fault switches for planted-bug tests (feature `fault-injection`, off by default).
//!
//! The simulation proves its checkers bite by turning one of these on and requiring a checker
//! to fail. Switches are per thread (a simulation runs all its hosts on one thread, so parallel
//! simulations in one test process do not disturb each other). Without the feature every
//! switch reads as off at no cost, and [`set`] does not exist.

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

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    use super::*;

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
