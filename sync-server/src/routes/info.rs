//! `GET /v1/info`: what this server is and what it allows.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::{quota_report, ApiError};
use crate::AppState;

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/info", get(info))
}

/// Anyone may ask; a caller with a valid token also learns their own quota usage.
async fn info(
    State(state): State<AppState>,
    caller: Option<Caller>,
) -> Result<Json<Value>, ApiError> {
    let mut info = json!({
        "name": "tidemark",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": 1,
        "limits": state.limits,
        "tombstone_retention_s": state.config.tombstone_retention.as_secs(),
        "presence": state.presence.limits(),
        "rate_limits": state.rate_limits.settings(),
        "max_blob_bytes": state.config.max_blob_bytes,
        "features": ["pull", "push", "reset", "tombstones", "expires", "etag", "presence", "resolve", "blobs", "mirrors"],
    });
    if let Some(Caller(user)) = caller {
        let mut usage = state.store.usage(&user).await?;
        let blob_bytes = state.store.blob_bytes(&user).await?;
        // Blobs count toward the byte quota; their share is also shown on its own.
        usage.bytes = usage.bytes.saturating_add(blob_bytes);
        let mut quota = quota_report(usage, state.config.quota());
        quota["owner"] = json!(user);
        info["quota"] = quota;
        info["blob_bytes"] = json!(blob_bytes);
    }
    Ok(Json(info))
}
