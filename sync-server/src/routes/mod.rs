//! The HTTP routes, one module per resource, and the layers every request goes through.

pub mod access;
pub mod acl;
pub mod blobs;
pub mod channels;
pub mod data;
pub mod events;
pub mod info;
pub mod openapi;
pub mod ops;
pub mod resolve;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tower_http::trace::TraceLayer;

use crate::error::{body_read_error, ensure_json_errors, ApiError};
use crate::AppState;

/// Headers a browser may read from our answers (the contract's list).
const EXPOSED: [&str; 4] = ["backoff", "retry-after", "x-sync-poll-time", "etag"];

/// All routes with their layers, outermost first: CORS (so that even errors carry the
/// headers a browser needs to read them), the request id (set, and echoed in the answer), the
/// JSON error shape, tracing (one span per request, carrying its id), panic catching, the
/// request timeout, the body timeout (a stalled upload) and the body limit. Metrics are recorded per matched route.
pub fn router(state: AppState) -> Router {
    // Install the metrics recorder now, so that requests before the first scrape count.
    crate::metrics::handle();
    let request_id = HeaderName::from_static("x-request-id");
    // `Router::layer` wraps what is already there, so the last layer added is the outermost.
    // Blob uploads have their own, larger, body limit.
    let json_routes = Router::new()
        .merge(info::router())
        .merge(data::router())
        .merge(events::router())
        .merge(acl::router())
        .merge(ops::router())
        .merge(channels::router())
        .merge(resolve::router())
        .merge(openapi::router())
        .layer(RequestBodyLimitLayer::new(state.limits.max_body_bytes));
    let blob_routes =
        blobs::router().layer(RequestBodyLimitLayer::new(state.config.max_blob_bytes));
    Router::new()
        .merge(json_routes)
        .merge(blob_routes)
        .route_layer(axum::middleware::from_fn(crate::metrics::record))
        .layer(RequestBodyTimeoutLayer::new(state.config.body_timeout))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, state.config.request_timeout))
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %request.method(), uri = %request.uri().path(), request_id = %id)
        }))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::rate_limit::per_ip,
        ))
        .layer(axum::middleware::from_fn(ensure_json_errors))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(cors(&state.config.cors_origins))
        .with_state(state)
}

/// Reads a whole request body that the route's body limit layer caps at `limit` bytes:
/// `413` over the limit, `408` if it stalls, `400` if it cannot be read.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| body_read_error(&e, || format!("the body is over {limit} bytes")))
}

/// tower-http's CorsLayer from `--cors-origin` values. `*` allows any origin, without
/// credentials (we use bearer tokens, never cookies, so credentials are not needed at all).
fn cors(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            header::RANGE,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers(EXPOSED.map(HeaderName::from_static))
        .max_age(std::time::Duration::from_secs(24 * 3600))
}
