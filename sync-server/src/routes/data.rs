//! `/v1/data/{app}/{owner}[/{collection}]`: list, pull, push and reset.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use sync_core::memory_store::PushOutcome;
use sync_core::names;
use sync_core::{Head, PullQuery, PushRequest};

use crate::auth::Caller;
use crate::error::{json_response, json_text_response, ApiError};
use crate::store::{now_ms, CollectionKey};
use crate::AppState;

/// Writes waiting for the writer above which answers carry `Backoff`.
const BACKOFF_BACKLOG: usize = 2048;
/// The `Backoff` asked for, in seconds.
const BACKOFF_S: u32 = 5;

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/data/{app}/{owner}", get(list))
        .route("/v1/data/{app}/{owner}/{collection}", get(pull).post(push).delete(reset))
}

/// Checks the names in the path and that the caller may use them. `~` is the caller.
///
/// Until sharing lands, a user may read and write only their own collections.
fn owner_of(caller: &Caller, app: &str, owner: &str) -> Result<String, ApiError> {
    if !names::is_valid_app(app) {
        return Err(ApiError::invalid_field("app", "must match [a-z0-9][a-z0-9._-]{0,63}"));
    }
    let owner = if owner == "~" { caller.0.clone() } else { owner.to_string() };
    if let Err(e) = names::check_id(&owner) {
        return Err(ApiError::invalid_field("owner", e.message()));
    }
    if owner != caller.0 {
        return Err(ApiError::Forbidden("you may only use your own collections"));
    }
    Ok(owner)
}

fn collection_key(caller: &Caller, app: String, owner: &str, name: String) -> Result<CollectionKey, ApiError> {
    let owner = owner_of(caller, &app, owner)?;
    if !names::is_valid_collection(&name) {
        return Err(ApiError::invalid_field("collection", "must match [A-Za-z0-9_.-]{1,64} and not be . or .."));
    }
    Ok(CollectionKey { app, owner, name })
}

/// The `ETag` of a collection's state: any write, reset or purge changes it.
fn etag(head: &Head) -> HeaderValue {
    let epoch = head.collection_id.as_deref().unwrap_or("-");
    HeaderValue::from_str(&format!("W/\"{epoch}.{}.{}\"", head.last_seq, head.horizon))
        .expect("epochs are hex")
}

/// Adds the load hints every successful answer may carry.
fn with_hints(state: &AppState, mut response: Response) -> Response {
    if state.store.backlog() > BACKOFF_BACKLOG {
        response.headers_mut().insert("backoff", BACKOFF_S.into());
    }
    response
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, owner)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let owner = owner_of(&caller, &app, &owner)?;
    let collections = state.store.list(&app, &owner).await?;
    Ok(with_hints(&state, json_response(StatusCode::OK, &json!({ "collections": collections }))))
}

async fn pull(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, owner, name)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = collection_key(&caller, app, &owner, name)?;
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()).into_owned().collect();
    let query = PullQuery::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())), &state.limits)
        .map_err(|details| ApiError::Invalid { message: "the pull query is not valid".into(), details })?;

    if let Some(wanted) = headers.get(header::IF_NONE_MATCH) {
        let tag = etag(&state.store.head(&key).await?);
        if wanted == tag {
            return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
        }
    }
    let page = state.store.pull(&key, &query).await?.map_err(ApiError::Reset)?;
    let mut response = json_text_response(StatusCode::OK, page.answer.to_json());
    let h = response.headers_mut();
    h.insert(header::ETAG, etag(&page.head));
    h.insert("x-sync-poll-time", state.config.poll_time.as_secs().into());
    Ok(with_hints(&state, response))
}

async fn push(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, owner, name)): Path<(String, String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let key = collection_key(&caller, app, &owner, name)?;
    let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| {
        let over_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over_limit {
            ApiError::TooLarge(format!("the body is over {} bytes", state.limits.max_body_bytes))
        } else {
            ApiError::Invalid { message: format!("the body could not be read: {e}"), details: vec![] }
        }
    })?;
    let request = PushRequest::parse(&bytes, &state.limits)?;
    match state.store.push(&key, request, now_ms()).await? {
        PushOutcome::Committed(ok) => Ok(with_hints(&state, json_response(StatusCode::OK, &ok))),
        PushOutcome::Conflict(answer) => Err(ApiError::Conflict(Box::new(answer))),
        PushOutcome::Reset(answer) => Err(ApiError::Reset(answer)),
    }
}

async fn reset(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, owner, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let key = collection_key(&caller, app, &owner, name)?;
    let head = state.store.reset(&key).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "collection_id": head.collection_id, "horizon": head.horizon, "last_seq": head.last_seq }),
    ))
}
