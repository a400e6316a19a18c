//! Unit tests of the state machine: lease time, registration, leadership, the claim rule and
//! the change log, without Raft.

use super::*;
use crate::records::RoleRec;

const TERM: u64 = 2;
const NODE: u64 = 1;

/// Drives a state like a Raft log would: consecutive indexes, one frame at a time.
struct Log {
    state: CoordState,
    index: u64,
    frame: Frame,
}

impl Log {
    fn new() -> Self {
        Log { state: CoordState::new(1000), index: 0, frame: Frame { term: TERM, leader: NODE } }
    }

    fn at(&mut self, elapsed_ms: u64, command: Command) -> Response {
        let stamp = Stamp { term: self.frame.term, leader: self.frame.leader, elapsed_ms };
        self.apply(Some(stamp), command)
    }

    fn apply(&mut self, stamp: Option<Stamp>, command: Command) -> Response {
        self.index += 1;
        self.state.apply(self.index, self.frame, &Proposal { stamp, command })
    }

    fn register(&mut self, elapsed_ms: u64, id: &str, ttl_ms: u64) -> MemberRec {
        match self.at(elapsed_ms, Command::Register { member: member(id), ttl_ms }) {
            Ok(Reply::Member(record)) => record,
            other => panic!("register {id}: {other:?}"),
        }
    }

    fn is_member(&self, id: &str) -> bool {
        self.state.members().any(|m| m.id == id)
    }

    fn leading(&mut self, id: &str, incarnation: u64) -> u64 {
        match self.at(0, Command::Campaign { member: id.into(), incarnation }) {
            Ok(Reply::Leading { term }) => term,
            other => panic!("campaign {id}: {other:?}"),
        }
    }
}

fn member(id: &str) -> MemberRec {
    MemberRec {
        id: id.into(),
        incarnation: 0,
        addresses: vec![],
        role: RoleRec::Node,
        version: "t".into(),
        start_time_unix_ms: 0,
        draining: false,
        ready: false,
        node_local_store: false,
    }
}

fn target(node: &str) -> TargetRec {
    TargetRec { node: node.into(), pinned: false }
}

fn claim(shard: u32, node: &str, owner: Option<OwnerRec>) -> ClaimItem {
    ClaimItem { shard, expected_target: target(node), expected_owner: owner }
}

fn claims(response: Response) -> Vec<Result<OwnerRec, ClaimRefusal>> {
    match response {
        Ok(Reply::Claims(outcomes)) => outcomes.into_iter().map(|(_, outcome)| outcome).collect(),
        other => panic!("claims: {other:?}"),
    }
}

#[test]
fn registration_is_create_if_absent_and_incarnation_is_the_log_index() {
    let mut log = Log::new();
    let first = log.register(0, "a", 1000);
    assert_eq!(first.incarnation, 1);
    let refused = log.at(10, Command::Register { member: member("a"), ttl_ms: 1000 });
    assert_eq!(refused, Err(Refusal::MemberExists { id: "a".into(), incarnation: 1 }));
    assert_eq!(log.register(20, "b", 1000).incarnation, 3);
}

#[test]
fn leases_expire_only_through_a_tick_past_expiry() {
    let mut log = Log::new();
    let a = log.register(100, "a", 1000);
    log.at(1099, Command::Tick).unwrap();
    assert!(log.is_member("a"), "not expired before 100 + 1000");
    // Keepalive at 1200 moves expiry to 2200; never shortens.
    let granted =
        log.at(1200, Command::KeepAlive { member: "a".into(), incarnation: a.incarnation });
    assert_eq!(granted, Ok(Reply::Granted { ttl_ms: 1000 }));
    // Lease time never moves back within a frame: a stamp of 500 counts as 1200.
    log.at(500, Command::KeepAlive { member: "a".into(), incarnation: a.incarnation }).unwrap();
    assert_eq!(log.state.lease("a").map(|l| l.expires_at_ms), Some(2200));
    log.at(2199, Command::Tick).unwrap();
    assert!(log.is_member("a"));
    log.at(2200, Command::Tick).unwrap();
    assert!(!log.is_member("a"));
    // An expired lease is never revived.
    let late = log.at(2201, Command::KeepAlive { member: "a".into(), incarnation: a.incarnation });
    assert_eq!(late, Err(Refusal::LeaseLost(a.incarnation)));
}

#[test]
fn stamps_of_another_frame_are_ignored() {
    let mut log = Log::new();
    log.register(0, "a", 1000);
    let foreign = Stamp { term: TERM - 1, leader: NODE, elapsed_ms: 1_000_000 };
    log.apply(Some(foreign), Command::Tick).unwrap();
    assert!(log.is_member("a"), "a stale leader's stamp moves no lease time");
    let unstamped = log.apply(None, Command::Register { member: member("b"), ttl_ms: 1000 });
    assert_eq!(unstamped, Err(Refusal::Unstamped));
    assert!(!log.is_member("b"));
}

#[test]
fn a_new_leader_refreshes_every_live_lease_to_a_full_ttl() {
    let mut log = Log::new();
    log.register(0, "a", 1000);
    log.register(900, "b", 3000);
    // New Raft leader: its clock starts near zero, far below the old frame's numbers.
    log.frame = Frame { term: TERM + 1, leader: 2 };
    log.at(5, Command::Tick).unwrap();
    assert_eq!(log.state.frame(), Some(log.frame));
    assert_eq!(log.state.lease("a").map(|l| l.expires_at_ms), Some(1005));
    assert_eq!(log.state.lease("b").map(|l| l.expires_at_ms), Some(3005));
    log.at(1004, Command::Tick).unwrap();
    assert!(log.is_member("a"));
    log.at(1005, Command::Tick).unwrap();
    assert!(!log.is_member("a"));
    assert!(log.is_member("b"));
}

#[test]
fn the_first_campaigner_leads_and_the_queue_follows_on_resign_and_expiry() {
    let mut log = Log::new();
    let a = log.register(0, "a", 1000);
    let b = log.register(0, "b", 5000);
    let c = log.register(0, "c", 5000);
    let term_a = log.leading("a", a.incarnation);
    assert_eq!(log.leading("a", a.incarnation), term_a, "campaigning again keeps the term");
    let waiting = log.at(0, Command::Campaign { member: "b".into(), incarnation: b.incarnation });
    assert!(matches!(waiting, Ok(Reply::Waiting { .. })));
    log.at(0, Command::Campaign { member: "c".into(), incarnation: c.incarnation }).unwrap();
    // a's lease expires: b leads with a higher term.
    log.at(1000, Command::Tick).unwrap();
    let leader_b = log.state.leader().cloned().expect("b leads");
    assert_eq!(leader_b.member, "b");
    assert!(leader_b.term > term_a);
    log.at(0, Command::Resign { term: term_a }).unwrap();
    assert_eq!(log.state.leader(), Some(&leader_b), "resigning a stale term changes nothing");
    log.at(0, Command::Resign { term: leader_b.term }).unwrap();
    let leader_c = log.state.leader().cloned().expect("c leads");
    assert_eq!(leader_c.member, "c");
    assert!(leader_c.term > leader_b.term);
}

#[test]
fn target_writes_are_fenced_by_term() {
    let mut log = Log::new();
    log.at(0, Command::JoinCluster { shard_count: 8 }).unwrap();
    let a = log.register(0, "a", 1000);
    let term = log.leading("a", a.incarnation);
    let write = |shard| vec![(shard, Some(target("a")))];
    assert_eq!(
        log.at(0, Command::WriteTargets { term: term + 1, writes: write(1) }),
        Err(Refusal::StaleTerm(term + 1))
    );
    log.at(0, Command::WriteTargets { term, writes: write(1) }).unwrap();
    assert_eq!(log.state.targets().get(&1), Some(&target("a")));
    let outside = log.at(0, Command::WriteTargets { term, writes: write(8) });
    assert_eq!(outside, Err(Refusal::InvalidShard { shard: 8, shard_count: 8 }));
}

#[test]
fn the_claim_rule_and_per_shard_epochs() {
    let mut log = Log::new();
    log.at(0, Command::JoinCluster { shard_count: 8 }).unwrap();
    let a = log.register(0, "a", 1000);
    let b = log.register(0, "b", 5000);
    let term = log.leading("b", b.incarnation);
    let writes = vec![(0, Some(target("a"))), (1, Some(target("a")))];
    log.at(0, Command::WriteTargets { term, writes }).unwrap();
    let claim_a = |shards: &[u32]| Command::Claim {
        member: "a".into(),
        incarnation: a.incarnation,
        claims: shards.iter().map(|&shard| claim(shard, "a", None)).collect(),
    };
    let won = claims(log.at(0, claim_a(&[0, 1])));
    assert_eq!(won[0].as_ref().map(|o| o.epoch), Ok((1, 1)));
    assert_eq!(won[1].as_ref().map(|o| o.epoch), Ok((1, 1)), "epochs count per shard");
    let again = claims(log.at(0, claim_a(&[0])));
    assert!(matches!(again[0], Err(ClaimRefusal::OwnerChanged(Some(_)))));

    log.at(0, Command::WriteTargets { term, writes: vec![(0, Some(target("b")))] }).unwrap();
    let owner = won[0].clone().expect("owner");
    let by_b = |owner: Option<OwnerRec>| Command::Claim {
        member: "b".into(),
        incarnation: b.incarnation,
        claims: vec![claim(0, "b", owner)],
    };
    assert_eq!(
        claims(log.at(0, by_b(Some(owner.clone())))),
        vec![Err(ClaimRefusal::OwnerLive(owner.clone()))]
    );
    // a's lease ends: b may claim without a release, at the next epoch.
    log.at(1000, Command::Tick).unwrap();
    let taken = claims(log.at(1000, by_b(Some(owner.clone()))));
    assert_eq!(taken[0].as_ref().map(|o| o.epoch), Ok((1, 2)));
    // a is gone: its claims are refused as a whole.
    assert_eq!(log.at(1000, claim_a(&[1])), Err(Refusal::LeaseLost(a.incarnation)));
}

#[test]
fn only_the_owning_incarnation_releases_and_release_is_idempotent() {
    let mut log = Log::new();
    log.at(0, Command::JoinCluster { shard_count: 8 }).unwrap();
    let a = log.register(0, "a", 1000);
    let term = log.leading("a", a.incarnation);
    log.at(0, Command::WriteTargets { term, writes: vec![(2, Some(target("a")))] }).unwrap();
    let claim_cmd = Command::Claim {
        member: "a".into(),
        incarnation: a.incarnation,
        claims: vec![claim(2, "a", None)],
    };
    let owner = claims(log.at(0, claim_cmd)).remove(0).expect("owner");
    let release = |incarnation, epoch| Command::Release {
        member: "a".into(),
        incarnation,
        releases: vec![(2, epoch)],
    };
    let refused = log.at(0, release(a.incarnation + 100, owner.epoch));
    assert_eq!(refused, Ok(Reply::Releases(vec![(2, Err(Some(owner.clone())))])));
    let released = OwnerRec { released: true, ..owner.clone() };
    let revision = log.state.revision();
    for _ in 0..2 {
        let done = log.at(0, release(a.incarnation, owner.epoch));
        assert_eq!(done, Ok(Reply::Releases(vec![(2, Ok(released.clone()))])));
    }
    assert_eq!(log.state.revision(), revision + 1, "the second release changes nothing");
}

#[test]
fn change_log_resumes_from_any_retained_revision_and_reports_compaction() {
    let mut log = Log::new();
    log.at(0, Command::JoinCluster { shard_count: 8 }).unwrap();
    let before = log.state.revision();
    log.at(0, Command::JoinCluster { shard_count: 8 }).unwrap();
    assert_eq!(log.state.revision(), before, "a no-op writes no revision");
    for shard in 0..4 {
        log.at(0, Command::Pin { shard, node: Some("n".into()) }).unwrap();
    }
    let ChangesSince::Changes(all) = log.state.changes_since(1) else { panic!("compacted") };
    assert_eq!(all.len(), 5);
    let ChangesSince::Changes(tail) = log.state.changes_since(all[3].revision) else { panic!() };
    assert_eq!(tail, all[3..].to_vec());
    log.at(0, Command::Compact).unwrap();
    assert_eq!(log.state.changes_since(all[4].revision), ChangesSince::Compacted);
    let next = log.state.revision() + 1;
    assert_eq!(log.state.changes_since(next), ChangesSince::Changes(vec![]));
}

#[test]
fn change_log_is_bounded() {
    let mut log = Log::new();
    log.state = CoordState::new(3);
    log.at(0, Command::JoinCluster { shard_count: 8 }).unwrap();
    for shard in 0..8 {
        log.at(0, Command::Pin { shard, node: Some("n".into()) }).unwrap();
    }
    assert_eq!(log.state.compacted(), log.state.revision() - 3);
    assert_eq!(log.state.changes_since(1), ChangesSince::Compacted);
}
