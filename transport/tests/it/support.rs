//! Test objects and a node served on a free loopback port, with a counting listener.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::sync::oneshot;
use verse::prelude::*;
use verse_core::{EncodedMessage, MonoTime, SystemClock};
use verse_transport::{NodeClient, NodeServer, OutgoingCall, PushHub, ServeError, TcpIncoming};

/// A text message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Text {
    #[prost(string, tag = "1")]
    pub text: String,
}

impl prost::Name for Text {
    const NAME: &'static str = "Text";
    const PACKAGE: &'static str = "test";
}

/// A delay in milliseconds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Delay {
    #[prost(uint64, tag = "1")]
    pub millis: u64,
}

impl prost::Name for Delay {
    const NAME: &'static str = "Delay";
    const PACKAGE: &'static str = "test";
}

/// Echoes, fails, sleeps and reports who called.
#[derive(Default)]
pub struct Echo;

#[verse::object]
impl Echo {
    async fn echo(&mut self, _ctx: &CallContext, req: Text) -> Result<Text, MethodError> {
        Ok(req)
    }

    async fn fail(&mut self, _ctx: &CallContext, _req: Text) -> Result<Text, MethodError> {
        Err(MethodError::new(7, "no luck"))
    }

    async fn slow(&mut self, _ctx: &CallContext, req: Delay) -> Result<Text, MethodError> {
        tokio::time::sleep(Duration::from_millis(req.millis)).await;
        Ok(Text { text: "done".into() })
    }

    async fn who(&mut self, ctx: &CallContext, _req: Text) -> Result<Text, MethodError> {
        let caller = ctx.caller().cloned().unwrap_or_default();
        let depth = ctx.chain().map_or(0, |c| c.depth);
        let left_ms = ctx.remaining().as_millis();
        Ok(Text {
            text: format!(
                "{}|{}|{}|{depth}|{}",
                caller.client_id.unwrap_or_default(),
                caller.principal.unwrap_or_default(),
                caller.roles.join(","),
                u128::from(left_ms > 1_000 && left_ms <= 10_000),
            ),
        })
    }
}

/// Another type, for type mismatches; it registers (stand-in) descriptor bytes, which the
/// node hands out verbatim.
#[derive(Default)]
pub struct Other;

/// The bytes `Other` registers as its descriptors.
pub const OTHER_DESCRIPTORS: &[u8] = b"descriptor bytes";

#[verse::object(descriptors = OTHER_DESCRIPTORS)]
impl Other {
    #[idempotent]
    async fn echo(&mut self, _ctx: &CallContext, req: Text) -> Result<Text, MethodError> {
        Ok(req)
    }
}

/// Counts connections accepted through the injected listener.
pub struct Counting<S> {
    inner: S,
    accepted: Arc<AtomicUsize>,
}

impl<S: Stream + Unpin> Stream for Counting<S> {
    type Item = S::Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(_)) = &next {
            self.accepted.fetch_add(1, Ordering::SeqCst);
        }
        next
    }
}

/// A node served on a free loopback port.
pub struct Served {
    pub node: Arc<Node>,
    pub addr: String,
    pub accepted: Arc<AtomicUsize>,
    pub hub: PushHub,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
}

impl Served {
    /// Starts a node with `Echo` and `Other` and serves it.
    pub async fn start(node_id: &str) -> Served {
        let config = NodeConfig { node_id: node_id.into(), ..NodeConfig::default() };
        let node = Arc::new(
            NodeBuilder::new(config).object::<Echo>().object::<Other>().start().expect("node"),
        );
        let incoming =
            TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind");
        let addr = incoming.local_addr().expect("address").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let incoming = Counting { inner: incoming, accepted: accepted.clone() };
        let server = NodeServer::new(node.clone());
        let hub = server.push_hub().clone();
        let (shutdown, signal) = oneshot::channel::<()>();
        let server = tokio::spawn(server.serve(incoming, async move {
            let _ = signal.await;
        }));
        Served { node, addr, accepted, hub, shutdown: Some(shutdown), server: Some(server) }
    }

    /// Starts the graceful shutdown and returns the server's end (then shuts the node down).
    pub fn shut_down(&mut self) -> impl Future<Output = Result<(), ServeError>> + use<> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let server = self.server.take();
        let node = self.node.clone();
        async move {
            let result = match server {
                Some(server) => server.await.expect("server task"),
                None => Ok(()),
            };
            node.shutdown().await;
            result
        }
    }
}

/// A client on the system clock.
pub fn client() -> NodeClient {
    NodeClient::new(SystemClock::shared())
}

/// A deadline `after` from now on the system clock.
pub fn deadline_in(after: Duration) -> MonoTime {
    SystemClock::shared().now() + after
}

/// A call of `method` on `Echo` `id` with `request` and 10 s left.
pub fn echo_call<M: prost::Message + prost::Name>(
    id: &str,
    method: &str,
    request: &M,
) -> OutgoingCall {
    OutgoingCall {
        object_type: "Echo".into(),
        id: id.into(),
        method: method.into(),
        request: EncodedMessage::pack(request),
        deadline: deadline_in(Duration::from_secs(10)),
        chain: Vec::new(),
        identity: None,
        call_id: None,
        one_way: false,
    }
}

/// Waits until `condition` holds, failing after 10 s.
pub async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
