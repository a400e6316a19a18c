//! The default network of the coordinator's gRPC services: the tokio TCP listener and
//! connector, and the adaptors that let tonic take injected ones. They are the node transport's
//! (`verse_transport::net`), shared so both gRPC stacks plug into the simulation the same way;
//! no module of this crate names `tokio::net`.

pub use verse_transport::net::{BoxError, HyperConnector, ServerIo, TcpConnector, TcpIncoming};
