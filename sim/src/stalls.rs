//! Seeded stall points: the simulation's [`StallSource`] for `verse-core`'s stall points
//! ([`verse_core::fault::stall`]).
//!
//! While a run's faults may happen (`faults_from..heal_by`), each time a node host reaches a
//! stall point the source draws from the seed whether to stall it and for how long: mostly
//! short stalls (1–300 ms), sometimes long ones (1–2.5 × the lease TTL), so that a node
//! holding a checked-but-not-yet-applied effect wakes up after its lease ran out and another
//! node took the shard over; only the epoch fence (invariant 5) then stops its write. Stalls
//! end by `heal_by`, so they never eat into the liveness bound. Each stall is recorded as an
//! [`Event::Stall`] (on the trace, and counted in the seed's event counts).
//!
//! The source tells hosts apart with [`crate::timeline::current_host`]; only node hosts
//! stall.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verse_core::fault::{self, Stall, StallPoint, StallSource};

use crate::clock::sim_now;
use crate::history::{Event, History};

/// How often each stall point stalls, and how long.
#[derive(Debug, Clone, PartialEq)]
pub struct StallRates {
    /// Probability that reaching [`StallPoint::AfterServeCheck`] stalls.
    pub after_serve_check: f64,
    /// Probability that reaching [`StallPoint::BeforeSave`] stalls.
    pub before_save: f64,
    /// Probability that reaching [`StallPoint::BeforeRelease`] stalls.
    pub before_release: f64,
    /// Probability that reaching [`StallPoint::Keepalive`] stalls.
    pub keepalive: f64,
    /// Of the stalls, the fraction that are long (longer than the lease TTL).
    pub long_fraction: f64,
}

impl StallRates {
    /// No stalls at all.
    pub fn none() -> Self {
        StallRates {
            after_serve_check: 0.0,
            before_save: 0.0,
            before_release: 0.0,
            keepalive: 0.0,
            long_fraction: 0.0,
        }
    }

    fn rate(&self, point: StallPoint) -> f64 {
        match point {
            StallPoint::AfterServeCheck => self.after_serve_check,
            StallPoint::BeforeSave => self.before_save,
            StallPoint::BeforeRelease => self.before_release,
            StallPoint::Keepalive => self.keepalive,
        }
    }
}

impl Default for StallRates {
    fn default() -> Self {
        StallRates {
            after_serve_check: 0.05,
            before_save: 0.01,
            before_release: 0.2,
            keepalive: 0.03,
            long_fraction: 0.25,
        }
    }
}

struct Source {
    rng: RefCell<ChaCha8Rng>,
    rates: StallRates,
    lease_ttl: Duration,
    from: Duration,
    until: Duration,
    /// The hosts that may stall (the nodes).
    hosts: BTreeSet<String>,
    history: History,
}

impl Source {
    fn decide(&self, point: StallPoint) -> Option<Stall> {
        let now = sim_now();
        if now < self.from || now >= self.until {
            return None;
        }
        let host = crate::timeline::current_host().filter(|host| self.hosts.contains(host))?;
        let mut rng = self.rng.borrow_mut();
        let rate = self.rates.rate(point);
        if rate <= 0.0 || !rng.gen_bool(rate.min(1.0)) {
            return None;
        }
        let wanted = if rng.gen_bool(self.rates.long_fraction.clamp(0.0, 1.0)) {
            self.lease_ttl.mul_f64(rng.gen_range(1.0..2.5))
        } else {
            Duration::from_millis(rng.gen_range(1..300))
        };
        let duration = wanted.min(self.until - now);
        drop(rng);
        self.history.event(now, &host, Event::Stall { host: host.clone(), point, duration });
        Some(Box::pin(tokio::time::sleep(duration)))
    }
}

/// The stall source of one run, installed on the current thread until dropped.
pub struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        fault::set_stall_source(None);
    }
}

/// Where and when a run's stalls may happen.
#[derive(Debug, Clone)]
pub struct StallPlan {
    /// Seed of the stall draws.
    pub seed: u64,
    /// How often each point stalls.
    pub rates: StallRates,
    /// The lease TTL (long stalls last 1–2.5 × it).
    pub lease_ttl: Duration,
    /// No stall before this (global simulated time)...
    pub from: Duration,
    /// ...and every stall has ended by this.
    pub until: Duration,
    /// The hosts that may stall.
    pub hosts: Vec<String>,
}

/// Installs a stall source drawing from `plan.seed` on the current thread (module docs).
/// Removed when the result is dropped.
pub fn install(plan: StallPlan, history: History) -> Installed {
    let source = Source {
        rng: RefCell::new(ChaCha8Rng::seed_from_u64(plan.seed)),
        rates: plan.rates,
        lease_ttl: plan.lease_ttl,
        from: plan.from,
        until: plan.until,
        hosts: plan.hosts.into_iter().collect(),
        history,
    };
    let source: StallSource = Rc::new(move |point| source.decide(point));
    fault::set_stall_source(Some(source));
    Installed(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_has_a_rate() {
        let rates = StallRates::default();
        for point in StallPoint::ALL {
            assert!(rates.rate(point) > 0.0, "{point:?}");
            assert!(StallRates::none().rate(point) == 0.0);
        }
    }

    #[test]
    fn only_registered_hosts_in_the_window_stall() {
        let history = History::new();
        let plan = StallPlan {
            seed: 7,
            rates: StallRates { before_save: 1.0, long_fraction: 1.0, ..StallRates::none() },
            lease_ttl: Duration::from_secs(2),
            from: Duration::ZERO,
            until: Duration::from_secs(100),
            hosts: vec!["node1".into()],
        };
        let _installed = install(plan, history.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let start = tokio::time::Instant::now();
            fault::stall(StallPoint::BeforeSave).await;
            assert_eq!(start.elapsed(), Duration::ZERO, "an unregistered host never stalls");
            crate::timeline::register_host("voter1");
            fault::stall(StallPoint::BeforeSave).await;
            assert_eq!(start.elapsed(), Duration::ZERO, "a voter never stalls");
            crate::timeline::register_host("node1");
            fault::stall(StallPoint::Keepalive).await;
            assert_eq!(start.elapsed(), Duration::ZERO, "a point with rate 0 never stalls");
            fault::stall(StallPoint::BeforeSave).await;
            assert!(start.elapsed() >= Duration::from_secs(2), "a long stall outlives the TTL");
        });
        crate::timeline::clear_hosts();
        let events = history.events();
        assert_eq!(events.len(), 1);
        assert!(
            matches!(&events[0].1, Event::Stall { host, point: StallPoint::BeforeSave, .. } if host == "node1")
        );
    }
}
