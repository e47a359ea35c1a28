//! The HTTP endpoint: `/metrics` (Prometheus text format), `/healthz`
//! (the daemon answers) and `/readyz` (503 until the source is attached
//! and the rules are loaded).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::Telemetry;

/// Binds `addr` (on `runtime`) and serves until the runtime shuts down.
/// Returns the bound address (useful with port 0).
pub fn start(
    runtime: &tokio::runtime::Handle,
    addr: SocketAddr,
    telemetry: Arc<Telemetry>,
) -> std::io::Result<SocketAddr> {
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(telemetry);
    runtime.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(bound)
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], t.render())
}

async fn readyz(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    if t.is_ready() { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "starting\n") }
}
