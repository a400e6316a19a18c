//! Example object types hosted by `verse dev` and used in the docs and tests.
//!
//! [`counter::Counter`] is the counter of GoVerse's counter sample: object type `Counter`,
//! methods `Increment`, `Decrement`, `Get` and `Reset`, each answering `CounterResponse`.

pub mod counter;
pub mod greeter;

/// Generated protobuf messages of the examples.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    /// Package `counter`.
    pub mod counter {
        include!(concat!(env!("OUT_DIR"), "/counter.rs"));
    }
    /// Package `greeter`.
    pub mod greeter {
        include!(concat!(env!("OUT_DIR"), "/greeter.rs"));
    }
}
