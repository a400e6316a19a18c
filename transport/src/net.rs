//! The default network: tokio TCP listener and connector. This is the only module of the crate
//! that names `tokio::net`; everything else takes an injected incoming stream (server) or a
//! `tower` connector (client), so the simulation can plug in its own network.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Uri;
use tower_service::Service;

/// Accepted TCP connections of a listener, with `TCP_NODELAY` set: the default incoming stream
/// of [`crate::NodeServer`].
#[derive(Debug)]
pub struct TcpIncoming {
    listener: TcpListener,
}

impl TcpIncoming {
    /// Binds `addr` (use port 0 for a free port; see [`TcpIncoming::local_addr`]).
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(TcpIncoming { listener: TcpListener::bind(addr).await? })
    }

    /// Wraps a bound listener.
    pub fn from_listener(listener: TcpListener) -> Self {
        TcpIncoming { listener }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Stream for TcpIncoming {
    type Item = io::Result<TcpStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.listener.poll_accept(cx) {
            Poll::Ready(Ok((stream, _))) => {
                // Small request/response messages must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                Poll::Ready(Some(Ok(stream)))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(error))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Connects to `host:port` of the URI over TCP with `TCP_NODELAY`: the default connector of
/// [`crate::NodeClient`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Service<Uri> for TcpConnector {
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
            let stream = TcpStream::connect(authority.as_str()).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }
}
