//! The one ordered watch: a prefix watch over the cluster's keys, translated into
//! [`WatchEvent`]s, reopened from the next revision after a broken stream, and replaced by a
//! full snapshot ([`WatchChange::Resync`]) after compaction or a stall.
//!
//! A task owned by the returned stream (aborted when it is dropped) does the work and hands
//! events over a bounded channel; when the consumer is slow the task waits, and etcd buffers
//! (or, past its limits, cancels the watch, which ends in a resync).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_client::{EventType, KeyValue, WatchOptions};
use futures::Stream;
use tokio::sync::mpsc;
use verse_core::coordinator::{CoordError, Revision, WatchChange, WatchEvent, WatchStream};

use crate::Inner;
use crate::keys::{self, ConfigDoc, KeyKind};

/// Events buffered between the watch task and the consumer.
const CHANNEL_CAPACITY: usize = 1024;
/// Pause before reopening a failed watch.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

type Item = Result<WatchEvent, CoordError>;

struct OwnedStream {
    events: mpsc::Receiver<Item>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream for OwnedStream {
    type Item = Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for OwnedStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the watch task from `from`.
pub(crate) fn start(inner: Arc<Inner>, from: Revision) -> WatchStream {
    let (sender, events) = mpsc::channel(CHANNEL_CAPACITY);
    let task = tokio::spawn(run(inner, from, sender));
    Box::pin(OwnedStream { events, task })
}

/// Why one watch stream ended.
enum Ended {
    /// Reopen from the next revision.
    Broken,
    /// History is gone or the stream stalled: deliver a snapshot.
    Resync,
    /// The consumer went away or a record is corrupt.
    Stop,
}

async fn run(inner: Arc<Inner>, from: Revision, sender: mpsc::Sender<Item>) {
    let clock = inner.options.clock.clone();
    let mut next = from;
    loop {
        match follow(&inner, &mut next, &sender).await {
            Ended::Stop => return,
            Ended::Broken => clock.sleep_until(clock.now() + RETRY_PAUSE).await,
            Ended::Resync => loop {
                match inner.snapshot().await {
                    Ok(snapshot) => {
                        let revision = snapshot.revision;
                        next = revision.next();
                        let change = WatchChange::Resync(Box::new(snapshot));
                        if sender.send(Ok(WatchEvent { revision, change })).await.is_err() {
                            return;
                        }
                        break;
                    }
                    Err(error) if error.is_retryable() => {
                        clock.sleep_until(clock.now() + RETRY_PAUSE).await;
                    }
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                }
            },
        }
    }
}

/// Follows one etcd watch stream from `*next`, advancing it past every delivered revision.
async fn follow(inner: &Inner, next: &mut Revision, sender: &mpsc::Sender<Item>) -> Ended {
    let clock = inner.options.clock.clone();
    let stall = inner.options.watch_stall_timeout;
    let start = i64::try_from(next.0).unwrap_or(i64::MAX);
    let options =
        WatchOptions::new().with_prefix().with_start_revision(start).with_progress_notify();
    let mut client = inner.client.clone();
    let opened =
        inner.request("open watch", client.watch(inner.keys.prefix(), Some(options))).await;
    let Ok(mut stream) = opened else { return Ended::Broken };
    let mut last_heard = clock.now();
    let mut progress_asked = false;
    loop {
        let wake = if progress_asked { last_heard + stall } else { last_heard + stall / 3 };
        tokio::select! {
            biased;
            message = stream.message() => {
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) | Err(_) => {
                        inner.set_health(false);
                        return Ended::Broken;
                    }
                };
                inner.set_health(true);
                last_heard = clock.now();
                progress_asked = false;
                if response.compact_revision() > 0 {
                    return Ended::Resync;
                }
                if response.canceled() {
                    return Ended::Broken;
                }
                if response.events().is_empty() {
                    if response.created() {
                        continue;
                    }
                    let revision = response.header().map_or(0, |h| h.revision());
                    let revision = Revision(u64::try_from(revision).unwrap_or(0));
                    if revision.next() >= *next {
                        *next = revision.next();
                        let event = WatchEvent { revision, change: WatchChange::Progress };
                        if sender.send(Ok(event)).await.is_err() {
                            return Ended::Stop;
                        }
                    }
                    continue;
                }
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let revision = Revision(u64::try_from(kv.mod_revision()).unwrap_or(0));
                    let deleted = event.event_type() == EventType::Delete;
                    match translate(inner, kv, deleted) {
                        Ok(Some(change)) => {
                            if sender.send(Ok(WatchEvent { revision, change })).await.is_err() {
                                return Ended::Stop;
                            }
                        }
                        Ok(None) => {}
                        Err(error) => {
                            let _ = sender.send(Err(error)).await;
                            return Ended::Stop;
                        }
                    }
                    *next = (*next).max(revision.next());
                }
            }
            () = clock.sleep_until(wake) => {
                if progress_asked {
                    tracing::warn!(?stall, "watch stalled; resyncing");
                    return Ended::Resync;
                }
                progress_asked = true;
                if stream.request_progress().await.is_err() {
                    return Ended::Broken;
                }
            }
        }
    }
}

/// The change one etcd event makes, if it is one the watch reports.
fn translate(
    inner: &Inner,
    kv: &KeyValue,
    deleted: bool,
) -> Result<Option<WatchChange>, CoordError> {
    let Some(kind) = inner.keys.parse(kv.key()) else { return Ok(None) };
    let value = kv.value();
    Ok(Some(match kind {
        KeyKind::Config if deleted => return Ok(None),
        KeyKind::Config => WatchChange::Config(ConfigDoc::decode(value)?.config()),
        KeyKind::Member(id) if deleted => WatchChange::MemberGone(id),
        KeyKind::Member(_) => WatchChange::MemberPut(keys::decode_member(value)?),
        KeyKind::Election => return Ok(None),
        KeyKind::Leader if deleted => WatchChange::Leader(None),
        KeyKind::Leader => WatchChange::Leader(Some(keys::decode_leader(value)?)),
        KeyKind::Target(shard) if deleted => WatchChange::Target { shard, target: None },
        KeyKind::Target(shard) => {
            WatchChange::Target { shard, target: Some(keys::decode_target(value)?) }
        }
        KeyKind::Owner(shard) if deleted => WatchChange::Owner { shard, owner: None },
        KeyKind::Owner(shard) => WatchChange::Owner { shard, owner: keys::decode_owner(value)? },
        KeyKind::Pin(shard) if deleted => WatchChange::Pin { shard, node: None },
        KeyKind::Pin(shard) => WatchChange::Pin { shard, node: Some(keys::decode_pin(value)?) },
    }))
}
