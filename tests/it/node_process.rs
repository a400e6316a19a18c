//! Three `verse node` processes: the first an embedded Raft voter (`--raft-init`), the others
//! members reaching it over gRPC; write-through counters on a shared PostgreSQL (the fixture).
//! Every process binds port 0 and prints its addresses in its ready line.
//!
//! (a) every node answers `/healthz`, `/metrics` and, once joined, `/readyz`; (b) calls through
//! every node reach every counter (through the node protocol, following `NotServed` hints like a
//! gateway would), and greeters served on every node relay to greeters on other nodes (calls
//! *from* every node); (c) SIGTERM to one node: it drains and exits 0 within a bound, and the
//! others keep serving every counter with every acknowledged increment; (d) `verse shard` pins
//! a shard to the departed node: its calls fail fast; unpinned, it is served again.

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use verse_core::CallError;
use verse_examples::proto::counter::{CounterResponse, GetRequest, IncrementRequest};
use verse_examples::proto::greeter::{HelloReply, HelloRequest};

use crate::support::process::{
    Caller, NodeProcess, NodeSpec, counter_ids, http_get, postgres_store, wait_ready,
};

const SHARDS: u32 = 64;
const CALL_DEADLINE: Duration = Duration::from_secs(5);
const EXIT_BOUND: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_processes_serve_every_object_and_one_drains_on_sigterm() {
    let started = Instant::now();
    let store = postgres_store("node_process");
    let dir = tempfile::tempdir().unwrap();

    let voter_args =
        ["--coordinator", "raft-voter", "--raft-id", "1", "--raft-listen", "127.0.0.1:0"];
    let mut voter_args: Vec<&str> = voter_args.to_vec();
    voter_args.push("--raft-init");
    let spec = |id: &str, args: &[&str]| {
        let mut spec = NodeSpec::new(id, dir.path().join(id), args, &store);
        spec.shards = SHARDS;
        spec
    };
    let first = NodeProcess::start(&spec("node-1", &voter_args));
    let raft_address = first.field("raft_address").to_owned();
    let member_args = ["--coordinator", "raft", "--raft-endpoints", raft_address.as_str()];
    let mut nodes = vec![first];
    for id in ["node-2", "node-3"] {
        nodes.push(NodeProcess::start(&spec(id, &member_args)));
    }

    // (a) Ops endpoints.
    for node in &nodes {
        wait_ready(node).await;
        let ops = node.ops_address();
        let (health, metrics) = tokio::task::spawn_blocking(move || {
            (http_get(&ops, "/healthz"), http_get(&ops, "/metrics"))
        })
        .await
        .unwrap();
        assert_eq!(health.map(|(code, _)| code), Some(200), "{} /healthz", node.id);
        assert_eq!(metrics.map(|(code, _)| code), Some(200), "{} /metrics", node.id);
    }
    eprintln!("three nodes ready after {:?}", started.elapsed());

    let caller = Caller::new(&nodes.iter().collect::<Vec<_>>(), CALL_DEADLINE);
    let ids = counter_ids(SHARDS);

    // (b) Every counter through every node.
    let mut acknowledged: BTreeMap<&str, u32> = BTreeMap::new();
    for node in &nodes {
        for id in &ids {
            let _: CounterResponse = caller
                .call(&node.id, "Counter", id, "Increment", &IncrementRequest { amount: 1 })
                .await
                .unwrap_or_else(|e| panic!("increment {id} via {}: {e}", node.id));
            *acknowledged.entry(id).or_default() += 1;
        }
    }
    for id in &ids {
        let got: CounterResponse =
            caller.call("node-2", "Counter", id, "Get", &GetRequest {}).await.unwrap();
        assert_eq!(got.value, acknowledged[id.as_str()] as i32, "counter {id}");
    }

    // Calls from every node: greeters served by node X relay to `<id>-relay`, wherever it is.
    let mut relayed_from: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for node in &nodes {
        let mut count = 0;
        for i in 0..1000 {
            let id = format!("greeter-{}-{i}", node.id);
            let request = HelloRequest { name: "relay".into() };
            // Only greeters node X serves itself: the relay then starts on X.
            let answer = caller
                .call_with::<_, HelloReply>(&node.id, false, "Greeter", &id, "Relay", &request);
            match answer.await {
                Ok(reply) => assert!(reply.message.contains("-relay"), "{reply:?}"),
                Err(CallError::NotServed { .. }) => continue,
                Err(error) => panic!("relay {id} via {}: {error}", node.id),
            }
            relayed_from.entry(node.id.clone()).or_default().push(format!("{id}-relay"));
            count += 1;
            if count == 12 {
                break;
            }
        }
        assert_eq!(count, 12, "{} serves too few greeters", node.id);
    }
    for node in &nodes {
        let mut elsewhere = 0;
        for other in nodes.iter().filter(|o| o.id != node.id) {
            let active = caller.activations(&other.id, "Greeter").await;
            elsewhere += relayed_from[&node.id].iter().filter(|r| active.contains(*r)).count();
        }
        assert!(elsewhere > 0, "no relay from {} reached another node", node.id);
    }

    // (c) SIGTERM to node-3: it drains and exits 0; the others serve every counter.
    let mut leaving = nodes.pop().unwrap();
    let sigterm = Instant::now();
    leaving.terminate();
    let status = leaving.wait_exit(EXIT_BOUND);
    eprintln!("node-3 exited {status} after {:?}", sigterm.elapsed());
    assert!(status.success(), "node-3 exited with {status}");
    caller.remove(&leaving.id);
    for node in &nodes {
        for id in &ids {
            let _: CounterResponse = caller
                .call(&node.id, "Counter", id, "Increment", &IncrementRequest { amount: 1 })
                .await
                .unwrap_or_else(|e| panic!("increment {id} via {} after SIGTERM: {e}", node.id));
            *acknowledged.entry(id).or_default() += 1;
        }
    }
    for id in &ids {
        let got: CounterResponse =
            caller.call("node-1", "Counter", id, "Get", &GetRequest {}).await.unwrap();
        assert_eq!(got.value, acknowledged[id.as_str()] as i32, "counter {id} after SIGTERM");
    }

    // (d) Operator pins through `verse shard`: a shard pinned to a node that is not live is
    // unowned and its calls fail fast naming it; unpinned, it is served again, state intact.
    let shard = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_verse-under-test"))
            .args(["shard", "--coordinator", "raft", "--raft-endpoints", raft_address.as_str()])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text)
    };
    let (pinned_id, value) = (&ids[5], acknowledged[ids[5].as_str()] as i32);
    let (ok, out) = shard(&["show", "--object", pinned_id]);
    assert!(ok && out.contains("shard 5: target node-"), "{out}");
    let (ok, out) = shard(&["pin", "64", "node-1"]);
    assert!(!ok && out.contains("shard 64 does not exist"), "{out}");
    let (ok, out) = shard(&["pin", "5", "node-3"]);
    assert!(ok && out.contains("shard 5 pinned to node-3"), "{out}");
    let fails_fast = CallError::ShardPinnedToAbsentNode { shard: 5, node: "node-3".into() };
    let bound = Instant::now() + Duration::from_secs(20);
    loop {
        let answer: Result<CounterResponse, _> =
            caller.call("node-1", "Counter", pinned_id, "Get", &GetRequest {}).await;
        match answer {
            Err(error) if error == fails_fast => break,
            // Still served while the leader writes the pinned target and the owner hands off.
            Ok(_) => assert!(Instant::now() < bound, "{pinned_id} still served after the pin"),
            Err(error) => panic!("{pinned_id} after the pin: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, out) = shard(&["show", "5"]);
    assert!(ok && out.contains("target node-3 (pinned)") && out.contains("pin node-3"), "{out}");
    let (ok, out) = shard(&["unpin", "5"]);
    assert!(ok && out.contains("shard 5 unpinned"), "{out}");
    loop {
        let answer: Result<CounterResponse, _> =
            caller.call("node-1", "Counter", pinned_id, "Get", &GetRequest {}).await;
        match answer {
            Ok(got) => {
                assert_eq!(got.value, value, "{pinned_id} after the unpin");
                break;
            }
            Err(error) if error == fails_fast && Instant::now() < bound => {}
            Err(error) => panic!("{pinned_id} after the unpin: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("whole test took {:?}", started.elapsed());
}
