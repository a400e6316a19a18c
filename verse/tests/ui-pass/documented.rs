//! Generated references are documented: this passes `#![deny(missing_docs)]`.
#![deny(missing_docs)]

use verse::prelude::*;

/// A request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    /// Text.
    #[prost(string, tag = "1")]
    pub text: String,
}

impl prost::Name for Ping {
    const NAME: &'static str = "Ping";
    const PACKAGE: &'static str = "test";
}

/// An object.
#[derive(Default)]
pub struct Echo;

#[verse::object]
impl Echo {
    /// Echoes.
    pub async fn echo(&mut self, _ctx: &CallContext, req: Ping) -> Result<Ping, MethodError> {
        Ok(req)
    }

    #[idempotent]
    async fn echo_again(&mut self, _ctx: &CallContext, req: Ping) -> Result<Ping, CallError> {
        Ok(req)
    }
}

fn main() {
    let _ = <Echo as verse::Object>::methods();
    let _: fn(&EchoRef) -> &str = EchoRef::id;
}
