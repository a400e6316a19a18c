//! [`RaftCoordinator`]: the [`Coordinator`] of one process on the Raft group, through a
//! [`RaftAccess`] (a voter in this process now; the `CoordinatorService` later).
//!
//! The client keeps its registration's lease alive in a background task by the lease rule of
//! [`LeaseTracker`]: one keepalive outstanding at a time, each answered only after it was
//! committed and applied, the proof counted from the keepalive's send time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use verse_core::coordinator::{
    ClaimOutcome, ClaimRequest, ClusterConfig, ClusterSnapshot, ConnectionHealth, CoordError,
    Coordinator, Leader, LeaseRule, LeaseStatus, LeaseTracker, MemberFlags, MemberRecord,
    MemberRegistration, ReleaseOutcome, ReleaseRequest, Revision, TargetWrite, Term, WatchChange,
    WatchStream,
};
use verse_core::{Incarnation, MemberId, ShardEntry, ShardId, SharedClock};

use crate::access::{Answer, Query, RaftAccess};
use crate::command::{ClaimItem, Command, Reply};
use crate::records::{self, MemberRec, TargetRec};

/// How a client behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The TTL asked for at registration.
    pub lease_ttl: Duration,
    /// The lease rule's constants.
    pub lease_rule: LeaseRule,
    /// Every request fails with `Unavailable` after this long.
    pub request_timeout: Duration,
    /// How long a waiting campaigner waits for a leader change before asking again.
    pub campaign_poll: Duration,
}

impl ClientOptions {
    /// Defaults with `lease_ttl`.
    pub fn new(lease_ttl: Duration) -> Self {
        ClientOptions {
            lease_ttl,
            lease_rule: LeaseRule::default(),
            request_timeout: Duration::from_secs(5),
            campaign_poll: Duration::from_secs(1),
        }
    }
}

struct Registered {
    id: String,
    incarnation: u64,
    keepalive: JoinHandle<()>,
}

struct Shared {
    access: Arc<dyn RaftAccess>,
    clock: SharedClock,
    options: ClientOptions,
    lease: watch::Sender<LeaseStatus>,
    connected: AtomicBool,
}

impl Shared {
    /// Runs one request under the request timeout and records the connection's health.
    async fn call<T>(
        &self,
        request: impl Future<Output = Result<T, CoordError>>,
    ) -> Result<T, CoordError> {
        let result = match tokio::time::timeout(self.options.request_timeout, request).await {
            Ok(result) => result,
            Err(_) => Err(CoordError::Unavailable("the coordinator did not answer in time".into())),
        };
        let reached = !matches!(result, Err(CoordError::Unavailable(_)));
        self.connected.store(reached, Ordering::Relaxed);
        result
    }

    async fn propose(&self, command: Command) -> Result<Reply, CoordError> {
        self.call(self.access.propose(command)).await
    }

    async fn query(&self, query: Query) -> Result<Answer, CoordError> {
        self.call(self.access.query(query)).await
    }
}

/// A [`Coordinator`] client on the embedded Raft group.
pub struct RaftCoordinator {
    shared: Arc<Shared>,
    // A std mutex: held only to read or swap the registration, never across an await.
    registered: Mutex<Option<Registered>>,
}

impl std::fmt::Debug for RaftCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftCoordinator").finish_non_exhaustive()
    }
}

impl Drop for RaftCoordinator {
    fn drop(&mut self) {
        if let Some(registered) = self.lock().take() {
            registered.keepalive.abort();
        }
    }
}

fn unexpected(reply: Reply) -> CoordError {
    CoordError::Corrupt(format!("unexpected reply from the state machine: {reply:?}"))
}

impl RaftCoordinator {
    /// A client reaching the group through `access`, reading time from `clock`.
    pub fn new(access: Arc<dyn RaftAccess>, clock: SharedClock, options: ClientOptions) -> Self {
        RaftCoordinator {
            shared: Arc::new(Shared {
                access,
                clock,
                options,
                lease: watch::Sender::new(LeaseStatus::UNREGISTERED),
                connected: AtomicBool::new(true),
            }),
            registered: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Registered>> {
        self.registered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `(id, incarnation)` of the current registration.
    fn identity(&self) -> Result<(String, u64), CoordError> {
        self.lock().as_ref().map(|r| (r.id.clone(), r.incarnation)).ok_or(CoordError::NotRegistered)
    }

    async fn wait_for_leader_change(&self, id: &str, from: Revision) -> Option<Term> {
        let Ok(mut stream) = self.shared.access.watch(from).await else { return None };
        let wait = async {
            while let Some(Ok(event)) = stream.next().await {
                let leader = match event.change {
                    WatchChange::Leader(leader) => leader,
                    WatchChange::Resync(snapshot) => snapshot.leader,
                    _ => continue,
                };
                if let Some(leader) = leader
                    && leader.member.as_str() == id
                {
                    return Some(leader.term);
                }
            }
            None
        };
        tokio::time::timeout(self.shared.options.campaign_poll, wait).await.ok().flatten()
    }
}

/// Keeps one lease alive until it is lost or the task is aborted.
async fn keep_alive(shared: Arc<Shared>, id: String, incarnation: u64, mut tracker: LeaseTracker) {
    let clock = shared.clock.clone();
    loop {
        shared.lease.send_replace(tracker.status());
        clock.sleep_until(tracker.next_wakeup()).await;
        let now = clock.now();
        tracker.tick(now);
        if !tracker.should_send(now) {
            continue;
        }
        tracker.on_sent(now);
        let command = Command::KeepAlive { member: id.clone(), incarnation };
        let mut answer = std::pin::pin!(shared.propose(command));
        // While the answer is outstanding, the proof may run out: publish that on time.
        let result = loop {
            shared.lease.send_replace(tracker.status());
            let proof_ends = clock.sleep_until(tracker.status().valid_until);
            let proven = tracker.status().state == verse_core::coordinator::LeaseState::Proven;
            tokio::select! {
                biased;
                result = &mut answer => break result,
                () = proof_ends, if proven => tracker.tick(clock.now()),
            }
        };
        // A seeded stall in keepalive handling (simulation only): the answer is processed late.
        verse_core::fault::stall(verse_core::fault::StallPoint::Keepalive).await;
        match result {
            Ok(Reply::Granted { ttl_ms }) => {
                tracker.on_success(Duration::from_millis(ttl_ms), clock.now())
            }
            Err(CoordError::LeaseLost(_)) => {
                tracker.on_lost();
                shared.lease.send_replace(tracker.status());
                return;
            }
            Ok(_) | Err(_) => tracker.on_failure(clock.now()),
        }
    }
}

#[async_trait]
impl Coordinator for RaftCoordinator {
    async fn join_cluster(&self, shard_count: u32) -> Result<ClusterConfig, CoordError> {
        match self.shared.propose(Command::JoinCluster { shard_count }).await? {
            Reply::Config(config) => Ok(config.into()),
            other => Err(unexpected(other)),
        }
    }

    async fn register(&self, registration: MemberRegistration) -> Result<MemberRecord, CoordError> {
        if self.lock().is_some() {
            self.deregister().await?;
        }
        let ttl = self.shared.options.lease_ttl;
        let member = MemberRec::from_registration(&registration, 0);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let t_send = self.shared.clock.now();
        let record = match self.shared.propose(Command::Register { member, ttl_ms }).await? {
            Reply::Member(record) => record,
            other => return Err(unexpected(other)),
        };
        let tracker = LeaseTracker::granted(
            self.shared.options.lease_rule,
            Incarnation(record.incarnation),
            ttl,
            t_send,
        );
        self.shared.lease.send_replace(tracker.status());
        let keepalive = tokio::spawn(keep_alive(
            Arc::clone(&self.shared),
            record.id.clone(),
            record.incarnation,
            tracker,
        ));
        let previous = self.lock().replace(Registered {
            id: record.id.clone(),
            incarnation: record.incarnation,
            keepalive,
        });
        if let Some(previous) = previous {
            previous.keepalive.abort();
        }
        Ok(record.into())
    }

    fn lease_status(&self) -> watch::Receiver<LeaseStatus> {
        self.shared.lease.subscribe()
    }

    async fn set_flags(&self, flags: MemberFlags) -> Result<MemberRecord, CoordError> {
        let (member, incarnation) = self.identity()?;
        let command =
            Command::SetFlags { member, incarnation, draining: flags.draining, ready: flags.ready };
        match self.shared.propose(command).await? {
            Reply::Member(record) => Ok(record.into()),
            other => Err(unexpected(other)),
        }
    }

    async fn deregister(&self) -> Result<(), CoordError> {
        let Ok((member, incarnation)) = self.identity() else { return Ok(()) };
        self.shared.propose(Command::Deregister { member, incarnation }).await?;
        if let Some(registered) = self.lock().take() {
            registered.keepalive.abort();
        }
        self.shared.lease.send_replace(LeaseStatus::UNREGISTERED);
        Ok(())
    }

    async fn members(&self) -> Result<Vec<MemberRecord>, CoordError> {
        match self.shared.query(Query::Members).await? {
            Answer::Members(members) => Ok(members),
            other => Err(CoordError::Corrupt(format!("unexpected answer {other:?}"))),
        }
    }

    async fn campaign(&self) -> Result<Term, CoordError> {
        let (member, incarnation) = self.identity()?;
        loop {
            let command = Command::Campaign { member: member.clone(), incarnation };
            match self.shared.propose(command).await? {
                Reply::Leading { term } => return Ok(Term(term)),
                Reply::Waiting { revision } => {
                    if let Some(term) =
                        self.wait_for_leader_change(&member, Revision(revision).next()).await
                    {
                        return Ok(term);
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
    }

    async fn leader(&self) -> Result<Option<Leader>, CoordError> {
        match self.shared.query(Query::Leader).await? {
            Answer::Leader(leader, _) => Ok(leader),
            other => Err(CoordError::Corrupt(format!("unexpected answer {other:?}"))),
        }
    }

    async fn resign(&self, term: Term) -> Result<(), CoordError> {
        self.shared.propose(Command::Resign { term: term.0 }).await.map(|_| ())
    }

    async fn leadership_lost(&self, term: Term) -> Result<(), CoordError> {
        loop {
            let (leader, revision) = match self.shared.query(Query::Leader).await? {
                Answer::Leader(leader, revision) => (leader, revision),
                other => return Err(CoordError::Corrupt(format!("unexpected answer {other:?}"))),
            };
            if leader.is_none_or(|leader| leader.term != term) {
                return Ok(());
            }
            let mut stream = self.shared.access.watch(revision.next()).await?;
            while let Some(event) = stream.next().await {
                let leader = match event?.change {
                    WatchChange::Leader(leader) => leader,
                    WatchChange::Resync(snapshot) => snapshot.leader,
                    _ => continue,
                };
                if leader.is_none_or(|leader| leader.term != term) {
                    return Ok(());
                }
            }
        }
    }

    async fn snapshot(&self) -> Result<ClusterSnapshot, CoordError> {
        match self.shared.query(Query::Snapshot).await? {
            Answer::Snapshot(snapshot) => Ok(*snapshot),
            other => Err(CoordError::Corrupt(format!("unexpected answer {other:?}"))),
        }
    }

    async fn read_entry(&self, shard: ShardId) -> Result<ShardEntry, CoordError> {
        match self.shared.query(Query::Entry(shard)).await? {
            Answer::Entry(entry) => Ok(entry),
            other => Err(CoordError::Corrupt(format!("unexpected answer {other:?}"))),
        }
    }

    async fn write_targets(&self, term: Term, writes: Vec<TargetWrite>) -> Result<(), CoordError> {
        let writes =
            writes.iter().map(|w| (w.shard.0, w.target.as_ref().map(TargetRec::from))).collect();
        self.shared.propose(Command::WriteTargets { term: term.0, writes }).await.map(|_| ())
    }

    async fn claim(&self, claims: Vec<ClaimRequest>) -> Result<Vec<ClaimOutcome>, CoordError> {
        let (member, incarnation) = self.identity()?;
        let claims = claims
            .iter()
            .map(|claim| ClaimItem {
                shard: claim.shard.0,
                expected_target: TargetRec::from(&claim.expected_target),
                expected_owner: claim.expected_owner.as_ref().map(Into::into),
            })
            .collect();
        match self.shared.propose(Command::Claim { member, incarnation, claims }).await? {
            Reply::Claims(outcomes) => Ok(outcomes
                .into_iter()
                .map(|(shard, result)| ClaimOutcome {
                    shard: ShardId(shard),
                    result: result.map(Into::into).map_err(Into::into),
                })
                .collect()),
            other => Err(unexpected(other)),
        }
    }

    async fn release(
        &self,
        releases: Vec<ReleaseRequest>,
    ) -> Result<Vec<ReleaseOutcome>, CoordError> {
        let (member, incarnation) = self.identity()?;
        let releases =
            releases.iter().map(|r| (r.shard.0, (r.epoch.generation, r.epoch.counter))).collect();
        match self.shared.propose(Command::Release { member, incarnation, releases }).await? {
            Reply::Releases(outcomes) => Ok(outcomes
                .into_iter()
                .map(|(shard, result)| ReleaseOutcome {
                    shard: ShardId(shard),
                    result: result.map(Into::into).map_err(records::not_owner),
                })
                .collect()),
            other => Err(unexpected(other)),
        }
    }

    async fn pin(&self, shard: ShardId, node: MemberId) -> Result<(), CoordError> {
        let command = Command::Pin { shard: shard.0, node: Some(node.as_str().to_owned()) };
        self.shared.propose(command).await.map(|_| ())
    }

    async fn unpin(&self, shard: ShardId) -> Result<(), CoordError> {
        self.shared.propose(Command::Pin { shard: shard.0, node: None }).await.map(|_| ())
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream, CoordError> {
        self.shared.call(self.shared.access.watch(from)).await
    }

    fn health(&self) -> ConnectionHealth {
        if self.shared.connected.load(Ordering::Relaxed) {
            ConnectionHealth::Connected
        } else {
            ConnectionHealth::Disconnected
        }
    }
}
