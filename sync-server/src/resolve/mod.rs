//! Resolve: which files make up a bundle version, from the catalog collection, from what peers
//! said before, or by asking the peers now.
//!
//! # The search
//!
//! `GET /v1/resolve` for a triple is answered, in this order:
//!
//! 1. from the **catalog**: the object [`Triple::catalog_id`] in the catalog collection
//!    (`--catalog-app/owner/collection`), read through the store, so it is whatever the
//!    collection holds right now (it syncs and mirrors like any data);
//! 2. from the **answer cache**: what a peer said before (versions are immutable);
//! 3. not at all (404) if this server is already in the request's **visited** list (the
//!    search has been here: a cycle), if the **negative cache** says no peer knew it less
//!    than `--resolve-negative-ttl` ago, or if no **hops** are left;
//! 4. by asking every peer not in the visited list **in parallel**, with one hop less and a
//!    visited list that adds this server *and every peer asked now*, so that two servers of
//!    one search never ask the same third one through each other. The first peer that knows
//!    the triple wins; the other requests are dropped.
//!
//! A search thus visits each server at most once per path and ends within `--resolve-hops`
//! levels; every level waits at most `--resolve-peer-timeout` for the one below.
//!
//! A negative answer is cached only when the search from here was complete: this server
//! started it (all `--resolve-hops` hops) and every one of its peers answered 404. A search
//! cut short (peers skipped as visited, fewer hops, a peer that failed) is not remembered,
//! since a fuller search might still find the triple.

pub mod cache;
pub mod peers;

use std::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt};
use sync_core::resolve::{CatalogEntry, Triple};

use crate::config::Config;
use crate::store::{CollectionKey, Store, StoreError};
use cache::{Caches, Files};
use peers::PeerAnswer;

/// The most entries a visited list may have: a search deeper or wider than this is refused.
pub const MAX_VISITED: usize = 64;

/// What this server knows about resolving, and how it asks its peers.
pub struct Resolver {
    /// Where the catalog lives.
    catalog: CollectionKey,
    /// This server's base URL as its peers know it, for visited lists.
    me: String,
    /// The peers' base URLs, normalised (see [`normalise_url`]).
    peers: Vec<String>,
    /// The hop limit of searches started here, and the most accepted from a peer.
    max_hops: u32,
    /// The client for peer requests (it carries the per-peer timeout).
    client: reqwest::Client,
    /// Answers and non-answers learned from peers.
    caches: Caches,
}

/// Where a search stands when it reaches this server (from the request's headers; a
/// client's own request has no headers and starts a search with every hop).
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Hops left, if the request said.
    pub hops: Option<u32>,
    /// The servers the search has reached or is reaching, normalised.
    pub visited: Vec<String>,
}

/// Where an answer came from (for metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This server's catalog collection.
    Catalog,
    /// A peer's earlier answer.
    Cache,
    /// A peer, just now.
    Peer,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Catalog => "catalog",
            Source::Cache => "cache",
            Source::Peer => "peer",
        }
    }
}

impl Resolver {
    /// The resolver the configuration describes. `--public-url` must be set by now (the
    /// server sets it from the bound address when the flag is absent).
    pub fn from_config(config: &Config) -> anyhow::Result<Resolver> {
        let me = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.listen));
        let me = normalise_url(&me).map_err(|why| anyhow::anyhow!("--public-url {me}: {why}"))?;
        let mut peers = Vec::new();
        for peer in &config.resolve_peers {
            let url = normalise_url(peer)
                .map_err(|why| anyhow::anyhow!("--resolve-peer {peer}: {why}"))?;
            if url != me && !peers.contains(&url) {
                peers.push(url);
            }
        }
        Ok(Resolver {
            catalog: CollectionKey {
                app: config.catalog_app.clone(),
                owner: config.catalog_owner.clone(),
                name: config.catalog_collection.clone(),
            },
            me,
            peers,
            max_hops: config.resolve_hops,
            client: peers::client(config.resolve_peer_timeout),
            caches: Caches::new(config.resolve_cache_bytes, config.resolve_negative_ttl),
        })
    }

    /// The files of `triple`, and where they came from; `None` if the search found nothing.
    pub async fn resolve(
        &self,
        store: &dyn Store,
        triple: &Triple,
        search: Search,
    ) -> Result<Option<(Files, Source)>, StoreError> {
        let found = self.find(store, triple, search).await?;
        let label = found.as_ref().map_or("not_found", |(_, s)| s.label());
        metrics::counter!("tidemark_resolve_total", "answer" => label).increment(1);
        Ok(found)
    }

    async fn find(
        &self,
        store: &dyn Store,
        triple: &Triple,
        search: Search,
    ) -> Result<Option<(Files, Source)>, StoreError> {
        if let Some(files) = self.catalog_entry(store, triple).await? {
            return Ok(Some((files, Source::Catalog)));
        }
        if let Some(files) = self.caches.found(triple) {
            return Ok(Some((files, Source::Cache)));
        }
        if search.visited.contains(&self.me) {
            return Ok(None);
        }
        let now = Instant::now();
        if self.caches.is_unknown(triple, now) {
            metrics::counter!("tidemark_resolve_negative_cache_hits_total").increment(1);
            return Ok(None);
        }
        let hops = search.hops.map_or(self.max_hops, |h| h.min(self.max_hops));
        if hops == 0 {
            return Ok(None);
        }
        let targets: Vec<&String> = self
            .peers
            .iter()
            .filter(|p| !search.visited.contains(p))
            .collect();
        if targets.is_empty() {
            return Ok(None);
        }
        let mut visited = search.visited.clone();
        visited.push(self.me.clone());
        visited.extend(targets.iter().map(|p| p.to_string()));
        let visited = visited.join(", ");

        let mut asked: FuturesUnordered<_> = targets
            .iter()
            .map(|peer| peers::ask(&self.client, peer, triple, hops - 1, &visited))
            .collect();
        metrics::counter!("tidemark_resolve_peer_requests_total").increment(targets.len() as u64);
        let mut all_unknown = true;
        while let Some(answer) = asked.next().await {
            match answer {
                PeerAnswer::Found(files) => {
                    self.caches.remember_found(triple.clone(), files.clone());
                    return Ok(Some((files, Source::Peer)));
                }
                PeerAnswer::Unknown => {}
                PeerAnswer::Failed(why) => {
                    metrics::counter!("tidemark_resolve_peer_failures_total").increment(1);
                    tracing::warn!(%why, "a resolve peer gave no answer");
                    all_unknown = false;
                }
            }
        }
        let complete = all_unknown && hops == self.max_hops && targets.len() == self.peers.len();
        if complete {
            self.caches.remember_unknown(triple.clone(), now);
        }
        Ok(None)
    }

    /// The catalog's entry for `triple`, if it has a valid one. An invalid entry (bad JSON
    /// shape, another triple, bad files) is logged and treated as absent.
    async fn catalog_entry(
        &self,
        store: &dyn Store,
        triple: &Triple,
    ) -> Result<Option<Files>, StoreError> {
        let id = triple.catalog_id();
        let Some(object) = store.object(&self.catalog, &id).await? else {
            return Ok(None);
        };
        let Some(data) = object.data.filter(|_| !object.deleted) else {
            return Ok(None);
        };
        let entry = serde_json::from_str::<CatalogEntry>(data.as_str())
            .map_err(|e| e.to_string())
            .and_then(|entry| entry.files_for(triple));
        match entry {
            Ok(files) => Ok(Some(files.into())),
            Err(why) => {
                tracing::warn!(id, %why, "ignoring an invalid catalog entry");
                Ok(None)
            }
        }
    }
}

/// A base URL as visited lists compare it: `http(s)://host[:port][/path]`, with the host in
/// lower case, no default port, and no trailing slash. No query, fragment or credentials.
pub fn normalise_url(text: &str) -> Result<String, &'static str> {
    let url = reqwest::Url::parse(text.trim()).map_err(|_| "not a URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL");
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("must be a base URL, without query, fragment or credentials");
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_compare_after_normalisation() {
        assert_eq!(
            normalise_url("HTTP://Data.Example:80/").unwrap(),
            "http://data.example"
        );
        assert_eq!(
            normalise_url("http://127.0.0.1:8080/sync/").unwrap(),
            "http://127.0.0.1:8080/sync"
        );
        for bad in ["ftp://x", "x", "http://x/?a=1", "http://u:p@x"] {
            assert!(normalise_url(bad).is_err(), "{bad}");
        }
    }
}
