//! The body of every failed request: `{"error": "<code>", "message": "<human text>", ...}`.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// The machine-readable `error` codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request is malformed or breaks a rule; `details` says where.
    InvalidRequest,
    /// 401: no valid credentials.
    Unauthorized,
    /// 403: authenticated, but not allowed.
    Forbidden,
    /// 404: no such route or resource.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 409: a concurrency check failed; nothing was applied.
    Conflict,
    /// 410: the client's cursor or collection epoch is gone; resync from 0.
    ResetRequired,
    /// 413: the body, the batch or an object is over a limit.
    TooLarge,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 429: slow down; see `Retry-After`.
    RateLimited,
    /// 500: a bug or an unexpected failure; details are in the server log, never in the answer.
    Internal,
    /// 503: temporarily unable to serve; see `Retry-After`.
    Unavailable,
    /// 507: out of storage space or quota.
    InsufficientStorage,
}

/// One problem in a request, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    /// The object's position in the batch, when the problem is inside one object.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub index: Option<usize>,
    /// The offending field (`id`, `data`, `since`, …).
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
}

/// The JSON body of an error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The machine-readable code.
    pub error: ErrorCode,
    /// A sentence for a person.
    pub message: String,
    /// Where exactly the request went wrong (`invalid_request` only).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub details: Vec<Detail>,
}

impl ErrorBody {
    /// An error with no details.
    pub fn new(error: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error,
            message: message.into(),
            details: Vec::new(),
        }
    }
}
