//! `verse dev` as a process: it prints one ready line with its gRPC and HTTP addresses (free
//! ports here), serves the counter over the gate protocol (a tonic client and `verse call`),
//! answers `/readyz`, keeps the counter across a restart on the same data directory, and exits
//! 0 on SIGTERM and on SIGINT.

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use prost::{Message, Name};
use prost_types::Any;
use verse_examples::proto::counter::{CounterResponse, GetRequest, IncrementRequest};
use verse_gateway::proto::CallObjectRequest;
use verse_gateway::proto::gate_service_client::GateServiceClient;

const START_BOUND: Duration = Duration::from_secs(60);
const EXIT_BOUND: Duration = Duration::from_secs(30);

/// One `verse dev` child; killed on drop unless it exited.
struct Dev {
    child: Child,
    grpc: String,
    http: String,
}

impl Dev {
    fn start(data_dir: &Path) -> Dev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_verse-under-test"))
            .args(["dev", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn verse-under-test dev");
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[dev] {line}");
                if line.starts_with("verse dev ready:") {
                    let _ = ready_tx.send(line);
                }
            }
        });
        let line = ready_rx.recv_timeout(START_BOUND).expect("a ready line within the bound");
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{name}=")).map(str::to_owned))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        };
        Dev { grpc: field("grpc"), http: field("http"), child }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: sends a signal to our own child by its pid; no memory is involved.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(sent, 0);
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < EXIT_BOUND, "verse dev did not exit within {EXIT_BOUND:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn pack<M: Message + Name>(message: &M) -> Any {
    Any { type_url: M::type_url(), value: message.encode_to_vec() }
}

async fn counter_call(grpc: &str, method: &str, request: Any) -> CounterResponse {
    let mut client = GateServiceClient::connect(format!("http://{grpc}")).await.unwrap();
    let call = CallObjectRequest {
        client_id: String::new(),
        r#type: "Counter".into(),
        id: "c1".into(),
        method: method.into(),
        request: Some(request),
    };
    let response = client.call_object(call).await.unwrap().into_inner().response.unwrap();
    CounterResponse::decode(response.value.as_slice()).unwrap()
}

/// A plain HTTP/1.1 GET (status line and body).
fn http_get(address: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verse_dev_serves_the_counter_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(dir.path());
    let response =
        counter_call(&dev.grpc, "Increment", pack(&IncrementRequest { amount: 5 })).await;
    assert_eq!((response.name.as_str(), response.value), ("c1", 5));
    assert!(http_get(&dev.http, "/readyz").starts_with("HTTP/1.1 200"), "ready");

    // `verse call` with JSON, as the README shows it.
    let output = Command::new(env!("CARGO_BIN_EXE_verse-under-test"))
        .args(["call", "--gateway", &dev.grpc, "Counter", "c1", "Increment", r#"{"amount":2}"#])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().last(), Some(r#"{"name":"c1","value":7}"#));
    let bad = Command::new(env!("CARGO_BIN_EXE_verse-under-test"))
        .args(["call", "--gateway", &dev.grpc, "Counter", "c1", "Increment", "{not json"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!bad.status.success(), "malformed JSON is an error");

    dev.signal(libc::SIGTERM);
    assert!(dev.wait_exit().success(), "exit 0 on SIGTERM");

    // The counter is write-through on redb: a restart on the same data keeps it.
    let mut dev = Dev::start(dir.path());
    assert_eq!(counter_call(&dev.grpc, "Get", pack(&GetRequest {})).await.value, 7);
    dev.signal(libc::SIGINT);
    assert!(dev.wait_exit().success(), "exit 0 on SIGINT");
}
