//! `verse call`: calls a method of an example object through a gateway over gRPC, with the
//! request as JSON, and prints the response as JSON.
//!
//! ```text
//! verse call --gateway 127.0.0.1:7000 Counter c1 Increment '{"amount":5}'
//! {"name":"c1","value":5}
//! ```
//!
//! JSON ↔ protobuf uses serde on the example messages' generated types
//! ([`verse_examples::json`]): the request type comes from the example type's method table, so
//! only the example types (`Counter`, `Greeter`, `ChatRoom`) can be called this way. (A
//! descriptor-based transcoder would serve any type; it arrives with the gateway's JSON route.)

use std::time::Duration;

use anyhow::{Context, anyhow};
use prost_types::Any;
use verse_gateway::proto::CallObjectRequest;
use verse_gateway::proto::gate_service_client::GateServiceClient;

/// Flags of `verse call`.
#[derive(Debug, Clone, clap::Args)]
pub struct CallArgs {
    /// The gateway's gRPC address (`host:port`).
    #[arg(long, env = "VERSE_GATEWAY", default_value = crate::dev::DEFAULT_GRPC_LISTEN)]
    pub gateway: String,
    /// The call's deadline, in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Object type (`Counter`, `Greeter`, `ChatRoom`).
    pub object_type: String,
    /// Object id.
    pub id: String,
    /// Method (`Increment`, `Get`, …).
    pub method: String,
    /// The request as JSON (protobuf JSON field names).
    #[arg(default_value = "{}")]
    pub request: String,
}

/// Runs the call and prints the response JSON.
pub async fn run(args: CallArgs) -> anyhow::Result<()> {
    let request_type = verse_examples::json::request_type(&args.object_type, &args.method)
        .ok_or_else(|| {
            anyhow!(
                "unknown example method {}.{} (verse call knows Counter, Greeter and ChatRoom)",
                args.object_type,
                args.method
            )
        })?;
    let request = verse_examples::json::to_message(request_type, &args.request)?;
    let endpoint = format!("http://{}", args.gateway);
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .context("invalid --gateway address")?
        .timeout(Duration::from_secs(args.timeout))
        .connect()
        .await
        .with_context(|| format!("connecting to the gateway at {}", args.gateway))?;
    let mut client = GateServiceClient::new(channel);
    let call = CallObjectRequest {
        client_id: String::new(),
        r#type: args.object_type,
        id: args.id,
        method: args.method,
        request: Some(Any { type_url: request.type_url, value: request.value.to_vec() }),
    };
    let response = client
        .call_object(call)
        .await
        .map_err(|status| anyhow!("call failed: {:?}: {}", status.code(), status.message()))?
        .into_inner()
        .response
        .ok_or_else(|| anyhow!("the gateway answered without a response"))?;
    println!("{}", verse_examples::json::from_message(&response.type_url, &response.value)?);
    Ok(())
}
