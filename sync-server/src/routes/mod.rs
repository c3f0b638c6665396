//! The HTTP routes, one module per resource, and the layers every request goes through.

pub mod data;
pub mod info;

use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::ensure_json_errors;
use crate::AppState;

/// Headers a browser may read from our answers (the contract's list).
const EXPOSED: [&str; 4] = ["backoff", "retry-after", "x-sync-poll-time", "etag"];

/// All routes with their layers, outermost first: CORS (so that even errors carry the
/// headers a browser needs to read them), the JSON error shape, tracing, panic catching, the
/// request timeout, and the body limit.
pub fn router(state: AppState) -> Router {
    // `Router::layer` wraps what is already there, so the last layer added is the outermost.
    Router::new()
        .merge(info::router())
        .merge(data::router())
        .layer(RequestBodyLimitLayer::new(state.limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, state.config.request_timeout))
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn(ensure_json_errors))
        .layer(cors(&state.config.cors_origins))
        .with_state(state)
}

/// tower-http's CorsLayer from `--cors-origin` values. `*` allows any origin, without
/// credentials (we use bearer tokens, never cookies, so credentials are not needed at all).
fn cors(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers(EXPOSED.map(HeaderName::from_static))
        .max_age(std::time::Duration::from_secs(24 * 3600))
}
