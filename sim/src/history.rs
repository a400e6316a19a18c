//! What a simulation run records, on the one global timeline ([`crate::clock::sim_now`]):
//! turn intervals (from the nodes' [`TurnObserver`]), every client call and its outcome, and
//! the faults the harness injected. Every record also becomes one line of the trace (a cluster
//! timeline: global time, host, what happened), and the trace's hash is the run's fingerprint
//! for the determinism test.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use verse_core::Epoch;
use verse_core::fault::StallPoint;
use verse_core::runtime::observe::{TurnObserver, TurnRecord};

use crate::clock::sim_now;

/// One turn of one object on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnInterval {
    /// The object id.
    pub object: String,
    /// The node that ran it.
    pub node: String,
    /// The epoch it ran under.
    pub epoch: Epoch,
    /// Global time the turn was admitted.
    pub start: Duration,
    /// Global time it finished (or its host crashed); `None` while running.
    pub end: Option<Duration>,
    /// Whether its host crashed before it finished (it then answered nobody).
    pub crashed: bool,
}

/// How a client call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The call was answered with this counter value.
    Acknowledged(i64),
    /// The call provably did not run (every attempt was refused before it started).
    Failed(String),
    /// The call may or may not have run.
    Unknown(String),
}

/// What a client call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `Increment { amount: 1 }`.
    Increment,
    /// `Get` (the final reads and liveness probes).
    Get,
}

/// One client call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The client host.
    pub client: String,
    /// The counter id.
    pub object: String,
    /// What was called.
    pub kind: CallKind,
    /// Global time the call started.
    pub start: Duration,
    /// Global time it ended.
    pub end: Duration,
    /// How it ended.
    pub outcome: Outcome,
}

/// A fault or lifecycle event injected by the harness or reported by a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A host crashed (its unsynced disk writes lost, for voters).
    Crash(String),
    /// A crashed host started again.
    Restart(String),
    /// Links between two groups of hosts were cut.
    Partition(String),
    /// A partition healed.
    Heal(String),
    /// The Raft leader was made to change (crashed or isolated).
    LeaderChange(u64),
    /// Message loss or delay began or ended.
    Network(String),
    /// A shared-store outage window.
    StoreOutage(String),
    /// Just before an isolated leader rejoins: the voter leading in its place, if any.
    LeaderTookOver {
        /// The isolated leader.
        old: u64,
        /// The voter leading now.
        new: Option<u64>,
    },
    /// A node learnt that its lease is gone (it registers again as a new incarnation).
    LeaseLost(String),
    /// A host's software failed (returned an error): a finding.
    HostError(String, String),
    /// A voter's crash tore its disk's unsynced writes (what reached the disk).
    TornWrite(String, String),
    /// `Node::validate` found the node's core state broken (a finding).
    Invalid(String, String),
    /// A seeded stall point held a task of `host` for `duration`.
    Stall {
        /// The host.
        host: String,
        /// Where.
        point: StallPoint,
        /// For how long.
        duration: Duration,
    },
}

/// A save the store refused because its epoch was behind the fence (invariant 5 at work), or
/// one it committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveRecord {
    /// The object id.
    pub object: String,
    /// The stale epoch the save was made at.
    pub epoch: Epoch,
    /// Global time of the refusal.
    pub at: Duration,
}

#[derive(Debug, Default)]
struct Inner {
    turns: Vec<TurnInterval>,
    /// (node, object) → index of its running turn.
    open: BTreeMap<(String, String), usize>,
    calls: Vec<CallRecord>,
    events: Vec<(Duration, Event)>,
    fenced: Vec<SaveRecord>,
    committed: Vec<SaveRecord>,
    failed: Vec<SaveRecord>,
    trace: String,
    hash: u64,
    trace_lines: usize,
    /// Print every line to stderr as it is recorded (`VERSE_SIM_LIVE=1`).
    live: bool,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Inner {
    fn line(&mut self, at: Duration, host: &str, what: std::fmt::Arguments<'_>) {
        let start = self.trace.len();
        let _ = writeln!(self.trace, "{:>10.6}s {host:<8} {what}", at.as_secs_f64());
        if self.live {
            eprint!("{}", &self.trace[start..]);
        }
        let mut hash = if self.trace_lines == 0 { FNV_OFFSET } else { self.hash };
        for byte in &self.trace.as_bytes()[start..] {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
        self.hash = hash;
        self.trace_lines += 1;
    }
}

/// The shared record of one run (see the module docs). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct History {
    inner: Arc<Mutex<Inner>>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        let live = std::env::var_os("VERSE_SIM_LIVE").is_some_and(|v| v == "1");
        History { inner: Arc::new(Mutex::new(Inner { live, ..Inner::default() })) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A turn was admitted on `node`.
    pub fn turn_started(&self, node: &str, object: &str, epoch: Epoch) {
        let now = sim_now();
        let mut inner = self.lock();
        inner.line(now, node, format_args!("turn start {object} epoch {epoch}"));
        let index = inner.turns.len();
        inner.turns.push(TurnInterval {
            object: object.to_owned(),
            node: node.to_owned(),
            epoch,
            start: now,
            end: None,
            crashed: false,
        });
        inner.open.insert((node.to_owned(), object.to_owned()), index);
    }

    /// The running turn of `object` on `node` finished.
    pub fn turn_finished(&self, node: &str, object: &str) {
        let now = sim_now();
        let mut inner = self.lock();
        inner.line(now, node, format_args!("turn end   {object}"));
        if let Some(index) = inner.open.remove(&(node.to_owned(), object.to_owned())) {
            inner.turns[index].end = Some(now);
        }
    }

    /// `host` crashed at `at`: its running turns end there.
    pub fn host_crashed(&self, host: &str, at: Duration) {
        let mut inner = self.lock();
        let keys: Vec<_> = inner.open.keys().filter(|(node, _)| node == host).cloned().collect();
        for key in keys {
            if let Some(index) = inner.open.remove(&key) {
                inner.turns[index].end = Some(at);
                inner.turns[index].crashed = true;
            }
        }
    }

    /// Records a client call.
    pub fn call(&self, record: CallRecord) {
        let mut inner = self.lock();
        let what = format!(
            "{:?} {} from {:.6}s: {:?}",
            record.kind,
            record.object,
            record.start.as_secs_f64(),
            record.outcome
        );
        inner.line(record.end, &record.client, format_args!("{what}"));
        inner.calls.push(record);
    }

    /// Records an event at `at`.
    pub fn event(&self, at: Duration, host: &str, event: Event) {
        let mut inner = self.lock();
        inner.line(at, host, format_args!("{event:?}"));
        inner.events.push((at, event));
    }

    /// The store refused a save of `object` at the stale `epoch` (fence).
    pub fn fenced_save(&self, object: &str, epoch: Epoch) {
        let now = sim_now();
        let mut inner = self.lock();
        inner.line(now, "store", format_args!("save of {object} at epoch {epoch} fenced"));
        inner.fenced.push(SaveRecord { object: object.to_owned(), epoch, at: now });
    }

    /// The store committed a save of `object` at `epoch` (not on the trace: turn lines and
    /// acknowledgements show them).
    pub fn committed_save(&self, object: &str, epoch: Epoch) {
        let now = sim_now();
        let mut inner = self.lock();
        inner.committed.push(SaveRecord { object: object.to_owned(), epoch, at: now });
    }

    /// The store failed a save of `object` at `epoch` for another reason than the fence (an
    /// injected outage): nothing was written.
    pub fn failed_save(&self, object: &str, epoch: Epoch) {
        let now = sim_now();
        let mut inner = self.lock();
        inner.line(now, "store", format_args!("save of {object} at epoch {epoch} failed"));
        inner.failed.push(SaveRecord { object: object.to_owned(), epoch, at: now });
    }

    /// Every save that failed (not at the fence) so far.
    pub fn failed_saves(&self) -> Vec<SaveRecord> {
        self.lock().failed.clone()
    }

    /// Every save the store committed so far.
    pub fn committed_saves(&self) -> Vec<SaveRecord> {
        self.lock().committed.clone()
    }

    /// Every save refused by the fence so far.
    pub fn fenced_saves(&self) -> Vec<SaveRecord> {
        self.lock().fenced.clone()
    }

    /// Adds a free-form line to the trace (e.g. a host's log line).
    pub fn note(&self, host: &str, what: &str) {
        let now = sim_now();
        self.lock().line(now, host, format_args!("{what}"));
    }

    /// All turn intervals so far.
    pub fn turns(&self) -> Vec<TurnInterval> {
        self.lock().turns.clone()
    }

    /// All client calls so far.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.lock().calls.clone()
    }

    /// All events so far.
    pub fn events(&self) -> Vec<(Duration, Event)> {
        self.lock().events.clone()
    }

    /// The trace: one line per record.
    pub fn trace(&self) -> String {
        self.lock().trace.clone()
    }

    /// FNV-1a 64 of the trace, and its number of lines.
    pub fn fingerprint(&self) -> (u64, usize) {
        let inner = self.lock();
        (inner.hash, inner.trace_lines)
    }
}

/// The turn observer of every simulated node: records into the [`History`].
#[derive(Debug, Clone)]
pub struct Observer {
    history: History,
}

impl Observer {
    /// An observer recording into `history`.
    pub fn new(history: History) -> Self {
        Observer { history }
    }
}

impl TurnObserver for Observer {
    fn turn_started(&self, turn: &TurnRecord<'_>) {
        self.history.turn_started(turn.node_id, turn.object_id, turn.epoch);
    }

    fn turn_finished(&self, turn: &TurnRecord<'_>) {
        self.history.turn_finished(turn.node_id, turn.object_id);
    }
}
