//! `PUT`/`GET /v1/data/{app}/{owner}/{collection}/blobs/{sha256}`: content-addressed blobs.
//!
//! - The name is the lower-case hex SHA-256 of the bytes; an upload is hashed and refused
//!   (`400`, nothing stored) if it does not match. Uploading a blob that is there already
//!   changes nothing (`200`); a new one answers `201`.
//! - The collection's access rules apply: whoever may push uploads, whoever may read gets.
//!   Mirrored collections refuse uploads (`403`); their mirror fetches blobs itself.
//! - `GET` answers `ETag: "<sha256>"` and `Cache-Control: private, max-age=31536000,
//!   immutable`: a name never changes its bytes, so a client may keep them for good, but they
//!   are the owner's data behind a bearer token, so shared caches must not keep them.
//!   `If-None-Match` with the tag answers `304`; one `Range` answers `206` (`416` if it lies
//!   outside the blob).
//! - Uploads over `--max-blob-bytes` get `413`. This route has its own body limit instead of
//!   `--max-body-bytes` (see `routes::router`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use sync_core::{blob, hash};

use crate::auth::Caller;
use crate::error::{json_response, ApiError};
use crate::routes::access::{authorize, refuse_if_mirrored, Need};
use crate::routes::read_body;
use crate::store::{now_ms, CollectionKey};
use crate::AppState;

/// A name never changes its bytes: a year, and never revalidated; `private` because the
/// answer is someone's data, fetched with their token.
const CACHE_CONTROL: &str = "private, max-age=31536000, immutable";

/// The route; the caller adds the body limit.
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/data/{app}/{owner}/{collection}/blobs/{sha256}",
        get(get_blob).put(put_blob),
    )
}

type BlobPath = (String, String, String, String);

/// Checks the names and access; returns the key and the blob name.
async fn blob_key(
    state: &AppState,
    caller: &Caller,
    (app, owner, collection, name): BlobPath,
    need: Need,
) -> Result<(CollectionKey, String), ApiError> {
    let (key, _) = authorize(state, caller, (app, owner, collection), need).await?;
    if !blob::is_blob_name(&name) {
        return Err(ApiError::invalid_field(
            "sha256",
            "must be the lower-case hex SHA-256 of the blob (64 characters)",
        ));
    }
    Ok((key, name))
}

/// Blobs count toward the owner's byte quota: an upload that would take data and blobs
/// together over it is refused (507). Checked before the write rather than in its
/// transaction, so two uploads racing at the limit can both pass; pushes, which are checked
/// in their transaction, then find the owner over quota.
async fn check_quota(state: &AppState, owner: &str, size: u64) -> Result<(), ApiError> {
    let quota = state.config.quota();
    if quota.max_bytes.is_none() {
        return Ok(());
    }
    let usage = state.store.quota_usage(owner).await?;
    let delta = sync_core::quota::UsageDelta {
        bytes: i64::try_from(size).unwrap_or(i64::MAX),
        objects: 0,
    };
    quota
        .check(usage, delta)
        .map_err(|exceeded| ApiError::OverQuota {
            exceeded,
            usage,
            quota,
        })
}

async fn put_blob(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<BlobPath>,
    body: Body,
) -> Result<Response, ApiError> {
    let (key, name) = blob_key(&state, &caller, path, Need::Push).await?;
    refuse_if_mirrored(&state, &key)?;
    let bytes = read_body(body, state.config.max_blob_bytes).await?;
    let actual = hash::sha256_hex(&bytes);
    if actual != name {
        return Err(ApiError::Invalid {
            message: format!(
                "the body's SHA-256 is {actual}, not the {name} in the path; nothing was stored"
            ),
            details: vec![sync_core::error::Detail {
                index: None,
                field: "sha256".into(),
                message: "does not match the body".into(),
            }],
        });
    }
    let size = bytes.len();
    check_quota(&state, &key.owner, size as u64).await?;
    let added = state
        .store
        .put_blob(&key, &name, bytes.into(), now_ms())
        .await?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(
        status,
        &json!({ "sha256": name, "size": size }),
    ))
}

async fn get_blob(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<BlobPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (key, name) = blob_key(&state, &caller, path, Need::Read).await?;
    let size = state
        .store
        .blob_size(&key, &name)
        .await?
        .ok_or(ApiError::NotFound)?;
    let etag = HeaderValue::from_str(&format!("\"{name}\"")).expect("hex is a header value");
    let cached = [
        (header::ETAG, etag.clone()),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        ),
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
    ];
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|wanted| {
            wanted.split(',').map(str::trim).any(|tag| {
                tag == "*" || tag.trim_start_matches("W/") == etag.to_str().unwrap_or_default()
            })
        })
    {
        return Ok((StatusCode::NOT_MODIFIED, cached).into_response());
    }
    let (status, start, len) = match requested_range(&headers, size) {
        Requested::Whole => (StatusCode::OK, 0, size),
        Requested::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Requested::Unsatisfiable => {
            let mut response = ApiError::RangeNotSatisfiable.into_response();
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("digits"),
            );
            return Ok(response);
        }
    };
    let bytes = state
        .store
        .read_blob(&key, &name, start, len)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut response = (status, cached, bytes).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let range = format!("bytes {start}-{}/{size}", start + len - 1);
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&range).expect("digits"),
        );
    }
    Ok(response)
}

/// What a `Range` header asks of a blob of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Requested {
    /// No range, one we ignore (not `bytes=`, malformed, or several ranges), as RFC 9110
    /// allows: the whole blob.
    Whole,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// A well-formed single range outside the blob.
    Unsatisfiable,
}

fn requested_range(headers: &HeaderMap, size: u64) -> Requested {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Requested::Whole;
    };
    let Ok(parsed) = http_range_header::parse_range_header(value) else {
        return Requested::Whole;
    };
    if parsed.ranges.len() != 1 {
        return Requested::Whole;
    }
    match parsed.validate(size).as_deref() {
        Ok([range]) if *range.start() < size && range.start() <= range.end() => {
            Requested::Part(*range.start(), *range.end())
        }
        _ => Requested::Unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(range: &str, size: u64) -> Requested {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        requested_range(&headers, size)
    }

    #[test]
    fn single_ranges_are_served_and_others_ignored_or_refused() {
        assert_eq!(ask("bytes=0-9", 100), Requested::Part(0, 9));
        assert_eq!(ask("bytes=90-", 100), Requested::Part(90, 99));
        assert_eq!(ask("bytes=-10", 100), Requested::Part(90, 99));
        assert_eq!(ask("bytes=50-500", 100), Requested::Part(50, 99));
        assert_eq!(ask("bytes=100-", 100), Requested::Unsatisfiable);
        assert_eq!(ask("bytes=0-", 0), Requested::Unsatisfiable);
        assert_eq!(ask("bytes=0-1,5-6", 100), Requested::Whole);
        assert_eq!(ask("items=0-1", 100), Requested::Whole);
        assert_eq!(requested_range(&HeaderMap::new(), 100), Requested::Whole);
    }
}
