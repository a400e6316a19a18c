//! Verse: virtual actors for Rust.
//!
//! Write an object as a plain struct and one `#[verse::object]` attribute on its `impl` block;
//! register it on a node with [`NodeBuilder`]; call it through typed references from a
//! [`Client`] or, inside another object's turn, from its [`CallContext`]. See `docs/GET_STARTED.md`.
//!
//! ```
//! use verse::prelude::*;
//! # #[derive(Clone, PartialEq, ::prost::Message)] pub struct Ping { #[prost(string, tag = "1")] pub text: String }
//! # impl ::prost::Name for Ping { const NAME: &'static str = "Ping"; const PACKAGE: &'static str = "doc"; }
//!
//! #[derive(Default)]
//! struct Echo { calls: u32 }
//!
//! #[verse::object]
//! impl Echo {
//!     async fn echo(&mut self, _ctx: &CallContext, req: Ping) -> Result<Ping, MethodError> {
//!         self.calls += 1;
//!         Ok(req)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let node = NodeBuilder::new(NodeConfig::default()).object::<Echo>().start().unwrap();
//! let reply = node.client().get::<Echo>("echo-1").echo(Ping { text: "hi".into() }).await.unwrap();
//! assert_eq!(reply.text, "hi");
//! node.shutdown().await;
//! # }
//! ```

pub use verse_core::{
    ActivationPolicy, BuildError, CallChain, CallContext, CallError, CallerIdentity, Client,
    EncodedMessage, Epoch, MethodError, MethodInfo, Node, NodeBuilder, NodeConfig, Object,
    ObjectRef, Payload, PersistencePolicy, RawRef, Tick, TimerHandle, TypeDescription, TypeOptions,
};
pub use verse_core::{PushError, PushMessage, PushSink};
pub use verse_core::{clock, executor, push, rng, shard, store};
pub use verse_macros::object;

/// The gateway client: calls objects from a program outside the cluster, through one or more
/// gateways over gRPC, with the same typed references as inside
/// (`client.get::<Counter>(id).increment(req)`), receives the session's pushes and reconnects
/// with backoff, resuming its session.
///
/// It is `GatewayClient`, not `Client`: [`Client`] is the in-node client of a [`Node`] this
/// program runs itself (no network hop, typed messages moved without encoding). Both hand
/// out the same generated references. See `docs/GET_STARTED.md`, "Call from a Rust program".
#[cfg(feature = "gateway-client")]
pub use verse_gateway::client::GatewayClient;

/// The gateway client's configuration, pushes and errors (see [`GatewayClient`]).
#[cfg(feature = "gateway-client")]
pub mod gateway_client {
    pub use verse_gateway::client::{ClientConfig, ClientError, GatewayClient, Push, Pushes};
}

/// Running a node in a cluster: the cluster runtime, the coordinator it joins through and the
/// transport it routes remote calls over (backends live in `verse-coord-etcd`,
/// `verse-coord-raft` and `verse-transport`).
pub mod cluster {
    pub use verse_core::cluster::{ClusterError, ClusterNode, ClusterOptions};
    pub use verse_core::coordinator::{CoordError, Coordinator};
    pub use verse_core::handoff::Me;
    pub use verse_core::transport::{RemoteCall, Transport};
}

/// The names most programs need.
pub mod prelude {
    pub use crate::{
        ActivationPolicy, CallContext, CallError, Client, MethodError, Node, NodeBuilder,
        NodeConfig, ObjectRef, PersistencePolicy, PushError, Tick, TypeOptions,
    };
}

/// Paths used by code the `#[verse::object]` macro generates. Not a public API.
#[doc(hidden)]
pub use verse_core::__private;
