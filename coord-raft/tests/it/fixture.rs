//! A test cluster of in-process voters, with clients whose links can be cut.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use verse_coord_raft::access::{Answer, Query};
use verse_coord_raft::command::{Command, Reply};
use verse_coord_raft::{
    ClientOptions, GrpcNetwork, LocalRouter, RaftAccess, RaftCoordinator, RaftVoter, RemoteAccess,
    TcpIncoming, VoterConfig, VoterServer,
};
use verse_core::coordinator::{CoordError, Revision, WatchStream};
use verse_core::testing::coordinator::{CoordinatorFactory, Link, TestCluster};
use verse_core::{SystemClock, TokioBlockingExecutor};

/// Voter settings for tests: fast elections.
pub fn voter_config(id: u64, dir: &std::path::Path) -> VoterConfig {
    let mut config = VoterConfig::new(id, dir.join(format!("voter-{id}.redb")));
    config.heartbeat_interval = Duration::from_millis(30);
    config.election_timeout_min = Duration::from_millis(150);
    config.election_timeout_max = Duration::from_millis(300);
    config
}

/// Starts voter `id` on `router` with the system clock and tokio's blocking pool.
pub async fn start_voter(id: u64, dir: &std::path::Path, router: &LocalRouter) -> RaftVoter {
    RaftVoter::start(
        voter_config(id, dir),
        router,
        SystemClock::shared(),
        Arc::new(TokioBlockingExecutor),
    )
    .await
    .unwrap()
}

/// One client's link to the group: requests fail while it is cut.
pub struct CutLink {
    voter: Arc<dyn RaftAccess>,
    cut: Arc<AtomicBool>,
}

impl CutLink {
    fn check(&self) -> Result<(), CoordError> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(CoordError::Unavailable("link cut by the test".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl RaftAccess for CutLink {
    async fn propose(&self, command: Command) -> Result<Reply, CoordError> {
        self.check()?;
        let reply = self.voter.propose(command).await;
        // An answer that arrives after the cut is lost on the way.
        self.check()?;
        reply
    }

    async fn query(&self, query: Query) -> Result<Answer, CoordError> {
        self.check()?;
        self.voter.query(query).await
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream, CoordError> {
        self.check()?;
        let cut = Arc::clone(&self.cut);
        let stream = self.voter.watch(from).await?;
        // While cut, events are held back (not lost): the stream resumes after the heal.
        Ok(stream
            .then(move |item| {
                let cut = Arc::clone(&cut);
                async move {
                    while cut.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    item
                }
            })
            .boxed())
    }
}

/// Builds clusters of this many in-process voters.
pub struct Voters(pub u64);

/// A cluster of in-process voters in a temporary directory; clients connect to the voters in
/// turn (a client of a follower is served through forwarding to the Raft leader).
pub struct VoterCluster {
    pub voters: Vec<Arc<RaftVoter>>,
    links: Mutex<Vec<Arc<AtomicBool>>>,
    _dir: tempfile::TempDir,
}

impl VoterCluster {
    pub async fn start(count: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let router = LocalRouter::new();
        let mut voters = Vec::new();
        for id in 1..=count {
            voters.push(Arc::new(start_voter(id, dir.path(), &router).await));
        }
        let ids: Vec<u64> = (1..=count).collect();
        voters[0].initialize(&ids).await.unwrap();
        for voter in &voters {
            voter.wait_for_leader(Duration::from_secs(10)).await.unwrap();
        }
        VoterCluster { voters, links: Mutex::new(Vec::new()), _dir: dir }
    }

    /// A client of voter `index` over a new link.
    pub async fn client_of(&self, index: usize, lease_ttl: Duration) -> (RaftCoordinator, Link) {
        let cut = Arc::new(AtomicBool::new(false));
        let mut links = self.links.lock().await;
        links.push(Arc::clone(&cut));
        let voter: Arc<dyn RaftAccess> = self.voters[index].clone();
        let access = CutLink { voter, cut };
        let client = RaftCoordinator::new(
            Arc::new(access),
            SystemClock::shared(),
            ClientOptions::new(lease_ttl),
        );
        (client, Link(links.len() - 1))
    }
}

#[async_trait]
impl CoordinatorFactory for Voters {
    type Cluster = VoterCluster;

    async fn new_cluster(&self) -> VoterCluster {
        VoterCluster::start(self.0).await
    }
}

#[async_trait]
impl TestCluster for VoterCluster {
    type Client = RaftCoordinator;

    async fn connect(&self, lease_ttl: Duration) -> (RaftCoordinator, Link) {
        let index = self.links.lock().await.len() % self.voters.len();
        self.client_of(index, lease_ttl).await
    }

    async fn partition(&self, link: Link) {
        self.links.lock().await[link.0].store(true, Ordering::SeqCst);
    }

    async fn heal(&self, link: Link) {
        self.links.lock().await[link.0].store(false, Ordering::SeqCst);
    }

    async fn compact(&self) {
        self.voters[0].compact_history().await.unwrap();
    }
}

/// Starts voter `id` over gRPC on a free loopback port; returns it with its address. The
/// server stops when `stop` is cancelled.
pub async fn start_grpc_voter(
    id: u64,
    dir: &std::path::Path,
    seeds: Vec<String>,
    stop: &CancellationToken,
) -> Result<(RaftVoter, String), verse_coord_raft::VoterError> {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let address = incoming.local_addr().unwrap().to_string();
    let network = GrpcNetwork::new(seeds);
    let voter = RaftVoter::start_grpc(
        voter_config(id, dir),
        &network,
        SystemClock::shared(),
        Arc::new(TokioBlockingExecutor),
    )
    .await?;
    let server = VoterServer::new(&voter);
    tokio::spawn(server.serve(incoming, stop.clone().cancelled_owned()));
    Ok((voter, address))
}

/// Builds clusters of this many voters served over gRPC on loopback TCP; clients are members
/// that are not voters ([`RemoteAccess`]).
pub struct GrpcVoters(pub u64);

/// Voters over gRPC in a temporary directory; each client reaches one voter through the
/// coordinator service, in turn (a follower forwards to the Raft leader over gRPC).
pub struct GrpcCluster {
    pub voters: Vec<Arc<RaftVoter>>,
    pub addresses: Vec<String>,
    pub stop: CancellationToken,
    links: Mutex<Vec<Arc<AtomicBool>>>,
    pub dir: tempfile::TempDir,
}

impl Drop for GrpcCluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl GrpcCluster {
    pub async fn start(count: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        let mut voters = Vec::new();
        let mut addresses = Vec::new();
        for id in 1..=count {
            let (voter, address) =
                start_grpc_voter(id, dir.path(), Vec::new(), &stop).await.unwrap();
            voters.push(Arc::new(voter));
            addresses.push(address);
        }
        let members: Vec<(u64, String)> = (1..=count).zip(addresses.iter().cloned()).collect();
        voters[0].initialize_with_addresses(&members).await.unwrap();
        for voter in &voters {
            voter.wait_for_leader(Duration::from_secs(10)).await.unwrap();
        }
        GrpcCluster { voters, addresses, stop, links: Mutex::new(Vec::new()), dir }
    }

    /// A non-voter client whose first choice is voter `index`.
    pub async fn client_of(&self, index: usize, lease_ttl: Duration) -> (RaftCoordinator, Link) {
        let cut = Arc::new(AtomicBool::new(false));
        let mut links = self.links.lock().await;
        links.push(Arc::clone(&cut));
        let mut addresses = self.addresses.clone();
        addresses.rotate_left(index);
        let voter: Arc<dyn RaftAccess> = Arc::new(RemoteAccess::new(addresses));
        let access = CutLink { voter, cut };
        let client = RaftCoordinator::new(
            Arc::new(access),
            SystemClock::shared(),
            ClientOptions::new(lease_ttl),
        );
        (client, Link(links.len() - 1))
    }
}

#[async_trait]
impl CoordinatorFactory for GrpcVoters {
    type Cluster = GrpcCluster;

    async fn new_cluster(&self) -> GrpcCluster {
        GrpcCluster::start(self.0).await
    }
}

#[async_trait]
impl TestCluster for GrpcCluster {
    type Client = RaftCoordinator;

    async fn connect(&self, lease_ttl: Duration) -> (RaftCoordinator, Link) {
        let index = self.links.lock().await.len() % self.voters.len();
        self.client_of(index, lease_ttl).await
    }

    async fn partition(&self, link: Link) {
        self.links.lock().await[link.0].store(true, Ordering::SeqCst);
    }

    async fn heal(&self, link: Link) {
        self.links.lock().await[link.0].store(false, Ordering::SeqCst);
    }

    async fn compact(&self) {
        self.voters[0].compact_history().await.unwrap();
    }
}
