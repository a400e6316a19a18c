//! The [`Coordinator`] operations as etcd transactions.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch as tokio_watch;
use verse_core::coordinator::{
    ClaimOutcome, ClaimRejection, ClaimRequest, ClusterConfig, ClusterSnapshot, ConnectionHealth,
    CoordError, Coordinator, Leader, LeaseState, LeaseStatus, LeaseTracker, MemberFlags,
    MemberRecord, MemberRegistration, NotOwner, ReleaseOutcome, ReleaseRequest, Revision,
    TargetWrite, Term, WatchStream,
};
use verse_core::shard::ShardId;
use verse_core::{Epoch, Incarnation, MemberId, OwnerRecord, ShardEntry, ShardMap};

use crate::keys::{self, ConfigDoc, KeyKind};
use crate::{EtcdCoordinator, Inner, MAX_TXN_OPS, Registered, keepalive, watch};

/// Transactions of one batch in flight at once.
const PARALLEL_TXNS: usize = 8;
/// Keys per page of a snapshot read.
const SNAPSHOT_PAGE: i64 = 4096;

fn get_kvs(response: &TxnOpResponse) -> &[KeyValue] {
    match response {
        TxnOpResponse::Get(get) => get.kvs(),
        _ => &[],
    }
}

fn check_shard(shard: ShardId, config: &ClusterConfig) -> Result<(), CoordError> {
    if shard.0 < config.shard_count {
        Ok(())
    } else {
        Err(CoordError::InvalidShard { shard, shard_count: config.shard_count })
    }
}

impl Inner {
    async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse, CoordError> {
        let mut client = self.client.clone();
        self.request(what, client.txn(txn)).await
    }

    async fn get(
        &self,
        what: &str,
        key: impl Into<Vec<u8>>,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, CoordError> {
        let mut client = self.client.clone();
        self.request(what, client.get(key, options)).await
    }

    async fn config_doc(&self) -> Result<Option<ConfigDoc>, CoordError> {
        let response = self.get("read config", self.keys.config(), None).await?;
        response.kvs().first().map(|kv| ConfigDoc::decode(kv.value())).transpose()
    }

    /// The configuration of an initialised cluster.
    async fn config(&self) -> Result<ClusterConfig, CoordError> {
        match self.config_doc().await? {
            Some(doc) if doc.initialised => Ok(doc.config()),
            _ => Err(CoordError::NotInitialised),
        }
    }

    /// Writes the vacant owner record of every shard that has none, in chunks that each
    /// create only what is missing (so concurrent and interrupted runs converge).
    async fn initialise_shards(&self, shard_count: u32) -> Result<(), CoordError> {
        let chunks: Vec<(u32, u32)> = (0..shard_count)
            .step_by(MAX_TXN_OPS)
            .map(|start| (start, (start + MAX_TXN_OPS as u32).min(shard_count)))
            .collect();
        let txns: Vec<BoxedTxn<'_, ()>> = chunks
            .into_iter()
            .map(|(start, end)| Box::pin(self.initialise_chunk(start, end)) as BoxedTxn<'_, ()>)
            .collect();
        in_parallel(txns).await.map(|_| ())
    }

    async fn initialise_chunk(&self, start: u32, end: u32) -> Result<(), CoordError> {
        let vacant = keys::encode_owner(None);
        loop {
            let range =
                GetOptions::new().with_range(self.keys.owner(ShardId(end))).with_keys_only();
            let existing =
                self.get("read owners", self.keys.owner(ShardId(start)), Some(range)).await?;
            let present: BTreeSet<Vec<u8>> =
                existing.kvs().iter().map(|kv| kv.key().to_vec()).collect();
            let missing: Vec<String> = (start..end)
                .map(|n| self.keys.owner(ShardId(n)))
                .filter(|key| !present.contains(key.as_bytes()))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            let compares: Vec<Compare> = missing
                .iter()
                .map(|key| Compare::create_revision(key.as_str(), CompareOp::Equal, 0))
                .collect();
            let puts: Vec<TxnOp> =
                missing.iter().map(|key| TxnOp::put(key.as_str(), vacant.clone(), None)).collect();
            let txn = Txn::new().when(compares).and_then(puts);
            if self.txn("initialise shards", txn).await?.succeeded() {
                return Ok(());
            }
        }
    }

    /// Reads everything under the prefix at one revision, page by page.
    pub(crate) async fn snapshot(&self) -> Result<ClusterSnapshot, CoordError> {
        let end = keys::prefix_end(self.keys.prefix());
        let mut start = self.keys.prefix().as_bytes().to_vec();
        let mut revision = 0i64;
        let mut kvs: Vec<KeyValue> = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(SNAPSHOT_PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut page = self.get("read snapshot", start.clone(), Some(options)).await?;
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            let more = page.more();
            let page_kvs = page.take_kvs();
            if let Some(last) = page_kvs.last() {
                start = last.key().to_vec();
                start.push(0);
            }
            kvs.extend(page_kvs);
            if !more {
                break;
            }
        }
        let config = kvs
            .iter()
            .find(|kv| self.keys.parse(kv.key()) == Some(KeyKind::Config))
            .map(|kv| ConfigDoc::decode(kv.value()))
            .transpose()?;
        let config = match config {
            Some(doc) if doc.initialised => doc.config(),
            _ => return Err(CoordError::NotInitialised),
        };
        let mut snapshot = ClusterSnapshot {
            revision: Revision(u64::try_from(revision).unwrap_or(0)),
            config,
            members: BTreeMap::new(),
            leader: None,
            map: ShardMap::new(config.shard_count),
            pins: BTreeMap::new(),
        };
        let in_map = |shard: ShardId| shard.0 < config.shard_count;
        for kv in &kvs {
            match self.keys.parse(kv.key()) {
                Some(KeyKind::Member(_)) => {
                    let record = keys::decode_member(kv.value())?;
                    snapshot.members.insert(record.id.clone(), record);
                }
                Some(KeyKind::Leader) => snapshot.leader = Some(keys::decode_leader(kv.value())?),
                Some(KeyKind::Target(shard)) if in_map(shard) => {
                    snapshot.map.set_target(shard, Some(keys::decode_target(kv.value())?));
                }
                Some(KeyKind::Owner(shard)) if in_map(shard) => {
                    snapshot.map.set_owner(shard, keys::decode_owner(kv.value())?);
                }
                Some(KeyKind::Pin(shard)) if in_map(shard) => {
                    snapshot.pins.insert(shard, keys::decode_pin(kv.value())?);
                }
                _ => {}
            }
        }
        Ok(snapshot)
    }

    /// Waits until `key` is deleted (or absent at `after`), watching from `after + 1`.
    async fn wait_deleted(&self, key: &str, after: i64) -> Result<(), CoordError> {
        let mut client = self.client.clone();
        let options = WatchOptions::new().with_start_revision(after + 1);
        let mut stream = self.request("watch key", client.watch(key, Some(options))).await?;
        loop {
            let message = stream.message().await;
            match message {
                Ok(Some(response)) => {
                    if response.canceled() || response.compact_revision() > 0 {
                        // Cannot tell what happened in the gap: let the caller re-check.
                        return Ok(());
                    }
                    if response.events().iter().any(|e| e.event_type() == EventType::Delete) {
                        return Ok(());
                    }
                }
                Ok(None) | Err(_) => {
                    self.set_health(false);
                    return Err(CoordError::Unavailable(format!("watch of {key} ended")));
                }
            }
        }
    }

    fn claim_txn(
        &self,
        me: &MemberRecord,
        lease: i64,
        config: &ClusterConfig,
        request: &ClaimRequest,
    ) -> (TxnOp, OwnerRecord) {
        let shard = request.shard;
        let (target_key, owner_key) = (self.keys.target(shard), self.keys.owner(shard));
        let my_key = self.keys.member(&me.id);
        let previous = request.expected_owner.as_ref();
        let prior = previous.map_or(Epoch::new(config.generation, 0), |o| o.epoch);
        let owner = OwnerRecord {
            node: me.id.clone(),
            incarnation: me.incarnation,
            epoch: Epoch::new(config.generation.max(prior.generation), prior.counter + 1),
            released: false,
        };
        let mut reads = vec![
            TxnOp::get(target_key.as_str(), None),
            TxnOp::get(owner_key.as_str(), None),
            TxnOp::get(my_key.as_str(), None),
        ];
        if request.expected_target.node != me.id {
            // Never a write: report the current target.
            return (TxnOp::txn(Txn::new().and_then(reads)), owner);
        }
        let mut compares = vec![
            Compare::value(
                target_key.as_str(),
                CompareOp::Equal,
                keys::encode_target(&request.expected_target),
            ),
            Compare::value(owner_key.as_str(), CompareOp::Equal, keys::encode_owner(previous)),
            Compare::lease(my_key.as_str(), CompareOp::Equal, lease),
        ];
        if let Some(previous) = previous.filter(|o| !o.released) {
            let their_key = self.keys.member(&previous.node);
            let their_lease = i64::try_from(previous.incarnation.0).unwrap_or(i64::MAX);
            compares.push(Compare::lease(their_key.as_str(), CompareOp::NotEqual, their_lease));
            reads.push(TxnOp::get(their_key.as_str(), None));
        }
        let write = TxnOp::put(owner_key.as_str(), keys::encode_owner(Some(&owner)), None);
        (TxnOp::txn(Txn::new().when(compares).and_then(vec![write]).or_else(reads)), owner)
    }

    /// Explains a failed claim from the reads of its failure branch.
    fn claim_rejection(
        &self,
        me: &MemberRecord,
        lease: i64,
        request: &ClaimRequest,
        response: &TxnResponse,
    ) -> Result<ClaimRejection, CoordError> {
        let reads = response.op_responses();
        let kvs = |i: usize| reads.get(i).map_or(&[][..], get_kvs);
        let target = kvs(0).first().map(|kv| keys::decode_target(kv.value())).transpose()?;
        let owner = match kvs(1).first() {
            Some(kv) => keys::decode_owner(kv.value())?,
            None => return Err(CoordError::NotInitialised),
        };
        if kvs(2).first().is_none_or(|kv| kv.lease() != lease) {
            return Err(CoordError::LeaseLost(me.incarnation));
        }
        if target.as_ref() != Some(&request.expected_target)
            || request.expected_target.node != me.id
        {
            return Ok(ClaimRejection::NotTarget { current: target });
        }
        if owner != request.expected_owner {
            return Ok(ClaimRejection::OwnerChanged { current: owner });
        }
        match owner {
            Some(owner) => Ok(ClaimRejection::OwnerLive { owner }),
            None => Err(CoordError::Corrupt("claim failed with every condition met".into())),
        }
    }

    async fn claim_chunk(
        &self,
        me: &MemberRecord,
        lease: i64,
        config: &ClusterConfig,
        requests: &[ClaimRequest],
    ) -> Result<Vec<ClaimOutcome>, CoordError> {
        let (ops, owners): (Vec<TxnOp>, Vec<OwnerRecord>) =
            requests.iter().map(|r| self.claim_txn(me, lease, config, r)).unzip();
        let response = self.txn("claim", Txn::new().and_then(ops)).await?;
        let mut outcomes = Vec::with_capacity(requests.len());
        for ((request, owner), op) in requests.iter().zip(owners).zip(response.op_responses()) {
            let TxnOpResponse::Txn(nested) = op else {
                return Err(CoordError::Corrupt("claim answered without a nested txn".into()));
            };
            let result = if nested.succeeded() && request.expected_target.node == me.id {
                Ok(owner)
            } else {
                Err(self.claim_rejection(me, lease, request, &nested)?)
            };
            outcomes.push(ClaimOutcome { shard: request.shard, result });
        }
        Ok(outcomes)
    }

    async fn release_chunk(
        &self,
        me: &MemberRecord,
        requests: &[ReleaseRequest],
    ) -> Result<Vec<ReleaseOutcome>, CoordError> {
        let mut ops = Vec::with_capacity(requests.len());
        let mut released = Vec::with_capacity(requests.len());
        for request in requests {
            let key = self.keys.owner(request.shard);
            let owned = OwnerRecord {
                node: me.id.clone(),
                incarnation: me.incarnation,
                epoch: request.epoch,
                released: false,
            };
            let done = OwnerRecord { released: true, ..owned.clone() };
            let compare =
                Compare::value(key.as_str(), CompareOp::Equal, keys::encode_owner(Some(&owned)));
            let write = TxnOp::put(key.as_str(), keys::encode_owner(Some(&done)), None);
            let read = TxnOp::get(key.as_str(), None);
            ops.push(TxnOp::txn(
                Txn::new().when(vec![compare]).and_then(vec![write]).or_else(vec![read]),
            ));
            released.push(done);
        }
        let response = self.txn("release", Txn::new().and_then(ops)).await?;
        let mut outcomes = Vec::with_capacity(requests.len());
        for ((request, done), op) in requests.iter().zip(released).zip(response.op_responses()) {
            let TxnOpResponse::Txn(nested) = op else {
                return Err(CoordError::Corrupt("release answered without a nested txn".into()));
            };
            let result = if nested.succeeded() {
                Ok(done)
            } else {
                let reads = nested.op_responses();
                let current = match reads.first().and_then(|r| get_kvs(r).first()) {
                    Some(kv) => keys::decode_owner(kv.value())?,
                    None => None,
                };
                if current.as_ref() == Some(&done) { Ok(done) } else { Err(NotOwner { current }) }
            };
            outcomes.push(ReleaseOutcome { shard: request.shard, result });
        }
        Ok(outcomes)
    }

    async fn end_lease(&self) {
        let previous = self.registered.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(previous) = previous {
            let mut client = self.client.clone();
            // Best effort: an unrevoked lease expires by itself.
            let _ = self.request("revoke lease", client.lease_revoke(previous.lease)).await;
            let mut status = *self.lease_status.borrow();
            status.state = LeaseState::Lost;
            self.lease_status.send_replace(status);
        }
    }
}

type BoxedTxn<'a, T> = std::pin::Pin<Box<dyn Future<Output = Result<T, CoordError>> + Send + 'a>>;

/// Runs transactions with at most [`PARALLEL_TXNS`] in flight; results in order. (The futures
/// are built before awaiting so no closure is held across an await, which `async_trait`'s
/// `Send` bound cannot prove for higher-ranked closures.)
async fn in_parallel<T>(txns: Vec<BoxedTxn<'_, T>>) -> Result<Vec<T>, CoordError> {
    futures::stream::iter(txns).buffered(PARALLEL_TXNS).try_collect().await
}

/// Nested transactions per outer claim or release transaction. etcd counts a nested
/// transaction's operations against what the outer level leaves of `--max-txn-ops`
/// (128 − outer operations), and a claim nests up to 4 compares or reads: 120 + 4 ≤ 128.
const NESTED_PER_TXN: usize = MAX_TXN_OPS - 8;

/// Splits requests into chunks of at most `limit` distinct shards, in order (etcd refuses a
/// transaction that writes one key twice).
fn chunks<T>(items: &[T], limit: usize, shard: impl Fn(&T) -> ShardId) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        if i - start == limit || !seen.insert(shard(item)) {
            chunks.push(&items[start..i]);
            start = i;
            seen.clear();
            seen.insert(shard(item));
        }
    }
    if start < items.len() {
        chunks.push(&items[start..]);
    }
    chunks
}

#[async_trait]
impl Coordinator for EtcdCoordinator {
    async fn join_cluster(&self, shard_count: u32) -> Result<ClusterConfig, CoordError> {
        let inner = &self.inner;
        let key = inner.keys.config();
        let fresh = ConfigDoc { shard_count, generation: 1, initialised: false };
        let txn = Txn::new()
            .when(vec![Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(key.as_str(), fresh.encode(), None)])
            .or_else(vec![TxnOp::get(key.as_str(), None)]);
        let response = inner.txn("create config", txn).await?;
        let mut doc = if response.succeeded() {
            fresh
        } else {
            let reads = response.op_responses();
            let kv = reads.first().and_then(|r| get_kvs(r).first());
            let kv = kv.ok_or_else(|| CoordError::Corrupt("config vanished".into()))?;
            ConfigDoc::decode(kv.value())?
        };
        if doc.shard_count != shard_count {
            return Err(CoordError::ShardCountMismatch {
                cluster: doc.shard_count,
                ours: shard_count,
            });
        }
        while !doc.initialised {
            inner.initialise_shards(doc.shard_count).await?;
            let done = ConfigDoc { initialised: true, ..doc };
            let txn = Txn::new()
                .when(vec![Compare::value(key.as_str(), CompareOp::Equal, doc.encode())])
                .and_then(vec![TxnOp::put(key.as_str(), done.encode(), None)]);
            if inner.txn("mark initialised", txn).await?.succeeded() {
                doc = done;
            } else {
                doc = inner.config_doc().await?.ok_or(CoordError::NotInitialised)?;
            }
        }
        Ok(doc.config())
    }

    async fn register(&self, registration: MemberRegistration) -> Result<MemberRecord, CoordError> {
        let inner = &self.inner;
        inner.end_lease().await;
        let ttl_secs = i64::try_from(inner.options.lease_ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let t_send = inner.clock().now();
        let mut client = inner.client.clone();
        let grant = inner.request("grant lease", client.lease_grant(ttl_secs, None)).await?;
        let lease = grant.id();
        let incarnation = Incarnation(u64::try_from(lease).unwrap_or(0));
        let record = MemberRecord::from_registration(&registration, incarnation);
        let key = inner.keys.member(&registration.id);
        let txn = Txn::new()
            .when(vec![Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(
                key.as_str(),
                keys::encode_member(&record),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else(vec![TxnOp::get(key.as_str(), None)]);
        let response = match inner.txn("register", txn).await {
            Ok(response) => response,
            Err(error) => {
                let _ = inner.client.clone().lease_revoke(lease).await;
                return Err(error);
            }
        };
        if !response.succeeded() {
            let _ = inner.request("revoke lease", client.lease_revoke(lease)).await;
            let reads = response.op_responses();
            let holder = reads.first().and_then(|r| get_kvs(r).first()).map_or(0, |kv| kv.lease());
            return Err(CoordError::MemberExists {
                id: registration.id,
                incarnation: Incarnation(u64::try_from(holder).unwrap_or(0)),
            });
        }
        let granted = Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(0));
        let tracker = LeaseTracker::granted(inner.options.lease_rule, incarnation, granted, t_send);
        inner.lease_status.send_replace(tracker.status());
        let keepalive = tokio::spawn(keepalive::run(Arc::clone(inner), lease, tracker));
        let mut registered = inner.registered.lock().unwrap_or_else(|e| e.into_inner());
        *registered = Some(Registered { record: record.clone(), lease, keepalive });
        Ok(record)
    }

    fn lease_status(&self) -> tokio_watch::Receiver<LeaseStatus> {
        self.inner.lease_status.subscribe()
    }

    async fn set_flags(&self, flags: MemberFlags) -> Result<MemberRecord, CoordError> {
        let inner = &self.inner;
        let (record, lease) = inner.registered()?;
        let updated = MemberRecord { flags, ..record };
        let key = inner.keys.member(&updated.id);
        let txn = Txn::new()
            .when(vec![Compare::lease(key.as_str(), CompareOp::Equal, lease)])
            .and_then(vec![TxnOp::put(
                key.as_str(),
                keys::encode_member(&updated),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        if !inner.txn("set flags", txn).await?.succeeded() {
            return Err(CoordError::LeaseLost(updated.incarnation));
        }
        let mut registered = inner.registered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(registered) = registered.as_mut().filter(|r| r.lease == lease) {
            registered.record = updated.clone();
        }
        Ok(updated)
    }

    async fn deregister(&self) -> Result<(), CoordError> {
        self.inner.end_lease().await;
        Ok(())
    }

    async fn members(&self) -> Result<Vec<MemberRecord>, CoordError> {
        let inner = &self.inner;
        let options = GetOptions::new().with_prefix();
        let response = inner.get("read members", inner.keys.members(), Some(options)).await?;
        response.kvs().iter().map(|kv| keys::decode_member(kv.value())).collect()
    }

    async fn campaign(&self) -> Result<Term, CoordError> {
        let inner = &self.inner;
        let (record, lease) = inner.registered()?;
        let my_key = inner.keys.election(lease);
        loop {
            let txn = Txn::new()
                .when(vec![Compare::create_revision(my_key.as_str(), CompareOp::Equal, 0)])
                .and_then(vec![TxnOp::put(
                    my_key.as_str(),
                    record.id.as_str(),
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else(vec![TxnOp::get(my_key.as_str(), None)]);
            let response = inner.txn("campaign", txn).await?;
            let my_revision = if response.succeeded() {
                response.header().map_or(0, |h| h.revision())
            } else {
                let reads = response.op_responses();
                reads.first().and_then(|r| get_kvs(r).first()).map_or(0, |kv| kv.create_revision())
            };
            loop {
                let options = GetOptions::new()
                    .with_prefix()
                    .with_max_create_revision(my_revision - 1)
                    .with_sort(SortTarget::Create, SortOrder::Descend)
                    .with_limit(1);
                let ahead =
                    inner.get("read candidates", inner.keys.elections(), Some(options)).await?;
                let at = ahead.header().map_or(0, |h| h.revision());
                let Some(predecessor) = ahead.kvs().first() else { break };
                let key = String::from_utf8_lossy(predecessor.key()).into_owned();
                inner.wait_deleted(&key, at).await?;
            }
            // No earlier candidate: lead, if the candidacy still stands.
            let term = Term(u64::try_from(my_revision).unwrap_or(0));
            let leader = Leader { member: record.id.clone(), term };
            let txn = Txn::new()
                .when(vec![Compare::create_revision(
                    my_key.as_str(),
                    CompareOp::Equal,
                    my_revision,
                )])
                .and_then(vec![TxnOp::put(
                    inner.keys.leader(),
                    keys::encode_leader(&leader),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            if inner.txn("proclaim", txn).await?.succeeded() {
                return Ok(term);
            }
            // Resigned meanwhile: stand again.
        }
    }

    async fn leader(&self) -> Result<Option<Leader>, CoordError> {
        let inner = &self.inner;
        let response = inner.get("read leader", inner.keys.leader(), None).await?;
        response.kvs().first().map(|kv| keys::decode_leader(kv.value())).transpose()
    }

    async fn resign(&self, term: Term) -> Result<(), CoordError> {
        let inner = &self.inner;
        let Ok((record, lease)) = inner.registered() else { return Ok(()) };
        let my_key = inner.keys.election(lease);
        let revision = i64::try_from(term.0).unwrap_or(i64::MAX);
        let mine = keys::encode_leader(&Leader { member: record.id, term });
        let leader_key = inner.keys.leader();
        let drop_leader = Txn::new()
            .when(vec![Compare::value(leader_key.as_str(), CompareOp::Equal, mine)])
            .and_then(vec![TxnOp::delete(leader_key.as_str(), None)]);
        let txn = Txn::new()
            .when(vec![Compare::create_revision(my_key.as_str(), CompareOp::Equal, revision)])
            .and_then(vec![TxnOp::delete(my_key.as_str(), None), TxnOp::txn(drop_leader)]);
        inner.txn("resign", txn).await.map(|_| ())
    }

    async fn leadership_lost(&self, term: Term) -> Result<(), CoordError> {
        let inner = &self.inner;
        let Ok((_, lease)) = inner.registered() else { return Ok(()) };
        let my_key = inner.keys.election(lease);
        let revision = i64::try_from(term.0).unwrap_or(i64::MAX);
        loop {
            let response = inner.get("read candidacy", my_key.as_str(), None).await?;
            let at = response.header().map_or(0, |h| h.revision());
            match response.kvs().first() {
                Some(kv) if kv.create_revision() == revision => {
                    inner.wait_deleted(&my_key, at).await?;
                }
                _ => return Ok(()),
            }
        }
    }

    async fn snapshot(&self) -> Result<ClusterSnapshot, CoordError> {
        self.inner.snapshot().await
    }

    async fn read_entry(&self, shard: ShardId) -> Result<ShardEntry, CoordError> {
        let inner = &self.inner;
        let txn = Txn::new().and_then(vec![
            TxnOp::get(inner.keys.config(), None),
            TxnOp::get(inner.keys.target(shard), None),
            TxnOp::get(inner.keys.owner(shard), None),
        ]);
        let response = inner.txn("read entry", txn).await?;
        let reads = response.op_responses();
        let kv = |i: usize| reads.get(i).and_then(|r| get_kvs(r).first());
        let config = match kv(0).map(|kv| ConfigDoc::decode(kv.value())).transpose()? {
            Some(doc) if doc.initialised => doc.config(),
            _ => return Err(CoordError::NotInitialised),
        };
        check_shard(shard, &config)?;
        let target = kv(1).map(|kv| keys::decode_target(kv.value())).transpose()?;
        let owner = match kv(2) {
            Some(kv) => keys::decode_owner(kv.value())?,
            None => None,
        };
        Ok(ShardEntry { shard, target, owner })
    }

    async fn write_targets(&self, term: Term, writes: Vec<TargetWrite>) -> Result<(), CoordError> {
        let inner = &self.inner;
        let (_, lease) = inner.registered()?;
        let config = inner.config().await?;
        for write in &writes {
            check_shard(write.shard, &config)?;
        }
        let my_key = inner.keys.election(lease);
        let revision = i64::try_from(term.0).unwrap_or(i64::MAX);
        let mut txns: Vec<BoxedTxn<'_, ()>> = Vec::new();
        for batch in chunks(&writes, MAX_TXN_OPS, |w| w.shard) {
            let ops: Vec<TxnOp> = batch
                .iter()
                .map(|w| match &w.target {
                    Some(target) => {
                        TxnOp::put(inner.keys.target(w.shard), keys::encode_target(target), None)
                    }
                    None => TxnOp::delete(inner.keys.target(w.shard), None),
                })
                .collect();
            let fence = Compare::create_revision(my_key.as_str(), CompareOp::Equal, revision);
            let txn = Txn::new().when(vec![fence]).and_then(ops);
            txns.push(Box::pin(async move {
                match inner.txn("write targets", txn).await?.succeeded() {
                    true => Ok(()),
                    false => Err(CoordError::StaleTerm(term)),
                }
            }));
        }
        in_parallel(txns).await.map(|_| ())
    }

    async fn claim(&self, claims: Vec<ClaimRequest>) -> Result<Vec<ClaimOutcome>, CoordError> {
        let inner = &self.inner;
        let (me, lease) = inner.registered()?;
        let config = inner.config().await?;
        for claim in &claims {
            check_shard(claim.shard, &config)?;
        }
        let mut txns: Vec<BoxedTxn<'_, Vec<ClaimOutcome>>> = Vec::new();
        for batch in chunks(&claims, NESTED_PER_TXN, |c| c.shard) {
            txns.push(Box::pin(inner.claim_chunk(&me, lease, &config, batch)));
        }
        let results = in_parallel(txns).await?;
        Ok(results.into_iter().flatten().collect())
    }

    async fn release(
        &self,
        releases: Vec<ReleaseRequest>,
    ) -> Result<Vec<ReleaseOutcome>, CoordError> {
        let inner = &self.inner;
        let (me, _) = inner.registered()?;
        let config = inner.config().await?;
        for release in &releases {
            check_shard(release.shard, &config)?;
        }
        let mut txns: Vec<BoxedTxn<'_, Vec<ReleaseOutcome>>> = Vec::new();
        for batch in chunks(&releases, NESTED_PER_TXN, |r| r.shard) {
            txns.push(Box::pin(inner.release_chunk(&me, batch)));
        }
        let results = in_parallel(txns).await?;
        Ok(results.into_iter().flatten().collect())
    }

    async fn pin(&self, shard: ShardId, node: MemberId) -> Result<(), CoordError> {
        let inner = &self.inner;
        check_shard(shard, &inner.config().await?)?;
        let mut client = inner.client.clone();
        inner.request("pin", client.put(inner.keys.pin(shard), node.as_str(), None)).await?;
        Ok(())
    }

    async fn unpin(&self, shard: ShardId) -> Result<(), CoordError> {
        let inner = &self.inner;
        check_shard(shard, &inner.config().await?)?;
        let mut client = inner.client.clone();
        inner.request("unpin", client.delete(inner.keys.pin(shard), None)).await?;
        Ok(())
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream, CoordError> {
        Ok(watch::start(Arc::clone(&self.inner), from))
    }

    fn health(&self) -> ConnectionHealth {
        self.inner.health()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_split_at_the_limit_and_on_repeated_shards() {
        let shards: Vec<ShardId> = (0..300).map(ShardId).collect();
        let sizes: Vec<usize> =
            chunks(&shards, MAX_TXN_OPS, |s| *s).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![128, 128, 44]);
        let sizes: Vec<usize> =
            chunks(&shards, NESTED_PER_TXN, |s| *s).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![120, 120, 60]);
        let repeated = [ShardId(1), ShardId(2), ShardId(1), ShardId(3)];
        let sizes: Vec<usize> = chunks(&repeated, 8, |s| *s).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![2, 2]);
        assert!(chunks(&[] as &[ShardId], 8, |s| *s).is_empty());
    }
}
