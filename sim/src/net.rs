//! The simulated network seen by the real code: turmoil's TCP listener as the incoming stream
//! of the tonic servers (`NodeServer::serve`, `VoterServer::serve`) and turmoil's TCP connector
//! as the `tower` connector of the tonic clients (`NodeClient`, `GrpcNetwork`, `RemoteAccess`).
//! Peers are addressed by host name (`node1:7000`), resolved by turmoil's DNS.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tonic::transport::Uri;
use tower_service::Service;
use turmoil::net::{TcpListener, TcpStream};

/// Binds `0.0.0.0:port` on the current simulated host and yields its accepted connections.
pub async fn incoming(port: u16) -> io::Result<impl Stream<Item = io::Result<TcpStream>> + Send> {
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    Ok(futures::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(stream, _)| stream);
        Some((next, listener))
    }))
}

/// Connects to `host:port` of a URI over turmoil's simulated TCP.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimConnector;

impl Service<Uri> for SimConnector {
    type Response = TcpStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let authority = uri.authority().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("no host:port in {uri}"))
            })?;
            TcpStream::connect(authority.as_str().to_owned()).await
        })
    }
}
