//! The echo pieces the call benchmarks share: the `Echo` object (the subject's callee), the
//! bare tonic protocol of the baselines (`bench.echo.v1`), and the bare echo server.

use tonic::{Request, Response, Status};
use verse::prelude::*;

use crate::Blob;

/// The baselines' bare tonic protocol (`proto/echo.proto`).
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("bench.echo.v1");
}

/// The benchmark object: echoes a 64-byte blob.
#[derive(Default)]
pub struct Echo;

#[verse::object]
impl Echo {
    async fn echo(&mut self, _ctx: &CallContext, req: Blob) -> Result<Blob, MethodError> {
        Ok(Blob { data: req.data })
    }
}

/// The baseline echo server: answers each request with its blob.
pub struct Bare;

#[tonic::async_trait]
impl proto::bare_echo_server::BareEcho for Bare {
    async fn echo(
        &self,
        request: Request<proto::EchoBlob>,
    ) -> Result<Response<proto::EchoBlob>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}
