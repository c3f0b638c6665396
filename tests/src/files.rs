//! A static file server in the test process: what `tidemark fetch` downloads from.
//!
//! tower-http's `ServeDir` does the serving (with `Range` and `206`, like a real web server);
//! a middleware in front of it records every request (the file and its `Range` header), and
//! can *trickle* a file (1 KiB every 10 ms, so that a download can be interrupted midway) or
//! *corrupt* the next answer for a file (its first byte flipped, the length unchanged).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tower_http::services::ServeDir;

/// The size of a trickled piece.
const PIECE: usize = 1024;
/// The pause before each trickled piece.
const PAUSE: Duration = Duration::from_millis(10);

/// The server; it stops when dropped (with its runtime).
pub struct FileServer {
    base: String,
    dir: tempfile::TempDir,
    shared: Arc<Shared>,
    // Dropped last: shutting the runtime down stops the server.
    _runtime: tokio::runtime::Runtime,
}

/// One request the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The file name (the path without its leading `/`).
    pub name: String,
    /// Its `Range` header, if any.
    pub range: Option<String>,
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Seen>>,
    trickled: Mutex<HashSet<String>>,
    corrupt_next: Mutex<HashSet<String>>,
}

impl FileServer {
    /// Starts serving an empty directory on `127.0.0.1:0`.
    pub fn start() -> FileServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .fallback_service(ServeDir::new(dir.path()))
            .layer(axum::middleware::from_fn_with_state(shared.clone(), watch));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("binding the file server");
        let addr = listener.local_addr().expect("a bound address");
        runtime.spawn(async move { axum::serve(listener, app).await });
        FileServer {
            base: format!("http://{addr}"),
            dir,
            shared,
            _runtime: runtime,
        }
    }

    /// The URL of `name`.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// Writes `name` with `bytes`; returns its bundle entry `{"url", "size", "sha256"}`.
    pub fn put(&self, name: &str, bytes: &[u8]) -> Value {
        std::fs::write(self.dir.path().join(name), bytes).expect("writing a served file");
        json!({"url": self.url(name), "size": bytes.len(),
               "sha256": sync_core::hash::sha256_hex(bytes)})
    }

    /// The requests for `name` so far, in order.
    pub fn requests(&self, name: &str) -> Vec<Seen> {
        let requests = self.shared.requests.lock().expect("the request log");
        requests
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }

    /// Sends `name` slowly from now on (`true`) or at full speed again (`false`).
    pub fn trickle(&self, name: &str, on: bool) {
        let mut trickled = self.shared.trickled.lock().expect("the trickle set");
        if on {
            trickled.insert(name.to_string());
        } else {
            trickled.remove(name);
        }
    }

    /// Flips the first byte of the next answer for `name`.
    pub fn corrupt_next(&self, name: &str) {
        let mut corrupt = self.shared.corrupt_next.lock().expect("the corrupt set");
        corrupt.insert(name.to_string());
    }
}

async fn watch(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let name = request.uri().path().trim_start_matches('/').to_string();
    let range = request
        .headers()
        .get(axum::http::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let seen = Seen {
        name: name.clone(),
        range,
    };
    shared.requests.lock().expect("the request log").push(seen);
    let response = next.run(request).await;
    let corrupt = shared
        .corrupt_next
        .lock()
        .expect("the corrupt set")
        .remove(&name);
    let trickle = shared
        .trickled
        .lock()
        .expect("the trickle set")
        .contains(&name);
    let (parts, body) = response.into_parts();
    if corrupt {
        let mut bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        if let Some(first) = bytes.first_mut() {
            *first ^= 0xff;
        }
        return Response::from_parts(parts, Body::from(bytes));
    }
    if !trickle {
        return Response::from_parts(parts, body);
    }
    let pieces = body.into_data_stream().flat_map(|chunk| {
        let pieces: Vec<Result<Bytes, axum::Error>> = match chunk {
            Ok(bytes) => (0..bytes.len())
                .step_by(PIECE)
                .map(|at| Ok(bytes.slice(at..(at + PIECE).min(bytes.len()))))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        futures_util::stream::iter(pieces)
    });
    let slow = pieces.then(|piece| async move {
        tokio::time::sleep(PAUSE).await;
        piece
    });
    Response::from_parts(parts, Body::from_stream(slow))
}
