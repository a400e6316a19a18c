//! The ops HTTP port: `/metrics` (Prometheus text), `/healthz` (the process answers) and
//! `/readyz` (the node, or the gateway, is ready as the architecture defines it, see
//! [`crate::node`]); a gateway's HTTP routes share the port.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Answers whether the node is ready now, and why not.
pub type ReadyCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
struct Ops {
    metrics: PrometheusHandle,
    ready: ReadyCheck,
}

/// Serves the ops endpoints on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    ready: ReadyCheck,
    stop: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, metrics, ready, Router::new(), stop).await
}

/// Serves the ops endpoints and the routes of `extra` (a gateway's HTTP routes) on
/// `listener` until `stop` is cancelled.
pub async fn serve_with(
    listener: TcpListener,
    metrics: PrometheusHandle,
    ready: ReadyCheck,
    extra: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let ops = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .with_state(Ops { metrics, ready });
    let router = extra.merge(ops);
    axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await
}

async fn render_metrics(State(ops): State<Ops>) -> String {
    ops.metrics.render()
}

async fn readiness(State(ops): State<Ops>) -> (StatusCode, String) {
    match (ops.ready)() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}
