//! `GET /v1/info`: what this server is and what it allows.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::AppState;

/// The route.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/info", get(info))
}

async fn info(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "name": "tidemark",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": 1,
        "limits": state.limits,
        "tombstone_retention_s": state.config.tombstone_retention.as_secs(),
        "presence": state.presence.limits(),
        "features": ["pull", "push", "reset", "tombstones", "expires", "etag", "presence", "resolve"],
    }))
}
