//! `verse shard`: operator commands on the shard map — pin a shard to a node, remove a pin,
//! show where a shard (or an object's shard) is targeted and owned.
//!
//! A pin fixes a shard's target on one node: the leader writes it as a pinned target and the
//! planner never moves it. While the pinned node is not live, the shard stays unowned and its
//! calls fail fast (`ShardPinnedToAbsentNode`); draining a node that holds pins is refused
//! unless the node is told to unpin (`verse node --unpin-on-drain`).

use std::time::Duration;

use anyhow::{Context, bail};
use verse_core::clock::{SharedClock, SystemClock};
use verse_core::coordinator::ClusterSnapshot;
use verse_core::shard::{Placement, place};
use verse_core::{MemberId, ShardId};

use crate::gateway::{GatewayCoordinator, GatewayCoordinatorSettings, connect};

/// Flags of `verse shard`.
#[derive(Debug, Clone, clap::Args)]
pub struct ShardArgs {
    /// The coordinator: `etcd` or `raft`.
    #[arg(long, env = "VERSE_COORDINATOR")]
    pub coordinator: GatewayCoordinator,
    /// etcd client endpoints, comma-separated (`http://host:port`).
    #[arg(long, env = "VERSE_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// The etcd key prefix of the cluster.
    #[arg(long, env = "VERSE_ETCD_PREFIX", default_value = "/verse")]
    pub etcd_prefix: String,
    /// Voter addresses of the Raft group, comma-separated.
    #[arg(long, env = "VERSE_RAFT_ENDPOINTS", value_delimiter = ',')]
    pub raft_endpoints: Vec<String>,
    /// What to do.
    #[command(subcommand)]
    pub action: ShardAction,
}

/// The operations of `verse shard`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ShardAction {
    /// Pins SHARD to NODE (idempotent; NODE need not be live yet).
    Pin {
        /// The shard number.
        shard: u32,
        /// The node id.
        node: String,
    },
    /// Removes the pin of SHARD (idempotent).
    Unpin {
        /// The shard number.
        shard: u32,
    },
    /// Shows the target, owner and pin of a shard, or of the shard of `--object`.
    Show {
        /// The shard number.
        #[arg(required_unless_present = "object", conflicts_with = "object")]
        shard: Option<u32>,
        /// An object id: shows its shard.
        #[arg(long)]
        object: Option<String>,
    },
}

/// Runs `verse shard`: prints one line describing the result.
pub async fn run(args: ShardArgs) -> anyhow::Result<()> {
    let settings = match args.coordinator {
        GatewayCoordinator::Etcd if args.etcd_endpoints.is_empty() => {
            bail!("--coordinator etcd needs --etcd-endpoints")
        }
        GatewayCoordinator::Raft if args.raft_endpoints.is_empty() => {
            bail!("--coordinator raft needs --raft-endpoints")
        }
        GatewayCoordinator::Etcd => GatewayCoordinatorSettings::Etcd {
            endpoints: args.etcd_endpoints,
            prefix: args.etcd_prefix,
        },
        GatewayCoordinator::Raft => {
            GatewayCoordinatorSettings::Raft { endpoints: args.raft_endpoints }
        }
    };
    let clock: SharedClock = SystemClock::shared();
    // The operator registers nothing: the TTL only scales the client's timeouts.
    let coordinator = connect(&settings, Duration::from_secs(10), &clock).await?;
    let snapshot = coordinator.snapshot().await.context("reading the cluster")?;
    match args.action {
        ShardAction::Pin { shard, node } => {
            let shard = checked(&snapshot, shard)?;
            if node.is_empty() || node.contains('/') {
                bail!("node ids are non-empty without '/': {node:?}");
            }
            coordinator.pin(shard, MemberId::from(node.as_str())).await.context("pinning")?;
            println!("{shard} pinned to {node}");
        }
        ShardAction::Unpin { shard } => {
            let shard = checked(&snapshot, shard)?;
            coordinator.unpin(shard).await.context("unpinning")?;
            println!("{shard} unpinned");
        }
        ShardAction::Show { shard, object } => {
            let shard = match (shard, object) {
                (Some(shard), _) => checked(&snapshot, shard)?,
                (None, Some(id)) => match place(&id, snapshot.config.shard_count)? {
                    Placement::Shard(shard) => shard,
                    Placement::Node(node) => {
                        println!("object {id:?} is pinned to node {node} (not in a shard)");
                        return Ok(());
                    }
                },
                (None, None) => bail!("give a shard number or --object"),
            };
            println!("{}", describe(&snapshot, shard));
        }
    }
    Ok(())
}

fn checked(snapshot: &ClusterSnapshot, shard: u32) -> anyhow::Result<ShardId> {
    let count = snapshot.config.shard_count;
    if shard >= count {
        bail!("shard {shard} does not exist: the cluster has {count} shards (0..{count})");
    }
    Ok(ShardId(shard))
}

/// One line: target (pinned or planned), owner (epoch, live or not), pin.
fn describe(snapshot: &ClusterSnapshot, shard: ShardId) -> String {
    let entry = snapshot.map.entry(shard);
    let target = match &entry.target {
        Some(target) if target.pinned => format!("{} (pinned)", target.node),
        Some(target) => target.node.to_string(),
        None => "none".into(),
    };
    let owner = match &entry.owner {
        Some(owner) => {
            let live = snapshot
                .members
                .get(&owner.node)
                .is_some_and(|m| m.incarnation == owner.incarnation);
            format!(
                "{} incarnation {} epoch {}{}{}",
                owner.node,
                owner.incarnation.0,
                owner.epoch,
                if owner.released { ", released" } else { "" },
                if live { "" } else { ", not live" }
            )
        }
        None => "none".into(),
    };
    let pin = snapshot.pins.get(&shard).map_or_else(|| "none".to_owned(), ToString::to_string);
    format!("{shard}: target {target}; owner {owner}; pin {pin}")
}
