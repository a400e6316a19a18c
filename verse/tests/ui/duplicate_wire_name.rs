use verse::prelude::*;

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

impl prost::Name for Empty {
    const NAME: &'static str = "Empty";
    const PACKAGE: &'static str = "test";
}

#[derive(Default)]
struct Store;

#[verse::object]
impl Store {
    async fn get_item(&mut self, _ctx: &CallContext, req: Empty) -> Result<Empty, MethodError> {
        Ok(req)
    }

    #[method(name = "GetItem")]
    async fn fetch(&mut self, _ctx: &CallContext, req: Empty) -> Result<Empty, MethodError> {
        Ok(req)
    }
}

fn main() {}
