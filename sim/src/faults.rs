//! The fault schedule of a seed: which faults happen when, drawn from the seed alone.
//!
//! Every schedule holds at least one node crash with restart, one partition and one Raft
//! leader change (crash or isolation of the leader), plus a seeded number of further faults of
//! every kind: crash and restart of nodes and voters, partitions (a node from the coordinator
//! only, a node from its peers only, a voter minority, the leader from everyone), message loss
//! (turmoil breaks links at a seeded rate) and delay (seeded latency spikes and held links),
//! and shared-store outages. Clock offsets and rate errors are per host (see `scenario`).
//! Every fault ends by `heal_by`, after which the cluster must converge (liveness).

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One fault, with its duration.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Crash node `i` and restart it after the duration.
    CrashNode(usize, Duration),
    /// Crash voter `i` (losing its unsynced disk writes) and restart it after the duration.
    CrashVoter(usize, Duration),
    /// Crash whichever voter leads when the fault starts; restart it after the duration.
    CrashLeader(Duration),
    /// Cut node `i` from every voter (not from its peers or clients).
    NodeFromCoordinator(usize, Duration),
    /// Cut node `i` from every other node (not from the coordinator or clients).
    NodeFromPeers(usize, Duration),
    /// Cut voter `i` from the other voters (a minority of one).
    VoterMinority(usize, Duration),
    /// Cut the current leader from every other host.
    IsolateLeader(Duration),
    /// Links break at this rate (per message) for the duration.
    Loss(f64, Duration),
    /// Message latency up to this much for the duration.
    Delay(Duration, Duration),
    /// Hold every message between node `i` and the voters for the duration, then deliver.
    HoldNodeCoordinator(usize, Duration),
    /// The shared store refuses every operation for the duration.
    StoreOutage(Duration),
}

impl Fault {
    /// How long the fault lasts.
    pub fn duration(&self) -> Duration {
        match self {
            Fault::CrashNode(_, d)
            | Fault::CrashVoter(_, d)
            | Fault::CrashLeader(d)
            | Fault::NodeFromCoordinator(_, d)
            | Fault::NodeFromPeers(_, d)
            | Fault::VoterMinority(_, d)
            | Fault::IsolateLeader(d)
            | Fault::Loss(_, d)
            | Fault::Delay(_, d)
            | Fault::HoldNodeCoordinator(_, d)
            | Fault::StoreOutage(d) => *d,
        }
    }

    /// Whether this fault cuts links (counts as a partition).
    pub fn is_partition(&self) -> bool {
        matches!(
            self,
            Fault::NodeFromCoordinator(..)
                | Fault::NodeFromPeers(..)
                | Fault::VoterMinority(..)
                | Fault::IsolateLeader(..)
        )
    }
}

/// Shape of a schedule.
#[derive(Debug, Clone)]
pub struct ScheduleShape {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Voters in the group.
    pub voters: usize,
    /// No fault starts before this.
    pub start_after: Duration,
    /// Every fault has ended by this.
    pub heal_by: Duration,
    /// Extra faults beyond the required ones: drawn from this range.
    pub extra: std::ops::RangeInclusive<usize>,
}

fn millis(rng: &mut ChaCha8Rng, range: std::ops::Range<u64>) -> Duration {
    Duration::from_millis(rng.gen_range(range))
}

/// Draws the schedule: `(start, fault)` sorted by start.
pub fn schedule(rng: &mut ChaCha8Rng, shape: &ScheduleShape) -> Vec<(Duration, Fault)> {
    let mut faults = vec![
        Fault::CrashNode(rng.gen_range(0..shape.nodes), millis(rng, 300..3_000)),
        partition(rng, shape),
        if rng.gen_bool(0.5) {
            Fault::CrashLeader(millis(rng, 300..3_000))
        } else {
            Fault::IsolateLeader(millis(rng, 500..3_000))
        },
    ];
    let extra = rng.gen_range(shape.extra.clone());
    for _ in 0..extra {
        let fault = match rng.gen_range(0..6) {
            0 => Fault::CrashNode(rng.gen_range(0..shape.nodes), millis(rng, 300..3_000)),
            1 => Fault::CrashVoter(rng.gen_range(0..shape.voters), millis(rng, 300..3_000)),
            2 => partition(rng, shape),
            3 => Fault::Loss(rng.gen_range(0.001..0.02), millis(rng, 200..1_500)),
            4 => {
                if rng.gen_bool(0.5) {
                    Fault::Delay(millis(rng, 20..400), millis(rng, 300..2_000))
                } else {
                    Fault::HoldNodeCoordinator(
                        rng.gen_range(0..shape.nodes),
                        millis(rng, 100..1_500),
                    )
                }
            }
            _ => Fault::StoreOutage(millis(rng, 100..1_500)),
        };
        faults.push(fault);
    }
    let mut timed: Vec<(Duration, Fault)> = faults
        .into_iter()
        .map(|fault| {
            let latest = shape.heal_by.saturating_sub(fault.duration());
            let window = latest.saturating_sub(shape.start_after).as_millis().max(1);
            let offset = rng.gen_range(0..u64::try_from(window).unwrap_or(1));
            (shape.start_after + Duration::from_millis(offset), fault)
        })
        .collect();
    timed.sort_by_key(|(at, _)| *at);
    timed
}

fn partition(rng: &mut ChaCha8Rng, shape: &ScheduleShape) -> Fault {
    let d = millis(rng, 500..3_000);
    match rng.gen_range(0..4) {
        0 => Fault::NodeFromCoordinator(rng.gen_range(0..shape.nodes), d),
        1 => Fault::NodeFromPeers(rng.gen_range(0..shape.nodes), d),
        2 => Fault::VoterMinority(rng.gen_range(0..shape.voters), d),
        _ => Fault::IsolateLeader(d),
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn schedules_hold_the_required_faults_inside_the_window() {
        let shape = ScheduleShape {
            nodes: 3,
            voters: 3,
            start_after: Duration::from_secs(3),
            heal_by: Duration::from_secs(12),
            extra: 2..=5,
        };
        for seed in 0..200 {
            let faults = schedule(&mut ChaCha8Rng::seed_from_u64(seed), &shape);
            assert!(faults.iter().any(|(_, f)| matches!(f, Fault::CrashNode(..))));
            assert!(faults.iter().any(|(_, f)| f.is_partition()));
            for (at, fault) in &faults {
                assert!(*at >= shape.start_after);
                assert!(*at + fault.duration() <= shape.heal_by, "{seed}: {fault:?} at {at:?}");
            }
        }
        let again = schedule(&mut ChaCha8Rng::seed_from_u64(9), &shape);
        assert_eq!(again, schedule(&mut ChaCha8Rng::seed_from_u64(9), &shape));
    }
}
