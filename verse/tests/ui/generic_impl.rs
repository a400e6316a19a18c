use verse::prelude::*;

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

impl prost::Name for Empty {
    const NAME: &'static str = "Empty";
    const PACKAGE: &'static str = "test";
}

#[derive(Default)]
struct Holder<T>(T);

#[verse::object]
impl<T: Send + 'static> Holder<T> {
    async fn get(&mut self, _ctx: &CallContext, req: Empty) -> Result<Empty, MethodError> {
        Ok(req)
    }
}

#[derive(Default)]
struct Bounded<T>(T);

#[verse::object]
impl Bounded<u32>
where
    u32: Send,
{
    async fn get(&mut self, _ctx: &CallContext, req: Empty) -> Result<Empty, MethodError> {
        Ok(req)
    }
}

fn main() {}
