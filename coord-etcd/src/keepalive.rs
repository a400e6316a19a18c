//! The keepalive task: sends keepalives on the lease's stream every interval of the lease
//! rule, feeds the answers to the [`LeaseTracker`] and publishes its status.
//!
//! The loop never waits on the network for longer than the next wake-up of the tracker, so the
//! Proven → Unproven transition is published on time even while etcd is unreachable.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use verse_core::coordinator::{LeaseState, LeaseTracker};

use crate::Inner;

type Stream = (LeaseKeeper, LeaseKeepAliveStream);

/// Keeps `lease` alive until it is lost or the task is aborted.
pub(crate) async fn run(inner: Arc<Inner>, lease: i64, mut tracker: LeaseTracker) {
    let clock = inner.options.clock.clone();
    let mut stream: Option<Stream> = None;
    loop {
        let now = clock.now();
        tracker.tick(now);
        inner.lease_status.send_replace(tracker.status());
        if tracker.state() == LeaseState::Lost {
            tracing::warn!(lease, "lease lost");
            return;
        }
        if tracker.stream_suspect() {
            stream = None;
            tracker.on_failure(now);
        }
        if tracker.should_send(now) {
            send(&inner, lease, &mut stream, &mut tracker).await;
            if tracker.state() == LeaseState::Lost {
                continue;
            }
        }
        let wake = tracker.next_wakeup();
        tokio::select! {
            biased;
            answer = receive(&mut stream) => match answer {
                Ok(Some(response)) => {
                    inner.set_health(true);
                    let ttl = response.ttl();
                    if ttl <= 0 {
                        tracker.on_lost();
                    } else {
                        let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
                        tracker.on_success(ttl, clock.now());
                    }
                }
                Err(etcd_client::Error::LeaseKeepAliveError(_)) => tracker.on_lost(),
                Ok(None) | Err(_) => {
                    inner.set_health(false);
                    stream = None;
                    tracker.on_failure(clock.now());
                }
            },
            () = clock.sleep_until(wake) => {}
        }
    }
}

async fn receive(
    stream: &mut Option<Stream>,
) -> Result<Option<etcd_client::LeaseKeepAliveResponse>, etcd_client::Error> {
    match stream {
        Some((_, answers)) => answers.message().await,
        None => std::future::pending().await,
    }
}

/// Sends one keepalive, opening the stream first if needed. Opening is itself a keepalive
/// (etcd-client sends one and checks its answer), so a successful open proves the lease from
/// its send time with the lease's TTL. Opening is bounded by the keepalive interval so a hung
/// connection cannot hold the loop past the proof's end.
async fn send(inner: &Inner, lease: i64, stream: &mut Option<Stream>, tracker: &mut LeaseTracker) {
    let clock = &inner.options.clock;
    let t_send = clock.now();
    if stream.is_none() {
        let bound = inner.options.lease_rule.keepalive_interval(tracker.ttl());
        let mut client = inner.client.clone();
        let opened = tokio::select! {
            opened = client.lease_keep_alive(lease) => Some(opened),
            () = clock.sleep_until(t_send + bound) => None,
        };
        match opened {
            Some(Ok(opened)) => {
                inner.set_health(true);
                *stream = Some(opened);
                tracker.on_sent(t_send);
                tracker.on_success(tracker.ttl(), clock.now());
            }
            Some(Err(etcd_client::Error::LeaseKeepAliveError(_))) => tracker.on_lost(),
            Some(Err(_)) | None => {
                inner.set_health(false);
                tracker.on_send_failed(t_send);
            }
        }
        return;
    }
    let sent = match stream.as_mut() {
        Some((keeper, _)) => keeper.keep_alive().await.is_ok(),
        None => false,
    };
    if sent {
        tracker.on_sent(t_send);
    } else {
        *stream = None;
        tracker.on_send_failed(t_send);
    }
}
