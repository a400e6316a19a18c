//! A foreign client: `tests/python/gate_client.py` (grpcio and protobuf in the virtual
//! environment `scripts/install-test-deps` makes under `target/pyenv`, stubs generated from
//! `gateway/proto/gate.proto` and the examples' protos) drives `verse dev` through the
//! GoVerse-compatible `gate.GateService`: register and the first item, create, calls, errors,
//! the binding rule, a push from a chat room, the reliable-call shape, delete.

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const START_BOUND: Duration = Duration::from_secs(60);
const CLIENT_BOUND: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repo").into()
}

/// The virtual environment's interpreter (`VERSE_PYTHON` overrides it).
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("VERSE_PYTHON") {
        return path.into();
    }
    let path = repo_root().join("target/pyenv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps (it creates the Python virtual \
         environment with grpcio, grpcio-tools and protobuf), or set VERSE_PYTHON",
        path.display()
    );
    path
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_python_grpc_client_uses_the_gate_protocol_of_verse_dev() {
    let python = python();
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_verse-under-test"))
        .args(["dev", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn verse-under-test dev");
    let stdout = child.stdout.take().unwrap();
    let dev = KillOnDrop(child);
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("verse dev ready:") {
                let _ = ready_tx.send(line);
            }
        }
    });
    let line = ready_rx.recv_timeout(START_BOUND).expect("verse dev printed its ready line");
    let grpc = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("grpc="))
        .unwrap_or_else(|| panic!("no grpc= in {line:?}"))
        .to_owned();

    let mut client = Command::new(&python)
        .arg(repo_root().join("tests/python/gate_client.py"))
        .args(["--gateway", &grpc, "--proto-root"])
        .arg(repo_root())
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = client.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > CLIENT_BOUND {
            let _ = client.kill();
            panic!("the Python client did not finish within {CLIENT_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the Python client failed ({status}); its output says why");
    drop(dev);
}
