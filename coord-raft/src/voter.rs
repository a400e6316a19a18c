//! One voter of the coordinator's Raft group: openraft on redb, the leader's lease clock and
//! ticker, and the in-process [`RaftAccess`] that clients of this process use.
//!
//! Lease time (see `docs/COORDINATOR-RAFT.md`): while this voter leads Raft term `T`, it stamps
//! every proposal with `(T, its id, ms since it first stamped in T)` read from the injected
//! clock. A ticker proposes [`Command::Tick`] once the earliest lease expiry has passed on that
//! clock, and once right after the voter becomes leader so the new frame opens at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, RaftNetworkFactory, ServerState, SnapshotPolicy};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use verse_core::coordinator::{CoordError, Revision, WatchEvent, WatchStream};
use verse_core::executor::run_blocking;
use verse_core::{MonoTime, SharedClock, SharedExecutor};

use crate::access::{Answer, Query, RaftAccess};
use crate::command::{Command, Proposal, Reply, Stamp};
use crate::grpc::GrpcNetwork;
use crate::network::LocalRouter;
use crate::peers::{Peers, Target};
use crate::state::{ChangesSince, Frame};
use crate::storage::log_store::LogStore;
use crate::storage::state_machine::{Replica, StateMachineStore};
use crate::storage::{DatabaseSource, Disk, DiskError};
use crate::types::{NodeId, Raft, TypeConfig};
use crate::wire::{
    AnswerRec, EventChange, EventRec, MembershipChange, MembershipView, QueryRec, SnapshotRec,
};

/// How a voter runs. Numbers are defaults; tests shorten them.
#[derive(Debug, Clone)]
pub struct VoterConfig {
    /// This voter's Raft node id (stable across restarts; bound to its data file).
    pub node_id: u64,
    /// The redb file holding log, vote and snapshots.
    pub data_path: PathBuf,
    /// Raft heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomised election timeout.
    pub election_timeout_min: Duration,
    /// Upper bound of the randomised election timeout.
    pub election_timeout_max: Duration,
    /// A snapshot is built after this many log entries since the last one.
    pub snapshot_after_logs: u64,
    /// Log entries kept behind a snapshot (for lagging followers).
    pub logs_kept_after_snapshot: u64,
    /// Bound of the replicated change log, in changes.
    pub max_changes: usize,
    /// How often the leader checks whether a lease is due to expire.
    pub tick_interval: Duration,
    /// A watch with nothing to deliver sends a progress event this often.
    pub watch_progress_interval: Duration,
    /// Largest snapshot chunk sent to a lagging follower, in bytes.
    pub snapshot_chunk_bytes: usize,
    /// When set, the database lives on this storage instead of the file at `data_path` (the
    /// simulation's disk); `None` (the default) uses the file.
    pub database: Option<Arc<dyn DatabaseSource>>,
}

impl VoterConfig {
    /// Defaults for voter `node_id` with its data in `data_path`.
    pub fn new(node_id: u64, data_path: impl Into<PathBuf>) -> Self {
        VoterConfig {
            node_id,
            data_path: data_path.into(),
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            snapshot_after_logs: 5_000,
            logs_kept_after_snapshot: 1_000,
            max_changes: crate::state::DEFAULT_MAX_CHANGES,
            tick_interval: Duration::from_millis(25),
            watch_progress_interval: Duration::from_secs(1),
            snapshot_chunk_bytes: 1 << 20,
            database: None,
        }
    }
}

/// Why a voter could not start.
#[derive(Debug, thiserror::Error)]
pub enum VoterError {
    /// The data file could not be opened or read.
    #[error("data directory: {0}")]
    Disk(#[from] DiskError),
    /// openraft refused the configuration or failed to start.
    #[error("raft: {0}")]
    Raft(String),
    /// The data directory is missing but the group still has this Raft id as a member: the
    /// voter lost its log and vote, so it must not take part under that id. Operator path:
    /// remove the id from the group ([`RaftVoter::remove`]), start the voter again, and add it
    /// back as a learner ([`RaftVoter::add_learner`], then [`RaftVoter::promote`]).
    #[error(
        "the data directory of Raft node {0} is missing but the group still lists it: remove \
         it from the group, then add it back as a learner"
    )]
    DataMissing(u64),
}

/// Why a membership change failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum MembershipError {
    /// No Raft leader could be reached, or the change did not commit in time (retryable; the
    /// change may still happen).
    #[error("membership change unavailable: {0}")]
    Unavailable(String),
    /// The leader refused the change (e.g. promoting a node that is not a learner, or a change
    /// while another is in progress).
    #[error("membership change refused: {0}")]
    Refused(String),
}

/// The shared part of a voter, reachable from its ticker and from other voters forwarding
/// proposals to it.
pub(crate) struct VoterInner {
    id: NodeId,
    raft: Raft,
    replica: Arc<Replica>,
    clock: SharedClock,
    peers: Arc<dyn Peers>,
    metrics: watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
    /// The Raft term this voter leads (or led last) and when it first stamped in it.
    origin: Mutex<Option<(u64, MonoTime)>>,
    config: VoterConfig,
}

/// A voter's Raft status at one moment ([`RaftVoter::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoterStatus {
    /// The leader this voter knows of.
    pub leader: Option<u64>,
    /// Whether this voter leads now.
    pub is_leader: bool,
    /// Its current term.
    pub term: u64,
    /// Index of its last log entry.
    pub last_log_index: Option<u64>,
    /// Index of the last entry applied to its state machine.
    pub last_applied_index: Option<u64>,
    /// Index of the last entry its latest snapshot covers.
    pub snapshot_index: Option<u64>,
    /// Voters in the membership it knows.
    pub voters: usize,
}

/// A running voter. Dropping it without [`RaftVoter::shutdown`] leaves openraft's tasks to the
/// runtime; call `shutdown` to stop them and release the data file.
pub struct RaftVoter {
    inner: Arc<VoterInner>,
    cancel: CancellationToken,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RaftVoter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftVoter").field("id", &self.inner.id).finish_non_exhaustive()
    }
}

/// How long a membership change waits, each time, for an uncommitted one before it, and how
/// many times (10 s in all).
const MEMBERSHIP_WAIT: Duration = Duration::from_millis(20);
const MEMBERSHIP_WAITS: u32 = 500;

fn unavailable(context: &str, error: impl std::fmt::Display) -> CoordError {
    CoordError::Unavailable(format!("{context}: {error}"))
}

impl RaftVoter {
    /// Opens the data file, starts openraft and the lease ticker, and joins `router` (voters of
    /// one process).
    ///
    /// A fresh data file starts an uninitialised voter: call [`RaftVoter::initialize`] on one
    /// voter of a new group. A data file written by another node id is refused, and so is a
    /// missing data file when another voter of `router` still has this id as a member
    /// ([`VoterError::DataMissing`]).
    pub async fn start(
        config: VoterConfig,
        router: &LocalRouter,
        clock: SharedClock,
        executor: SharedExecutor,
    ) -> Result<RaftVoter, VoterError> {
        let factory = router.factory(config.node_id);
        let voter =
            Self::start_with(config, factory, Arc::new(router.clone()), clock, executor).await?;
        router.add(voter.inner.id, voter.inner.raft.clone(), Arc::downgrade(&voter.inner));
        Ok(voter)
    }

    /// Opens the data file and starts a voter whose Raft RPC and forwarding go over gRPC
    /// through `network`. Serve it with [`crate::VoterServer`] on the address the group knows
    /// it by. A missing data file is refused when a peer of `network` still lists this id
    /// ([`VoterError::DataMissing`]).
    pub async fn start_grpc(
        config: VoterConfig,
        network: &GrpcNetwork,
        clock: SharedClock,
        executor: SharedExecutor,
    ) -> Result<RaftVoter, VoterError> {
        Self::start_with(config, network.clone(), Arc::new(network.clone()), clock, executor).await
    }

    async fn start_with<N: RaftNetworkFactory<TypeConfig>>(
        config: VoterConfig,
        factory: N,
        peers: Arc<dyn Peers>,
        clock: SharedClock,
        executor: SharedExecutor,
    ) -> Result<RaftVoter, VoterError> {
        let path = config.data_path.clone();
        let source = config.database.clone();
        let fresh = run_blocking(&*executor, move || match source {
            Some(source) => source.is_fresh(),
            None => !path.exists(),
        })
        .await
        .map_err(|_| VoterError::Disk(DiskError::Executor))?;
        if fresh
            && let Some(view) = peers.membership(config.node_id).await
            && view.knows(config.node_id)
        {
            return Err(VoterError::DataMissing(config.node_id));
        }
        let disk = Disk::open(&config.data_path, config.database.clone(), config.node_id, executor)
            .await?;
        let log_store = LogStore::new(disk.clone());
        let state_machine = StateMachineStore::open(disk, config.max_changes).await?;
        let replica = state_machine.replica();
        let raft_config = Config {
            cluster_name: "verse-coordinator".into(),
            heartbeat_interval: millis(config.heartbeat_interval),
            election_timeout_min: millis(config.election_timeout_min),
            election_timeout_max: millis(config.election_timeout_max),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_after_logs),
            max_in_snapshot_log_to_keep: config.logs_kept_after_snapshot,
            snapshot_max_chunk_size: u64::try_from(config.snapshot_chunk_bytes).unwrap_or(u64::MAX),
            purge_batch_size: 256,
            ..Config::default()
        };
        let raft_config = raft_config.validate().map_err(|e| VoterError::Raft(e.to_string()))?;
        let raft =
            Raft::new(config.node_id, Arc::new(raft_config), factory, log_store, state_machine)
                .await
                .map_err(|e| VoterError::Raft(e.to_string()))?;
        let inner = Arc::new(VoterInner {
            id: config.node_id,
            metrics: raft.metrics(),
            raft,
            replica,
            clock,
            peers,
            origin: Mutex::new(None),
            config,
        });
        let cancel = CancellationToken::new();
        let ticker = tokio::spawn(run_ticker(Arc::downgrade(&inner), cancel.clone()));
        Ok(RaftVoter { inner, cancel, ticker: Mutex::new(Some(ticker)) })
    }

    /// This voter's Raft node id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Makes a new group of `voters` (ids as registered with the in-process router).
    /// Idempotent: Ok when the group already exists. Errors: `Unavailable` when openraft
    /// refuses.
    pub async fn initialize(&self, voters: &[u64]) -> Result<(), CoordError> {
        let members: Vec<(u64, String)> =
            voters.iter().map(|id| (*id, format!("local:{id}"))).collect();
        self.initialize_with_addresses(&members).await
    }

    /// Makes a new group of `voters`, each with the address its [`crate::VoterServer`] serves
    /// on. Idempotent like [`RaftVoter::initialize`].
    pub async fn initialize_with_addresses(
        &self,
        voters: &[(u64, String)],
    ) -> Result<(), CoordError> {
        let members: BTreeMap<NodeId, BasicNode> =
            voters.iter().map(|(id, address)| (*id, BasicNode::new(address))).collect();
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(error) => Err(unavailable("initialize", error)),
        }
    }

    /// Adds Raft node `id`, serving at `address`, as a learner: it receives the log but does not
    /// vote. Resolves once the learner has caught up with the leader's log. Run on any voter
    /// (forwarded to the Raft leader); the learner must be running.
    pub async fn add_learner(&self, id: u64, address: &str) -> Result<(), MembershipError> {
        let change = MembershipChange::AddLearner { id, address: address.to_owned() };
        self.inner.change_membership(change, 0).await
    }

    /// Makes learners `ids` voters (joint consensus; resolves once the new configuration is
    /// committed). Forwarded to the Raft leader.
    pub async fn promote(&self, ids: &[u64]) -> Result<(), MembershipError> {
        let change = MembershipChange::Promote(ids.iter().copied().collect());
        self.inner.change_membership(change, 0).await
    }

    /// Removes voters or learners `ids` from the group entirely. Forwarded to the Raft leader.
    /// A removed voter that still runs no longer takes part; shut it down.
    pub async fn remove(&self, ids: &[u64]) -> Result<(), MembershipError> {
        let change = MembershipChange::Remove(ids.iter().copied().collect());
        self.inner.change_membership(change, 0).await
    }

    /// The group's membership as this voter knows it (its latest log entry of membership,
    /// committed or not).
    pub fn membership(&self) -> MembershipView {
        self.inner.membership_view()
    }

    /// Waits until the group has a leader and returns its id. Errors: `Unavailable` after
    /// `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, CoordError> {
        let mut metrics = self.inner.metrics.clone();
        let waited =
            tokio::time::timeout(timeout, metrics.wait_for(|m| m.current_leader.is_some())).await;
        match waited {
            Ok(Ok(metrics)) => metrics.current_leader.ok_or_else(|| unavailable("leader", "none")),
            Ok(Err(error)) => Err(unavailable("metrics", error)),
            Err(_) => Err(unavailable("leader", "no Raft leader in time")),
        }
    }

    /// The Raft leader this voter knows of.
    pub fn current_leader(&self) -> Option<u64> {
        self.inner.metrics.borrow().current_leader
    }

    /// This voter's Raft status now (for metrics and operators).
    pub fn status(&self) -> VoterStatus {
        let metrics = self.inner.metrics.borrow();
        VoterStatus {
            leader: metrics.current_leader,
            is_leader: metrics.state == openraft::ServerState::Leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            last_applied_index: metrics.last_applied.map(|log_id| log_id.index),
            snapshot_index: metrics.snapshot.map(|log_id| log_id.index),
            voters: metrics.membership_config.membership().voter_ids().count(),
        }
    }

    /// Drops the replicated change log up to the current revision (watchers from before it
    /// get a resync).
    pub async fn compact_history(&self) -> Result<(), CoordError> {
        self.inner.propose(Command::Compact, 0).await.map(|_| ())
    }

    /// Builds a snapshot now (and lets openraft purge the log behind it).
    pub async fn snapshot_now(&self) -> Result<(), CoordError> {
        self.inner.raft.trigger().snapshot().await.map_err(|e| unavailable("snapshot", e))
    }

    /// The index of the last log entry covered by a snapshot, if any.
    pub fn snapshot_index(&self) -> Option<u64> {
        self.inner.metrics.borrow().snapshot.map(|log_id| log_id.index)
    }

    /// Stops the ticker and openraft, leaves the router, and releases the data file.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let ticker = self.ticker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(ticker) = ticker {
            let _ = ticker.await;
        }
        self.inner.peers.leave(self.inner.id);
        if let Err(error) = self.inner.raft.shutdown().await {
            tracing::warn!(%error, "raft shutdown");
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// How many times a proposal or query may be forwarded to the leader.
const MAX_FORWARDS: u8 = 2;

impl VoterInner {
    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The lease-time stamp for a proposal made now, if this voter leads.
    fn stamp(&self) -> Option<Stamp> {
        let term = {
            let metrics = self.metrics.borrow();
            if metrics.state != ServerState::Leader {
                return None;
            }
            metrics.current_term
        };
        let now = self.clock.now();
        let mut origin = self.origin.lock().unwrap_or_else(|e| e.into_inner());
        let start = match *origin {
            Some((origin_term, start)) if origin_term == term => start,
            _ => {
                *origin = Some((term, now));
                now
            }
        };
        let elapsed_ms =
            u64::try_from(now.saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX);
        Some(Stamp { term, leader: self.id, elapsed_ms })
    }

    pub(crate) async fn propose(
        &self,
        command: Command,
        forwards: u8,
    ) -> Result<Reply, CoordError> {
        self.check_quorum()?;
        let proposal = Proposal { stamp: self.stamp(), command };
        match self.raft.client_write(proposal.clone()).await {
            Ok(response) => response.data.map_err(CoordError::from),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                let Some(id) = forward.leader_id.filter(|_| forwards < MAX_FORWARDS) else {
                    return Err(unavailable("propose", "no reachable Raft leader"));
                };
                let to = Target { id, node: forward.leader_node };
                self.peers.propose(self.id, to, proposal.command, forwards + 1).await
            }
            Err(error) => Err(unavailable("propose", error)),
        }
    }

    /// Refuses a write at once on a leader that has not heard from a quorum of voters for
    /// longer than twice the maximum election timeout: the write could not commit until a
    /// majority is reachable again (it would only wait for the caller's timeout), and failing
    /// before it is appended keeps its outcome certain.
    fn check_quorum(&self) -> Result<(), CoordError> {
        let bound = self.config.election_timeout_max * 2;
        let metrics = self.metrics.borrow();
        let silent = metrics.millis_since_quorum_ack.map(Duration::from_millis);
        match silent {
            Some(silent) if metrics.state.is_leader() && silent > bound => Err(unavailable(
                "propose",
                format!(
                    "the Raft leader has not reached a majority of voters for {} ms; writes are \
                     blocked until a majority is reachable",
                    silent.as_millis()
                ),
            )),
            _ => Ok(()),
        }
    }

    pub(crate) async fn query(
        &self,
        query: QueryRec,
        forwards: u8,
    ) -> Result<AnswerRec, CoordError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => AnswerRec::of(&self.replica.read().state, query),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                let Some(id) = forward.leader_id.filter(|_| forwards < MAX_FORWARDS) else {
                    return Err(unavailable("read", "no reachable Raft leader"));
                };
                let to = Target { id, node: forward.leader_node };
                self.peers.query(self.id, to, query, forwards + 1).await
            }
            Err(error) => Err(unavailable("read", error)),
        }
    }

    pub(crate) async fn change_membership(
        &self,
        change: MembershipChange,
        forwards: u8,
    ) -> Result<(), MembershipError> {
        // One membership change at a time: a change asked for while another (the group's
        // initial membership included) is still uncommitted waits for it, within a bound.
        let mut waits = 0;
        let result = loop {
            let result = match &change {
                MembershipChange::AddLearner { id, address } => {
                    self.raft.add_learner(*id, BasicNode::new(address), true).await.map(|_| ())
                }
                MembershipChange::Promote(ids) => self
                    .raft
                    .change_membership(ChangeMembers::AddVoterIds(ids.clone()), false)
                    .await
                    .map(|_| ()),
                MembershipChange::Remove(ids) => self.remove_members(ids).await,
            };
            let in_progress = matches!(
                &result,
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    openraft::error::ChangeMembershipError::InProgress(_)
                )))
            );
            if !in_progress || waits >= MEMBERSHIP_WAITS {
                break result;
            }
            waits += 1;
            tokio::time::sleep(MEMBERSHIP_WAIT).await;
        };
        match result {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                let Some(id) = forward.leader_id.filter(|_| forwards < MAX_FORWARDS) else {
                    return Err(MembershipError::Unavailable("no reachable Raft leader".into()));
                };
                let to = Target { id, node: forward.leader_node };
                self.peers.change_membership(self.id, to, change, forwards + 1).await
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => {
                Err(MembershipError::Refused(error.to_string()))
            }
            Err(error) => Err(MembershipError::Unavailable(error.to_string())),
        }
    }

    /// Removes voters (leaving no learner behind) and learners.
    async fn remove_members(
        &self,
        ids: &BTreeSet<u64>,
    ) -> Result<(), RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>> {
        let view = self.membership_view();
        let voters: BTreeSet<u64> =
            ids.iter().copied().filter(|id| view.voters.contains_key(id)).collect();
        let learners: BTreeSet<u64> =
            ids.iter().copied().filter(|id| view.learners.contains_key(id)).collect();
        if !voters.is_empty() {
            self.raft.change_membership(ChangeMembers::RemoveVoters(voters), false).await?;
        }
        if !learners.is_empty() {
            self.raft.change_membership(ChangeMembers::RemoveNodes(learners), false).await?;
        }
        Ok(())
    }

    pub(crate) fn membership_view(&self) -> MembershipView {
        let metrics = self.metrics.borrow();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let mut view = MembershipView::default();
        for (id, node) in membership.nodes() {
            let entry = (*id, node.addr.clone());
            if voters.contains(id) {
                view.voters.insert(entry.0, entry.1);
            } else {
                view.learners.insert(entry.0, entry.1);
            }
        }
        view
    }

    /// The change stream of this replica from revision `from` (see [`watch_records`]).
    pub(crate) fn watch_records(
        &self,
        from: u64,
    ) -> BoxStream<'static, Result<EventRec, CoordError>> {
        watch_records(
            Arc::clone(&self.replica),
            from,
            self.clock.clone(),
            self.config.watch_progress_interval,
        )
    }

    /// Proposes a tick if this voter leads and lease time must move (a new frame to open, or
    /// a lease past its expiry).
    async fn tick(&self) {
        let Some(stamp) = self.stamp() else { return };
        let frame = Frame { term: stamp.term, leader: stamp.leader };
        let due = {
            let applied = self.replica.read();
            applied.state.frame() != Some(frame)
                || applied
                    .state
                    .earliest_expiry_ms()
                    .is_some_and(|expiry| expiry <= stamp.elapsed_ms)
        };
        if due && let Err(error) = self.propose(Command::Tick, MAX_FORWARDS).await {
            tracing::debug!(%error, "lease tick not applied");
        }
    }
}

async fn run_ticker(voter: Weak<VoterInner>, cancel: CancellationToken) {
    loop {
        let Some(inner) = voter.upgrade() else { return };
        let wake = inner.clock.now().saturating_add(inner.config.tick_interval);
        let sleep = inner.clock.sleep_until(wake);
        drop(inner);
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = sleep => {}
        }
        let Some(inner) = voter.upgrade() else { return };
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = inner.tick() => {}
        }
    }
}

#[async_trait]
impl RaftAccess for RaftVoter {
    async fn propose(&self, command: Command) -> Result<Reply, CoordError> {
        self.inner.propose(command, 0).await
    }

    async fn query(&self, query: Query) -> Result<Answer, CoordError> {
        self.inner.query(query.into(), 0).await.map(Answer::from)
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream, CoordError> {
        Ok(self.inner.watch_records(from.0).map(|event| event.map(WatchEvent::from)).boxed())
    }
}

impl RaftVoter {
    pub(crate) fn inner(&self) -> &Arc<VoterInner> {
        &self.inner
    }
}

struct Watcher {
    replica: Arc<Replica>,
    applied: watch::Receiver<u64>,
    next: u64,
    buffer: std::collections::VecDeque<EventRec>,
    clock: SharedClock,
    progress_interval: Duration,
    failed: bool,
}

/// The change stream of this replica from revision `from`: retained changes, then live ones
/// as they are applied; a resync when the history asked for is compacted; a progress event
/// after `progress_interval` without changes. No task: the stream does the work when polled.
fn watch_records(
    replica: Arc<Replica>,
    from: u64,
    clock: SharedClock,
    progress_interval: Duration,
) -> BoxStream<'static, Result<EventRec, CoordError>> {
    let watcher = Watcher {
        applied: replica.subscribe(),
        replica,
        next: from.max(1),
        buffer: std::collections::VecDeque::new(),
        clock,
        progress_interval,
        failed: false,
    };
    futures::stream::unfold(watcher, |mut watcher| async move {
        loop {
            if watcher.failed {
                return None;
            }
            if let Some(event) = watcher.buffer.pop_front() {
                return Some((Ok(event), watcher));
            }
            // Mark the current revision seen before reading, so no apply slips between.
            watcher.applied.borrow_and_update();
            let (changes, revision, resync) = {
                let applied = watcher.replica.read();
                let changes = applied.state.changes_since(watcher.next);
                let resync = match changes {
                    ChangesSince::Compacted => Some(SnapshotRec::of(&applied.state)),
                    ChangesSince::Changes(_) => None,
                };
                (changes, applied.state.revision(), resync)
            };
            match (changes, resync) {
                (_, Some(Err(error))) => {
                    watcher.failed = true;
                    return Some((Err(error), watcher));
                }
                (_, Some(Ok(snapshot))) => {
                    watcher.next = snapshot.revision() + 1;
                    let event = EventRec {
                        revision: snapshot.revision(),
                        change: EventChange::Resync(Box::new(snapshot)),
                    };
                    return Some((Ok(event), watcher));
                }
                (ChangesSince::Changes(changes), None) if !changes.is_empty() => {
                    for revisioned in changes {
                        watcher.next = revisioned.revision + 1;
                        for change in revisioned.changes {
                            watcher.buffer.push_back(EventRec {
                                revision: revisioned.revision,
                                change: EventChange::Change(change),
                            });
                        }
                    }
                }
                _ => {
                    let deadline = watcher.clock.now().saturating_add(watcher.progress_interval);
                    let sleep = watcher.clock.sleep_until(deadline);
                    tokio::select! {
                        changed = watcher.applied.changed() => {
                            if changed.is_err() {
                                // The replica is gone (voter shut down): end the stream.
                                let error = CoordError::Unavailable("the voter stopped".into());
                                watcher.failed = true;
                                return Some((Err(error), watcher));
                            }
                        }
                        () = sleep => {
                            let event = EventRec { revision, change: EventChange::Progress };
                            return Some((Ok(event), watcher));
                        }
                    }
                }
            }
        }
    })
    .boxed()
}
