use std::rc::Rc;

use verse::prelude::*;

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

impl prost::Name for Empty {
    const NAME: &'static str = "Empty";
    const PACKAGE: &'static str = "test";
}

async fn pause() {}

#[derive(Default)]
struct Sticky;

#[verse::object]
impl Sticky {
    async fn hold(&mut self, _ctx: &CallContext, req: Empty) -> Result<Empty, MethodError> {
        let local = Rc::new(1);
        pause().await;
        drop(local);
        Ok(req)
    }
}

fn main() {}
