//! The lease rule as a sans-IO state machine.
//!
//! `lease_valid_until = t_send + granted_ttl × (1 − ρ) − margin`, where `t_send` is the holder's
//! clock reading when it *sent* the keepalive whose success it is processing (with several
//! outstanding, the oldest), `ρ` the largest clock-rate error allowed (1 %), and `margin` the
//! longest delay allowed between a check and its effect (`max(500 ms, TTL / 10)`). Keepalives go
//! every `(TTL − margin) / 3`.
//!
//! A backend feeds [`LeaseTracker`] the events it sees (sent, succeeded, failed, lease gone) with
//! readings of the injected clock, sleeps until [`LeaseTracker::next_wakeup`], and publishes
//! [`LeaseTracker::status`]. The tracker itself never reads time.

use std::collections::VecDeque;
use std::time::Duration;

use crate::clock::MonoTime;
use crate::shardmap::Incarnation;

use super::types::{LeaseState, LeaseStatus};

/// The constants of the lease rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseRule {
    /// The largest clock-rate error allowed (ρ).
    pub max_clock_rate_error: f64,
    /// The least margin between a check and its effect.
    pub min_margin: Duration,
}

impl Default for LeaseRule {
    fn default() -> Self {
        LeaseRule { max_clock_rate_error: 0.01, min_margin: Duration::from_millis(500) }
    }
}

impl LeaseRule {
    /// `max(min_margin, ttl / 10)`.
    pub fn margin(&self, ttl: Duration) -> Duration {
        self.min_margin.max(ttl / 10)
    }

    /// `(ttl − margin) / 3`, at least 10 ms.
    pub fn keepalive_interval(&self, ttl: Duration) -> Duration {
        (ttl.saturating_sub(self.margin(ttl)) / 3).max(Duration::from_millis(10))
    }

    /// `t_send + ttl × (1 − ρ) − margin`, saturating at the clock's origin.
    pub fn valid_until(&self, t_send: MonoTime, granted_ttl: Duration) -> MonoTime {
        let scaled = granted_ttl.mul_f64(1.0 - self.max_clock_rate_error);
        (t_send + scaled).saturating_sub(self.margin(granted_ttl))
    }
}

/// How many keepalives may be unanswered before the backend should restart its stream.
const MAX_OUTSTANDING: usize = 3;

/// The holder's view of one lease.
#[derive(Debug, Clone)]
pub struct LeaseTracker {
    rule: LeaseRule,
    incarnation: Incarnation,
    ttl: Duration,
    state: LeaseState,
    valid_until: MonoTime,
    /// Send times of unanswered keepalives, oldest first.
    outstanding: VecDeque<MonoTime>,
    last_send: MonoTime,
}

impl LeaseTracker {
    /// A tracker for a lease just granted with `granted_ttl`, whose grant request was sent at
    /// `t_send` (the grant is the first proof).
    pub fn granted(
        rule: LeaseRule,
        incarnation: Incarnation,
        granted_ttl: Duration,
        t_send: MonoTime,
    ) -> Self {
        let mut tracker = LeaseTracker {
            rule,
            incarnation,
            ttl: granted_ttl,
            state: LeaseState::Unproven,
            valid_until: MonoTime::ZERO,
            outstanding: VecDeque::new(),
            last_send: t_send,
        };
        tracker.prove(t_send, granted_ttl);
        tracker
    }

    /// The status to publish.
    pub fn status(&self) -> LeaseStatus {
        LeaseStatus {
            incarnation: Some(self.incarnation),
            state: self.state,
            valid_until: self.valid_until,
            granted_ttl: self.ttl,
        }
    }

    /// The current state.
    pub fn state(&self) -> LeaseState {
        self.state
    }

    /// The TTL granted last.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// When the next keepalive is due.
    pub fn next_send_at(&self) -> MonoTime {
        self.last_send + self.rule.keepalive_interval(self.ttl)
    }

    /// Whether a keepalive should be sent at `now`.
    pub fn should_send(&self, now: MonoTime) -> bool {
        self.state != LeaseState::Lost && now >= self.next_send_at()
    }

    /// Whether so many keepalives are unanswered that the stream carrying them is suspect.
    pub fn stream_suspect(&self) -> bool {
        self.outstanding.len() >= MAX_OUTSTANDING
    }

    /// When the backend must wake up next: the next send, or the end of the proof.
    pub fn next_wakeup(&self) -> MonoTime {
        match self.state {
            LeaseState::Lost => MonoTime::MAX,
            LeaseState::Proven => self.next_send_at().min(self.valid_until),
            LeaseState::Unproven => self.next_send_at(),
        }
    }

    /// A keepalive was sent at `t_send`.
    pub fn on_sent(&mut self, t_send: MonoTime) {
        if self.state == LeaseState::Lost {
            return;
        }
        self.outstanding.push_back(t_send);
        self.last_send = t_send;
    }

    /// A keepalive succeeded with `granted_ttl`; `now` is when the answer was processed.
    /// The proof counts from the oldest outstanding send. An answer nobody waits for (after a
    /// stream reset) proves nothing.
    pub fn on_success(&mut self, granted_ttl: Duration, now: MonoTime) {
        if self.state == LeaseState::Lost {
            return;
        }
        let Some(t_send) = self.outstanding.pop_front() else { return };
        self.ttl = granted_ttl;
        self.prove(t_send, granted_ttl);
        self.tick(now);
    }

    /// A keepalive could not be sent at `t_attempt` (no stream): try again an interval later.
    pub fn on_send_failed(&mut self, t_attempt: MonoTime) {
        self.outstanding.clear();
        self.last_send = t_attempt;
        self.tick(t_attempt);
    }

    /// The keepalive stream broke or a send failed: answers to earlier sends will not come.
    pub fn on_failure(&mut self, now: MonoTime) {
        self.outstanding.clear();
        self.tick(now);
    }

    /// The coordinator says the lease is gone (expired or revoked). Final.
    pub fn on_lost(&mut self) {
        self.state = LeaseState::Lost;
        self.outstanding.clear();
    }

    /// Moves Proven → Unproven once `now` reaches `valid_until`.
    pub fn tick(&mut self, now: MonoTime) {
        if self.state == LeaseState::Proven && now >= self.valid_until {
            self.state = LeaseState::Unproven;
        }
    }

    fn prove(&mut self, t_send: MonoTime, granted_ttl: Duration) {
        let until = self.rule.valid_until(t_send, granted_ttl);
        // A late answer to an old send never shortens the proof.
        self.valid_until = self.valid_until.max(until);
        if until > t_send {
            self.state = LeaseState::Proven;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn at(ms: u64) -> MonoTime {
        MonoTime::from_nanos(ms * 1_000_000)
    }

    fn tracker(ttl: Duration, t_send: MonoTime) -> LeaseTracker {
        LeaseTracker::granted(LeaseRule::default(), Incarnation(7), ttl, t_send)
    }

    #[test]
    fn rule_numbers_match_the_design() {
        let rule = LeaseRule::default();
        assert_eq!(rule.margin(SEC), Duration::from_millis(500));
        assert_eq!(rule.margin(10 * SEC), SEC);
        assert_eq!(rule.keepalive_interval(10 * SEC), 3 * SEC);
        // 10 s × 0.99 − 1 s = 8.9 s after the send.
        assert_eq!(rule.valid_until(at(1000), 10 * SEC), at(9900));
        // 3 s × 0.99 − 0.5 s = 2.47 s.
        assert_eq!(rule.valid_until(at(0), 3 * SEC), at(2470));
    }

    #[test]
    fn grant_proves_until_the_rule_and_expires_to_unproven() {
        let mut lease = tracker(10 * SEC, at(1000));
        assert_eq!(lease.state(), LeaseState::Proven);
        assert_eq!(lease.status().valid_until, at(9900));
        assert!(lease.status().is_proven_at(at(9899)));
        lease.tick(at(9899));
        assert_eq!(lease.state(), LeaseState::Proven);
        lease.tick(at(9900));
        assert_eq!(lease.state(), LeaseState::Unproven);
        assert!(!lease.status().is_proven_at(at(9899)), "unproven is never proven");
    }

    #[test]
    fn proof_counts_from_the_send_not_the_answer() {
        let mut lease = tracker(10 * SEC, at(0));
        assert_eq!(lease.next_send_at(), at(3000));
        lease.on_sent(at(3000));
        // The answer arrives 2 s late: the proof still counts from 3000.
        lease.on_success(10 * SEC, at(5000));
        assert_eq!(lease.status().valid_until, at(3000 + 8900));
    }

    #[test]
    fn oldest_outstanding_send_is_used() {
        let mut lease = tracker(10 * SEC, at(0));
        lease.on_sent(at(3000));
        lease.on_sent(at(6000));
        lease.on_success(10 * SEC, at(6100));
        assert_eq!(lease.status().valid_until, at(11_900));
        lease.on_success(10 * SEC, at(6200));
        assert_eq!(lease.status().valid_until, at(14_900));
        // A third answer with nothing outstanding proves nothing.
        lease.on_success(10 * SEC, at(6300));
        assert_eq!(lease.status().valid_until, at(14_900));
    }

    #[test]
    fn failure_forgets_outstanding_sends_and_unproven_recovers_on_same_lease() {
        let mut lease = tracker(3 * SEC, at(0));
        lease.on_sent(at(833));
        lease.on_failure(at(900));
        assert_eq!(lease.state(), LeaseState::Proven, "still within the grant's proof");
        lease.tick(at(2470));
        assert_eq!(lease.state(), LeaseState::Unproven);
        lease.on_sent(at(2600));
        lease.on_success(3 * SEC, at(2650));
        assert_eq!(lease.state(), LeaseState::Proven);
        assert_eq!(lease.status().valid_until, at(2600 + 2470));
        assert_eq!(lease.status().incarnation, Some(Incarnation(7)));
    }

    #[test]
    fn stale_success_does_not_prove_a_past_instant() {
        let mut lease = tracker(SEC, at(0));
        lease.on_sent(at(100));
        // Answer processed long after the proof it carries ran out: stays unproven.
        lease.on_success(SEC, at(5000));
        assert_eq!(lease.state(), LeaseState::Unproven);
    }

    #[test]
    fn failed_send_waits_an_interval_and_keeps_the_proof() {
        let mut lease = tracker(3 * SEC, at(0));
        lease.on_sent(at(833));
        lease.on_send_failed(at(900));
        assert!(!lease.should_send(at(1000)), "no retry storm");
        assert!(lease.should_send(at(900 + 834)));
        assert_eq!(lease.state(), LeaseState::Proven);
        lease.on_success(3 * SEC, at(1000));
        assert_eq!(lease.status().valid_until, at(2470), "the failed send's answer never counts");
    }

    #[test]
    fn lost_is_final() {
        let mut lease = tracker(SEC, at(0));
        lease.on_lost();
        assert_eq!(lease.state(), LeaseState::Lost);
        lease.on_sent(at(10));
        lease.on_success(SEC, at(20));
        assert_eq!(lease.state(), LeaseState::Lost);
        assert!(!lease.should_send(at(1000)));
        assert_eq!(lease.next_wakeup(), MonoTime::MAX);
    }

    #[test]
    fn wakeup_is_the_earlier_of_send_and_expiry() {
        let lease = tracker(SEC, at(0));
        // Interval (1000 − 500) / 3 = 166 ms; proof until 490 ms.
        assert_eq!(lease.next_wakeup(), at(0) + Duration::from_nanos(166_666_666));
        let mut long = tracker(SEC, at(0));
        long.on_sent(at(400));
        assert_eq!(long.next_wakeup(), at(490));
        assert!(!long.stream_suspect());
        long.on_sent(at(500));
        long.on_sent(at(600));
        assert!(long.stream_suspect());
    }
}
