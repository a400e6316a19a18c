//! Example object types hosted by `verse dev` and used in the docs and tests.
//!
//! [`counter::Counter`] is the counter of GoVerse's counter sample: object type `Counter`,
//! methods `Increment`, `Decrement`, `Get` and `Reset`, each answering `CounterResponse`.
//! [`chat::ChatRoom`] (type `ChatRoom`, package `chat`) pushes posted messages to its members'
//! client sessions.

pub mod chat;
pub mod counter;
pub mod greeter;

/// Generated protobuf messages of the examples.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    /// Package `counter`.
    pub mod counter {
        include!(concat!(env!("OUT_DIR"), "/counter.rs"));
    }
    /// Package `chat`.
    pub mod chat {
        include!(concat!(env!("OUT_DIR"), "/chat.rs"));
    }
    /// Package `greeter`.
    pub mod greeter {
        include!(concat!(env!("OUT_DIR"), "/greeter.rs"));
    }
}
