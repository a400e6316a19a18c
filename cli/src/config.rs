//! `verse node` settings: command-line flags (with `VERSE_*` environment variables) over a
//! TOML file over defaults, resolved into one [`NodeSettings`].
//!
//! Every flag is optional in the parser so the merge can tell "given" from "defaulted":
//! flag or environment variable first, then the file's key of the same name (with `_` for
//! `-`), then the documented default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The default node-protocol listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7100";
/// The default ops HTTP listen address.
pub const DEFAULT_OPS_LISTEN: &str = "127.0.0.1:9100";
/// The default embedded Raft listen address (voters only).
pub const DEFAULT_RAFT_LISTEN: &str = "127.0.0.1:7200";
/// The default lease TTL, in seconds.
pub const DEFAULT_LEASE_TTL_SECS: u64 = 10;
/// The default shard count (GoVerse's).
pub const DEFAULT_SHARDS: u32 = verse::shard::DEFAULT_SHARD_COUNT;

/// Flags of `verse node`. Each may also come from the TOML file given by `--config`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NodeArgs {
    /// A TOML file with any of the settings below (keys as the flags, `_` for `-`).
    #[arg(long, env = "VERSE_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id, unique in the cluster [default: the host name].
    #[arg(long, env = "VERSE_NODE_ID")]
    pub node_id: Option<String>,
    /// Node-protocol (gRPC) listen address; port 0 picks a free port [default: 127.0.0.1:7100].
    #[arg(long, env = "VERSE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The address other members reach the node protocol at [default: the bound address].
    #[arg(long, env = "VERSE_ADVERTISE")]
    pub advertise: Option<String>,
    /// Ops HTTP listen address (/metrics, /healthz, /readyz) [default: 127.0.0.1:9100].
    #[arg(long, env = "VERSE_OPS_LISTEN")]
    pub ops_listen: Option<SocketAddr>,
    /// The coordinator: `etcd`, `raft-voter` (an embedded voter in this process) or `raft`
    /// (a member reaching voters over gRPC).
    #[arg(long, env = "VERSE_COORDINATOR")]
    pub coordinator: Option<CoordinatorKind>,
    /// etcd client endpoints, comma-separated (`http://host:port`).
    #[arg(long, env = "VERSE_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Option<Vec<String>>,
    /// The etcd key prefix of this cluster [default: /verse].
    #[arg(long, env = "VERSE_ETCD_PREFIX")]
    pub etcd_prefix: Option<String>,
    /// This voter's Raft id (raft-voter).
    #[arg(long, env = "VERSE_RAFT_ID")]
    pub raft_id: Option<u64>,
    /// The voters of the group, `id=host:port` comma-separated, this one included (raft-voter).
    #[arg(long, env = "VERSE_RAFT_PEERS", value_delimiter = ',')]
    pub raft_peers: Option<Vec<String>>,
    /// Raft listen address of this voter [default: 127.0.0.1:7200].
    #[arg(long, env = "VERSE_RAFT_LISTEN")]
    pub raft_listen: Option<SocketAddr>,
    /// The address peers reach this voter at [default: its entry in --raft-peers, else the
    /// bound address].
    #[arg(long, env = "VERSE_RAFT_ADVERTISE")]
    pub raft_advertise: Option<String>,
    /// Initialise a new Raft group of --raft-peers (or of this voter alone); idempotent.
    #[arg(long, env = "VERSE_RAFT_INIT")]
    pub raft_init: bool,
    /// Voter addresses a `raft` member reaches the group through, comma-separated.
    #[arg(long, env = "VERSE_RAFT_ENDPOINTS", value_delimiter = ',')]
    pub raft_endpoints: Option<Vec<String>>,
    /// Directory of the voter's log (raft-voter) and of the redb store [default: ./verse-data].
    #[arg(long, env = "VERSE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The state store: `memory`, `redb` or `postgres` [default: memory].
    #[arg(long, env = "VERSE_STORE")]
    pub store: Option<StoreKind>,
    /// The redb file [default: <data-dir>/state.redb].
    #[arg(long, env = "VERSE_REDB_PATH")]
    pub redb_path: Option<PathBuf>,
    /// PostgreSQL connection string (`postgres://user@host:port/db` or `host=… user=…`).
    #[arg(long, env = "VERSE_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// The PostgreSQL schema holding the store's tables [default: verse].
    #[arg(long, env = "VERSE_POSTGRES_SCHEMA")]
    pub postgres_schema: Option<String>,
    /// Lease TTL in seconds [default: 10].
    #[arg(long, env = "VERSE_LEASE_TTL")]
    pub lease_ttl: Option<u64>,
    /// Shard count; every node of a cluster must agree [default: 8192].
    #[arg(long, env = "VERSE_SHARDS")]
    pub shards: Option<u32>,
    /// Longest a drain on SIGTERM waits for the shards to move away, in seconds [default: 120].
    #[arg(long, env = "VERSE_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<u64>,
    /// Join a cluster that has other object-hosting nodes although this node's store is
    /// node-local (memory or redb): state is lost whenever a shard moves.
    #[arg(long, env = "VERSE_ALLOW_STATE_LOSS")]
    pub allow_state_loss: bool,
    /// On SIGTERM, remove operator pins to this node so its pinned shards move away too
    /// (without it a node holding pins stops without draining, its pinned shards unowned
    /// until it returns).
    #[arg(long, env = "VERSE_UNPIN_ON_DRAIN")]
    pub unpin_on_drain: bool,
    /// Append every turn's interval (object, node, incarnation, epoch, start, end on
    /// CLOCK_MONOTONIC) to this file, unbuffered: for the invariant checker of the process
    /// tests.
    #[arg(long, env = "VERSE_TURN_LOG")]
    pub turn_log: Option<PathBuf>,
}

/// Which coordinator a node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CoordinatorKind {
    /// etcd.
    Etcd,
    /// The embedded Raft group, with a voter in this process.
    RaftVoter,
    /// The embedded Raft group, reached over gRPC (this process is not a voter).
    Raft,
}

/// Which state store a node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// In memory, node-local: state is lost when the process exits or a shard moves away.
    Memory,
    /// redb, node-local.
    Redb,
    /// PostgreSQL, shared by every node.
    Postgres,
}

/// The TOML file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<String>,
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    ops_listen: Option<SocketAddr>,
    coordinator: Option<CoordinatorKind>,
    etcd_endpoints: Option<Vec<String>>,
    etcd_prefix: Option<String>,
    raft_id: Option<u64>,
    raft_peers: Option<Vec<String>>,
    raft_listen: Option<SocketAddr>,
    raft_advertise: Option<String>,
    raft_init: Option<bool>,
    raft_endpoints: Option<Vec<String>>,
    data_dir: Option<PathBuf>,
    store: Option<StoreKind>,
    redb_path: Option<PathBuf>,
    postgres_url: Option<String>,
    postgres_schema: Option<String>,
    lease_ttl: Option<u64>,
    shards: Option<u32>,
    drain_timeout: Option<u64>,
    allow_state_loss: Option<bool>,
    unpin_on_drain: Option<bool>,
    turn_log: Option<PathBuf>,
}

/// How the node reaches its coordinator, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordinatorSettings {
    /// etcd at `endpoints`, keys under `prefix`.
    Etcd {
        /// Client endpoints.
        endpoints: Vec<String>,
        /// Key prefix.
        prefix: String,
    },
    /// An embedded voter.
    RaftVoter {
        /// Its Raft id.
        id: u64,
        /// The group's voters (id, address), possibly empty when initialising alone.
        peers: Vec<(u64, String)>,
        /// Where its Raft server listens.
        listen: SocketAddr,
        /// The address peers reach it at, if given.
        advertise: Option<String>,
        /// Whether to initialise the group.
        init: bool,
    },
    /// A member reaching voters at `endpoints`.
    Raft {
        /// Voter addresses.
        endpoints: Vec<String>,
    },
}

/// The state store, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// In memory.
    Memory,
    /// A redb file.
    Redb {
        /// The file.
        path: PathBuf,
    },
    /// PostgreSQL.
    Postgres {
        /// Connection string.
        url: String,
        /// Schema.
        schema: String,
    },
}

/// Everything `verse node` needs, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// Node id.
    pub node_id: String,
    /// Node-protocol listen address.
    pub listen: SocketAddr,
    /// Advertised node-protocol address, if given.
    pub advertise: Option<String>,
    /// Ops HTTP listen address.
    pub ops_listen: SocketAddr,
    /// Coordinator.
    pub coordinator: CoordinatorSettings,
    /// Data directory.
    pub data_dir: PathBuf,
    /// State store.
    pub store: StoreSettings,
    /// Lease TTL.
    pub lease_ttl: Duration,
    /// Shard count.
    pub shards: u32,
    /// Drain bound.
    pub drain_timeout: Duration,
    /// Whether a node-local store may join a cluster with other object-hosting nodes.
    pub allow_state_loss: bool,
    /// Whether a SIGTERM drain first removes the operator pins to this node.
    pub unpin_on_drain: bool,
    /// Where turn intervals are logged, if anywhere.
    pub turn_log: Option<PathBuf>,
}

impl NodeArgs {
    /// Reads the `--config` file, if any, and resolves the settings.
    pub fn resolve(self) -> anyhow::Result<NodeSettings> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        self.merge(file)
    }

    fn merge(self, file: FileConfig) -> anyhow::Result<NodeSettings> {
        let node_id = match self.node_id.or(file.node_id) {
            Some(id) => id,
            None => default_node_id(),
        };
        let parse = |text: &str| text.parse::<SocketAddr>().context("a built-in default address");
        let listen = self.listen.or(file.listen).map_or_else(|| parse(DEFAULT_LISTEN), Ok)?;
        let ops_listen =
            self.ops_listen.or(file.ops_listen).map_or_else(|| parse(DEFAULT_OPS_LISTEN), Ok)?;
        let data_dir = self.data_dir.or(file.data_dir).unwrap_or_else(|| "verse-data".into());
        let coordinator = match self.coordinator.or(file.coordinator) {
            None => bail!("--coordinator is required (etcd, raft-voter or raft)"),
            Some(CoordinatorKind::Etcd) => {
                let endpoints = self.etcd_endpoints.or(file.etcd_endpoints).unwrap_or_default();
                if endpoints.is_empty() {
                    bail!("--coordinator etcd needs --etcd-endpoints");
                }
                let prefix =
                    self.etcd_prefix.or(file.etcd_prefix).unwrap_or_else(|| "/verse".into());
                CoordinatorSettings::Etcd { endpoints, prefix }
            }
            Some(CoordinatorKind::RaftVoter) => {
                let Some(id) = self.raft_id.or(file.raft_id) else {
                    bail!("--coordinator raft-voter needs --raft-id");
                };
                let peers = self
                    .raft_peers
                    .or(file.raft_peers)
                    .unwrap_or_default()
                    .iter()
                    .map(|peer| parse_peer(peer))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let listen = self
                    .raft_listen
                    .or(file.raft_listen)
                    .map_or_else(|| parse(DEFAULT_RAFT_LISTEN), Ok)?;
                let advertise = self.raft_advertise.or(file.raft_advertise);
                let init = self.raft_init || file.raft_init.unwrap_or(false);
                CoordinatorSettings::RaftVoter { id, peers, listen, advertise, init }
            }
            Some(CoordinatorKind::Raft) => {
                let endpoints = self.raft_endpoints.or(file.raft_endpoints).unwrap_or_default();
                if endpoints.is_empty() {
                    bail!("--coordinator raft needs --raft-endpoints");
                }
                CoordinatorSettings::Raft { endpoints }
            }
        };
        let store = match self.store.or(file.store).unwrap_or(StoreKind::Memory) {
            StoreKind::Memory => StoreSettings::Memory,
            StoreKind::Redb => StoreSettings::Redb {
                path: self
                    .redb_path
                    .or(file.redb_path)
                    .unwrap_or_else(|| data_dir.join("state.redb")),
            },
            StoreKind::Postgres => {
                let Some(url) = self.postgres_url.or(file.postgres_url) else {
                    bail!("--store postgres needs --postgres-url");
                };
                let schema =
                    self.postgres_schema.or(file.postgres_schema).unwrap_or_else(|| "verse".into());
                StoreSettings::Postgres { url, schema }
            }
        };
        let lease_ttl = self.lease_ttl.or(file.lease_ttl).unwrap_or(DEFAULT_LEASE_TTL_SECS);
        if lease_ttl == 0 {
            bail!("--lease-ttl must be at least 1 second");
        }
        Ok(NodeSettings {
            node_id,
            listen,
            advertise: self.advertise.or(file.advertise),
            ops_listen,
            coordinator,
            data_dir,
            store,
            lease_ttl: Duration::from_secs(lease_ttl),
            shards: self.shards.or(file.shards).unwrap_or(DEFAULT_SHARDS),
            drain_timeout: Duration::from_secs(
                self.drain_timeout.or(file.drain_timeout).unwrap_or(120),
            ),
            allow_state_loss: self.allow_state_loss || file.allow_state_loss.unwrap_or(false),
            unpin_on_drain: self.unpin_on_drain || file.unpin_on_drain.unwrap_or(false),
            turn_log: self.turn_log.or(file.turn_log),
        })
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing the config file {}", path.display()))
}

/// `id=host:port`.
fn parse_peer(peer: &str) -> anyhow::Result<(u64, String)> {
    let Some((id, address)) = peer.split_once('=') else {
        bail!("a Raft peer is `id=host:port`, not {peer:?}");
    };
    let id = id.trim().parse().with_context(|| format!("the Raft id in {peer:?}"))?;
    Ok((id, address.trim().to_owned()))
}

fn default_node_id() -> String {
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "verse-node".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let file: FileConfig = toml::from_str(
            r#"
            node_id = "from-file"
            coordinator = "raft-voter"
            raft_id = 1
            raft_peers = ["1=127.0.0.1:7200", "2=127.0.0.1:7201"]
            raft_init = true
            lease_ttl = 3
            shards = 256
            store = "redb"
            allow_state_loss = true
            turn_log = "turns.log"
            "#,
        )
        .unwrap();
        let args =
            NodeArgs { node_id: Some("from-flag".into()), shards: Some(64), ..NodeArgs::default() };
        let settings = args.merge(file).unwrap();
        assert_eq!(settings.node_id, "from-flag");
        assert_eq!(settings.shards, 64);
        assert_eq!(settings.lease_ttl, Duration::from_secs(3));
        assert!(settings.allow_state_loss);
        assert_eq!(settings.turn_log, Some(PathBuf::from("turns.log")));
        assert_eq!(settings.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(settings.ops_listen, DEFAULT_OPS_LISTEN.parse().unwrap());
        assert_eq!(
            settings.store,
            StoreSettings::Redb { path: PathBuf::from("verse-data").join("state.redb") }
        );
        match settings.coordinator {
            CoordinatorSettings::RaftVoter { id, peers, init, .. } => {
                assert_eq!(id, 1);
                assert_eq!(peers[1], (2, "127.0.0.1:7201".to_owned()));
                assert!(init);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_required_settings_are_reported() {
        assert!(NodeArgs::default().merge(FileConfig::default()).is_err());
        let etcd = NodeArgs { coordinator: Some(CoordinatorKind::Etcd), ..NodeArgs::default() };
        assert!(etcd.merge(FileConfig::default()).is_err());
        assert!(toml::from_str::<FileConfig>("no_such_key = 1").is_err());
    }
}
