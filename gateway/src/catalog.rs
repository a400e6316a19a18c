//! What the gateway knows about object types: [`TypeSchema`]s learnt from nodes on first use
//! (the node protocol's `DescribeType`), kept in a bounded cache.
//!
//! A gateway hosts no objects, so it asks the live nodes of its view in turn until one
//! registers the type. A type every node answered unknown is remembered as unknown for
//! `unknown_type_ttl` (so unknown names do not cost a round of node requests each); a learnt
//! type is kept for `type_cache_ttl`, then asked again (so a redeployed type's new methods or
//! messages are seen within that time). At most `type_cache_capacity` types are kept: a new
//! one first drops expired entries, then the one expiring soonest. Concurrent first uses of
//! one type share one round of requests: the first asks, the others wait for its answer (a
//! round that failed is not cached, so each waiter then asks in turn).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use verse_core::{CallError, MonoTime};
use verse_transport::proto::DescribeTypeResponse;

use crate::transcode::TypeSchema;

/// What the cache knows of a type name.
#[derive(Debug, Clone)]
pub(crate) enum Known {
    /// Learnt from a node.
    Type(Arc<TypeSchema>),
    /// Every node asked answered that it does not register the type.
    Unknown,
}

#[derive(Debug)]
struct Entry {
    known: Known,
    expires: MonoTime,
}

/// A use's place in its type's learning round: leaving (even by being dropped mid-round, when
/// a caller gives up) forgets the round once no other use holds it.
struct Round<'a> {
    catalog: &'a Catalog,
    object_type: &'a str,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> Round<'a> {
    fn join(catalog: &'a Catalog, object_type: &'a str) -> Self {
        let gate = catalog.learning().entry(object_type.to_owned()).or_default().clone();
        Round { catalog, object_type, gate }
    }
}

impl Drop for Round<'_> {
    fn drop(&mut self) {
        // Clones are made only under this lock: two references (the map's and this one) mean
        // no other use waits.
        let mut learning = self.catalog.learning();
        if Arc::strong_count(&self.gate) == 2 {
            learning.remove(self.object_type);
        }
    }
}

/// The bounded cache of learnt types (module docs).
#[derive(Debug)]
pub(crate) struct Catalog {
    entries: Mutex<HashMap<String, Entry>>,
    /// One learning round per type at a time (module docs); an entry lives while a round runs
    /// or waits.
    learning: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    capacity: usize,
    ttl: Duration,
    unknown_ttl: Duration,
}

impl Catalog {
    /// A cache of at most `capacity` types (at least one), keeping learnt types for `ttl` and
    /// unknown names for `unknown_ttl`.
    pub(crate) fn new(capacity: usize, ttl: Duration, unknown_ttl: Duration) -> Self {
        Catalog {
            entries: Mutex::new(HashMap::new()),
            learning: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            ttl,
            unknown_ttl,
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn learning(&self) -> MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.learning.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a round is learning `object_type` now.
    pub(crate) fn is_learning(&self, object_type: &str) -> bool {
        self.learning().contains_key(object_type)
    }

    /// Whether `method` of `object_type` is marked idempotent, from what is known at `now`
    /// (`None`: the type is not known now; a method the type lacks counts as not idempotent).
    pub(crate) fn idempotent(
        &self,
        object_type: &str,
        method: &str,
        now: MonoTime,
    ) -> Option<bool> {
        match self.get(object_type, now)? {
            Known::Type(schema) => {
                Some(schema.methods().iter().any(|m| m.name == method && m.idempotent))
            }
            Known::Unknown => Some(false),
        }
    }

    /// The cached answer for `object_type` at `now`, if any.
    fn cached(
        &self,
        object_type: &str,
        now: MonoTime,
    ) -> Option<Result<Arc<TypeSchema>, CallError>> {
        match self.get(object_type, now)? {
            Known::Type(schema) => Some(Ok(schema)),
            Known::Unknown => {
                Some(Err(CallError::UnknownType { object_type: object_type.to_owned() }))
            }
        }
    }

    /// What is known of `object_type` at `now` (`None`: nothing current).
    pub(crate) fn get(&self, object_type: &str, now: MonoTime) -> Option<Known> {
        let mut entries = self.entries();
        match entries.get(object_type) {
            Some(entry) if entry.expires > now => Some(entry.known.clone()),
            Some(_) => {
                entries.remove(object_type);
                None
            }
            None => None,
        }
    }

    /// Remembers `known` for `object_type` from `now`, within the capacity.
    pub(crate) fn insert(&self, object_type: &str, known: Known, now: MonoTime) {
        let expires = now
            + match known {
                Known::Type(_) => self.ttl,
                Known::Unknown => self.unknown_ttl,
            };
        let mut entries = self.entries();
        if !entries.contains_key(object_type) && entries.len() >= self.capacity {
            entries.retain(|_, entry| entry.expires > now);
            if entries.len() >= self.capacity {
                let soonest =
                    entries.iter().min_by_key(|(_, entry)| entry.expires).map(|(k, _)| k.clone());
                if let Some(soonest) = soonest {
                    entries.remove(&soonest);
                }
            }
        }
        entries.insert(object_type.to_owned(), Entry { known, expires });
    }

    /// Number of types cached (current or not yet swept).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries().len()
    }

    /// The schema of `object_type`: from the cache, else asked of `peers` in turn with
    /// `describe` (one peer's answer is enough) and cached.
    ///
    /// Errors: `UnknownType` when every peer answered that it does not register the type (also
    /// from the cache); `NotDelivered` when there is no peer; else the last peer's failure
    /// (a deadline that passed ends the round at once).
    pub(crate) async fn learn<F, Fut>(
        &self,
        object_type: &str,
        now: impl Fn() -> MonoTime,
        peers: &[String],
        describe: F,
    ) -> Result<Arc<TypeSchema>, CallError>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<DescribeTypeResponse, CallError>>,
    {
        if let Some(answer) = self.cached(object_type, now()) {
            return answer;
        }
        let round = Round::join(self, object_type);
        let _turn = round.gate.lock().await;
        match self.cached(object_type, now()) {
            Some(answer) => answer,
            None => self.ask(object_type, &now, peers, describe).await,
        }
    }

    /// One round: asks `peers` in turn (see [`Catalog::learn`]) and caches the answer.
    async fn ask<F, Fut>(
        &self,
        object_type: &str,
        now: &impl Fn() -> MonoTime,
        peers: &[String],
        mut describe: F,
    ) -> Result<Arc<TypeSchema>, CallError>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<DescribeTypeResponse, CallError>>,
    {
        let unknown = || CallError::UnknownType { object_type: object_type.to_owned() };
        let mut failure = None;
        for peer in peers {
            match describe(peer.clone()).await {
                Ok(description) => {
                    let schema = Arc::new(TypeSchema::from_description(description));
                    metrics::counter!("verse_gateway_type_descriptions_total", "outcome" => "learnt")
                        .increment(1);
                    self.insert(object_type, Known::Type(schema.clone()), now());
                    return Ok(schema);
                }
                Err(CallError::UnknownType { .. }) => {}
                Err(error @ CallError::DeadlineExceeded { .. }) => return Err(error),
                Err(error) => {
                    tracing::debug!(%peer, %error, object_type, "describing a type failed");
                    failure = Some(error);
                }
            }
        }
        match failure {
            Some(error) => {
                metrics::counter!("verse_gateway_type_descriptions_total", "outcome" => "failed")
                    .increment(1);
                Err(error)
            }
            None if peers.is_empty() => Err(CallError::NotDelivered {
                peer: "any node".into(),
                reason: "no live node in the cluster view".into(),
            }),
            None => {
                metrics::counter!("verse_gateway_type_descriptions_total", "outcome" => "unknown")
                    .increment(1);
                self.insert(object_type, Known::Unknown, now());
                Err(unknown())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use verse_core::{Clock, ManualClock};
    use verse_transport::proto::MethodDescription;

    use super::*;

    const TTL: Duration = Duration::from_secs(60);
    const UNKNOWN_TTL: Duration = Duration::from_secs(5);

    fn description(object_type: &str) -> DescribeTypeResponse {
        DescribeTypeResponse {
            object_type: object_type.into(),
            methods: vec![MethodDescription {
                name: "Get".into(),
                request_type: "t.Get".into(),
                response_type: "t.Reply".into(),
                idempotent: true,
            }],
            file_descriptor_set: bytes::Bytes::new(),
        }
    }

    fn peers(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    #[test]
    fn entries_expire_after_their_ttl() {
        let clock = ManualClock::new();
        let catalog = Catalog::new(8, TTL, UNKNOWN_TTL);
        let schema = Arc::new(TypeSchema::from_description(description("A")));
        catalog.insert("A", Known::Type(schema), clock.now());
        catalog.insert("Nope", Known::Unknown, clock.now());
        clock.advance(UNKNOWN_TTL - Duration::from_millis(1));
        assert!(matches!(catalog.get("A", clock.now()), Some(Known::Type(_))));
        assert!(matches!(catalog.get("Nope", clock.now()), Some(Known::Unknown)));
        clock.advance(Duration::from_millis(1));
        assert!(catalog.get("Nope", clock.now()).is_none(), "unknown names expire sooner");
        assert!(catalog.get("A", clock.now()).is_some());
        clock.advance(TTL);
        assert!(catalog.get("A", clock.now()).is_none());
        assert_eq!(catalog.len(), 0, "expired entries are dropped when seen");
    }

    #[test]
    fn the_cache_is_bounded_dropping_the_entry_that_expires_soonest() {
        let clock = ManualClock::new();
        let catalog = Catalog::new(3, TTL, UNKNOWN_TTL);
        let schema =
            |name: &str| Known::Type(Arc::new(TypeSchema::from_description(description(name))));
        catalog.insert("A", schema("A"), clock.now());
        clock.advance(Duration::from_secs(1));
        catalog.insert("B", schema("B"), clock.now());
        catalog.insert("Nope", Known::Unknown, clock.now());
        clock.advance(Duration::from_secs(1));
        // Full: the unknown name expires soonest.
        catalog.insert("C", schema("C"), clock.now());
        assert_eq!(catalog.len(), 3);
        assert!(catalog.get("Nope", clock.now()).is_none());
        // Full again: A (the oldest learnt) goes.
        catalog.insert("D", schema("D"), clock.now());
        assert_eq!(catalog.len(), 3);
        assert!(catalog.get("A", clock.now()).is_none());
        for name in ["B", "C", "D"] {
            assert!(catalog.get(name, clock.now()).is_some(), "{name} kept");
        }
        // Replacing an entry never evicts another.
        catalog.insert("D", schema("D"), clock.now());
        assert_eq!(catalog.len(), 3);
        // Expired entries go before live ones.
        clock.advance(TTL);
        catalog.insert("E", schema("E"), clock.now());
        assert_eq!(catalog.len(), 1);
    }

    #[test]
    fn learning_asks_peers_in_turn_until_one_registers_the_type() {
        let clock = ManualClock::new();
        let catalog = Catalog::new(8, TTL, UNKNOWN_TTL);
        let asked = AtomicUsize::new(0);
        let describe = |peer: String| {
            asked.fetch_add(1, Ordering::SeqCst);
            async move {
                match peer.as_str() {
                    "down" => Err(CallError::NotDelivered { peer, reason: "refused".into() }),
                    "other" => Err(CallError::UnknownType { object_type: "A".into() }),
                    _ => Ok(description("A")),
                }
            }
        };
        let now = || clock.now();
        let learnt =
            block_on(catalog.learn("A", now, &peers(&["down", "other", "has"]), describe)).unwrap();
        assert_eq!(learnt.methods()[0].name, "Get");
        assert!(learnt.methods()[0].idempotent);
        assert_eq!(asked.load(Ordering::SeqCst), 3);
        // Cached: no peer is asked again until the TTL passes.
        block_on(catalog.learn("A", now, &peers(&["has"]), describe)).unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 3);
        clock.advance(TTL);
        block_on(catalog.learn("A", now, &peers(&["has"]), describe)).unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn a_type_no_peer_registers_is_unknown_and_remembered_briefly() {
        let clock = ManualClock::new();
        let catalog = Catalog::new(8, TTL, UNKNOWN_TTL);
        let asked = AtomicUsize::new(0);
        let describe = |_peer: String| {
            asked.fetch_add(1, Ordering::SeqCst);
            async { Err(CallError::UnknownType { object_type: "Nope".into() }) }
        };
        let now = || clock.now();
        let unknown = CallError::UnknownType { object_type: "Nope".into() };
        let two = peers(&["n1", "n2"]);
        assert_eq!(block_on(catalog.learn("Nope", now, &two, describe)).unwrap_err(), unknown);
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        assert_eq!(block_on(catalog.learn("Nope", now, &two, describe)).unwrap_err(), unknown);
        assert_eq!(asked.load(Ordering::SeqCst), 2, "remembered");
        clock.advance(UNKNOWN_TTL);
        assert_eq!(block_on(catalog.learn("Nope", now, &two, describe)).unwrap_err(), unknown);
        assert_eq!(asked.load(Ordering::SeqCst), 4, "asked again after the unknown ttl");
    }

    #[test]
    fn failures_are_reported_and_not_cached() {
        let clock = ManualClock::new();
        let catalog = Catalog::new(8, TTL, UNKNOWN_TTL);
        let now = || clock.now();
        let refused = |peer: String| async move {
            Err(CallError::NotDelivered { peer, reason: "refused".into() })
        };
        let error = block_on(catalog.learn("A", now, &peers(&["n1", "n2"]), refused)).unwrap_err();
        assert_eq!(error, CallError::NotDelivered { peer: "n2".into(), reason: "refused".into() });
        assert!(catalog.get("A", clock.now()).is_none(), "a failure is not an unknown type");

        let none = block_on(catalog.learn("A", now, &[], refused)).unwrap_err();
        assert!(matches!(none, CallError::NotDelivered { .. }), "{none:?}");

        let late = |_peer: String| async { Err(CallError::DeadlineExceeded { id: "A".into() }) };
        let asked_after = AtomicUsize::new(0);
        let error = block_on(catalog.learn("A", now, &peers(&["n1", "n2"]), |peer| {
            asked_after.fetch_add(1, Ordering::SeqCst);
            late(peer)
        }))
        .unwrap_err();
        assert_eq!(error, CallError::DeadlineExceeded { id: "A".into() });
        assert_eq!(asked_after.load(Ordering::SeqCst), 1, "a passed deadline ends the round");
    }

    #[test]
    fn concurrent_first_uses_share_one_round() {
        let clock = ManualClock::new();
        let catalog = Catalog::new(8, TTL, UNKNOWN_TTL);
        let asked = AtomicUsize::new(0);
        let describe = |_peer: String| {
            asked.fetch_add(1, Ordering::SeqCst);
            async {
                // Let the other uses arrive while this round is out.
                for _ in 0..8 {
                    tokio::task::yield_now().await;
                }
                Ok(description("A"))
            }
        };
        let now = || clock.now();
        let has = peers(&["has"]);
        let uses = (0..8).map(|_| catalog.learn("A", now, &has, describe));
        let answers = block_on(futures::future::join_all(uses));
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        assert_eq!(asked.load(Ordering::SeqCst), 1, "one round for eight first uses");
        assert!(!catalog.is_learning("A"), "the round's entry outlived it");
        assert_eq!(catalog.idempotent("A", "Get", clock.now()), Some(true));
        assert_eq!(catalog.idempotent("A", "Missing", clock.now()), Some(false));
        assert_eq!(catalog.idempotent("B", "Get", clock.now()), None);
    }

    #[test]
    fn a_use_dropped_mid_round_leaves_no_round_behind() {
        let clock = ManualClock::new();
        let catalog = Catalog::new(8, TTL, UNKNOWN_TTL);
        let now = || clock.now();
        let has = peers(&["has"]);
        let never = |_peer: String| std::future::pending();
        let first_poll = futures::FutureExt::now_or_never(catalog.learn("A", now, &has, never));
        assert!(first_poll.is_none(), "the round should still be out");
        assert!(!catalog.is_learning("A"), "a caller that gave up left its round behind");
    }

    #[test]
    fn waiters_behind_a_failed_round_ask_again() {
        let clock = ManualClock::new();
        let catalog = Catalog::new(8, TTL, UNKNOWN_TTL);
        let asked = AtomicUsize::new(0);
        let describe = |peer: String| {
            let first = asked.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                tokio::task::yield_now().await;
                if first {
                    Err(CallError::NotDelivered { peer, reason: "refused".into() })
                } else {
                    Ok(description("A"))
                }
            }
        };
        let now = || clock.now();
        let has = peers(&["has"]);
        let uses = (0..3).map(|_| catalog.learn("A", now, &has, describe));
        let answers = block_on(futures::future::join_all(uses));
        assert!(answers[0].is_err(), "the first round failed: {answers:?}");
        assert!(answers[1..].iter().all(Result::is_ok), "{answers:?}");
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "the next waiter asked; the last one read its answer"
        );
    }
}
