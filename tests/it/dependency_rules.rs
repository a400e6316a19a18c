//! The crate graph is part of the design: `verse-core` must not depend, directly or
//! transitively, through normal or build dependencies, on a backend, a transport or a database
//! driver (architecture: "Dependency rule").

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

/// Crates `verse-core` must never pull in.
const FORBIDDEN: &[&str] = &[
    "tonic",
    "etcd-client",
    "openraft",
    "redb",
    "tokio-postgres",
    "postgres",
    "sqlx",
    "rusqlite",
    "hyper",
    "h2",
    "axum",
    "verse-transport",
    "verse-store-redb",
    "verse-store-postgres",
    "verse-coord-etcd",
    "verse-coord-raft",
    "verse-gateway",
];

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("parse cargo metadata")
}

/// Names of every package reachable from `root` through normal and build dependencies.
fn reachable(metadata: &Value, root: &str) -> BTreeSet<String> {
    let packages: HashMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("id"), p["name"].as_str().expect("name")))
        .collect();
    let nodes: HashMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("resolve nodes")
        .iter()
        .map(|n| (n["id"].as_str().expect("node id"), n))
        .collect();
    let root_id = packages
        .iter()
        .find(|(_, name)| **name == root)
        .map(|(id, _)| *id)
        .expect("root package in metadata");
    let mut seen = BTreeSet::new();
    let mut stack = vec![root_id];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().expect("deps") {
            let kinds = dep["dep_kinds"].as_array().expect("dep kinds");
            let normal_or_build = kinds.iter().any(|k| k["kind"].is_null() || k["kind"] == "build");
            if normal_or_build {
                stack.push(dep["pkg"].as_str().expect("dep pkg"));
            }
        }
    }
    seen.into_iter().map(|id| packages[id].to_owned()).collect()
}

#[test]
fn verse_core_depends_on_no_backend_transport_or_driver() {
    let metadata = metadata();
    let deps = reachable(&metadata, "verse-core");
    assert!(deps.contains("tokio"), "sanity: the walk must see verse-core's real dependencies");
    let bad: Vec<&str> = FORBIDDEN.iter().copied().filter(|f| deps.contains(*f)).collect();
    assert!(bad.is_empty(), "verse-core must not depend on {bad:?}");
}

#[test]
fn the_walk_detects_forbidden_crates_where_they_are() {
    // The facade's examples crate depends on the redb store: the same walk must find redb
    // there, or the rule above could pass vacuously.
    let metadata = metadata();
    assert!(reachable(&metadata, "verse-examples").contains("redb"));
}
