//! A real-etcd test fixture: Debian's `etcd` (package `etcd-server`) started on free ports with
//! a temporary data directory, stopped on drop; a three-member variant whose members can be
//! killed and restarted; TCP links that can be cut to simulate a blip; and the conformance
//! suite's factory. Behind the `fixture` feature (tests and benchmarks only).
//!
//! Test helpers report failure by panicking.

#![allow(clippy::unwrap_used, missing_docs)]

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{Client, CompactionOptions};
use tokio::net::{TcpListener as AsyncListener, TcpStream};
use tokio::task::JoinHandle;
use verse_core::testing::coordinator::{CoordinatorFactory, Link, TestCluster};

use crate::{EtcdCoordinator, EtcdOptions};

/// How long a member gets to become healthy.
const START_PATIENCE: Duration = Duration::from_secs(20);
/// Attempts with fresh ports when a port was taken between picking and binding.
const START_ATTEMPTS: usize = 5;

/// The `etcd` binary, or a panic saying how to install it (tests never skip).
pub fn etcd_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .expect("etcd not found on PATH: run `apt-get install etcd-server` (scripts/install-test-deps does)")
}

/// A port that was free a moment ago (bind 127.0.0.1:0, read, release).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self, initial_cluster: &str) {
        let log = File::create(self.data_dir.with_extension("log")).expect("etcd log file");
        let child = Command::new(etcd_binary())
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(self.client_url())
            .arg("--advertise-client-urls")
            .arg(self.client_url())
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{}", self.peer_port))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://127.0.0.1:{}", self.peer_port))
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--heartbeat-interval=10")
            .arg("--election-timeout=100")
            .stdout(Stdio::from(log.try_clone().expect("clone log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }
}

/// A running etcd cluster of one or three members, stopped (and its data deleted) on drop.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// One member.
    pub async fn single() -> Self {
        Self::start(1).await
    }

    /// Three members.
    pub async fn three() -> Self {
        Self::start(3).await
    }

    async fn start(size: usize) -> Self {
        for attempt in 1..=START_ATTEMPTS {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut members: Vec<Member> = (0..size)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: free_port(),
                    peer_port: free_port(),
                    data_dir: dir.path().join(format!("m{i}")),
                    child: None,
                })
                .collect();
            let initial_cluster = members
                .iter()
                .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
                .collect::<Vec<_>>()
                .join(",");
            for member in &mut members {
                member.spawn(&initial_cluster);
            }
            let mut cluster = EtcdCluster { members, initial_cluster, _dir: dir };
            if cluster.wait_healthy().await {
                return cluster;
            }
            tracing::warn!(attempt, "etcd did not start (port clash?); retrying on fresh ports");
            for member in &mut cluster.members {
                member.kill();
            }
        }
        panic!("etcd did not start after {START_ATTEMPTS} attempts");
    }

    /// Waits until a leader exists and every running member answers; false if a member died.
    async fn wait_healthy(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < START_PATIENCE {
            if self.members.iter_mut().any(|m| m.child.is_some() && m.exited()) {
                return false;
            }
            if self.leader_index().await.is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Client URLs of the running members.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().filter(|m| m.child.is_some()).map(Member::client_url).collect()
    }

    /// Client URLs of all members, running or not.
    pub fn all_endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// The client address of member `index`.
    pub fn client_addr(&self, index: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[index].client_port))
    }

    /// A plain etcd client on the running members.
    pub async fn client(&self) -> Client {
        Client::connect(self.endpoints(), None).await.expect("etcd client")
    }

    /// The index of the member that leads, if a running member knows one.
    pub async fn leader_index(&self) -> Option<usize> {
        for member in self.members.iter().filter(|m| m.child.is_some()) {
            let connect = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(200))
                .with_timeout(Duration::from_millis(300));
            let Ok(mut client) = Client::connect([member.client_url()], Some(connect)).await else {
                continue;
            };
            let Ok(status) = client.status().await else { continue };
            if status.leader() == 0 {
                continue;
            }
            // Find which member has the leader's id.
            for (index, other) in self.members.iter().enumerate() {
                if other.child.is_none() {
                    continue;
                }
                let connect = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_millis(200))
                    .with_timeout(Duration::from_millis(300));
                let Ok(mut c) = Client::connect([other.client_url()], Some(connect)).await else {
                    continue;
                };
                let Ok(s) = c.status().await else { continue };
                if s.header().map(|h| h.member_id()) == Some(status.leader()) {
                    return Some(index);
                }
            }
        }
        None
    }

    /// Kills member `index` (SIGKILL).
    pub fn kill(&mut self, index: usize) {
        self.members[index].kill();
    }

    /// Restarts member `index` on its data directory and ports, and waits for a leader.
    pub async fn restart(&mut self, index: usize) {
        let initial_cluster = self.initial_cluster.clone();
        self.members[index].spawn(&initial_cluster);
        assert!(self.wait_healthy().await, "etcd member {index} did not come back");
    }

    /// The current revision.
    pub async fn revision(&self) -> i64 {
        let mut client = self.client().await;
        let response = client.get("/", None).await.expect("read revision");
        response.header().map_or(0, |h| h.revision())
    }

    /// Compacts history up to the current revision.
    pub async fn compact(&self) {
        let revision = self.revision().await;
        let mut client = self.client().await;
        let options = CompactionOptions::new().with_physical();
        client.compact(revision, Some(options)).await.expect("compact");
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.kill();
        }
    }
}

/// A TCP forwarder in front of one etcd member whose connections can be cut.
pub struct CutLink {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl CutLink {
    /// Starts forwarding a free local port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = AsyncListener::bind("127.0.0.1:0").await.expect("bind link");
        let addr = listener.local_addr().expect("link addr");
        let cut = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (cut, connections) = (cut.clone(), connections.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    let mut tasks = connections.lock().unwrap();
                    tasks.retain(|t| !t.is_finished());
                    tasks.push(task);
                }
            }
        });
        CutLink { addr, cut, connections, accept }
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every connection and refuses new ones.
    pub fn partition(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Accepts connections again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for CutLink {
    fn drop(&mut self) {
        self.accept.abort();
        self.partition();
    }
}

/// Options for a test client of `endpoints` with `ttl`: short request timeout and stall
/// timeout so faults show quickly.
pub fn test_options(endpoints: Vec<String>, ttl: Duration) -> EtcdOptions {
    let mut options = EtcdOptions::new(endpoints, "/verse/test");
    options.lease_ttl = ttl;
    options.request_timeout = Duration::from_secs(2);
    options.watch_stall_timeout = Duration::from_secs(3);
    options
}

/// The conformance factory: a fresh single-member etcd per case.
#[derive(Debug, Default, Clone, Copy)]
pub struct EtcdFactory;

/// One case's etcd and the links of its clients.
pub struct EtcdTestCluster {
    etcd: EtcdCluster,
    links: Mutex<Vec<Arc<CutLink>>>,
}

impl EtcdTestCluster {
    fn link(&self, link: Link) -> Arc<CutLink> {
        self.links.lock().unwrap()[link.0].clone()
    }
}

#[async_trait]
impl CoordinatorFactory for EtcdFactory {
    type Cluster = EtcdTestCluster;

    async fn new_cluster(&self) -> EtcdTestCluster {
        EtcdTestCluster { etcd: EtcdCluster::single().await, links: Mutex::default() }
    }
}

#[async_trait]
impl TestCluster for EtcdTestCluster {
    type Client = EtcdCoordinator;

    async fn connect(&self, lease_ttl: Duration) -> (EtcdCoordinator, Link) {
        let link = Arc::new(CutLink::start(self.etcd.client_addr(0)).await);
        let options = test_options(vec![link.url()], lease_ttl);
        let client = EtcdCoordinator::connect(options).await.expect("connect");
        let mut links = self.links.lock().unwrap();
        links.push(link);
        (client, Link(links.len() - 1))
    }

    async fn partition(&self, link: Link) {
        self.link(link).partition();
    }

    async fn heal(&self, link: Link) {
        self.link(link).heal();
    }

    async fn compact(&self) {
        self.etcd.compact().await;
    }
}
