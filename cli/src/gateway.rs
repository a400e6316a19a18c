//! `verse gateway`: one gateway member against etcd or the embedded Raft group (reached over
//! gRPC), serving `gate.GateService` on its gRPC port and `/healthz`, `/readyz` (the gateway's
//! readiness) and `/metrics` on its HTTP port. Settings: flags (with `VERSE_*` environment
//! variables) over a TOML file (`--config`, keys as the flags with `_` for `-`) over defaults.
//! SIGTERM or SIGINT: the gateway turns unready, stops accepting, answers the calls in flight,
//! deregisters, exit 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use verse_coord_etcd::{EtcdCoordinator, EtcdOptions};
use verse_coord_raft::{ClientOptions, RaftAccess, RaftCoordinator, RemoteAccess};
use verse_core::coordinator::Coordinator;
use verse_core::{SharedClock, SystemClock};
use verse_gateway::{Bind, Gateway, GatewayBuilder, GatewayConfig, GatewayError};
use verse_transport::TcpIncoming;

use crate::config::DEFAULT_LEASE_TTL_SECS;
use crate::ops;

/// The default gRPC listen address of `verse gateway`.
pub const DEFAULT_GATEWAY_LISTEN: &str = "127.0.0.1:7000";
/// The default HTTP listen address of `verse gateway`.
pub const DEFAULT_GATEWAY_HTTP_LISTEN: &str = "127.0.0.1:7080";

/// Which coordinator a gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum GatewayCoordinator {
    /// etcd.
    Etcd,
    /// The embedded Raft group, reached over gRPC.
    Raft,
}

/// How the gateway checks a gRPC call's client id (`gateway.bind`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum GatewayBind {
    /// The session's `Register` stream is open on the call's connection.
    #[default]
    Connection,
    /// The call authenticates as the session's principal (behind an L7 proxy).
    Principal,
}

/// Flags of `verse gateway`. Each may also come from the TOML file given by `--config`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GatewayArgs {
    /// A TOML file with any of the settings below (keys as the flags, `_` for `-`).
    #[arg(long, env = "VERSE_CONFIG")]
    pub config: Option<PathBuf>,
    /// This gateway's member id (no `/`) [default: gateway-<host name>].
    #[arg(long, env = "VERSE_GATEWAY_ID")]
    pub gateway_id: Option<String>,
    /// gRPC (gate protocol) listen address [default: 127.0.0.1:7000].
    #[arg(long, env = "VERSE_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// The address clients reach the gRPC port at [default: the bound address].
    #[arg(long, env = "VERSE_ADVERTISE")]
    pub advertise: Option<String>,
    /// HTTP listen address (/healthz, /readyz, /metrics) [default: 127.0.0.1:7080].
    #[arg(long, env = "VERSE_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// The coordinator: `etcd` or `raft`.
    #[arg(long, env = "VERSE_COORDINATOR")]
    pub coordinator: Option<GatewayCoordinator>,
    /// etcd client endpoints, comma-separated (`http://host:port`).
    #[arg(long, env = "VERSE_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Option<Vec<String>>,
    /// The etcd key prefix of the cluster [default: /verse].
    #[arg(long, env = "VERSE_ETCD_PREFIX")]
    pub etcd_prefix: Option<String>,
    /// Voter addresses of the Raft group, comma-separated.
    #[arg(long, env = "VERSE_RAFT_ENDPOINTS", value_delimiter = ',')]
    pub raft_endpoints: Option<Vec<String>>,
    /// Lease TTL in seconds [default: 10].
    #[arg(long, env = "VERSE_LEASE_TTL")]
    pub lease_ttl: Option<u64>,
    /// Refuse anonymous calls (every call needs a registered client session).
    #[arg(long, env = "VERSE_REQUIRE_SESSION")]
    pub require_session: bool,
    /// The gRPC binding rule of client ids: `connection` or `principal` (behind an L7
    /// proxy) [default: connection].
    #[arg(long, env = "VERSE_BIND")]
    pub bind: Option<GatewayBind>,
    /// Deadline of calls that carry none, in seconds [default: 30].
    #[arg(long, env = "VERSE_DEFAULT_DEADLINE")]
    pub default_deadline: Option<u64>,
    /// Pushes kept per session: its queue and replay buffer, the oldest dropped when full
    /// [default: 1024].
    #[arg(long, env = "VERSE_SESSION_BUFFER")]
    pub session_buffer: Option<usize>,
    /// Seconds a disconnected session stays resumable [default: 30].
    #[arg(long, env = "VERSE_SESSION_GRACE")]
    pub session_grace: Option<u64>,
    /// Seconds between SSE heartbeats of an idle event stream [default: 30].
    #[arg(long, env = "VERSE_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<u64>,
    /// Largest HTTP request body read, in bytes [default: 4194304].
    #[arg(long, env = "VERSE_HTTP_BODY_LIMIT")]
    pub http_body_limit: Option<usize>,
    /// Largest gRPC request message decoded, in bytes [default: 4194304].
    #[arg(long, env = "VERSE_GRPC_MAX_MESSAGE")]
    pub grpc_max_message: Option<usize>,
    /// Object types whose descriptors the JSON route keeps [default: 256].
    #[arg(long, env = "VERSE_TYPE_CACHE_CAPACITY")]
    pub type_cache_capacity: Option<usize>,
    /// Seconds a type's descriptors learnt from a node are kept [default: 60].
    #[arg(long, env = "VERSE_TYPE_CACHE_TTL")]
    pub type_cache_ttl: Option<u64>,
    /// Seconds a type no node registers stays known as unknown [default: 5].
    #[arg(long, env = "VERSE_UNKNOWN_TYPE_TTL")]
    pub unknown_type_ttl: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayFile {
    gateway_id: Option<String>,
    grpc_listen: Option<SocketAddr>,
    advertise: Option<String>,
    http_listen: Option<SocketAddr>,
    coordinator: Option<GatewayCoordinator>,
    etcd_endpoints: Option<Vec<String>>,
    etcd_prefix: Option<String>,
    raft_endpoints: Option<Vec<String>>,
    lease_ttl: Option<u64>,
    require_session: Option<bool>,
    bind: Option<GatewayBind>,
    default_deadline: Option<u64>,
    session_buffer: Option<usize>,
    session_grace: Option<u64>,
    heartbeat_interval: Option<u64>,
    http_body_limit: Option<usize>,
    grpc_max_message: Option<usize>,
    type_cache_capacity: Option<usize>,
    type_cache_ttl: Option<u64>,
    unknown_type_ttl: Option<u64>,
}

/// How the gateway reaches its coordinator, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayCoordinatorSettings {
    /// etcd.
    Etcd {
        /// Client endpoints.
        endpoints: Vec<String>,
        /// Key prefix.
        prefix: String,
    },
    /// The Raft group's voters.
    Raft {
        /// Voter addresses.
        endpoints: Vec<String>,
    },
}

/// A coordinator client for a member that hosts no objects (a gateway, an operator command).
pub(crate) async fn connect(
    settings: &GatewayCoordinatorSettings,
    lease_ttl: Duration,
    clock: &SharedClock,
) -> anyhow::Result<Arc<dyn Coordinator>> {
    Ok(match settings {
        GatewayCoordinatorSettings::Etcd { endpoints, prefix } => {
            let mut options = EtcdOptions::new(endpoints.clone(), prefix.clone());
            options.lease_ttl = lease_ttl;
            options.clock = clock.clone();
            Arc::new(EtcdCoordinator::connect(options).await.context("connecting to etcd")?)
        }
        GatewayCoordinatorSettings::Raft { endpoints } => {
            let access: Arc<dyn RaftAccess> =
                Arc::new(RemoteAccess::for_lease_ttl(endpoints.clone(), lease_ttl));
            Arc::new(RaftCoordinator::new(access, clock.clone(), ClientOptions::new(lease_ttl)))
        }
    })
}

/// Everything `verse gateway` needs, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// The gateway's configuration: member id, binding rule, sessions and limits (its
    /// `address` is the advertised one, or the bound gRPC port once known).
    pub config: GatewayConfig,
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// Advertised gRPC address, if given.
    pub advertise: Option<String>,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// Coordinator.
    pub coordinator: GatewayCoordinatorSettings,
    /// Lease TTL.
    pub lease_ttl: Duration,
}

impl GatewayArgs {
    /// Reads the `--config` file, if any, and resolves the settings.
    pub fn resolve(self) -> anyhow::Result<GatewaySettings> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => GatewayFile::default(),
        };
        self.merge(file)
    }

    fn merge(self, file: GatewayFile) -> anyhow::Result<GatewaySettings> {
        let gateway_id = self.gateway_id.or(file.gateway_id).unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
            format!("gateway-{host}")
        });
        if gateway_id.is_empty() || gateway_id.contains('/') {
            bail!("--gateway-id must be non-empty without '/'");
        }
        let parse = |text: &str| text.parse::<SocketAddr>().context("a built-in default address");
        let grpc_listen = self
            .grpc_listen
            .or(file.grpc_listen)
            .map_or_else(|| parse(DEFAULT_GATEWAY_LISTEN), Ok)?;
        let http_listen = self
            .http_listen
            .or(file.http_listen)
            .map_or_else(|| parse(DEFAULT_GATEWAY_HTTP_LISTEN), Ok)?;
        let coordinator = match self.coordinator.or(file.coordinator) {
            None => bail!("--coordinator is required (etcd or raft)"),
            Some(GatewayCoordinator::Etcd) => {
                let endpoints = self.etcd_endpoints.or(file.etcd_endpoints).unwrap_or_default();
                if endpoints.is_empty() {
                    bail!("--coordinator etcd needs --etcd-endpoints");
                }
                let prefix =
                    self.etcd_prefix.or(file.etcd_prefix).unwrap_or_else(|| "/verse".into());
                GatewayCoordinatorSettings::Etcd { endpoints, prefix }
            }
            Some(GatewayCoordinator::Raft) => {
                let endpoints = self.raft_endpoints.or(file.raft_endpoints).unwrap_or_default();
                if endpoints.is_empty() {
                    bail!("--coordinator raft needs --raft-endpoints");
                }
                GatewayCoordinatorSettings::Raft { endpoints }
            }
        };
        let lease_ttl = self.lease_ttl.or(file.lease_ttl).unwrap_or(DEFAULT_LEASE_TTL_SECS);
        if lease_ttl == 0 {
            bail!("--lease-ttl must be positive");
        }
        let mut config = GatewayConfig::new(gateway_id, String::new());
        let seconds = |flag: &str, value: Option<u64>, default: Duration| match value {
            Some(0) => bail!("--{flag} must be positive"),
            Some(value) => Ok(Duration::from_secs(value)),
            None => Ok(default),
        };
        let count = |flag: &str, value: Option<usize>, default: usize| match value {
            Some(0) => bail!("--{flag} must be positive"),
            Some(value) => Ok(value),
            None => Ok(default),
        };
        config.default_deadline = seconds(
            "default-deadline",
            self.default_deadline.or(file.default_deadline),
            config.default_deadline,
        )?;
        config.session_buffer = count(
            "session-buffer",
            self.session_buffer.or(file.session_buffer),
            config.session_buffer,
        )?;
        config.session_grace = seconds(
            "session-grace",
            self.session_grace.or(file.session_grace),
            config.session_grace,
        )?;
        config.heartbeat_interval = seconds(
            "heartbeat-interval",
            self.heartbeat_interval.or(file.heartbeat_interval),
            config.heartbeat_interval,
        )?;
        config.http_body_limit = count(
            "http-body-limit",
            self.http_body_limit.or(file.http_body_limit),
            config.http_body_limit,
        )?;
        config.grpc_max_message = count(
            "grpc-max-message",
            self.grpc_max_message.or(file.grpc_max_message),
            config.grpc_max_message,
        )?;
        config.type_cache_capacity = count(
            "type-cache-capacity",
            self.type_cache_capacity.or(file.type_cache_capacity),
            config.type_cache_capacity,
        )?;
        config.type_cache_ttl = seconds(
            "type-cache-ttl",
            self.type_cache_ttl.or(file.type_cache_ttl),
            config.type_cache_ttl,
        )?;
        config.unknown_type_ttl = seconds(
            "unknown-type-ttl",
            self.unknown_type_ttl.or(file.unknown_type_ttl),
            config.unknown_type_ttl,
        )?;
        config.require_session = self.require_session || file.require_session.unwrap_or(false);
        config.bind = match self.bind.or(file.bind).unwrap_or_default() {
            GatewayBind::Connection => Bind::Connection,
            GatewayBind::Principal => Bind::Principal,
        };
        Ok(GatewaySettings {
            config,
            grpc_listen,
            advertise: self.advertise.or(file.advertise),
            http_listen,
            coordinator,
            lease_ttl: Duration::from_secs(lease_ttl),
        })
    }
}

/// Runs `verse gateway` until SIGTERM or SIGINT (module docs).
pub async fn run(settings: GatewaySettings) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let clock: SharedClock = SystemClock::shared();
    let coordinator = connect(&settings.coordinator, settings.lease_ttl, &clock).await?;
    let grpc = TcpIncoming::bind(settings.grpc_listen)
        .await
        .with_context(|| format!("binding the gRPC port {}", settings.grpc_listen))?;
    let grpc_address = grpc.local_addr()?;
    let http = TcpListener::bind(settings.http_listen)
        .await
        .with_context(|| format!("binding the HTTP port {}", settings.http_listen))?;
    let http_address = http.local_addr()?;
    let advertise = settings.advertise.clone().unwrap_or_else(|| grpc_address.to_string());
    let mut config = settings.config;
    config.address = advertise;
    let gateway_id = config.gateway_id.clone();
    let gateway = Arc::new(
        GatewayBuilder::new(config, coordinator, clock)
            .start()
            .await
            .context("registering the gateway")?,
    );
    let mut servers = GatewayServers::start(gateway, grpc, http, metrics);
    tracing::info!(
        gateway_id = %gateway_id,
        grpc_address = %grpc_address,
        http_address = %http_address,
        "gateway serving (see /readyz)"
    );
    crate::dev::wait_for_signal().await?;
    servers.stop_gateway().await;
    servers.stop_http().await;
    tracing::info!("stopped");
    Ok(())
}

/// A started gateway served on its gRPC port and, with the ops endpoints, its HTTP port
/// (`verse gateway` and `verse dev`).
pub(crate) struct GatewayServers {
    gateway: Arc<Gateway>,
    grpc_stop: CancellationToken,
    grpc_served: Option<JoinHandle<Result<(), GatewayError>>>,
    http_stop: CancellationToken,
    http_served: JoinHandle<std::io::Result<()>>,
}

impl GatewayServers {
    /// Serves `gateway` on `grpc` and `http` (its routes, `/healthz`, `/readyz` with the
    /// gateway's readiness, `/metrics` from `metrics`).
    pub(crate) fn start(
        gateway: Arc<Gateway>,
        grpc: TcpIncoming,
        http: TcpListener,
        metrics: PrometheusHandle,
    ) -> Self {
        let grpc_stop = CancellationToken::new();
        let grpc_served = tokio::spawn({
            let (gateway, stop) = (gateway.clone(), grpc_stop.clone());
            async move { gateway.serve(grpc, stop.cancelled_owned()).await }
        });
        let ready: ops::ReadyCheck = {
            let gateway = gateway.clone();
            Arc::new(move || gateway.readiness())
        };
        let http_stop = CancellationToken::new();
        let router = gateway.http_router();
        let http_served =
            tokio::spawn(ops::serve_with(http, metrics, ready, router, http_stop.clone()));
        GatewayServers {
            gateway,
            grpc_stop,
            grpc_served: Some(grpc_served),
            http_stop,
            http_served,
        }
    }

    /// Stops the gateway: refuses new calls, answers those in flight, ends its gRPC server
    /// and deregisters. The HTTP port keeps answering (`/readyz` says stopping).
    pub(crate) async fn stop_gateway(&mut self) {
        self.gateway.stop_accepting();
        self.grpc_stop.cancel();
        if let Some(served) = self.grpc_served.take() {
            crate::join_server(served, "gateway server").await;
        }
        self.gateway.shutdown().await;
    }

    /// Stops the HTTP port (after [`GatewayServers::stop_gateway`]).
    pub(crate) async fn stop_http(self) {
        self.http_stop.cancel();
        crate::join_server(self.http_served, "HTTP server").await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let file: GatewayFile = toml::from_str(
            "gateway_id = \"gw-file\"\ncoordinator = \"raft\"\nraft_endpoints = [\"10.0.0.1:7200\"]\nlease_ttl = 4\n",
        )
        .expect("valid TOML");
        let args = GatewayArgs { gateway_id: Some("gw-flag".into()), ..GatewayArgs::default() };
        let settings = args.merge(file).expect("resolves");
        assert_eq!(settings.config.gateway_id, "gw-flag");
        assert_eq!(settings.grpc_listen.to_string(), DEFAULT_GATEWAY_LISTEN);
        assert_eq!(settings.lease_ttl, Duration::from_secs(4));
        assert_eq!(
            settings.coordinator,
            GatewayCoordinatorSettings::Raft { endpoints: vec!["10.0.0.1:7200".into()] }
        );
        let missing = GatewayArgs::default().merge(GatewayFile::default()).unwrap_err();
        assert!(missing.to_string().contains("--coordinator"), "{missing}");
        let slash = GatewayArgs { gateway_id: Some("a/b".into()), ..GatewayArgs::default() };
        assert!(slash.merge(GatewayFile::default()).is_err());
        assert!(toml::from_str::<GatewayFile>("nope = 1").is_err(), "unknown keys refused");
        assert_eq!(settings.config.bind, Bind::Connection, "the default binding rule");
        let raft = "coordinator = \"raft\"\nraft_endpoints = [\"a:1\"]\n";
        let file: GatewayFile =
            toml::from_str(&format!("{raft}bind = \"principal\"\n")).expect("valid TOML");
        assert_eq!(
            GatewayArgs::default().merge(file).expect("resolves").config.bind,
            Bind::Principal
        );
        let file: GatewayFile =
            toml::from_str(&format!("{raft}bind = \"principal\"\n")).expect("valid TOML");
        let flag = GatewayArgs { bind: Some(GatewayBind::Connection), ..GatewayArgs::default() };
        assert_eq!(flag.merge(file).expect("resolves").config.bind, Bind::Connection);
        assert!(toml::from_str::<GatewayFile>("bind = \"nope\"").is_err());
    }

    #[test]
    fn limits_come_from_flags_over_the_file_over_the_defaults() {
        let raft = "coordinator = \"raft\"\nraft_endpoints = [\"a:1\"]\n";
        let file: GatewayFile =
            toml::from_str(&format!("{raft}session_buffer = 64\nhttp_body_limit = 1000\n"))
                .expect("valid TOML");
        let flags = GatewayArgs { http_body_limit: Some(2000), ..GatewayArgs::default() };
        let config = flags.merge(file).expect("resolves").config;
        let defaults = GatewayConfig::new("-", "-");
        assert_eq!(config.session_buffer, 64, "from the file");
        assert_eq!(config.http_body_limit, 2000, "the flag wins");
        assert_eq!(config.grpc_max_message, defaults.grpc_max_message);
        assert_eq!(config.default_deadline, defaults.default_deadline);
        assert_eq!((config.session_buffer, config.http_body_limit), (64, 2000));
        let file: GatewayFile = toml::from_str(raft).expect("valid TOML");
        let zero = GatewayArgs { session_grace: Some(0), ..GatewayArgs::default() };
        let error = zero.merge(file).unwrap_err();
        assert!(error.to_string().contains("--session-grace must be positive"), "{error}");
    }
}
