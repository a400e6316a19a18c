use verse::prelude::*;

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

impl prost::Name for Empty {
    const NAME: &'static str = "Empty";
    const PACKAGE: &'static str = "test";
}

#[derive(Clone, PartialEq, prost::Message)]
struct State {}

#[derive(Default)]
struct Odd;

#[verse::object]
impl Odd {
    async fn not_result(&mut self, _ctx: &CallContext, req: Empty) -> Empty {
        req
    }

    #[idempotent]
    fn not_async(&mut self) {}

    #[snapshot]
    fn save(&self) -> State {
        State {}
    }
}

fn main() {}
