//! `GET /v1/resolve`: the files of a bundle version, as `text/uri-list` or JSON.
//!
//! Public: OpenSpace's clients send no token, and the catalog holds download URLs only.
//! The search itself is [`crate::resolve`]'s.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use sync_core::resolve::{ResolveAnswer, Triple};

use crate::error::{json_response, ApiError};
use crate::resolve::peers::{HOPS_HEADER, VISITED_HEADER};
use crate::resolve::{normalise_url, Search, MAX_VISITED};
use crate::AppState;

/// How long clients and proxies may keep a positive answer. Versions are immutable, but a
/// catalog owner may still correct a wrong entry; a day bounds how long a mistake lives.
const CACHE_CONTROL: &str = "public, max-age=86400";

/// The route.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/resolve", get(resolve))
}

async fn resolve(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let triple = Triple::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(
        |details| ApiError::Invalid {
            message: "the resolve query is not valid".into(),
            details,
        },
    )?;
    let search = search_of(&headers)?;
    let Some((files, _)) = state
        .resolver
        .resolve(&*state.store, &triple, search)
        .await?
    else {
        return Err(ApiError::UnknownBundle);
    };
    let mut response = if wants_json(&headers) {
        json_response(StatusCode::OK, &json!({ "files": &*files }))
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/uri-list; charset=utf-8"),
            )],
            ResolveAnswer::uri_list(&files),
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    h.insert(header::VARY, HeaderValue::from_static("accept"));
    Ok(response)
}

/// Whether the `Accept` header asks for JSON (names `application/json` with a non-zero `q`).
/// Anything else, or no header, gets `text/uri-list`, which is what OpenSpace reads.
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/json") && !refused
        })
}

/// The search state a peer sent along (none for a client's own request).
fn search_of(headers: &HeaderMap) -> Result<Search, ApiError> {
    let text = |name: &str| -> Result<Option<&str>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map_err(|_| ApiError::invalid_field(name, "must be ASCII text"))
            })
            .transpose()
    };
    let hops = text(HOPS_HEADER)?
        .map(|h| {
            h.trim()
                .parse::<u32>()
                .map_err(|_| ApiError::invalid_field(HOPS_HEADER, "must be a non-negative integer"))
        })
        .transpose()?;
    let mut visited = Vec::new();
    for entry in text(VISITED_HEADER)?
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        if visited.len() == MAX_VISITED {
            return Err(ApiError::invalid_field(
                VISITED_HEADER,
                "lists more than 64 servers",
            ));
        }
        let url =
            normalise_url(entry).map_err(|why| ApiError::invalid_field(VISITED_HEADER, why))?;
        visited.push(url);
    }
    Ok(Search { hops, visited })
}
