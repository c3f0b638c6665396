//! `GET/PUT /v1/data/{app}/{owner}/{collection}/acl`: sharing, for the owner only.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use sync_core::acl::Acl;

use crate::auth::Caller;
use crate::error::{json_response, ApiError};
use crate::routes::access::{authorize, Need};
use crate::AppState;

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/data/{app}/{owner}/{collection}/acl",
        get(get_acl).put(put_acl),
    )
}

async fn get_acl(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let (key, _) = authorize(&state, &caller, path, Need::Own).await?;
    let acl = state.store.acl(&key).await?.unwrap_or_default();
    Ok(json_response(StatusCode::OK, &acl))
}

/// Replaces the ACL. It takes effect at once: every later request reads it, and open event
/// streams re-check their caller and close if they lost access.
async fn put_acl(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (key, _) = authorize(&state, &caller, path, Need::Own).await?;
    let acl: Acl = serde_json::from_slice(&body).map_err(|e| ApiError::Invalid {
        message: format!(
            "the body must be {{\"readers\": [..], \"writers\": [..], \"creators\": [..]}}: {e}"
        ),
        details: vec![],
    })?;
    acl.validate()
        .map_err(|m| ApiError::invalid_field("acl", &m))?;
    state.store.set_acl(&key, acl.clone()).await?;
    Ok(json_response(StatusCode::OK, &acl))
}
