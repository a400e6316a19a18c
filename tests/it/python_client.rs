//! A foreign client: `tests/python/gate_client.py` (grpcio, stubs generated from
//! `gateway/proto/gate.proto` and the example protos) against a `verse dev` process — register
//! and the first item, create, call, a chat-room push, delete, the reliable-call outcome shape,
//! the binding rule from another connection, an unknown type.
//!
//! The Python environment comes from `scripts/install-test-deps` (`target/python-venv`, or
//! `VERSE_TEST_VENV`); without it the test fails and says so (it never skips).

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use crate::dev_process::Dev;

fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = std::env::var_os("VERSE_TEST_VENV")
        .map(PathBuf::from)
        .map(|v| if v.is_absolute() { v } else { root.join(v) })
        .unwrap_or_else(|| root.join("target").join("python-venv"));
    let python = venv.join("bin").join("python");
    assert!(
        python.exists(),
        "no Python test environment at {}: run scripts/install-test-deps",
        venv.display()
    );
    python
}

#[test]
fn a_python_grpc_client_uses_the_gateway_as_goverse_clients_do() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(dir.path());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(python)
        .arg(root.join("tests").join("python").join("gate_client.py"))
        .arg(&dev.grpc)
        .arg(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the Python client failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.lines().last(), Some("ok"), "{stdout}\n{stderr}");
    dev.signal(libc::SIGTERM);
    assert!(dev.wait_exit().success());
}
