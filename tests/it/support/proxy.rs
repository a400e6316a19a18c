//! A TCP proxy whose connections the test can cut, or make swallow everything the server
//! sends (so a call reaches the server and runs, and its response never arrives).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const PASS: u8 = 0;
const SWALLOW: u8 = 1;
const CUT: u8 = 2;

/// The proxy (see the module docs); stops on drop.
pub struct Proxy {
    address: SocketAddr,
    mode: Arc<AtomicU8>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Forwards a free local port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let address = listener.local_addr().expect("proxy address");
        let mode = Arc::new(AtomicU8::new(PASS));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (mode, connections) = (mode.clone(), connections.clone());
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if mode.load(Ordering::SeqCst) == CUT {
                        drop(inbound);
                        continue;
                    }
                    let Ok(outbound) = TcpStream::connect(upstream).await else { continue };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (mut in_read, mut in_write) = inbound.into_split();
                    let (mut out_read, mut out_write) = outbound.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut in_read, &mut out_write).await;
                    });
                    let down = tokio::spawn({
                        let mode = mode.clone();
                        async move {
                            let mut buffer = vec![0u8; 16 * 1024];
                            loop {
                                let Ok(read) = out_read.read(&mut buffer).await else { return };
                                if read == 0 {
                                    return;
                                }
                                if mode.load(Ordering::SeqCst) == SWALLOW {
                                    continue;
                                }
                                if in_write.write_all(&buffer[..read]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                    let mut tasks = connections.lock().expect("connections");
                    tasks.retain(|t| !t.is_finished());
                    tasks.push(up);
                    tasks.push(down);
                }
            }
        });
        Proxy { address, mode, connections, accept }
    }

    /// The address clients connect to.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// From now on, everything the server sends is dropped (requests still pass).
    pub fn swallow_responses(&self) {
        self.mode.store(SWALLOW, Ordering::SeqCst);
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.mode.store(CUT, Ordering::SeqCst);
        for task in self.connections.lock().expect("connections").drain(..) {
            task.abort();
        }
    }

    /// Passes everything again.
    pub fn heal(&self) {
        self.mode.store(PASS, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
