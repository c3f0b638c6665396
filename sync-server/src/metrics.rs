//! Prometheus metrics: what is recorded, and the middleware that records requests.
//!
//! Names, all prefixed `tidemark_`:
//! - `http_requests_total{op, status}`: every request, by operation and status code;
//! - `request_duration_seconds{op}`: latency histograms (`op` is `push`, `pull`, `list`,
//!   `events`, `acl`, `reset`, `info`, `resolve` or `other`);
//! - `resolve_total{answer}`: resolve answers by where they came from (`catalog`, `cache`,
//!   `peer`, `not_found`); `resolve_peer_requests_total`: requests sent to peers;
//!   `resolve_peer_failures_total`: those that got no usable answer;
//!   `resolve_negative_cache_hits_total`: searches the negative cache stopped;
//! - `records_written_total`, `conflicts_total`: from push answers;
//! - `event_streams_open`, `write_backlog`, `db_pool_connections{state}`: read at scrape time.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// Latency buckets, in seconds: from 0.1 ms to 10 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// The process-wide recorder (a process has one; tests may build several apps).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; ours then records nothing, and
        // `/metrics` says so by being empty of request metrics.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Which operation a request is, for labels with few values.
fn op(method: &Method, route: &str) -> &'static str {
    match (method, route) {
        (&Method::POST, "/v1/data/{app}/{owner}/{collection}") => "push",
        (&Method::GET, "/v1/data/{app}/{owner}/{collection}") => "pull",
        (&Method::DELETE, "/v1/data/{app}/{owner}/{collection}") => "reset",
        (_, "/v1/data/{app}/{owner}") => "list",
        (_, "/v1/data/{app}/{owner}/{collection}/events") => "events",
        (_, "/v1/data/{app}/{owner}/{collection}/acl") => "acl",
        (_, "/v1/info") => "info",
        (_, "/v1/resolve") => "resolve",
        _ => "other",
    }
}

/// Middleware: counts every request and times it (to the response head; event streams are
/// timed to their start).
pub async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let op = op(request.method(), &route);
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("tidemark_http_requests_total", "op" => op, "status" => status).increment(1);
    metrics::histogram!("tidemark_request_duration_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`: the Prometheus text format.
pub async fn render(State(state): State<AppState>) -> String {
    let open_streams = state.config.max_event_streams - state.stream_slots.available_permits();
    metrics::gauge!("tidemark_event_streams_open").set(open_streams as f64);
    metrics::gauge!("tidemark_write_backlog").set(state.store.backlog() as f64);
    if let Some((size, idle)) = state.store.pool_usage() {
        metrics::gauge!("tidemark_db_pool_connections", "state" => "idle").set(idle as f64);
        metrics::gauge!("tidemark_db_pool_connections", "state" => "in_use")
            .set((size - idle) as f64);
    }
    handle().render()
}
