//! The default network: tokio TCP listener and connector, and the adaptors that let tonic take
//! injected ones ([`HyperConnector`] for channels, [`ServerIo`] for servers). This is the only
//! module of the crate that names `tokio::net`; everything else takes an injected incoming stream
//! (server) or a `tower` connector (client), so the simulation can plug in its own network. The
//! coordinator's gRPC services (`verse-coord-raft`) use the same pieces.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Uri;
use tonic::transport::server::Connected;
use tower_service::Service;

/// The error type of connectors adapted for tonic.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

/// Adapts a connector of tokio byte streams to the hyper streams tonic's channel takes.
#[derive(Clone)]
pub struct HyperConnector<C>(pub C);

impl<C> Service<Uri> for HyperConnector<C>
where
    C: Service<Uri>,
    C::Response: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = TokioIo<C::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connect = self.0.call(uri);
        Box::pin(async move { connect.await.map(TokioIo::new).map_err(Into::into) })
    }
}

/// An injected connection as tonic's server takes it (tonic asks each connection for its
/// peer info; injected connections have none to give).
pub struct ServerIo<IO>(pub IO);

impl<IO> Connected for ServerIo<IO> {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl<IO: AsyncRead + Unpin> AsyncRead for ServerIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ServerIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
