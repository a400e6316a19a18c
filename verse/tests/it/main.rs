//! The `verse` crate's integration tests (one binary: each extra one relinks every dependency).

mod macro_objects;
mod ui;
