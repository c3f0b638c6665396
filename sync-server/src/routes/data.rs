//! `/v1/data/{app}/{owner}[/{collection}]`: list, pull, push and reset.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use sync_core::acl::Role;
use sync_core::commit::check_pull;
use sync_core::memory_store::PushOutcome;
use sync_core::{Head, PullQuery, PushRequest};

use crate::auth::Caller;
use crate::error::{json_response, json_text_response, ApiError};
use crate::routes::access::{
    authorize, owner_in_path, refuse_if_mirror_behind, refuse_if_mirrored, Need,
};
use crate::routes::read_body;
use crate::store::{now_ms, PushContext, PushReply};
use crate::AppState;

/// Writes waiting for the writer above which answers carry `Backoff`.
const BACKOFF_BACKLOG: usize = 2048;
/// The `Backoff` asked for, in seconds.
const BACKOFF_S: u32 = 5;

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/data/{app}/{owner}", get(list))
        .route(
            "/v1/data/{app}/{owner}/{collection}",
            get(pull).post(push).delete(reset),
        )
}

/// The `ETag` of a collection's state: any write, reset or purge changes it.
fn etag(head: &Head) -> HeaderValue {
    let epoch = head.collection_id.as_deref().unwrap_or("-");
    HeaderValue::from_str(&format!("W/\"{epoch}.{}.{}\"", head.last_seq, head.horizon))
        .expect("epochs are hex")
}

/// Whether an `If-None-Match` value names the current state (RFC 9110: a list of tags, or
/// `*` for "any current representation", compared weakly).
fn if_none_match_hits(wanted: &HeaderValue, tag: &HeaderValue, head: &Head) -> bool {
    let Ok(wanted) = wanted.to_str() else {
        return false;
    };
    let ours = tag.to_str().unwrap_or_default().trim_start_matches("W/");
    wanted.split(',').map(str::trim).any(|candidate| {
        (candidate == "*" && head.collection_id.is_some())
            || candidate.trim_start_matches("W/") == ours
    })
}

/// Adds the load hints every successful answer may carry.
fn with_hints(state: &AppState, mut response: Response) -> Response {
    if state.store.backlog() > BACKOFF_BACKLOG {
        response.headers_mut().insert("backoff", BACKOFF_S.into());
    }
    response
}

/// The collections of an owner that the caller may read (all of them, for the owner).
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, owner)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let owner = owner_in_path(&caller, &app, &owner)?;
    let mut collections = state.store.list(&app, &owner).await?;
    collections.retain(|c| Role::of(&caller.0, &owner, c.acl.as_ref()).can_read());
    Ok(with_hints(
        &state,
        json_response(StatusCode::OK, &json!({ "collections": collections })),
    ))
}

async fn pull(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (key, _) = authorize(&state, &caller, path, Need::Read).await?;
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let query = PullQuery::from_pairs(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &state.limits,
    )
    .map_err(|details| ApiError::Invalid {
        message: "the pull query is not valid".into(),
        details,
    })?;

    refuse_if_mirror_behind(&state, &key, query.since).await?;
    if let Some(wanted) = headers.get(header::IF_NONE_MATCH) {
        let head = state.store.head(&key).await?;
        // A cursor that must reset is told so, whatever the client has cached.
        if check_pull(&head, query.since, query.horizon).is_ok() {
            let tag = etag(&head);
            if if_none_match_hits(wanted, &tag, &head) {
                return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
            }
        }
    }
    let page = state
        .store
        .pull_json(&key, &query)
        .await?
        .map_err(ApiError::Reset)?;
    let mut response = json_text_response(StatusCode::OK, page.json);
    let h = response.headers_mut();
    h.insert(header::ETAG, etag(&page.head));
    h.insert("x-sync-poll-time", state.config.poll_time.as_secs().into());
    Ok(with_hints(&state, response))
}

async fn push(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let (key, role) = authorize(&state, &caller, path, Need::Push).await?;
    refuse_if_mirrored(&state, &key)?;
    let bytes = read_body(body, state.limits.max_body_bytes).await?;
    let request = PushRequest::parse(&bytes, &state.limits)?;
    let context = PushContext {
        user: caller.0,
        creator_only: role == Role::Creator,
        changes_limit: state.limits.max_pull_limit,
        quota: state.config.quota(),
    };
    match state.store.push(&key, request, context, now_ms()).await? {
        PushReply::Outcome(PushOutcome::Committed(ok)) => {
            if !ok.replayed {
                metrics::counter!("tidemark_records_written_total").increment(ok.seqs.len() as u64);
            }
            Ok(with_hints(&state, json_response(StatusCode::OK, &ok)))
        }
        PushReply::Outcome(PushOutcome::Conflict(answer)) => {
            metrics::counter!("tidemark_conflicts_total").increment(answer.conflicts.len() as u64);
            Err(ApiError::Conflict(Box::new(answer)))
        }
        PushReply::Outcome(PushOutcome::Reset(answer)) => Err(ApiError::Reset(answer)),
        PushReply::NotAuthor(indexes) => Err(ApiError::NotAuthor(indexes)),
        PushReply::OverQuota {
            exceeded,
            usage,
            quota,
        } => Err(ApiError::OverQuota {
            exceeded,
            usage,
            quota,
        }),
    }
}

async fn reset(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let (key, _) = authorize(&state, &caller, path, Need::Own).await?;
    refuse_if_mirrored(&state, &key)?;
    let head = state.store.reset(&key).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "collection_id": head.collection_id, "horizon": head.horizon, "last_seq": head.last_seq }),
    ))
}
