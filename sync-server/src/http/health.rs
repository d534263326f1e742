//! `/healthz` (the process runs), `/metrics` (Prometheus) and `/readyz` (the database answers; the
//! relay's state is reported but does not make a replica unready, since a
//! replica serves its own clients while Redis is away).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Prometheus text exposition of this process's metrics.
async fn metrics() -> impl IntoResponse {
    let body = crate::telemetry::metrics()
        .map(|handle| handle.render())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await;
    let relay = if state.config.relay.redis_url.is_none() {
        "in-process"
    } else if state.rooms.context().relay.is_connected() {
        "connected"
    } else {
        "disconnected"
    };
    match ping {
        Ok(Ok(())) => Ok(Json(json!({ "status": "ready", "relay": relay }))),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: database unavailable");
            Err(ApiError::Unavailable)
        }
        Err(_) => {
            tracing::warn!("not ready: database did not answer in time");
            Err(ApiError::Unavailable)
        }
    }
}
