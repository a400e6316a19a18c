//! The `verse` crate's integration tests (one binary: each extra one relinks every dependency).

mod codec_counts;
mod macro_objects;
mod ui;
