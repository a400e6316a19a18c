//! Integration tests of the node protocol: two real nodes on 127.0.0.1:0 (one integration-test
//! binary for the crate).

mod support;
mod wire;
