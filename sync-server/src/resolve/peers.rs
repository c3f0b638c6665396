//! Asking one peer: the request a search sends, and how its answer is read.

use std::time::Duration;

use reqwest::header::ACCEPT;
use reqwest::StatusCode;
use sync_core::resolve::{ResolveAnswer, Triple};

use super::cache::Files;

/// The header that carries a search's remaining hop count.
pub const HOPS_HEADER: &str = "tidemark-resolve-hops";
/// The header that carries a search's visited list: base URLs, separated by commas.
pub const VISITED_HEADER: &str = "tidemark-resolve-visited";
/// The largest answer read from a peer. [`sync_core::resolve::MAX_FILES`] files with long URLs
/// could be more; a bundle that large is refused rather than held in memory.
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// What one peer said.
#[derive(Debug)]
pub enum PeerAnswer {
    /// It knows the triple.
    Found(Files),
    /// It (and the search below it) does not.
    Unknown,
    /// No usable answer: unreachable, timed out, an error status, or a malformed body.
    Failed(String),
}

/// The HTTP client searches use, with the per-peer timeout.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        // A peer is another Tidemark server; redirects would only hide misconfiguration.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("the TLS backend initialises")
}

/// `GET {peer}/v1/resolve?…` with the search's hop count and visited list.
pub async fn ask(
    client: &reqwest::Client,
    peer: &str,
    triple: &Triple,
    hops: u32,
    visited: &str,
) -> PeerAnswer {
    let url = format!("{peer}/v1/resolve?{}", triple.query());
    let sent = client
        .get(&url)
        .header(ACCEPT, "application/json")
        .header(HOPS_HEADER, hops)
        .header(VISITED_HEADER, visited)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(e) => return PeerAnswer::Failed(format!("{peer}: {e}")),
    };
    match response.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return PeerAnswer::Unknown,
        status => return PeerAnswer::Failed(format!("{peer}: answered {status}")),
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_ANSWER_BYTES => {
                body.extend_from_slice(&chunk)
            }
            Ok(Some(_)) => {
                return PeerAnswer::Failed(format!("{peer}: answer over {MAX_ANSWER_BYTES} bytes"))
            }
            Ok(None) => break,
            Err(e) => return PeerAnswer::Failed(format!("{peer}: {e}")),
        }
    }
    match serde_json::from_slice::<ResolveAnswer>(&body).map(ResolveAnswer::validated) {
        Ok(Ok(files)) => PeerAnswer::Found(files.into()),
        Ok(Err(why)) => PeerAnswer::Failed(format!("{peer}: {why}")),
        Err(e) => PeerAnswer::Failed(format!("{peer}: not a resolve answer: {e}")),
    }
}
