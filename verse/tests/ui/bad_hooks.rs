use verse::prelude::*;

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

impl prost::Name for Empty {
    const NAME: &'static str = "Empty";
    const PACKAGE: &'static str = "test";
}

#[derive(Default)]
struct Hooked;

#[verse::object]
impl Hooked {
    #[on_activate]
    fn start(&mut self, _ctx: &CallContext) -> Result<(), MethodError> {
        Ok(())
    }

    #[on_deactivate]
    async fn stop(&mut self, _ctx: &CallContext) -> Result<(), MethodError> {
        Ok(())
    }

    #[on_deactivate]
    #[idempotent]
    async fn stop_again(&mut self, _ctx: &CallContext) -> Result<(), MethodError> {
        Ok(())
    }

    #[init]
    fn new(&self, id: &str) -> Self {
        let _ = id;
        Hooked
    }

    async fn id(&mut self, _ctx: &CallContext, req: Empty) -> Result<Empty, MethodError> {
        Ok(req)
    }

    async fn selfish(&mut self, _ctx: &CallContext, req: Empty) -> Result<Self, MethodError> {
        let _ = req;
        Ok(Hooked)
    }
}

#[verse::object]
struct NotAnImpl;

#[verse::object(name = "", color = "blue")]
impl NotAnImpl {}

fn main() {}
