//! `verse-sim`: a placeholder until the runner lands.
fn main() {
    let seed = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let report = verse_sim::run_seed(seed, &verse_sim::Scenario::default());
    println!("{}", report.trace);
    println!(
        "seed {seed}: {:?} {:?} wall {:?} sim {:?} fp {:x?}",
        report.verdict.violations,
        report.verdict.counts,
        report.wall,
        report.simulated,
        report.fingerprint
    );
}
