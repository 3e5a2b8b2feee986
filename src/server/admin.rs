//! The admin HTTP listener: Prometheus metrics, liveness and readiness.
//!
//! - `GET /metrics`: the Prometheus text format.
//! - `GET /livez`: 200 while the process serves at all.
//! - `GET /readyz`: 200 when every required issuer has usable keys, else 503
//!   with the names of the issuers at fault, one per line.

use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::{Runtime, unix_now};

/// The admin routes.
pub fn router(runtime: Arc<Runtime>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(runtime)
}

type Shared = axum::extract::State<Arc<Runtime>>;

async fn metrics(axum::extract::State(runtime): Shared) -> impl IntoResponse {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (
        [(header::CONTENT_TYPE, content_type)],
        runtime.metrics.encode(),
    )
}

async fn readyz(axum::extract::State(runtime): Shared) -> impl IntoResponse {
    let missing = runtime.missing_issuers(unix_now());
    if missing.is_empty() {
        return (StatusCode::OK, "ready\n".to_owned());
    }
    let mut body = String::from("not ready: no usable signing keys for required issuers:\n");
    for name in missing {
        body.push_str(&name);
        body.push('\n');
    }
    (StatusCode::SERVICE_UNAVAILABLE, body)
}
