//! One error type for every handler, answering in the contract's JSON shape.
//!
//! Internal detail (SQL errors, panics) is logged with the request's span and never returned.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sync_core::error::Detail;
use sync_core::push::{ConflictAnswer, PushParseError, ResetAnswer};
use sync_core::quota::{Exceeded, Quota, Usage};
use sync_core::{ErrorBody, ErrorCode};

use crate::store::StoreError;

/// Seconds a client is asked to wait after a 503.
const UNAVAILABLE_RETRY_AFTER_S: u32 = 2;

/// Everything a handler can answer besides success.
#[derive(Debug)]
pub enum ApiError {
    /// 400 with the places that are wrong.
    Invalid {
        message: String,
        details: Vec<Detail>,
    },
    /// 401.
    Unauthorized(&'static str),
    /// 403.
    Forbidden(&'static str),
    /// 404: no such resource, or one the caller may not know about.
    NotFound,
    /// 404: no server in the search knows the bundle version asked for.
    UnknownBundle,
    /// 403: a creator tried to change objects someone else created (batch indexes).
    NotAuthor(Vec<usize>),
    /// 413.
    TooLarge(String),
    /// 403: a write to a mirrored collection; the upstream's URL of the collection.
    Mirrored(String),
    /// 416: a `Range` outside the resource.
    RangeNotSatisfiable,
    /// 409, with what the client needs to merge.
    Conflict(Box<ConflictAnswer>),
    /// 410.
    Reset(ResetAnswer),
    /// 429: over a rate limit.
    RateLimited {
        message: String,
        /// Seconds until a request would be allowed (`Retry-After`).
        retry_after_s: u64,
    },
    /// 507: the push would take the owner's stored data over their quota; nothing was written.
    OverQuota {
        exceeded: Exceeded,
        usage: Usage,
        quota: Quota,
    },
    /// 408: the request body stalled for longer than `--body-timeout`.
    BodyTimeout,
    /// 503: the store cannot serve right now.
    Unavailable(String),
    /// 507: out of disk.
    InsufficientStorage,
    /// 500: a bug. The text is logged, not returned.
    Internal(String),
}

impl ApiError {
    /// A 400 about one field outside any object.
    pub fn invalid_field(field: &str, message: &str) -> ApiError {
        ApiError::Invalid {
            message: format!("{field} {message}"),
            details: vec![Detail {
                index: None,
                field: field.into(),
                message: message.into(),
            }],
        }
    }
}

/// Why reading a request body failed: over `limit` bytes (413), stalled (408), or broken
/// (400). Both errors may sit several layers down the source chain.
pub fn body_read_error(e: &axum::Error, too_large: impl FnOnce() -> String) -> ApiError {
    let mut causes = std::iter::successors(std::error::Error::source(e), |s| s.source());
    let cause = causes.find(|s| {
        s.is::<http_body_util::LengthLimitError>() || s.is::<tower_http::timeout::TimeoutError>()
    });
    match cause {
        Some(c) if c.is::<http_body_util::LengthLimitError>() => ApiError::TooLarge(too_large()),
        Some(_) => ApiError::BodyTimeout,
        None => ApiError::Invalid {
            message: format!("the body could not be read: {e}"),
            details: vec![],
        },
    }
}

impl From<PushParseError> for ApiError {
    fn from(e: PushParseError) -> ApiError {
        match e {
            PushParseError::Malformed(message) => ApiError::Invalid {
                message,
                details: vec![],
            },
            PushParseError::TooManyObjects { count, max } => ApiError::TooLarge(format!(
                "the batch has {count} objects; at most {max} are allowed"
            )),
            PushParseError::ObjectTooLarge { index, max } => {
                ApiError::TooLarge(format!("object {index}: data is over {max} bytes"))
            }
            PushParseError::Invalid(details) => ApiError::Invalid {
                message: format!("the batch has {} problem(s); see details", details.len()),
                details,
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Full => ApiError::InsufficientStorage,
            StoreError::Unavailable(m) => ApiError::Unavailable(m),
            StoreError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Invalid { message, details } => (
                StatusCode::BAD_REQUEST,
                ErrorBody {
                    error: ErrorCode::InvalidRequest,
                    message,
                    details,
                },
            ),
            ApiError::Unauthorized(message) => {
                let mut response = error_response(
                    StatusCode::UNAUTHORIZED,
                    ErrorBody::new(ErrorCode::Unauthorized, message),
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tidemark\""),
                );
                return response;
            }
            ApiError::Forbidden(message) => (
                StatusCode::FORBIDDEN,
                ErrorBody::new(ErrorCode::Forbidden, message),
            ),
            ApiError::NotAuthor(indexes) => (
                StatusCode::FORBIDDEN,
                ErrorBody {
                    error: ErrorCode::Forbidden,
                    message:
                        "creators may only change the objects they created; nothing was written"
                            .into(),
                    details: indexes
                        .into_iter()
                        .map(|index| Detail {
                            index: Some(index),
                            field: "id".into(),
                            message: "was created by someone else".into(),
                        })
                        .collect(),
                },
            ),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                ErrorBody::new(ErrorCode::NotFound, "no such collection"),
            ),
            ApiError::UnknownBundle => (
                StatusCode::NOT_FOUND,
                ErrorBody::new(
                    ErrorCode::NotFound,
                    "no server in the search knows this identifier, file_version and application_version",
                ),
            ),
            ApiError::TooLarge(message) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorBody::new(ErrorCode::TooLarge, message),
            ),
            ApiError::Mirrored(primary) => {
                return json_response(
                    StatusCode::FORBIDDEN,
                    &serde_json::json!({
                        "error": ErrorCode::Forbidden,
                        "message": "this collection is a read-only mirror; write to the primary",
                        "primary": primary,
                    }),
                )
            }
            ApiError::RangeNotSatisfiable => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    "the requested range lies outside the blob",
                ),
            ),
            ApiError::Conflict(answer) => return json_response(StatusCode::CONFLICT, &*answer),
            ApiError::Reset(answer) => return json_response(StatusCode::GONE, &answer),
            ApiError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                let mut response = error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorBody::new(
                        ErrorCode::Unavailable,
                        "the server cannot serve this right now; retry later",
                    ),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, UNAVAILABLE_RETRY_AFTER_S.into());
                return response;
            }
            ApiError::RateLimited {
                message,
                retry_after_s,
            } => {
                let mut response = error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorBody::new(ErrorCode::RateLimited, message),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, retry_after_s.into());
                return response;
            }
            ApiError::OverQuota {
                exceeded,
                usage,
                quota,
            } => {
                let (what, used, limit) = match exceeded {
                    Exceeded::Bytes => ("bytes", usage.bytes, quota.max_bytes),
                    Exceeded::Objects => ("objects", usage.objects, quota.max_objects),
                };
                let limit = limit.unwrap_or(u64::MAX);
                let message = format!(
                    "this push would take the owner's stored data over their quota of {limit} {what} \
                     ({used} used); nothing was written. Delete objects to make room"
                );
                let body = serde_json::json!({
                    "error": ErrorCode::InsufficientStorage,
                    "message": message,
                    "exceeded": exceeded,
                    "quota": quota_report(usage, quota),
                });
                return json_response(StatusCode::INSUFFICIENT_STORAGE, &body);
            }
            ApiError::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                ErrorBody::new(
                    ErrorCode::Unavailable,
                    "the request body stalled for longer than the server waits; nothing was written",
                ),
            ),
            ApiError::InsufficientStorage => (
                StatusCode::INSUFFICIENT_STORAGE,
                ErrorBody::new(
                    ErrorCode::InsufficientStorage,
                    "the server is out of storage space; nothing was written",
                ),
            ),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorBody::new(
                        ErrorCode::Internal,
                        "internal error; the server log has the details",
                    ),
                )
            }
        };
        error_response(status, body)
    }
}

/// An owner's usage against their limits, as `/v1/info` and the quota `507` show it:
/// `{"bytes": {"used", "limit"}, "objects": {"used", "limit"}}`, `limit: null` for none.
pub fn quota_report(usage: Usage, quota: Quota) -> serde_json::Value {
    serde_json::json!({
        "bytes": { "used": usage.bytes, "limit": quota.max_bytes },
        "objects": { "used": usage.objects, "limit": quota.max_objects },
    })
}

/// A JSON answer with any serialisable body.
pub fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => json_text_response(status, text),
        Err(e) => ApiError::Internal(format!("serialising an answer: {e}")).into_response(),
    }
}

/// A JSON answer whose text is already written.
pub fn json_text_response(status: StatusCode, text: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        text,
    )
        .into_response()
}

fn error_response(status: StatusCode, body: ErrorBody) -> Response {
    json_response(status, &body)
}

/// The error code the contract uses for a status that some layer (the router, the body limit,
/// the timeout) produced without a body of our shape.
pub fn code_for_status(status: StatusCode) -> (ErrorCode, &'static str) {
    match status {
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            "this method is not allowed here",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            (ErrorCode::TooLarge, "the request body is over the limit")
        }
        StatusCode::REQUEST_TIMEOUT => (ErrorCode::Unavailable, "the request took too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            (ErrorCode::UnsupportedMediaType, "the body must be JSON")
        }
        s if s.is_client_error() => (ErrorCode::InvalidRequest, "the request is not valid"),
        _ => (
            ErrorCode::Internal,
            "internal error; the server log has the details",
        ),
    }
}

/// Middleware: gives every error answer that lacks one the contract's JSON body.
///
/// Layers outside our handlers (routing, tower-http's body limit and timeout, panics) answer
/// with empty or plain-text bodies; clients should never have to parse two shapes.
pub async fn ensure_json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let status = response.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The refused body is left (partly) unread, so the connection cannot be reused: say
        // so, or a keep-alive client sends its next request into a closing socket.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }

    let (code, message) = code_for_status(status);
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut fixed = json_response(status, &ErrorBody::new(code, message));

    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
}
