//! One seed run in two separate processes yields the same trace (its FNV-1a fingerprint and
//! line count), and another seed yields another trace.

use std::process::Command;

fn fingerprint(seed: u64) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_verse-sim"))
        .args(["--seed", &seed.to_string()])
        .output()
        .expect("running verse-sim");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|line| line.starts_with(&format!("seed {seed}:")))
        .unwrap_or_else(|| panic!("no summary line for seed {seed} in:\n{stdout}"));
    line.split("fingerprint ").nth(1).expect("a fingerprint").to_owned()
}

#[test]
fn one_seed_gives_the_same_trace_in_two_processes() {
    let first = fingerprint(5);
    let second = fingerprint(5);
    assert_eq!(first, second, "seed 5 did not replay exactly");
    assert_ne!(first, fingerprint(6), "two seeds gave the same trace");
}
