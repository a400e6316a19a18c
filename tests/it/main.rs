//! Verse's cross-crate integration tests: one binary, one module per concern.

mod chat_example;
mod cluster;
mod counter_example;
mod dependency_rules;
mod dev_process;
mod gateway;
mod gateway_bad_input;
mod gateway_client;
mod gateway_http;
mod gateway_json;
mod gateway_process;
mod gateway_ws;
mod node_process;
mod python_client;
mod readme_script;
mod scenarios;
mod support;
