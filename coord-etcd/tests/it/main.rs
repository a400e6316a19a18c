//! Integration tests of the etcd coordinator against a real etcd (Debian's `etcd-server`),
//! started by the fixture on free ports.

mod batches;
mod conformance;
mod faults;
