//! One seed of the churn scenario: builds the simulated cluster (three voters, three nodes,
//! writer clients and a final reader), injects the seed's faults, runs until the clients are
//! done, and hands the history to the checkers.
//!
//! Everything random comes from the seed: turmoil's RNG (message latency, link failures, the
//! per-host tokio runtimes' seeds under `tokio_unstable`), openraft's election timeouts
//! ([`verse_coord_raft::seed_election_randomness`]), each node's [`RandomSource`], each host's
//! clock offset and rate error, the store's latency, the clients' choices and the fault
//! schedule.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verse_core::runtime::observe::TurnObserver;
use verse_core::store::DEFAULT_TOMBSTONE_RETENTION;
use verse_core::{MemoryStore, StateStore};

use crate::checkers::{self, Verdict};
use crate::clock::HostClock;
use crate::disk::SimDisk;
use crate::faults::{Fault, ScheduleShape, schedule};
use crate::history::{Event, History, Observer};
use crate::hosts::{
    ClientPlan, GatewayParts, HostSettings, NodeParts, NodeRegistry, VoterRegistry, current_leader,
    run_client, run_gateway, run_gateway_client, run_node, run_voter,
};
use crate::stalls::{self, StallPlan, StallRates};
use crate::store::{FaultyStore, StoreFaults};

/// The shape of the scenario (defaults: about 20 simulated seconds).
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Object-hosting nodes.
    pub nodes: usize,
    /// Raft voters.
    pub voters: usize,
    /// Writer clients (calling nodes directly).
    pub writers: usize,
    /// Gateways (each with one writer client calling through it).
    pub gateways: usize,
    /// Shards of the cluster (one counter per shard, `shard#N/counter`).
    pub shard_count: u32,
    /// Node lease TTL.
    pub lease_ttl: Duration,
    /// The largest clock rate error of a host, in parts per million (ρ/2 of the lease rule's
    /// ρ = 1 %, so two hosts differ by at most ρ).
    pub max_rate_ppm: i64,
    /// Faults start after this (the cluster has formed).
    pub faults_from: Duration,
    /// Every fault has ended by this.
    pub heal_by: Duration,
    /// Writers stop starting increments at this time.
    pub writes_until: Duration,
    /// The final reads start at this time: `heal_by` + the liveness bound.
    pub final_reads_at: Duration,
    /// Deadline of each client call.
    pub call_deadline: Duration,
    /// The run fails (liveness) if the clients are not done by then.
    pub give_up_at: Duration,
    /// Largest latency the shared store adds before and after an operation.
    pub store_latency: Duration,
    /// Extra faults per seed beyond the required ones.
    pub extra_faults: std::ops::RangeInclusive<usize>,
    /// Acknowledged increments each seed must have.
    pub min_acknowledged: usize,
    /// Whether the minimum event counts are checked (off for targeted scenarios).
    pub require_events: bool,
    /// A fixed fault schedule instead of the seed's (targeted scenarios).
    pub faults: Option<Vec<(Duration, Fault)>>,
    /// How often the seeded stall points stall (between `faults_from` and `heal_by`).
    pub stalls: StallRates,
    /// `Node::validate` runs on every node after the first simulation step at least this
    /// long after its last run (zero: after every step).
    pub validate_every: Duration,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            nodes: 3,
            voters: 3,
            writers: 2,
            gateways: 1,
            shard_count: 32,
            lease_ttl: Duration::from_secs(2),
            max_rate_ppm: 5_000,
            faults_from: Duration::from_secs(3),
            heal_by: Duration::from_secs(12),
            writes_until: Duration::from_secs(17),
            final_reads_at: Duration::from_secs(18),
            call_deadline: Duration::from_secs(3),
            give_up_at: Duration::from_secs(40),
            store_latency: Duration::from_millis(2),
            extra_faults: 2..=5,
            min_acknowledged: 100,
            require_events: true,
            faults: None,
            stalls: StallRates::default(),
            validate_every: Duration::ZERO,
        }
    }
}

impl Scenario {
    /// Issue 4's Raft leader partition: the leader is cut from every other host at 5 s for
    /// 4 s, nothing else happens (no minimum event counts).
    pub fn leader_partition() -> Self {
        Scenario {
            faults: Some(vec![(
                Duration::from_secs(5),
                Fault::IsolateLeader(Duration::from_secs(4)),
            )]),
            require_events: false,
            ..Scenario::default()
        }
    }
}

impl Scenario {
    /// A node cut from the coordinator (not from its peers or the clients) for longer than its
    /// lease TTL plus failover, from 4 s to 11 s, then a crash of another node: the scenario the planted-bug tests use,
    /// since it is where the lease check and the epoch fence matter most.
    pub fn node_cut_from_coordinator() -> Self {
        Scenario {
            faults: Some(vec![
                (Duration::from_secs(4), Fault::NodeFromCoordinator(0, Duration::from_secs(7))),
                (Duration::from_secs(11), Fault::CrashNode(1, Duration::from_secs(1))),
            ]),
            ..Scenario::default()
        }
    }
}

impl Scenario {
    /// The node cut from the coordinator with frequent long stalls before saves: turns that
    /// passed their serve check on the cut node just before its lease ran out save late, after
    /// another node took their shard over, and some of the new owner's first saves stall too.
    /// A stale save then lands between the new owner's load and its first save of the same
    /// object, the one window in which only the epoch fence (not the store's per-object
    /// version check) stops it: the scenario of the planted `SkipEpochFence` test.
    pub fn stale_owner() -> Self {
        Scenario {
            writers: 16,
            call_deadline: Duration::from_secs(1),
            stalls: StallRates { before_save: 0.05, long_fraction: 0.5, ..StallRates::default() },
            ..Scenario::node_cut_from_coordinator()
        }
    }
}

/// What one seed did and what the checkers found.
#[derive(Debug, Clone)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// FNV-1a 64 of the trace and its number of lines.
    pub fingerprint: (u64, usize),
    /// The checkers' findings.
    pub verdict: Verdict,
    /// Simulated time at the end.
    pub simulated: Duration,
    /// Wall-clock time the seed took.
    pub wall: Duration,
    /// The trace (a cluster timeline).
    pub trace: String,
    /// The client calls recorded.
    pub calls: Vec<crate::history::CallRecord>,
    /// The events recorded.
    pub events: Vec<(Duration, Event)>,
}

impl SeedReport {
    /// Whether every checker passed.
    pub fn passed(&self) -> bool {
        self.verdict.violations.is_empty()
    }
}

#[derive(Debug)]
enum Action {
    Start(Fault),
    CrashHost(String),
    Restart(String),
    Cut(String, Vec<(String, String)>),
    Heal(String, Vec<(String, String)>),
    FailRate(f64),
    MaxLatency(Duration),
    Hold(Vec<(String, String)>),
    Release(Vec<(String, String)>),
    /// Record which voter leads now other than the isolated one (just before healing).
    Successor(u64),
}

/// Runs one seed of `scenario` on the current thread.
pub fn run_seed(seed: u64, scenario: &Scenario) -> SeedReport {
    let wall = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    verse_coord_raft::seed_election_randomness(rng.r#gen());
    let history = History::new();
    crate::timeline::clear_hosts();
    let logging = crate::timeline::install(history.clone());
    let voters: Vec<String> = (1..=scenario.voters).map(|i| format!("voter{i}")).collect();
    let nodes: Vec<String> = (1..=scenario.nodes).map(|i| format!("node{i}")).collect();
    let settings = HostSettings {
        voters: voters.clone(),
        nodes: nodes.clone(),
        shard_count: scenario.shard_count,
        lease_ttl: scenario.lease_ttl,
    };
    let clock = |rng: &mut ChaCha8Rng| {
        let offset = Duration::from_millis(rng.gen_range(0..100_000));
        let rate = rng.gen_range(-scenario.max_rate_ppm..=scenario.max_rate_ppm);
        HostClock::new(offset, rate)
    };

    let mut sim = turmoil::Builder::new()
        .rng_seed(rng.r#gen())
        .epoch(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .simulation_duration(scenario.give_up_at)
        .min_message_latency(Duration::ZERO)
        .max_message_latency(Duration::from_millis(3))
        .build();

    let registry: VoterRegistry = Arc::default();
    let mut disks = BTreeMap::new();
    for (index, name) in voters.iter().enumerate() {
        let disk = SimDisk::with_torn_writes(rng.r#gen());
        disks.insert(name.clone(), disk.clone());
        let (settings, registry, history) = (settings.clone(), registry.clone(), history.clone());
        let clock = clock(&mut rng);
        let id = u64::try_from(index + 1).unwrap_or(1);
        sim.host(name.as_str(), move || {
            let fut = run_voter(
                settings.clone(),
                id,
                disk.clone(),
                clock.clone(),
                registry.clone(),
                history.clone(),
            );
            async move {
                fut.await;
                Ok(())
            }
        });
    }

    let faults = StoreFaults::new(rng.r#gen(), scenario.store_latency);
    let memory = Arc::new(MemoryStore::new(
        HostClock::new(Duration::ZERO, 0).shared(),
        DEFAULT_TOMBSTONE_RETENTION,
        false,
    ));
    let store: Arc<dyn StateStore> =
        Arc::new(FaultyStore::new(memory, faults.clone()).recording(history.clone()));
    let observer: Arc<dyn TurnObserver> = Arc::new(Observer::new(history.clone()));
    let node_registry: NodeRegistry = Arc::default();
    for name in &nodes {
        let base = NodeParts {
            settings: settings.clone(),
            name: name.clone(),
            clock: clock(&mut rng),
            store: store.clone(),
            observer: observer.clone(),
            seed: rng.r#gen(),
            history: history.clone(),
            registry: node_registry.clone(),
        };
        let incarnations = Rc::new(Cell::new(0u64));
        sim.host(name.as_str(), move || {
            let mut parts = base.clone();
            incarnations.set(incarnations.get() + 1);
            parts.seed = parts.seed.wrapping_add(incarnations.get());
            run_node_host(parts)
        });
    }

    let counters: Vec<String> =
        (0..scenario.shard_count).map(|shard| format!("shard#{shard}/counter")).collect();
    let mut plans: Vec<ClientPlan> = (1..=scenario.writers)
        .map(|i| ClientPlan {
            name: format!("client{i}"),
            counters: counters.clone(),
            start_at: Duration::from_secs(2),
            writes_until: scenario.writes_until,
            final_reads: false,
            deadline: scenario.call_deadline,
            seed: rng.r#gen(),
        })
        .collect();
    plans.push(ClientPlan {
        name: "reader".into(),
        counters: counters.clone(),
        start_at: scenario.final_reads_at,
        writes_until: scenario.final_reads_at,
        final_reads: true,
        deadline: scenario.call_deadline,
        seed: rng.r#gen(),
    });
    for plan in plans {
        let fut = run_client(settings.clone(), plan.clone(), clock(&mut rng), history.clone());
        sim.client(plan.name.as_str(), fut);
    }
    for index in 1..=scenario.gateways {
        let name = format!("gateway{index}");
        let base = GatewayParts {
            settings: settings.clone(),
            name: name.clone(),
            clock: clock(&mut rng),
            seed: rng.r#gen(),
            history: history.clone(),
        };
        let incarnations = Rc::new(Cell::new(0u64));
        sim.host(name.as_str(), move || {
            let mut parts = base.clone();
            incarnations.set(incarnations.get() + 1);
            parts.seed = parts.seed.wrapping_add(incarnations.get());
            async move {
                run_gateway(parts).await;
                Ok(())
            }
        });
        let plan = ClientPlan {
            name: format!("gwclient{index}"),
            counters: counters.clone(),
            start_at: Duration::from_secs(2),
            writes_until: scenario.writes_until,
            final_reads: false,
            deadline: scenario.call_deadline,
            seed: rng.r#gen(),
        };
        let fut = run_gateway_client(plan.clone(), name, history.clone());
        sim.client(plan.name.as_str(), fut);
    }

    let shape = ScheduleShape {
        nodes: scenario.nodes,
        voters: scenario.voters,
        start_after: scenario.faults_from,
        heal_by: scenario.heal_by,
        extra: scenario.extra_faults.clone(),
    };
    let mut pending: BTreeMap<(Duration, u64), Action> = BTreeMap::new();
    let mut sequence = 0u64;
    let drawn = schedule(&mut rng, &shape);
    let plan = StallPlan {
        seed: rng.r#gen(),
        rates: scenario.stalls.clone(),
        lease_ttl: scenario.lease_ttl,
        from: scenario.faults_from,
        until: scenario.heal_by,
        hosts: nodes.clone(),
    };
    let installed = stalls::install(plan, history.clone());
    for (at, fault) in scenario.faults.clone().unwrap_or(drawn) {
        pending.insert((at, sequence), Action::Start(fault));
        sequence += 1;
    }

    let mut run_error = None;
    // Hosts whose core state was found broken (validated no further: one finding each).
    let mut invalid: BTreeSet<String> = BTreeSet::new();
    let mut next_validation = Duration::ZERO;
    let progress = std::env::var_os("VERSE_SIM_PROGRESS").is_some();
    loop {
        let now = sim.elapsed();
        while let Some(entry) = pending.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let action = entry.remove();
            let world = World {
                settings: &settings,
                registry: &registry,
                disks: &disks,
                store: &faults,
                history: &history,
                heal_by: scenario.heal_by,
            };
            for (delay, next) in apply(&mut sim, action, now, &world) {
                pending.insert((now + delay, sequence), next);
                sequence += 1;
            }
        }
        if progress && now.as_millis() % 250 == 0 {
            eprintln!("progress: sim {now:?} wall {:?}", wall.elapsed());
        }
        let stepped = sim.step();
        if sim.elapsed() >= next_validation {
            validate_nodes(&mut sim, &node_registry, &history, &mut invalid);
            next_validation = sim.elapsed() + scenario.validate_every;
        }
        match stepped {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => {
                run_error = Some(error.to_string());
                break;
            }
        }
    }
    let simulated = sim.elapsed();
    drop(sim);
    drop(installed);
    drop(logging);
    crate::timeline::clear_hosts();
    let verdict = checkers::check(&history, scenario, run_error);
    SeedReport {
        seed,
        fingerprint: history.fingerprint(),
        verdict,
        simulated,
        wall: wall.elapsed(),
        trace: history.trace(),
        calls: history.calls(),
        events: history.events(),
    }
}

/// Records what a voter's crash did to its disk: a note, or an event when a write was torn.
fn record_disk_crash(history: &History, now: Duration, host: &str, crash: crate::disk::Crash) {
    if crash.torn.is_some() {
        history.event(now, "harness", Event::TornWrite(host.to_owned(), crash.to_string()));
    } else {
        history.note("harness", &format!("{host} {crash}"));
    }
}

/// Runs `Node::validate` on the node of every running node host (after a simulation step);
/// a broken invariant is recorded as [`Event::Invalid`] (once per host), which fails the seed.
fn validate_nodes(
    sim: &mut turmoil::Sim<'_>,
    registry: &NodeRegistry,
    history: &History,
    invalid: &mut BTreeSet<String>,
) {
    let nodes: Vec<(String, Arc<verse_core::Node>)> = registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(name, _)| !invalid.contains(*name))
        .filter_map(|(name, node)| node.upgrade().map(|node| (name.clone(), node)))
        .collect();
    for (name, node) in nodes {
        if !sim.is_host_running(name.as_str()) {
            continue;
        }
        if let Err(violation) = node.validate() {
            history.event(
                sim.elapsed(),
                &name,
                Event::Invalid(name.clone(), violation.to_string()),
            );
            invalid.insert(name);
        }
    }
}

async fn run_node_host(parts: NodeParts) -> turmoil::Result {
    run_node(parts).await;
    Ok(())
}

fn pairs(a: &[String], b: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            if x != y {
                out.push((x.clone(), y.clone()));
            }
        }
    }
    out
}

/// What the harness acts on.
struct World<'a> {
    settings: &'a HostSettings,
    registry: &'a VoterRegistry,
    disks: &'a BTreeMap<String, SimDisk>,
    store: &'a StoreFaults,
    history: &'a History,
    heal_by: Duration,
}

/// A leader fault finding no leader (an election under way) tries again a little later, while
/// it still fits before `heal_by`.
/// A partition: cut `links` (named `label` on the trace) now and heal them after `d`.
fn cut_for(label: String, links: Vec<(String, String)>, d: Duration) -> Vec<(Duration, Action)> {
    vec![
        (Duration::ZERO, Action::Cut(label.clone(), links.clone())),
        (d, Action::Heal(label, links)),
    ]
}

fn retry_later(fault: Fault, now: Duration, world: &World<'_>) -> Vec<(Duration, Action)> {
    let delay = Duration::from_millis(250);
    if now + delay + fault.duration() <= world.heal_by {
        vec![(delay, Action::Start(fault))]
    } else {
        world.history.note("harness", &format!("no leader for {fault:?}; skipped"));
        Vec::new()
    }
}

fn apply(
    sim: &mut turmoil::Sim<'_>,
    action: Action,
    now: Duration,
    world: &World<'_>,
) -> Vec<(Duration, Action)> {
    let World { settings, registry, disks, store, history, .. } = *world;
    let voters = &settings.voters;
    let nodes = &settings.nodes;
    match action {
        Action::Start(fault) => {
            let d = fault.duration();
            match fault.clone() {
                Fault::CrashNode(i, _) => {
                    let host = nodes[i].clone();
                    vec![
                        (Duration::ZERO, Action::CrashHost(host.clone())),
                        (d, Action::Restart(host)),
                    ]
                }
                Fault::CrashVoter(i, _) => {
                    let host = voters[i].clone();
                    vec![
                        (Duration::ZERO, Action::CrashHost(host.clone())),
                        (d, Action::Restart(host)),
                    ]
                }
                Fault::CrashLeader(_) => match current_leader(registry, None) {
                    Some(id) => {
                        history.event(now, "harness", Event::LeaderChange(id));
                        let host = voters[usize::try_from(id - 1).unwrap_or(0)].clone();
                        vec![
                            (Duration::ZERO, Action::CrashHost(host.clone())),
                            (d, Action::Restart(host)),
                        ]
                    }
                    None => retry_later(fault, now, world),
                },
                Fault::IsolateLeader(_) => match current_leader(registry, None) {
                    Some(id) => {
                        history.event(now, "harness", Event::LeaderChange(id));
                        let host = voters[usize::try_from(id - 1).unwrap_or(0)].clone();
                        let everyone: Vec<String> =
                            voters.iter().chain(nodes.iter()).cloned().collect();
                        let cut = pairs(std::slice::from_ref(&host), &everyone);
                        let label = format!("leader {host} from everyone");
                        vec![
                            (Duration::ZERO, Action::Cut(label.clone(), cut.clone())),
                            (d.saturating_sub(Duration::from_millis(1)), Action::Successor(id)),
                            (d, Action::Heal(label, cut)),
                        ]
                    }
                    None => retry_later(fault, now, world),
                },
                Fault::NodeFromCoordinator(i, _) => cut_for(
                    format!("{} from the coordinator", nodes[i]),
                    pairs(std::slice::from_ref(&nodes[i]), voters),
                    d,
                ),
                Fault::NodeFromPeers(i, _) => cut_for(
                    format!("{} from its peers", nodes[i]),
                    pairs(std::slice::from_ref(&nodes[i]), nodes),
                    d,
                ),
                Fault::VoterMinority(i, _) => cut_for(
                    format!("{} from the other voters", voters[i]),
                    pairs(std::slice::from_ref(&voters[i]), voters),
                    d,
                ),
                Fault::Loss(rate, _) => {
                    vec![(Duration::ZERO, Action::FailRate(rate)), (d, Action::FailRate(0.0))]
                }
                Fault::Delay(max, _) => vec![
                    (Duration::ZERO, Action::MaxLatency(max)),
                    (d, Action::MaxLatency(Duration::from_millis(3))),
                ],
                Fault::HoldNodeCoordinator(i, _) => {
                    let held = pairs(std::slice::from_ref(&nodes[i]), voters);
                    vec![(Duration::ZERO, Action::Hold(held.clone())), (d, Action::Release(held))]
                }
                Fault::StoreOutage(_) => {
                    store.outage(now, now + d);
                    history.event(now, "harness", Event::StoreOutage(format!("for {d:?}")));
                    Vec::new()
                }
            }
        }
        Action::CrashHost(host) => {
            if let Some(disk) = disks.get(&host) {
                let crash = disk.crash();
                record_disk_crash(history, now, &host, crash);
            }
            sim.crash(host.as_str());
            history.host_crashed(&host, now);
            history.event(now, "harness", Event::Crash(host));
            Vec::new()
        }
        Action::Restart(host) => {
            if sim.is_host_running(host.as_str()) {
                // Overlapping crash faults: restarting a running host crashes it first (found
                // by seed 12, whose turn cut short by such a restart never ended).
                if let Some(disk) = disks.get(&host) {
                    let crash = disk.crash();
                    record_disk_crash(history, now, &host, crash);
                }
                history.host_crashed(&host, now);
                history.event(now, "harness", Event::Crash(host.clone()));
            }
            sim.bounce(host.as_str());
            history.event(now, "harness", Event::Restart(host));
            Vec::new()
        }
        Action::Cut(label, links) => {
            for (a, b) in &links {
                sim.partition(a.as_str(), b.as_str());
            }
            history.event(now, "harness", Event::Partition(label));
            Vec::new()
        }
        Action::Heal(label, links) => {
            for (a, b) in &links {
                sim.repair(a.as_str(), b.as_str());
            }
            history.event(now, "harness", Event::Heal(label));
            Vec::new()
        }
        Action::FailRate(rate) => {
            sim.set_fail_rate(rate);
            history.event(now, "harness", Event::Network(format!("link failure rate {rate:.4}")));
            Vec::new()
        }
        Action::MaxLatency(max) => {
            sim.set_max_message_latency(max);
            history.event(now, "harness", Event::Network(format!("max latency {max:?}")));
            Vec::new()
        }
        Action::Hold(links) => {
            for (a, b) in &links {
                sim.hold(a.as_str(), b.as_str());
            }
            history.event(now, "harness", Event::Network(format!("hold {links:?}")));
            Vec::new()
        }
        Action::Successor(old) => {
            let new = current_leader(registry, Some(old));
            history.event(now, "harness", Event::LeaderTookOver { old, new });
            Vec::new()
        }
        Action::Release(links) => {
            for (a, b) in &links {
                sim.release(a.as_str(), b.as_str());
            }
            history.event(now, "harness", Event::Network(format!("release {links:?}")));
            Vec::new()
        }
    }
}
