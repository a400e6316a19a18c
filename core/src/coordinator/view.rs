//! The runtime's side of the coordinator: a [`ClusterView`] kept current by the watch stream,
//! and registration that waits for an earlier incarnation's record to expire.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;

use crate::clock::{Clock, MonoTime};
use crate::shard::ShardId;
use crate::shardmap::{Incarnation, MemberId, ShardMap};

use super::types::{
    ClusterConfig, ClusterSnapshot, Leader, MemberRecord, MemberRegistration, Revision,
    WatchChange, WatchEvent,
};
use super::{CoordError, Coordinator, WatchStream};

/// Configuration, members, leader, shard map and pins as of one revision, moved forward by
/// applying watch events in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    snapshot: ClusterSnapshot,
    /// The revision of the last full snapshot: events at or below it are already included.
    base: Revision,
}

impl ClusterView {
    /// A view starting from `snapshot`.
    pub fn new(snapshot: ClusterSnapshot) -> Self {
        let base = snapshot.revision;
        ClusterView { snapshot, base }
    }

    /// Reads a snapshot and opens the watch right after it: the returned stream continues the
    /// view without a gap. Errors are the coordinator's (`snapshot`, `watch`).
    pub async fn follow(
        coordinator: &dyn Coordinator,
    ) -> Result<(ClusterView, WatchStream), CoordError> {
        let snapshot = coordinator.snapshot().await?;
        let stream = coordinator.watch(snapshot.revision.next()).await?;
        Ok((ClusterView::new(snapshot), stream))
    }

    /// Takes the next event from `stream` and applies it; `Ok(None)` when the stream ended.
    /// Cancel safe (an event is applied only once taken).
    pub async fn apply_next(
        &mut self,
        stream: &mut WatchStream,
    ) -> Result<Option<WatchEvent>, CoordError> {
        match stream.next().await {
            None => Ok(None),
            Some(Err(error)) => Err(error),
            Some(Ok(event)) => {
                self.apply(&event)?;
                Ok(Some(event))
            }
        }
    }

    /// Applies one event. Events at or below the last snapshot's revision are ignored (they
    /// are in it); an event older than one already applied is a broken order
    /// ([`CoordError::Corrupt`]), as is a shard outside the map or a changed shard count.
    /// Returns whether the event changed the view's revision or content.
    pub fn apply(&mut self, event: &WatchEvent) -> Result<bool, CoordError> {
        if let WatchChange::Resync(snapshot) = &event.change {
            if snapshot.config.shard_count != self.snapshot.config.shard_count {
                return Err(shard_count_changed(&self.snapshot.config, &snapshot.config));
            }
            *self = ClusterView::new((**snapshot).clone());
            return Ok(true);
        }
        if event.revision <= self.base {
            return Ok(false);
        }
        if event.revision < self.snapshot.revision {
            return Err(CoordError::Corrupt(format!(
                "watch event at {:?} after {:?}",
                event.revision, self.snapshot.revision
            )));
        }
        let snapshot = &mut self.snapshot;
        match &event.change {
            WatchChange::MemberPut(record) => {
                snapshot.members.insert(record.id.clone(), record.clone());
            }
            WatchChange::MemberGone(id) => {
                snapshot.members.remove(id);
            }
            WatchChange::Leader(leader) => snapshot.leader = leader.clone(),
            WatchChange::Target { shard, target } => {
                check_shard(*shard, &snapshot.map)?;
                snapshot.map.set_target(*shard, target.clone());
            }
            WatchChange::Owner { shard, owner } => {
                check_shard(*shard, &snapshot.map)?;
                snapshot.map.set_owner(*shard, owner.clone());
            }
            WatchChange::Pin { shard, node } => {
                check_shard(*shard, &snapshot.map)?;
                match node {
                    Some(node) => snapshot.pins.insert(*shard, node.clone()),
                    None => snapshot.pins.remove(shard),
                };
            }
            WatchChange::Config(config) => {
                if config.shard_count != snapshot.config.shard_count {
                    return Err(shard_count_changed(&snapshot.config, config));
                }
                snapshot.config = *config;
            }
            WatchChange::Progress => {}
            WatchChange::Resync(_) => unreachable!("handled above"),
        }
        snapshot.revision = event.revision;
        Ok(true)
    }

    /// The revision the view reflects.
    pub fn revision(&self) -> Revision {
        self.snapshot.revision
    }

    /// The cluster configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.snapshot.config
    }

    /// Targets and owners.
    pub fn map(&self) -> &ShardMap {
        &self.snapshot.map
    }

    /// Live members by id.
    pub fn members(&self) -> &BTreeMap<MemberId, MemberRecord> {
        &self.snapshot.members
    }

    /// The leader, if any.
    pub fn leader(&self) -> Option<&Leader> {
        self.snapshot.leader.as_ref()
    }

    /// Operator pins.
    pub fn pins(&self) -> &BTreeMap<ShardId, MemberId> {
        &self.snapshot.pins
    }

    /// The live incarnation of `member`, if it has one.
    pub fn live_incarnation(&self, member: &MemberId) -> Option<Incarnation> {
        self.snapshot.members.get(member).map(|record| record.incarnation)
    }
}

fn check_shard(shard: ShardId, map: &ShardMap) -> Result<(), CoordError> {
    if shard.0 < map.shard_count() {
        Ok(())
    } else {
        Err(CoordError::Corrupt(format!("{shard} outside a map of {} shards", map.shard_count())))
    }
}

fn shard_count_changed(old: &ClusterConfig, new: &ClusterConfig) -> CoordError {
    CoordError::Corrupt(format!(
        "shard count changed from {} to {}",
        old.shard_count, new.shard_count
    ))
}

/// Registers, waiting while an earlier incarnation's record (or another process with the same
/// id) still exists: retries retryable errors every `retry_every` until `deadline` (on
/// `clock`), then returns the last error. Non-retryable errors return at once.
///
/// Cancel safe as [`Coordinator::register`] is.
pub async fn register_when_free(
    coordinator: &dyn Coordinator,
    registration: MemberRegistration,
    clock: &dyn Clock,
    retry_every: Duration,
    deadline: MonoTime,
) -> Result<MemberRecord, CoordError> {
    loop {
        match coordinator.register(registration.clone()).await {
            Ok(record) => return Ok(record),
            Err(error) if error.is_retryable() => {
                let next = clock.now() + retry_every;
                if next >= deadline {
                    return Err(error);
                }
                tracing::debug!(%error, member = %registration.id, "registration must wait");
                clock.sleep_until(next).await;
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::stream;
    use mockall::predicate::eq;

    use super::*;
    use crate::clock::SystemClock;
    use crate::coordinator::MockCoordinator;
    use crate::coordinator::types::{MemberFlags, MemberRole};
    use crate::epoch::Epoch;
    use crate::shardmap::{OwnerRecord, TargetRecord};

    fn member(id: &str, incarnation: u64) -> MemberRecord {
        MemberRecord {
            id: id.into(),
            incarnation: Incarnation(incarnation),
            addresses: vec![format!("{id}:1")],
            role: MemberRole::Node,
            version: "0.1.0".into(),
            start_time_unix_ms: 0,
            flags: MemberFlags::default(),
            node_local_store: false,
        }
    }

    fn snapshot(revision: u64, members: &[MemberRecord]) -> ClusterSnapshot {
        ClusterSnapshot {
            revision: Revision(revision),
            config: ClusterConfig { shard_count: 4, generation: 1 },
            members: members.iter().map(|m| (m.id.clone(), m.clone())).collect(),
            leader: None,
            map: ShardMap::new(4),
            pins: BTreeMap::new(),
        }
    }

    fn owner(node: &str, incarnation: u64, counter: u64) -> OwnerRecord {
        OwnerRecord {
            node: node.into(),
            incarnation: Incarnation(incarnation),
            epoch: Epoch::new(1, counter),
            released: false,
        }
    }

    fn event(revision: u64, change: WatchChange) -> Result<WatchEvent, CoordError> {
        Ok(WatchEvent { revision: Revision(revision), change })
    }

    #[tokio::test]
    async fn view_follows_snapshot_then_watch_and_resyncs() {
        let mut mock = MockCoordinator::new();
        mock.expect_snapshot().times(1).returning(|| Ok(snapshot(10, &[member("n1", 5)])));
        let mut resynced = snapshot(20, &[member("n3", 9)]);
        resynced.map.set_owner(ShardId(2), Some(owner("n3", 9, 4)));
        let events = vec![
            // Already in the snapshot: ignored.
            event(10, WatchChange::MemberGone("n1".into())),
            event(11, WatchChange::MemberPut(member("n2", 6))),
            event(
                12,
                WatchChange::Target {
                    shard: ShardId(1),
                    target: Some(TargetRecord::planned("n2")),
                },
            ),
            event(12, WatchChange::Owner { shard: ShardId(1), owner: Some(owner("n2", 6, 1)) }),
            event(
                13,
                WatchChange::Leader(Some(Leader {
                    member: "n2".into(),
                    term: super::super::Term(12),
                })),
            ),
            event(14, WatchChange::Pin { shard: ShardId(3), node: Some("n1".into()) }),
            event(15, WatchChange::Progress),
            event(20, WatchChange::Resync(Box::new(resynced.clone()))),
            event(21, WatchChange::MemberGone("n3".into())),
        ];
        mock.expect_watch()
            .with(eq(Revision(11)))
            .times(1)
            .return_once(move |_| Ok(stream::iter(events).boxed()));

        let (mut view, mut stream) = ClusterView::follow(&mock).await.expect("follow");
        assert_eq!(view.revision(), Revision(10));
        // The first event is already in the snapshot.
        view.apply_next(&mut stream).await.expect("apply");
        assert_eq!(view.live_incarnation(&"n1".into()), Some(Incarnation(5)));
        for _ in 0..6 {
            view.apply_next(&mut stream).await.expect("apply");
        }
        assert_eq!(view.revision(), Revision(15));
        assert_eq!(view.live_incarnation(&"n2".into()), Some(Incarnation(6)));
        assert_eq!(view.map().entry(ShardId(1)).owner, Some(owner("n2", 6, 1)));
        assert_eq!(view.map().entry(ShardId(1)).target_node(), Some(&MemberId::from("n2")));
        assert_eq!(view.leader().map(|l| l.member.clone()), Some("n2".into()));
        assert_eq!(view.pins().get(&ShardId(3)), Some(&MemberId::from("n1")));

        view.apply_next(&mut stream).await.expect("resync");
        assert_eq!(view, ClusterView::new(resynced));
        assert_eq!(view.map().entry(ShardId(1)).owner, None, "resync replaces everything");
        view.apply_next(&mut stream).await.expect("after resync");
        assert!(view.members().is_empty());
        assert_eq!(view.apply_next(&mut stream).await, Ok(None));
    }

    #[test]
    fn out_of_order_events_and_bad_shards_are_corrupt() {
        let mut view = ClusterView::new(snapshot(10, &[]));
        view.apply(&event(12, WatchChange::Progress).expect("event")).expect("progress");
        let old = event(11, WatchChange::MemberGone("x".into())).expect("event");
        assert!(matches!(view.apply(&old), Err(CoordError::Corrupt(_))));
        let outside = event(13, WatchChange::Owner { shard: ShardId(4), owner: None });
        assert!(matches!(view.apply(&outside.expect("event")), Err(CoordError::Corrupt(_))));
        let other_count = ClusterConfig { shard_count: 8, generation: 1 };
        let config = event(14, WatchChange::Config(other_count)).expect("event");
        assert!(matches!(view.apply(&config), Err(CoordError::Corrupt(_))));
    }

    fn registration() -> MemberRegistration {
        MemberRegistration {
            id: "n1".into(),
            addresses: vec![],
            role: MemberRole::Node,
            version: "0.1.0".into(),
            start_time_unix_ms: 0,
            flags: MemberFlags::default(),
            node_local_store: false,
        }
    }

    #[tokio::test]
    async fn registration_waits_for_the_old_record_to_expire() {
        let mut mock = MockCoordinator::new();
        let attempts = Arc::new(AtomicUsize::new(0));
        let seen = attempts.clone();
        mock.expect_register().times(3).returning(move |registration| {
            match seen.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(CoordError::MemberExists {
                    id: registration.id,
                    incarnation: Incarnation(1),
                }),
                _ => Ok(MemberRecord::from_registration(&registration, Incarnation(2))),
            }
        });
        let clock = SystemClock;
        let deadline = clock.now() + Duration::from_secs(10);
        let record =
            register_when_free(&mock, registration(), &clock, Duration::from_millis(1), deadline)
                .await
                .expect("registered");
        assert_eq!(record.incarnation, Incarnation(2));
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn registration_gives_up_at_the_deadline_or_on_a_fatal_error() {
        let mut mock = MockCoordinator::new();
        mock.expect_register().returning(|registration| {
            Err(CoordError::MemberExists { id: registration.id, incarnation: Incarnation(1) })
        });
        let clock = SystemClock;
        let deadline = clock.now() + Duration::from_millis(20);
        let error =
            register_when_free(&mock, registration(), &clock, Duration::from_millis(5), deadline)
                .await
                .expect_err("still taken");
        assert!(matches!(error, CoordError::MemberExists { .. }));

        let mut fatal = MockCoordinator::new();
        fatal.expect_register().times(1).returning(|_| Err(CoordError::NotInitialised));
        let deadline = clock.now() + Duration::from_secs(10);
        let error =
            register_when_free(&fatal, registration(), &clock, Duration::from_millis(5), deadline)
                .await
                .expect_err("fatal");
        assert_eq!(error, CoordError::NotInitialised);
    }
}
