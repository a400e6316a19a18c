//! The push hub: one bounded queue per gateway that holds a push stream to this node.
//!
//! A gateway opens `OpenPushStream` to every node; objects push to a client session through the
//! hub, which hands the message to that gateway's stream, or to every gateway for a broadcast.
//! Queues are bounded ([`PushHub::new`]): when a gateway's queue is full the push is refused
//! with [`PushError::Full`] at once (never blocking a turn) and counted. Not done yet: buffering
//! pushes briefly for a live gateway whose stream is not open yet (they fail with
//! [`PushError::NoStream`]).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;

use crate::proto::PushMessage;

/// Why a push was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// No stream from that gateway is open on this node.
    #[error("no push stream from gateway {0:?}")]
    NoStream(String),
    /// The gateway's queue is full; the push was dropped.
    #[error("push queue of gateway {0:?} is full")]
    Full(String),
    /// The hub is closed (the node is shutting down).
    #[error("push hub closed")]
    Closed,
}

struct Registration {
    sender: mpsc::Sender<PushMessage>,
    generation: u64,
}

#[derive(Default)]
struct Streams {
    by_gateway: BTreeMap<String, Registration>,
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
    /// gateway. The registration ends when the returned stream is dropped.
    pub fn register(&self, gateway_id: &str) -> Result<PushStream, PushError> {
        let (sender, receiver) = mpsc::channel(self.shared.capacity);
        let generation = self.shared.next_generation.fetch_add(1, Ordering::Relaxed);
        let mut streams = self.streams();
        if streams.closed {
            return Err(PushError::Closed);
        }
        streams.by_gateway.insert(gateway_id.to_owned(), Registration { sender, generation });
        Ok(PushStream {
            receiver,
            hub: self.clone(),
            gateway_id: gateway_id.to_owned(),
            generation,
        })
    }

    /// Queues `message` on `gateway_id`'s stream.
    pub fn push(&self, gateway_id: &str, message: PushMessage) -> Result<(), PushError> {
        let streams = self.streams();
        if streams.closed {
            return Err(PushError::Closed);
        }
        let Some(registration) = streams.by_gateway.get(gateway_id) else {
            return Err(PushError::NoStream(gateway_id.to_owned()));
        };
        registration.sender.try_send(message).map_err(|_| {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            PushError::Full(gateway_id.to_owned())
        })
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
                }
            }
        }
        queued
    }

    /// Gateways with an open stream, in id order.
    pub fn gateways(&self) -> Vec<String> {
        self.streams().by_gateway.keys().cloned().collect()
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
    }

    fn unregister(&self, gateway_id: &str, generation: u64) {
        let mut streams = self.streams();
        if streams.by_gateway.get(gateway_id).is_some_and(|r| r.generation == generation) {
            streams.by_gateway.remove(gateway_id);
        }
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
