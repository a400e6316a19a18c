//! The `verse` binary for process-level tests (found through `CARGO_BIN_EXE_verse-under-test`).

fn main() -> anyhow::Result<()> {
    verse_cli::run()
}
