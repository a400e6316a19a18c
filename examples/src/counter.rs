//! The example counter (GoVerse's counter sample, message for message).

use verse::prelude::*;

use crate::proto::counter::{
    CounterResponse, CounterState, DecrementRequest, GetRequest, IncrementRequest, ResetRequest,
};

/// A counter that starts at 0. Its object id is its name.
#[derive(Debug, Default)]
pub struct Counter {
    name: String,
    value: i32,
}

impl Counter {
    fn response(&self) -> CounterResponse {
        CounterResponse { name: self.name.clone(), value: self.value }
    }
}

#[verse::object(descriptors = crate::FILE_DESCRIPTOR_SET)]
impl Counter {
    #[init]
    fn new(id: &str) -> Self {
        Counter { name: id.to_owned(), value: 0 }
    }

    #[snapshot]
    fn snapshot(&self) -> CounterState {
        CounterState { value: self.value }
    }

    #[restore]
    fn restore(&mut self, state: CounterState) {
        self.value = state.value;
    }

    /// Adds `amount` (wrapping on overflow is refused).
    async fn increment(
        &mut self,
        _ctx: &CallContext,
        req: IncrementRequest,
    ) -> Result<CounterResponse, MethodError> {
        self.value = self
            .value
            .checked_add(req.amount)
            .ok_or_else(|| MethodError::new(11, format!("counter {} would overflow", self.name)))?;
        Ok(self.response())
    }

    /// Subtracts `amount`.
    async fn decrement(
        &mut self,
        _ctx: &CallContext,
        req: DecrementRequest,
    ) -> Result<CounterResponse, MethodError> {
        self.value = self
            .value
            .checked_sub(req.amount)
            .ok_or_else(|| MethodError::new(11, format!("counter {} would overflow", self.name)))?;
        Ok(self.response())
    }

    /// Reads the value.
    #[idempotent]
    async fn get(
        &mut self,
        _ctx: &CallContext,
        _req: GetRequest,
    ) -> Result<CounterResponse, MethodError> {
        Ok(self.response())
    }

    /// Sets the value back to 0.
    #[idempotent]
    async fn reset(
        &mut self,
        _ctx: &CallContext,
        _req: ResetRequest,
    ) -> Result<CounterResponse, MethodError> {
        self.value = 0;
        Ok(self.response())
    }
}
