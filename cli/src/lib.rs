//! The `verse` command line. `verse node` runs one cluster node hosting the example objects
//! (`Counter`, `Greeter`, `ChatRoom`) against etcd or the embedded Raft group, with an ops HTTP
//! port (`docs/OPERATIONS.md`); `verse coord` runs a Raft voter that hosts no objects; `verse
//! dev` runs a development cluster with a gateway in one process; `verse call` calls an example
//! object through a gateway with JSON.
//!
//! [`run`] is the whole program: the `verse` binary and the test shim in `verse-tests` call it.

pub mod call;
pub mod config;
pub mod dev;
pub mod gateway;
pub mod node;
pub mod ops;
pub mod shard;
pub mod turnlog;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// The `verse` command.
#[derive(Debug, Parser)]
#[command(name = "verse", version, about = "Verse: a distributed object runtime")]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs a cluster node until SIGTERM or SIGINT (then drains and exits 0).
    Node(Box<config::NodeArgs>),
    /// Runs a development cluster in one process (Raft coordinator, node, gateway) until
    /// SIGTERM or SIGINT.
    Dev(dev::DevArgs),
    /// Runs a gateway against etcd or the Raft group until SIGTERM or SIGINT.
    Gateway(Box<gateway::GatewayArgs>),
    /// Calls a method of an example object through a gateway, with JSON.
    Call(call::CallArgs),
    /// Runs an embedded Raft voter that hosts no objects (`--coordinator raft-voter` and its
    /// `--raft-*` flags) until SIGTERM or SIGINT.
    Coord(Box<config::NodeArgs>),
    /// Pins a shard to a node, removes a pin, or shows a shard's target and owner.
    Shard(shard::ShardArgs),
}

/// Parses the command line, sets up logging (`RUST_LOG`, default `info`) and runs the command.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cli.command {
        Command::Node(args) => {
            let settings = args.resolve()?;
            runtime.block_on(node::run(settings))
        }
        Command::Dev(args) => runtime.block_on(dev::run(args)),
        Command::Gateway(args) => {
            let settings = args.resolve()?;
            runtime.block_on(gateway::run(settings))
        }
        Command::Call(args) => runtime.block_on(call::run(args)),
        Command::Coord(args) => {
            let settings = args.resolve()?;
            runtime.block_on(node::run_coord(settings))
        }
        Command::Shard(args) => runtime.block_on(shard::run(args)),
    }
}

/// Waits for a server task that was told to stop and logs how it ended if not cleanly (the
/// process is shutting down either way).
pub(crate) async fn join_server<E: std::fmt::Display>(
    task: tokio::task::JoinHandle<Result<(), E>>,
    what: &str,
) {
    match task.await {
        Ok(Err(error)) => tracing::warn!(%error, "{what} failed"),
        Err(error) => tracing::warn!(%error, "{what} task failed"),
        Ok(Ok(())) => {}
    }
}

fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    // Another subscriber (a test harness) may already be set: keep it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .try_init();
}
