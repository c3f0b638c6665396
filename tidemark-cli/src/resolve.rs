//! Resolving through a list of repositories, in order: the first that knows the triple wins.

use std::time::Duration;

use anyhow::bail;
use reqwest::header::ACCEPT;
use reqwest::StatusCode;
use sync_core::resolve::{BundleFile, ResolveAnswer, Triple};

/// The files of `triple` and the repository that named them. A repository that is down,
/// answers anything but 200, or sends a malformed list is passed over for the next one; the
/// error lists what each said.
pub async fn resolve(
    client: &reqwest::Client,
    repos: &[String],
    triple: &Triple,
    timeout: Duration,
) -> anyhow::Result<(Vec<BundleFile>, String)> {
    let mut reasons = Vec::new();
    for repo in repos {
        let base = repo.trim_end_matches('/');
        let url = format!("{base}/v1/resolve?{}", triple.query());
        let answer = client
            .get(&url)
            .header(ACCEPT, "application/json")
            .timeout(timeout)
            .send()
            .await;
        let response = match answer {
            Ok(response) => response,
            Err(e) => {
                reasons.push(format!("{base}: unreachable ({e})"));
                continue;
            }
        };
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                reasons.push(format!("{base}: does not know it"));
                continue;
            }
            status => {
                reasons.push(format!("{base}: answered {status}"));
                continue;
            }
        }
        let files = response
            .bytes()
            .await
            .map_err(|e| e.to_string())
            .and_then(|body| {
                serde_json::from_slice::<ResolveAnswer>(&body).map_err(|e| e.to_string())
            })
            .and_then(ResolveAnswer::validated);
        match files {
            Ok(files) => return Ok((files, base.to_string())),
            Err(why) => reasons.push(format!("{base}: unusable answer ({why})")),
        }
    }
    bail!(
        "no repository could resolve {}:\n  {}",
        triple.catalog_id(),
        reasons.join("\n  ")
    )
}
