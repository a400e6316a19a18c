//! The push hub: one bounded queue per gateway that holds a push stream to this node.
//!
//! A gateway opens `OpenPushStream` to every node; objects push to a client session through the
//! hub (it is the node's [`verse_core::PushSink`]), which hands the message to that gateway's
//! stream, or to every gateway for a broadcast. Queues are bounded ([`PushHub::new`]): when a
//! gateway's queue is full the push is refused with [`PushError::Full`] at once (never blocking
//! a turn) and counted.
//!
//! **Brief buffering.** A push for a gateway that is a live member of the cluster view but has
//! no stream open to this node yet (it just registered, or its stream is reconnecting) is kept
//! in a pending buffer of at most [`PENDING_PER_GATEWAY`] messages, for at most
//! [`PENDING_TTL`], for at most [`MAX_PENDING_GATEWAYS`] gateways; when the gateway's stream
//! opens, the buffer is delivered first, in push order. Past those bounds pushes are refused
//! (`Full`); expired buffers are dropped (counted in `verse_push_dropped_total{reason}`). A
//! push for a gateway that is not a live member is refused with [`PushError::NoStream`].

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::proto::{Payload, PushMessage};

/// Most pushes buffered for one live gateway whose stream is not open yet.
pub const PENDING_PER_GATEWAY: usize = 256;
/// How long pushes stay buffered for a gateway whose stream is not open yet.
pub const PENDING_TTL: Duration = Duration::from_secs(5);
/// Most gateways with buffered pushes at a time.
pub const MAX_PENDING_GATEWAYS: usize = 64;

/// Why a push was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// No stream from that gateway is open on this node, and it is not a live member.
    #[error("no push stream from gateway {0:?}")]
    NoStream(String),
    /// The gateway's queue (or pending buffer) is full; the push was dropped.
    #[error("push queue of gateway {0:?} is full")]
    Full(String),
    /// The hub is closed (the node is shutting down).
    #[error("push hub closed")]
    Closed,
}

impl From<PushError> for verse_core::PushError {
    fn from(error: PushError) -> Self {
        match error {
            PushError::NoStream(gateway) => verse_core::PushError::UnknownGateway(gateway),
            PushError::Full(gateway) => verse_core::PushError::Full(gateway),
            PushError::Closed => verse_core::PushError::Closed,
        }
    }
}

struct Registration {
    sender: mpsc::Sender<PushMessage>,
    generation: u64,
}

struct Pending {
    since: Instant,
    messages: VecDeque<PushMessage>,
}

#[derive(Default)]
struct Streams {
    by_gateway: BTreeMap<String, Registration>,
    pending: BTreeMap<String, Pending>,
    closed: bool,
}

struct HubShared {
    // A std mutex: critical sections are map operations and `try_send`, never an await.
    streams: Mutex<Streams>,
    capacity: usize,
    next_generation: AtomicU64,
    dropped: AtomicU64,
}

/// Routes pushes to the gateways' streams. Cheap to clone (shared).
#[derive(Clone)]
pub struct PushHub {
    shared: Arc<HubShared>,
}

impl std::fmt::Debug for PushHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushHub").field("capacity", &self.shared.capacity).finish_non_exhaustive()
    }
}

/// Default per-gateway queue length.
pub const DEFAULT_PUSH_QUEUE: usize = 1024;

impl Default for PushHub {
    fn default() -> Self {
        PushHub::new(DEFAULT_PUSH_QUEUE)
    }
}

fn count_drop(reason: &'static str, n: u64) {
    metrics::counter!("verse_push_dropped_total", "reason" => reason).increment(n);
}

impl PushHub {
    /// A hub whose per-gateway queues hold `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        PushHub {
            shared: Arc::new(HubShared {
                streams: Mutex::new(Streams::default()),
                capacity: capacity.max(1),
                next_generation: AtomicU64::new(1),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    fn streams(&self) -> MutexGuard<'_, Streams> {
        self.shared.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a stream for `gateway_id`, replacing (and ending) an older one of the same
    /// gateway. Pushes buffered for the gateway are delivered first. The registration ends
    /// when the returned stream is dropped.
    pub fn register(&self, gateway_id: &str) -> Result<PushStream, PushError> {
        let (sender, receiver) = mpsc::channel(self.shared.capacity);
        let generation = self.shared.next_generation.fetch_add(1, Ordering::Relaxed);
        let mut streams = self.streams();
        if streams.closed {
            return Err(PushError::Closed);
        }
        if let Some(pending) = streams.pending.remove(gateway_id)
            && pending.since.elapsed() < PENDING_TTL
        {
            for message in pending.messages {
                if sender.try_send(message).is_err() {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    count_drop("full", 1);
                }
            }
        }
        streams.by_gateway.insert(gateway_id.to_owned(), Registration { sender, generation });
        Ok(PushStream {
            receiver,
            hub: self.clone(),
            gateway_id: gateway_id.to_owned(),
            generation,
        })
    }

    /// Queues `message` on `gateway_id`'s stream; when no stream is open, buffers it briefly
    /// if `live` (the gateway is a live member) and refuses it otherwise (module docs).
    pub fn queue(
        &self,
        gateway_id: &str,
        message: PushMessage,
        live: bool,
    ) -> Result<(), PushError> {
        let mut streams = self.streams();
        if streams.closed {
            return Err(PushError::Closed);
        }
        if let Some(registration) = streams.by_gateway.get(gateway_id) {
            return registration.sender.try_send(message).map_err(|_| {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                count_drop("full", 1);
                PushError::Full(gateway_id.to_owned())
            });
        }
        if !live {
            return Err(PushError::NoStream(gateway_id.to_owned()));
        }
        let now = Instant::now();
        streams.pending.retain(|_, pending| {
            let keep = now.duration_since(pending.since) < PENDING_TTL;
            if !keep {
                count_drop("expired", pending.messages.len() as u64);
            }
            keep
        });
        let room = streams.pending.len() < MAX_PENDING_GATEWAYS;
        let pending = match streams.pending.get_mut(gateway_id) {
            Some(pending) => pending,
            None if room => streams
                .pending
                .entry(gateway_id.to_owned())
                .or_insert(Pending { since: now, messages: VecDeque::new() }),
            None => {
                count_drop("full", 1);
                return Err(PushError::Full(gateway_id.to_owned()));
            }
        };
        if pending.messages.len() >= PENDING_PER_GATEWAY {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            count_drop("full", 1);
            return Err(PushError::Full(gateway_id.to_owned()));
        }
        pending.messages.push_back(message);
        Ok(())
    }

    /// Queues `message` on `gateway_id`'s stream, without buffering (the gateway is taken as
    /// not live): [`PushHub::queue`] with `live = false`.
    pub fn push(&self, gateway_id: &str, message: PushMessage) -> Result<(), PushError> {
        self.queue(gateway_id, message, false)
    }

    /// Queues `message` on every gateway's stream; returns how many queued it (full queues
    /// drop it and count it).
    pub fn broadcast(&self, message: &PushMessage) -> usize {
        let streams = self.streams();
        let mut queued = 0;
        for registration in streams.by_gateway.values() {
            match registration.sender.try_send(message.clone()) {
                Ok(()) => queued += 1,
                Err(_) => {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    count_drop("full", 1);
                }
            }
        }
        queued
    }

    /// Gateways with an open stream, in id order.
    pub fn gateways(&self) -> Vec<String> {
        self.streams().by_gateway.keys().cloned().collect()
    }

    /// Pushes buffered for gateways whose stream is not open yet.
    pub fn pending(&self) -> usize {
        self.streams().pending.values().map(|p| p.messages.len()).sum()
    }

    /// Pushes dropped because a queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Ends every stream (their gateways see the stream finish) and refuses new ones: called
    /// when the server shuts down, so graceful shutdown is not held open by push streams.
    pub fn close(&self) {
        let mut streams = self.streams();
        streams.closed = true;
        streams.by_gateway.clear();
        streams.pending.clear();
    }

    fn unregister(&self, gateway_id: &str, generation: u64) {
        let mut streams = self.streams();
        if streams.by_gateway.get(gateway_id).is_some_and(|r| r.generation == generation) {
            streams.by_gateway.remove(gateway_id);
        }
    }
}

fn to_proto(message: verse_core::PushMessage) -> PushMessage {
    PushMessage {
        client_id: message.client_id,
        object_type: message.object_type,
        object_id: message.object_id,
        message: Some(Payload { type_url: message.message.type_url, value: message.message.value }),
    }
}

impl verse_core::PushSink for PushHub {
    fn push(
        &self,
        gateway: &str,
        message: verse_core::PushMessage,
        live: bool,
    ) -> Result<(), verse_core::PushError> {
        self.queue(gateway, to_proto(message), live).map_err(Into::into)
    }

    fn broadcast(&self, message: verse_core::PushMessage) -> usize {
        PushHub::broadcast(self, &to_proto(message))
    }
}

/// The messages for one gateway, in push order; unregisters itself when dropped.
pub struct PushStream {
    receiver: mpsc::Receiver<PushMessage>,
    hub: PushHub,
    gateway_id: String,
    generation: u64,
}

impl std::fmt::Debug for PushStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushStream").field("gateway_id", &self.gateway_id).finish_non_exhaustive()
    }
}

impl Stream for PushStream {
    type Item = PushMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PushMessage>> {
        self.receiver.poll_recv(cx)
    }
}

impl Drop for PushStream {
    fn drop(&mut self) {
        self.hub.unregister(&self.gateway_id, self.generation);
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn message(n: u8) -> PushMessage {
        PushMessage { client_id: format!("gw/{n}"), ..Default::default() }
    }

    #[tokio::test]
    async fn pushes_reach_the_registered_gateway_and_full_queues_refuse() {
        let hub = PushHub::new(2);
        let mut stream = hub.register("gw").expect("open");
        assert_eq!(hub.push("other", message(0)), Err(PushError::NoStream("other".into())));
        hub.push("gw", message(1)).expect("queued");
        hub.push("gw", message(2)).expect("queued");
        assert_eq!(hub.push("gw", message(3)), Err(PushError::Full("gw".into())));
        assert_eq!(hub.dropped(), 1);
        assert_eq!(stream.next().await.map(|m| m.client_id), Some("gw/1".into()));
        assert_eq!(hub.broadcast(&message(4)), 1);
        drop(stream);
        assert!(hub.gateways().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_gateway_without_a_stream_gets_its_pushes_once_it_opens_one() {
        let hub = PushHub::new(8);
        assert_eq!(hub.queue("gw", message(0), false), Err(PushError::NoStream("gw".into())));
        hub.queue("gw", message(1), true).expect("buffered");
        hub.queue("gw", message(2), true).expect("buffered");
        assert_eq!(hub.pending(), 2);
        let mut stream = hub.register("gw").expect("open");
        assert_eq!(hub.pending(), 0);
        assert_eq!(stream.next().await.map(|m| m.client_id), Some("gw/1".into()));
        assert_eq!(stream.next().await.map(|m| m.client_id), Some("gw/2".into()));
        // The buffer is bounded in length...
        for n in 0..PENDING_PER_GATEWAY {
            hub.queue("late", message((n % 200) as u8), true).expect("buffered");
        }
        assert_eq!(hub.queue("late", message(0), true), Err(PushError::Full("late".into())));
        // ...and in time: after the TTL a stream opening gets nothing old.
        tokio::time::advance(PENDING_TTL + Duration::from_millis(1)).await;
        hub.queue("other", message(9), true).expect("buffered; expires the stale buffer");
        assert_eq!(hub.pending(), 1);
        let mut late = hub.register("late").expect("open");
        hub.queue("late", message(7), true).expect("queued");
        assert_eq!(late.next().await.map(|m| m.client_id), Some("gw/7".into()));
    }

    #[tokio::test]
    async fn a_new_stream_replaces_the_old_and_close_ends_all() {
        let hub = PushHub::new(4);
        let mut old = hub.register("gw").expect("open");
        let mut new = hub.register("gw").expect("open");
        assert_eq!(old.next().await, None, "the replaced stream ends");
        drop(old);
        assert_eq!(hub.gateways(), vec!["gw".to_owned()], "dropping the old keeps the new");
        hub.close();
        assert_eq!(new.next().await, None);
        assert_eq!(hub.register("gw").err(), Some(PushError::Closed));
    }
}
