//! `GET /v1/openapi.json`: the protocol as OpenAPI 3.1.
//!
//! The document (`sync-server/openapi.json`) is kept by hand, next to the routes, rather than
//! generated: our answers are written by `sync-core`'s own JSON writers and hand-checked
//! parsers (no serde types on most routes to derive a schema from), and the core is `no_std`,
//! so annotating it for a generator would put HTTP concerns where they do not belong. What
//! keeps the document honest is testing: the unit test below checks that it names exactly the
//! routes the modules register, `tests/tests/e2e/openapi.rs` checks every method of every path
//! against the running server and validates real answers against its schemas, and
//! `scripts/test-schema.sh` runs schemathesis against it.

use axum::http::{header, HeaderValue};
use axum::routing::get;
use axum::Router;

use crate::AppState;

/// The document, as served.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

/// The route.
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/openapi.json",
        get(|| async {
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                OPENAPI_JSON,
            )
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every path given to `.route(` in the route modules' source.
    fn registered_paths() -> BTreeSet<String> {
        let sources = [
            include_str!("info.rs"),
            include_str!("data.rs"),
            include_str!("events.rs"),
            include_str!("acl.rs"),
            include_str!("ops.rs"),
            include_str!("channels.rs"),
            include_str!("openapi.rs"),
            include_str!("blobs.rs"),
            include_str!("resolve.rs"),
        ];
        let mut paths = BTreeSet::new();
        for source in sources {
            // Only the code that is compiled into the server (this test talks of `.route(`).
            let source = source.split("#[cfg(test)]").next().unwrap();
            for (at, _) in source.match_indices(".route(") {
                let rest = &source[at..];
                // The first string literal after `.route(` is the path.
                let start = rest.find('"').expect("a path literal") + 1;
                let end = start + rest[start..].find('"').expect("a closing quote");
                paths.insert(rest[start..end].to_string());
            }
        }
        paths
    }

    #[test]
    fn the_document_names_exactly_the_routes_we_serve() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        let documented: BTreeSet<String> = document["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        let registered = registered_paths();
        // The scan must find the routes at all, or the comparison would prove nothing.
        assert!(registered.contains("/v1/data/{app}/{owner}/{collection}"));
        assert!(registered.contains("/v1/openapi.json"));
        assert_eq!(documented, registered);
    }

    #[test]
    fn the_route_modules_scanned_are_all_the_route_modules() {
        // A new routes/<resource>.rs must be added to `registered_paths` above.
        let modules: BTreeSet<&str> = include_str!("mod.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
            .collect();
        let scanned: BTreeSet<&str> = [
            "access", "acl", "blobs", "channels", "data", "events", "info", "openapi", "ops",
            "resolve",
        ]
        .into();
        assert_eq!(
            modules, scanned,
            "access.rs has no routes; every other module is scanned"
        );
    }
}
