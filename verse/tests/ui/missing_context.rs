use verse::prelude::*;

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

impl prost::Name for Empty {
    const NAME: &'static str = "Empty";
    const PACKAGE: &'static str = "test";
}

#[derive(Default)]
struct Forgetful;

#[verse::object]
impl Forgetful {
    async fn no_context(&mut self, req: Empty) -> Result<Empty, MethodError> {
        Ok(req)
    }

    async fn extra(
        &mut self,
        _ctx: &CallContext,
        req: Empty,
        more: Empty,
    ) -> Result<Empty, MethodError> {
        let _ = more;
        Ok(req)
    }

    async fn context_last(&mut self, req: Empty, _ctx: &CallContext) -> Result<Empty, MethodError> {
        Ok(req)
    }
}

fn main() {}
