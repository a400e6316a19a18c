use verse::prelude::*;

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

impl prost::Name for Empty {
    const NAME: &'static str = "Empty";
    const PACKAGE: &'static str = "test";
}

#[derive(Default)]
struct Reader;

#[verse::object]
impl Reader {
    async fn read(&self, _ctx: &CallContext, req: Empty) -> Result<Empty, MethodError> {
        Ok(req)
    }
}

fn main() {}
