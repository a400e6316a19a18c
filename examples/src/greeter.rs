//! The greeter of `docs/GET_STARTED.md`: state, a hook, a timer and a nested call.

use std::time::Duration;

use verse::prelude::*;

use crate::proto::greeter::{GreeterState, HelloReply, HelloRequest};

/// Greets callers and counts its greetings.
#[derive(Debug, Default)]
pub struct Greeter {
    count: u32,
    ticks: u64,
}

#[verse::object(descriptors = crate::FILE_DESCRIPTOR_SET)]
impl Greeter {
    #[snapshot]
    fn snapshot(&self) -> GreeterState {
        GreeterState { count: self.count }
    }

    #[restore]
    fn restore(&mut self, state: GreeterState) {
        self.count = state.count;
    }

    #[on_activate]
    async fn started(&mut self, ctx: &CallContext) -> Result<(), CallError> {
        // A timer delivers a `Tick` turn every minute while the greeter is active.
        ctx.timer(Duration::from_secs(60), "Tick")?;
        Ok(())
    }

    /// Answers `Hello, <name>!`.
    async fn hello(
        &mut self,
        ctx: &CallContext,
        req: HelloRequest,
    ) -> Result<HelloReply, MethodError> {
        if req.name.is_empty() {
            return Err(MethodError::new(3, "name must not be empty"));
        }
        self.count += 1;
        Ok(HelloReply {
            message: format!("Hello, {}! (from {})", req.name, ctx.id()),
            count: self.count,
        })
    }

    /// Asks another greeter to greet on our behalf (a nested, awaited call).
    async fn relay(
        &mut self,
        ctx: &CallContext,
        req: HelloRequest,
    ) -> Result<HelloReply, CallError> {
        let other = format!("{}-relay", ctx.id());
        ctx.get::<Greeter>(other).hello(req).await
    }

    /// Timer ticks arrive as turns too.
    async fn tick(&mut self, _ctx: &CallContext, _tick: Tick) -> Result<HelloReply, MethodError> {
        self.ticks += 1;
        Ok(HelloReply::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn greets_counts_and_relays() {
        let node = NodeBuilder::new(NodeConfig::default()).object::<Greeter>().start().unwrap();
        let greeter = node.client().get::<Greeter>("greeter-1");

        let reply = greeter.hello(HelloRequest { name: "Ada".into() }).await.unwrap();
        assert_eq!(reply.message, "Hello, Ada! (from greeter-1)");
        assert_eq!(reply.count, 1);

        let relayed = greeter.relay(HelloRequest { name: "Bob".into() }).await.unwrap();
        assert_eq!(relayed.message, "Hello, Bob! (from greeter-1-relay)");

        let error = greeter.hello(HelloRequest { name: String::new() }).await.unwrap_err();
        assert!(matches!(error, CallError::Method { code: 3, .. }));
        node.shutdown().await;
    }
}
