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
/// `listener` until `stop` is cancelled. Also drains the recorder's histogram samples every
/// [`UPKEEP_EVERY`]: without a scrape they would grow without bound.
pub async fn serve_with(
    listener: TcpListener,
    metrics: PrometheusHandle,
    ready: ReadyCheck,
    extra: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let upkeep = {
        let (metrics, stop) = (metrics.clone(), stop.clone());
        async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = every.tick() => metrics.run_upkeep(),
                }
            }
        }
    };
    let ops = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .with_state(Ops { metrics, ready });
    let router = extra.merge(ops);
    let served = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
    let (served, ()) = tokio::join!(served.into_future(), upkeep);
    served
}

/// How often [`serve_with`] drains histogram samples.
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

async fn render_metrics(State(ops): State<Ops>) -> String {
    ops.metrics.render()
}

async fn readiness(State(ops): State<Ops>) -> (StatusCode, String) {
    match (ops.ready)() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}
