//! The `verse` binary.

fn main() -> anyhow::Result<()> {
    verse_cli::run()
}
