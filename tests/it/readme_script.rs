//! The README's commands, verbatim: every fenced `sh` block after the first (the first starts
//! `verse dev` and runs the test suite) is run against a fresh `verse dev` on free ports, with
//! only the documented addresses (`127.0.0.1:7000`, `127.0.0.1:7080`) replaced by the real ones
//! and `cargo run --release -p verse-cli --bin verse --` by the path of the binary under test.
//! Each command must succeed within 60 s and print exactly the README's `# …` lines after it.
//! Each block gets its own `verse dev` because the README offers them as alternatives (each
//! shows the counter's first increment).

// Tests report broken promises by panicking.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::dev_process::Dev;

const COMMAND_BOUND: Duration = Duration::from_secs(60);
const CARGO_RUN: &str = "cargo run --release -p verse-cli --bin verse --";

/// One README command: its shell text and the output its comment lines show.
#[derive(Debug, PartialEq)]
struct Step {
    command: String,
    expected: String,
}

/// The fenced `sh` blocks of `readme`, in order, each as its lines.
fn sh_blocks(readme: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), text) => block.push(text.to_owned()),
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unterminated sh block in the README");
    blocks
}

/// A block's commands (`\` continuations joined) with the `# ` lines that follow each.
fn steps(block: &[String]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut continued = false;
    for line in block {
        if let Some(output) = line.strip_prefix("# ").filter(|_| !continued) {
            let step = steps.last_mut().expect("an output line after a command");
            if !step.expected.is_empty() {
                step.expected.push('\n');
            }
            step.expected.push_str(output);
        } else if continued {
            let step = steps.last_mut().expect("a continued command");
            step.command.push('\n');
            step.command.push_str(line);
        } else if !line.trim().is_empty() {
            steps.push(Step { command: line.clone(), expected: String::new() });
        }
        continued = line.ends_with('\\');
    }
    steps
}

#[test]
fn the_parser_reads_commands_continuations_and_outputs() {
    let readme = "x\n```sh\nfirst\n```\n```sh\na \\\n  b\n# one\n# two\nc\n```\n```rust\nno\n```\n";
    let blocks = sh_blocks(readme);
    assert_eq!(blocks.len(), 2);
    assert_eq!(
        steps(&blocks[1]),
        vec![
            Step { command: "a \\\n  b".into(), expected: "one\ntwo".into() },
            Step { command: "c".into(), expected: String::new() },
        ]
    );
}

#[test]
fn the_readme_commands_work_verbatim_against_verse_dev() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("read README.md");
    let blocks = sh_blocks(&readme);
    assert!(blocks.len() >= 2, "the README shows how to call the counter");
    assert!(
        blocks[0].iter().any(|l| l.starts_with(&format!("{CARGO_RUN} dev"))),
        "the README's first command is verse dev: {:?}",
        blocks[0]
    );
    let binary = env!("CARGO_BIN_EXE_verse-under-test");
    for block in &blocks[1..] {
        let steps = steps(block);
        assert!(!steps.is_empty(), "an empty sh block in the README");
        let data = tempfile::tempdir().unwrap();
        let mut dev = Dev::start(data.path());
        for step in steps {
            let command = step
                .command
                .replace(CARGO_RUN, binary)
                .replace("127.0.0.1:7000", &dev.grpc)
                .replace("127.0.0.1:7080", &dev.http);
            let started = Instant::now();
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(&command)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn sh");
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if started.elapsed() > COMMAND_BOUND {
                    let _ = child.kill();
                    panic!("{command:?} did not finish within {COMMAND_BOUND:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let output = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                status.success(),
                "{command:?} failed ({status}): {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(stdout.trim_end(), step.expected, "the output of {command:?}");
        }
        dev.signal(libc::SIGTERM);
        assert!(dev.wait_exit().success());
    }
}
