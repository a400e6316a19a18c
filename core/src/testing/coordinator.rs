//! The [`Coordinator`] conformance suite (invariants 2–4: leases, fenced claims, fenced leader
//! writes).
//!
//! A backend runs it with a [`CoordinatorFactory`] that builds a fresh, empty [`TestCluster`]
//! per case. A test cluster connects clients (one client = one process) over links the suite
//! can cut and restore, to simulate a connection blip or an outage of one process, and can
//! compact the coordinator's history. Cases run on real time: the lease cases use a 1 s TTL
//! (only they do), the others 3 s.
//!
//! - [`run_coordinator_conformance`] runs every case in turn; each case is also a public
//!   function taking `&factory`, so a backend can run them as separate tests.

// A test suite reports a broken promise by panicking; `unwrap` on a result is that report.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::clock::{Clock, SystemClock};
use crate::coordinator::{
    ClaimRejection, ClaimRequest, ClusterConfig, CoordError, Coordinator, LeaseState, MemberFlags,
    MemberRecord, MemberRegistration, MemberRole, NotOwner, ReleaseRequest, Revision, TargetWrite,
    Term, WatchChange, WatchEvent, WatchStream, register_when_free,
};
use crate::epoch::Epoch;
use crate::shard::{DEFAULT_SHARD_COUNT, ShardId};
use crate::shardmap::{MemberId, OwnerRecord, ShardEntry, TargetRecord};

/// The lease TTL of clients in cases that do not test lease expiry.
pub const NORMAL_TTL: Duration = Duration::from_secs(3);
/// The lease TTL of clients in cases that test lease expiry.
pub const SHORT_TTL: Duration = Duration::from_secs(1);
/// The shard count of the cases that do not test initialisation.
pub const CASE_SHARD_COUNT: u32 = 64;
/// How long the suite waits for anything it expects to happen.
const PATIENCE: Duration = Duration::from_secs(15);

/// Names one client's connection to the coordinator, for [`TestCluster::partition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Link(pub usize);

/// Builds a fresh, empty coordinator cluster for each case.
#[async_trait]
pub trait CoordinatorFactory: Send + Sync {
    /// The cluster built.
    type Cluster: TestCluster;
    /// A fresh, empty cluster (no configuration, no members).
    async fn new_cluster(&self) -> Self::Cluster;
}

/// A coordinator cluster under test.
#[async_trait]
pub trait TestCluster: Send + Sync {
    /// The client type.
    type Client: Coordinator;
    /// A new client (a new process), not registered, whose leases get `lease_ttl`, connected
    /// over its own link. It must read time from the system clock.
    async fn connect(&self, lease_ttl: Duration) -> (Self::Client, Link);
    /// Cuts `link`: the client's requests fail (or hang) until [`TestCluster::heal`].
    async fn partition(&self, link: Link);
    /// Restores `link`.
    async fn heal(&self, link: Link);
    /// Compacts the coordinator's history up to its current revision.
    async fn compact(&self);
}

/// Runs every case of the suite. Panics on the first broken promise.
pub async fn run_coordinator_conformance<F: CoordinatorFactory>(factory: F) {
    registration_is_create_if_absent(&factory).await;
    registration_waits_for_expiry(&factory).await;
    keepalive_keeps_member(&factory).await;
    holder_is_unproven_before_record_disappears(&factory).await;
    short_blip_keeps_lease(&factory).await;
    watch_delivers_member_changes_in_order(&factory).await;
    watch_resumes_from_revision(&factory).await;
    watch_resyncs_after_compaction(&factory).await;
    one_campaigner_leads_and_terms_fence_targets(&factory).await;
    claim_rule(&factory).await;
    claim_after_owner_expiry_and_new_incarnation(&factory).await;
    concurrent_claimants_one_wins(&factory).await;
    batch_conflict_fails_only_its_shard(&factory).await;
    release_only_by_owner(&factory).await;
    claim_by_lost_lease_is_rejected(&factory).await;
    shards_initialise_once(&factory).await;
}

fn registration(id: &str) -> MemberRegistration {
    MemberRegistration {
        id: id.into(),
        addresses: vec![format!("{id}.example:7000")],
        role: MemberRole::Node,
        version: "0.1.0-test".into(),
        start_time_unix_ms: 1_700_000_000_000,
        flags: MemberFlags::default(),
        node_local_store: false,
    }
}

/// Connects a client, joins the cluster with `CASE_SHARD_COUNT` shards and registers `id`.
async fn member<C: TestCluster>(
    cluster: &C,
    id: &str,
    ttl: Duration,
) -> (C::Client, Link, MemberRecord) {
    let (client, link) = cluster.connect(ttl).await;
    client.join_cluster(CASE_SHARD_COUNT).await.unwrap();
    let record = client.register(registration(id)).await.unwrap();
    (client, link, record)
}

/// Waits until `check` returns true, polling; panics after [`PATIENCE`] naming `what`.
async fn eventually<Fut: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> Fut) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn is_member(client: &impl Coordinator, id: &str) -> Option<MemberRecord> {
    let members = client.members().await.unwrap();
    members.into_iter().find(|m| m.id.as_str() == id)
}

async fn wait_lease_state(client: &impl Coordinator, state: LeaseState) {
    let mut status = client.lease_status();
    // Drop the borrow `wait_for` returns at once: holding it blocks the keepalive's updates.
    let waited = tokio::time::timeout(PATIENCE, status.wait_for(|s| s.state == state))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(waited, "lease never became {state:?}: {:?}", *client.lease_status().borrow());
}

/// The next event that is not a progress notification.
async fn next_change(stream: &mut WatchStream) -> WatchEvent {
    loop {
        let item = tokio::time::timeout(PATIENCE, stream.next()).await;
        let event = item.expect("a watch event in time").expect("stream open").unwrap();
        if event.change != WatchChange::Progress {
            return event;
        }
    }
}

fn shard(n: u32) -> ShardId {
    ShardId(n)
}

/// A leader client with its term, and target writes through it.
async fn leader<C: TestCluster>(cluster: &C) -> (C::Client, Term) {
    let (client, _link, _) = member(cluster, "leader", NORMAL_TTL).await;
    let term = tokio::time::timeout(PATIENCE, client.campaign()).await.unwrap().unwrap();
    (client, term)
}

async fn set_target(leader: &(impl Coordinator, Term), n: u32, node: &str) {
    let write = TargetWrite { shard: shard(n), target: Some(TargetRecord::planned(node)) };
    leader.0.write_targets(leader.1, vec![write]).await.unwrap();
}

fn claim_req(n: u32, target: &str, owner: Option<OwnerRecord>) -> ClaimRequest {
    ClaimRequest {
        shard: shard(n),
        expected_target: TargetRecord::planned(target),
        expected_owner: owner,
    }
}

async fn claim_one(
    client: &impl Coordinator,
    request: ClaimRequest,
) -> Result<OwnerRecord, ClaimRejection> {
    let mut outcomes = client.claim(vec![request.clone()]).await.unwrap();
    assert_eq!(outcomes.len(), 1);
    let outcome = outcomes.remove(0);
    assert_eq!(outcome.shard, request.shard);
    outcome.result
}

/// Registration is create-if-absent: a second process with the same id is refused with a
/// retryable error naming the holder's incarnation; other ids register with other incarnations.
pub async fn registration_is_create_if_absent<F: CoordinatorFactory>(factory: &F) {
    let cluster = factory.new_cluster().await;
    let (first, _, record) = member(&cluster, "n1", NORMAL_TTL).await;
    assert_eq!(record.id, MemberId::from("n1"));
    assert_eq!(record.addresses, registration("n1").addresses);
    assert_eq!(first.lease_status().borrow().incarnation, Some(record.incarnation));

    let (second, _) = cluster.connect(NORMAL_TTL).await;
    let error = second.register(registration("n1")).await.unwrap_err();
    assert_eq!(
        error,
        CoordError::MemberExists { id: "n1".into(), incarnation: record.incarnation }
    );
    assert!(error.is_retryable());
    // Every field of the registration comes back in the record, the store kind included.
    let local = MemberRegistration { node_local_store: true, ..registration("n2") };
    let other = second.register(local.clone()).await.unwrap();
    assert_ne!(other.incarnation, record.incarnation);
    assert_eq!(other, MemberRecord::from_registration(&local, other.incarnation));
    assert!(!record.node_local_store);
    let mut ids: Vec<String> =
        first.members().await.unwrap().iter().map(|m| m.id.to_string()).collect();
    ids.sort();
    assert_eq!(ids, vec!["n1", "n2"]);
    assert_eq!(is_member(&second, "n1").await, Some(record));
    assert_eq!(is_member(&first, "n2").await, Some(other));
    assert_eq!(first.health(), crate::coordinator::ConnectionHealth::Connected);
}

/// A second process with the same id waits for the first one's record to expire, then
/// registers as a new incarnation.
pub async fn registration_waits_for_expiry<F: CoordinatorFactory>(factory: &F) {
    let cluster = factory.new_cluster().await;
    let (_first, link, old) = member(&cluster, "n1", SHORT_TTL).await;
    cluster.partition(link).await;
    let (second, _) = cluster.connect(SHORT_TTL).await;
    let clock = SystemClock;
    let deadline = clock.now() + PATIENCE;
    let new = register_when_free(
        &second,
        registration("n1"),
        &clock,
        Duration::from_millis(50),
        deadline,
    )
    .await
    .unwrap();
    assert_ne!(new.incarnation, old.incarnation, "a new incarnation");
    cluster.heal(link).await;
}

/// Keepalives keep a member registered and its lease proven well past its TTL.
pub async fn keepalive_keeps_member<F: CoordinatorFactory>(factory: &F) {
    let cluster = factory.new_cluster().await;
    let (holder, _, record) = member(&cluster, "n1", SHORT_TTL).await;
    let (observer, _) = cluster.connect(NORMAL_TTL).await;
    let start = Instant::now();
    while start.elapsed() < SHORT_TTL * 3 {
        assert_eq!(is_member(&observer, "n1").await, Some(record.clone()), "record kept");
        assert_ne!(holder.lease_status().borrow().state, LeaseState::Lost);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_lease_state(&holder, LeaseState::Proven).await;
    assert_eq!(holder.lease_status().borrow().incarnation, Some(record.incarnation));
}

/// When keepalives stop, the holder turns Unproven before any other client can see its
/// record gone; the record disappears after the TTL; once the link is back the holder learns
/// the lease is Lost (the outage outlived the lease).
pub async fn holder_is_unproven_before_record_disappears<F: CoordinatorFactory>(factory: &F) {
    let cluster = factory.new_cluster().await;
    let (holder, link, _) = member(&cluster, "n1", SHORT_TTL).await;
    let (observer, _) = cluster.connect(NORMAL_TTL).await;
    wait_lease_state(&holder, LeaseState::Proven).await;

    let mut status = holder.lease_status();
    let unproven = tokio::spawn(async move {
        status.wait_for(|s| s.state != LeaseState::Proven).await.map(|_| Instant::now()).ok()
    });
    let cut_at = Instant::now();
    cluster.partition(link).await;
    eventually("the record to disappear", || async { is_member(&observer, "n1").await.is_none() })
        .await;
    let gone_at = Instant::now();
    let unproven_at = tokio::time::timeout(PATIENCE, unproven)
        .await
        .expect("holder became unproven")
        .unwrap()
        .expect("lease status kept");
    assert!(unproven_at < gone_at, "holder unproven before the record disappeared");
    assert!(gone_at - cut_at >= SHORT_TTL / 2, "record outlived a good part of the TTL");
    cluster.heal(link).await;
    wait_lease_state(&holder, LeaseState::Lost).await;
}

/// After a blip shorter than TTL − margin the holder is Proven again on the same lease,
/// without registering again.
pub async fn short_blip_keeps_lease<F: CoordinatorFactory>(factory: &F) {
    let cluster = factory.new_cluster().await;
    let (holder, link, record) = member(&cluster, "n1", NORMAL_TTL).await;
    let (observer, _) = cluster.connect(NORMAL_TTL).await;
    wait_lease_state(&holder, LeaseState::Proven).await;
    cluster.partition(link).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.heal(link).await;
    wait_lease_state(&holder, LeaseState::Proven).await;
    // Proven again on a keepalive sent after the blip.
    let valid_until = holder.lease_status().borrow().valid_until;
    let mut status = holder.lease_status();
    let renewed = tokio::time::timeout(
        PATIENCE,
        status.wait_for(|s| s.state == LeaseState::Proven && s.valid_until > valid_until),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    assert!(renewed, "keepalives resumed after the blip");
    assert_eq!(holder.lease_status().borrow().incarnation, Some(record.incarnation));
    assert_eq!(is_member(&observer, "n1").await, Some(record), "same record, same incarnation");
}

/// The watch delivers joins, flag changes and leaves in order, with increasing revisions.
pub async fn watch_delivers_member_changes_in_order<F: CoordinatorFactory>(factory: &F) {
    let cluster = factory.new_cluster().await;
    let (watcher, _) = cluster.connect(NORMAL_TTL).await;
    watcher.join_cluster(CASE_SHARD_COUNT).await.unwrap();
    let from = watcher.snapshot().await.unwrap().revision.next();
    let mut stream = watcher.watch(from).await.unwrap();

    let (one, _, record_one) = member(&cluster, "n1", NORMAL_TTL).await;
    let flags = MemberFlags { draining: true, ready: true };
    let flagged = one.set_flags(flags).await.unwrap();
    assert_eq!(flagged.flags, flags);
    assert_eq!(flagged.incarnation, record_one.incarnation);
    let (_two, _, record_two) = member(&cluster, "n2", NORMAL_TTL).await;
    one.deregister().await.unwrap();

    let expected = [
        WatchChange::MemberPut(record_one),
        WatchChange::MemberPut(flagged),
        WatchChange::MemberPut(record_two),
        WatchChange::MemberGone("n1".into()),
    ];
    let mut last = Revision(0);
    for want in expected {
        let event = next_change(&mut stream).await;
        assert_eq!(event.change, want);
        assert!(event.revision > last && event.revision >= from, "revisions increase");
        last = event.revision;
    }
    assert_eq!(is_member(&watcher, "n1").await, None);
}

/// Watching again from a revision delivers exactly the events from that revision on.
pub async fn watch_resumes_from_revision<F: CoordinatorFactory>(factory: &F) {
    let cluster = factory.new_cluster().await;
    let (client, _, _) = member(&cluster, "n1", NORMAL_TTL).await;
    let from = client.snapshot().await.unwrap().revision.next();
    let mut stream = client.watch(from).await.unwrap();
    for n in 0..5 {
        client.pin(shard(n), "n1".into()).await.unwrap();
    }
    client.unpin(shard(0)).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(next_change(&mut stream).await);
    }
    for (n, event) in seen.iter().take(5).enumerate() {
        let n = u32::try_from(n).unwrap();
        assert_eq!(event.change, WatchChange::Pin { shard: shard(n), node: Some("n1".into()) });
    }
    assert_eq!(seen[5].change, WatchChange::Pin { shard: shard(0), node: None });

    let resume_from = seen[2].revision;
    let mut resumed = client.watch(resume_from).await.unwrap();
    for want in &seen[2..] {
        assert_eq!(&next_change(&mut resumed).await, want, "no loss, no duplicate");
    }
    client.pin(shard(9), "n1".into()).await.unwrap();
    let next = next_change(&mut resumed).await;
    assert_eq!(next.change, WatchChange::Pin { shard: shard(9), node: Some("n1".into()) });
    assert!(next.revision > seen[5].revision);
    let snapshot = client.snapshot().await.unwrap();
    assert_eq!(
        snapshot.pins.keys().copied().collect::<Vec<_>>(),
        vec![shard(1), shard(2), shard(3), shard(4), shard(9)]
    );
}

/// Watching from a compacted revision yields a resync with a full snapshot, then live events.
pub async fn watch_resyncs_after_compaction<F: CoordinatorFactory>(factory: &F) {
    let cluster = factory.new_cluster().await;
    let (client, _, _) = member(&cluster, "n1", NORMAL_TTL).await;
    let old = client.snapshot().await.unwrap().revision;
    for n in 0..3 {
        client.pin(shard(n), "n1".into()).await.unwrap();
    }
    cluster.compact().await;
    let mut stream = client.watch(old.next()).await.unwrap();
    let event = next_change(&mut stream).await;
    let WatchChange::Resync(snapshot) = event.change else {
        panic!("expected a resync, got {event:?}");
    };
    assert_eq!(event.revision, snapshot.revision);
    let current = client.snapshot().await.unwrap();
    assert!(snapshot.revision > old);
    assert_eq!(snapshot.pins, current.pins, "the snapshot is complete");
    assert_eq!(snapshot.members, current.members);
    assert_eq!(snapshot.map, current.map);
    client.pin(shard(7), "n1".into()).await.unwrap();
    let after = next_change(&mut stream).await;
    assert_eq!(after.change, WatchChange::Pin { shard: shard(7), node: Some("n1".into()) });
    assert!(after.revision > snapshot.revision);
}

/// Exactly one of several concurrent campaigners leads; after it resigns another leads with
/// a higher term; a target write under the old term is rejected.
pub async fn one_campaigner_leads_and_terms_fence_targets<F: CoordinatorFactory>(factory: &F) {
    let cluster = factory.new_cluster().await;
    let mut clients = Vec::new();
    for id in ["c0", "c1", "c2"] {
        clients.push(member(&cluster, id, NORMAL_TTL).await.0);
    }
    let mut campaigns: FuturesUnordered<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| async move { (i, c.campaign().await.unwrap()) })
        .collect();
    let (first, first_term) =
        tokio::time::timeout(PATIENCE, campaigns.next()).await.unwrap().unwrap();
    // Nobody else leads while the first does.
    let extra = tokio::time::timeout(Duration::from_millis(500), campaigns.next()).await;
    assert!(extra.is_err(), "a second campaigner won while the first leads");
    let leader = clients[first].leader().await.unwrap().expect("a leader");
    assert_eq!(leader.term, first_term);
    assert_eq!(leader.member.as_str(), format!("c{first}"));
    let write =
        |n: u32| vec![TargetWrite { shard: shard(n), target: Some(TargetRecord::planned("c0")) }];
    clients[first].write_targets(first_term, write(1)).await.unwrap();

    clients[first].resign(first_term).await.unwrap();
    clients[first].leadership_lost(first_term).await.unwrap();
    let (second, second_term) =
        tokio::time::timeout(PATIENCE, campaigns.next()).await.unwrap().unwrap();
    assert_ne!(second, first);
    assert!(second_term > first_term, "a new leader has a higher term");
    drop(campaigns);
    eventually("the new leader to be visible", || async {
        clients[first].leader().await.unwrap().map(|l| l.term) == Some(second_term)
    })
    .await;

    let stale = clients[first].write_targets(first_term, write(2)).await.unwrap_err();
    assert_eq!(stale, CoordError::StaleTerm(first_term));
    assert!(!stale.is_retryable());
    clients[second].write_targets(second_term, write(2)).await.unwrap();
    let entry = clients[first].read_entry(shard(2)).await.unwrap();
    assert_eq!(entry.target, Some(TargetRecord::planned("c0")));
    // Campaigning again while leading returns the same term.
    assert_eq!(clients[second].campaign().await.unwrap(), second_term);
}

/// The claim rule: refused for a non-target, while the owner is live and has not released,
/// and with a stale view of the owner; every success increments the epoch.
pub async fn claim_rule<F: CoordinatorFactory>(factory: &F) {
    let cluster = factory.new_cluster().await;
    let leader = leader(&cluster).await;
    let (a, _, rec_a) = member(&cluster, "a", NORMAL_TTL).await;
    let (b, _, rec_b) = member(&cluster, "b", NORMAL_TTL).await;
    let generation = a.join_cluster(CASE_SHARD_COUNT).await.unwrap().generation;
    set_target(&leader, 0, "a").await;

    // Not the target.
    let refused = claim_one(&b, claim_req(0, "b", None)).await.unwrap_err();
    assert_eq!(refused, ClaimRejection::NotTarget { current: Some(TargetRecord::planned("a")) });
    let refused = claim_one(&b, claim_req(0, "a", None)).await.unwrap_err();
    assert!(matches!(refused, ClaimRejection::NotTarget { .. }), "{refused:?}");

    let owned_a = claim_one(&a, claim_req(0, "a", None)).await.unwrap();
    assert_eq!(
        owned_a,
        OwnerRecord {
            node: "a".into(),
            incarnation: rec_a.incarnation,
            epoch: Epoch::new(generation, 1),
            released: false,
        }
    );
    let entry = b.read_entry(shard(0)).await.unwrap();
    assert_eq!(
        entry,
        ShardEntry {
            shard: shard(0),
            target: Some(TargetRecord::planned("a")),
            owner: Some(owned_a.clone()),
        }
    );

    set_target(&leader, 0, "b").await;
    // The owner is live and has not released.
    let refused = claim_one(&b, claim_req(0, "b", Some(owned_a.clone()))).await.unwrap_err();
    assert_eq!(refused, ClaimRejection::OwnerLive { owner: owned_a.clone() });
    // A stale view of the owner.
    let refused = claim_one(&b, claim_req(0, "b", None)).await.unwrap_err();
    assert_eq!(refused, ClaimRejection::OwnerChanged { current: Some(owned_a.clone()) });

    let released = a.release(vec![ReleaseRequest { shard: shard(0), epoch: owned_a.epoch }]).await;
    let released = released.unwrap().remove(0).result.unwrap();
    assert_eq!(released, OwnerRecord { released: true, ..owned_a.clone() });
    let owned_b = claim_one(&b, claim_req(0, "b", Some(released))).await.unwrap();
    assert_eq!(owned_b.incarnation, rec_b.incarnation);
    assert_eq!(owned_b.epoch, Epoch::new(generation, 2), "every claim increments the epoch");
    assert!(!owned_b.released);
}

/// A claim is allowed once the previous owner's incarnation is not live; a new incarnation of
/// the same node id is a new owner and also increments the epoch; the old incarnation's
/// release is refused.
pub async fn claim_after_owner_expiry_and_new_incarnation<F: CoordinatorFactory>(factory: &F) {
    let cluster = factory.new_cluster().await;
    let leader = leader(&cluster).await;
    let (a, link_a, rec_a) = member(&cluster, "a", SHORT_TTL).await;
    let (b, _, _) = member(&cluster, "b", NORMAL_TTL).await;
    set_target(&leader, 1, "a").await;
    set_target(&leader, 2, "a").await;
    let owned_1 = claim_one(&a, claim_req(1, "a", None)).await.unwrap();
    let owned_2 = claim_one(&a, claim_req(2, "a", None)).await.unwrap();

    cluster.partition(link_a).await;
    eventually("a's record to expire", || async { is_member(&b, "a").await.is_none() }).await;
    set_target(&leader, 1, "b").await;
    let taken = claim_one(&b, claim_req(1, "b", Some(owned_1.clone()))).await.unwrap();
    assert_eq!(taken.epoch, owned_1.epoch.next());

    // A new incarnation of "a" claims the shard that names its node id.
    let (a2, _, rec_a2) = member(&cluster, "a", NORMAL_TTL).await;
    assert_ne!(rec_a2.incarnation, rec_a.incarnation);
    let refused = a2.release(vec![ReleaseRequest { shard: shard(2), epoch: owned_2.epoch }]).await;
    assert_eq!(refused.unwrap()[0].result, Err(NotOwner { current: Some(owned_2.clone()) }));
    let reclaimed = claim_one(&a2, claim_req(2, "a", Some(owned_2.clone()))).await.unwrap();
    assert_eq!(reclaimed.incarnation, rec_a2.incarnation);
    assert_eq!(reclaimed.epoch, owned_2.epoch.next(), "a new incarnation increments the epoch");
    cluster.heal(link_a).await;
    wait_lease_state(&a, LeaseState::Lost).await;
}

/// Of several concurrent claims of one shard, exactly one wins.
pub async fn concurrent_claimants_one_wins<F: CoordinatorFactory>(factory: &F) {
    let cluster = factory.new_cluster().await;
    let leader = leader(&cluster).await;
    let (a, _, _) = member(&cluster, "a", NORMAL_TTL).await;
    let (b, _, _) = member(&cluster, "b", NORMAL_TTL).await;
    set_target(&leader, 3, "a").await;
    // `b` read the map before the leader retargeted; `a` claims from two tasks at once.
    let claims = futures::future::join_all([
        a.claim(vec![claim_req(3, "a", None)]),
        a.claim(vec![claim_req(3, "a", None)]),
        b.claim(vec![claim_req(3, "b", None)]),
        a.claim(vec![claim_req(3, "a", None)]),
    ])
    .await;
    let wins: Vec<OwnerRecord> =
        claims.into_iter().filter_map(|outcomes| outcomes.unwrap().remove(0).result.ok()).collect();
    assert_eq!(wins.len(), 1, "exactly one claim wins: {wins:?}");
    assert_eq!(a.read_entry(shard(3)).await.unwrap().owner.as_ref(), Some(&wins[0]));
}

/// A conflict on one shard of a batch does not fail the others.
pub async fn batch_conflict_fails_only_its_shard<F: CoordinatorFactory>(factory: &F) {
    let cluster = factory.new_cluster().await;
    let leader = leader(&cluster).await;
    let (b, _, _) = member(&cluster, "b", NORMAL_TTL).await;
    let writes = (4..9).map(|n| TargetWrite {
        shard: shard(n),
        target: Some(TargetRecord::planned(if n == 5 { "a" } else { "b" })),
    });
    leader.0.write_targets(leader.1, writes.collect()).await.unwrap();
    let batch = vec![
        claim_req(4, "b", None),
        claim_req(5, "b", None),
        claim_req(6, "b", None),
        claim_req(
            7,
            "b",
            Some(OwnerRecord {
                node: "z".into(),
                incarnation: crate::shardmap::Incarnation(1),
                epoch: Epoch::new(1, 1),
                released: true,
            }),
        ),
        claim_req(8, "b", None),
    ];
    let outcomes = b.claim(batch).await.unwrap();
    let shards: Vec<ShardId> = outcomes.iter().map(|o| o.shard).collect();
    assert_eq!(shards, (4..9).map(shard).collect::<Vec<_>>(), "one outcome per shard, in order");
    assert!(outcomes[0].result.is_ok());
    assert!(matches!(outcomes[1].result, Err(ClaimRejection::NotTarget { .. })));
    assert!(outcomes[2].result.is_ok());
    assert_eq!(outcomes[3].result, Err(ClaimRejection::OwnerChanged { current: None }));
    assert!(outcomes[4].result.is_ok());
}

/// Only the owning incarnation releases; a release is idempotent for its owner.
pub async fn release_only_by_owner<F: CoordinatorFactory>(factory: &F) {
    let cluster = factory.new_cluster().await;
    let leader = leader(&cluster).await;
    let (a, _, _) = member(&cluster, "a", NORMAL_TTL).await;
    let (b, _, _) = member(&cluster, "b", NORMAL_TTL).await;
    set_target(&leader, 4, "b").await;
    let owned = claim_one(&b, claim_req(4, "b", None)).await.unwrap();
    let request = ReleaseRequest { shard: shard(4), epoch: owned.epoch };
    let refused = a.release(vec![request.clone()]).await.unwrap().remove(0);
    assert_eq!(refused.result, Err(NotOwner { current: Some(owned.clone()) }));
    let wrong_epoch = ReleaseRequest { shard: shard(4), epoch: owned.epoch.next() };
    let refused = b.release(vec![wrong_epoch]).await.unwrap().remove(0);
    assert!(refused.result.is_err(), "a release names the owner's epoch");
    let released = OwnerRecord { released: true, ..owned };
    for _ in 0..2 {
        let done = b.release(vec![request.clone()]).await.unwrap().remove(0);
        assert_eq!(done.result, Ok(released.clone()));
    }
    let unowned = b.release(vec![ReleaseRequest { shard: shard(5), epoch: Epoch::new(1, 1) }]);
    assert_eq!(unowned.await.unwrap()[0].result, Err(NotOwner { current: None }));
}

/// A claimant whose lease is gone is refused for the whole batch with `LeaseLost`.
pub async fn claim_by_lost_lease_is_rejected<F: CoordinatorFactory>(factory: &F) {
    let cluster = factory.new_cluster().await;
    let leader = leader(&cluster).await;
    let (x, link, rec_x) = member(&cluster, "x", SHORT_TTL).await;
    set_target(&leader, 1, "x").await;
    cluster.partition(link).await;
    eventually("x's record to expire", || async { is_member(&leader.0, "x").await.is_none() })
        .await;
    cluster.heal(link).await;
    let error = x.claim(vec![claim_req(1, "x", None)]).await.unwrap_err();
    assert_eq!(error, CoordError::LeaseLost(rec_x.incarnation));
    assert_eq!(leader.0.read_entry(shard(1)).await.unwrap().owner, None);
    let error = x.set_flags(MemberFlags { draining: true, ready: false }).await.unwrap_err();
    assert_eq!(error, CoordError::LeaseLost(rec_x.incarnation));
}

/// 8192 shards initialise once and idempotently; a member with another count is refused;
/// reading outside the map is refused.
pub async fn shards_initialise_once<F: CoordinatorFactory>(factory: &F) {
    let cluster = factory.new_cluster().await;
    let (first, _) = cluster.connect(NORMAL_TTL).await;
    let (second, _) = cluster.connect(NORMAL_TTL).await;
    assert_eq!(first.snapshot().await.unwrap_err(), CoordError::NotInitialised);
    let (one, two) = futures::join!(
        first.join_cluster(DEFAULT_SHARD_COUNT),
        second.join_cluster(DEFAULT_SHARD_COUNT)
    );
    let config = ClusterConfig { shard_count: DEFAULT_SHARD_COUNT, generation: 1 };
    assert_eq!((one.unwrap(), two.unwrap()), (config, config));
    let before = first.snapshot().await.unwrap();
    assert_eq!(first.join_cluster(DEFAULT_SHARD_COUNT).await.unwrap(), config);
    let after = first.snapshot().await.unwrap();
    assert_eq!(after.revision, before.revision, "a second initialisation writes nothing");
    assert_eq!(after.map.shard_count(), DEFAULT_SHARD_COUNT);
    assert!(after.map.iter().all(|entry| entry.target.is_none() && entry.owner.is_none()));

    let refused = second.join_cluster(64).await.unwrap_err();
    assert_eq!(refused, CoordError::ShardCountMismatch { cluster: DEFAULT_SHARD_COUNT, ours: 64 });
    assert!(!refused.is_retryable());
    let outside = first.read_entry(ShardId(DEFAULT_SHARD_COUNT)).await.unwrap_err();
    assert!(matches!(outside, CoordError::InvalidShard { .. }));
}
