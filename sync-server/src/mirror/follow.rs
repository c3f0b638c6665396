//! The task that keeps one mirrored collection up to date.
//!
//! 1. **Catch up**: pull from the local head (`since = last_seq`) until `more` is false. Each
//!    page is appended verbatim if `sync_core::mirror::next_step` says it continues the copy;
//!    a `410`, a new `collection_id` or a page that does not fit means **resync**: pull the
//!    whole collection from 0 and replace the copy in one transaction.
//! 2. **Follow**: open the upstream's event stream from the local head and catch up whenever a
//!    change or reset is announced. Upstreams without events (or whose stream cannot be
//!    opened) are polled every `--mirror-poll-interval`.
//! 3. **Reconcile** every `--mirror-reconcile-interval`: pull the upstream's whole collection
//!    and compare ids, seqs and hashes with the copy (`sync_core::mirror::same_versions`);
//!    on any difference replace the copy, and fetch any blob still missing.
//!
//! Blobs an object refers to are fetched before the object is written, and only if the copy
//! lacks that hash, so a mirror's client never sees an object whose blob is not there yet
//! (unless the upstream lacks it too: that is logged and retried at reconciliation).
//!
//! Failures (upstream down, database busy) are logged and retried with a backoff that grows
//! to the poll interval; the task runs until the server shuts down.

use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use sync_core::mirror::{next_step, same_versions, Step};
use sync_core::{blob, hash, Object, PullAnswer, PullQuery};
use tokio::time::Instant;

use super::MirrorSpec;
use crate::store::{now_ms, MirrorApplied, MirrorWrite, Store, StoreError};

/// Objects per page, both when pulling from the upstream and when reading the copy.
const PAGE: usize = 1000;
/// How long one request to the upstream may take (event streams excepted).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The first retry after a failure; it doubles up to the poll interval.
const FIRST_RETRY: Duration = Duration::from_millis(200);

/// Follows one upstream collection.
pub struct Follower {
    /// What to follow.
    pub spec: MirrorSpec,
    /// Where the copy lives.
    pub store: Arc<dyn Store>,
    /// The HTTP client (shared by all followers).
    pub http: reqwest::Client,
    /// Polling interval without live events; the longest retry delay.
    pub poll_interval: Duration,
    /// How often the whole copy is compared with the upstream's.
    pub reconcile_interval: Duration,
}

/// Why a round failed; it is retried.
#[derive(Debug)]
enum Failure {
    Upstream(String),
    Store(StoreError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Upstream(why) => write!(f, "upstream: {why}"),
            Failure::Store(e) => write!(f, "local store: {e:?}"),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Store(e)
    }
}

impl From<reqwest::Error> for Failure {
    fn from(e: reqwest::Error) -> Failure {
        Failure::Upstream(e.to_string())
    }
}

/// A pull from the upstream: a page, or the upstream's `410`.
enum Pulled {
    Page(PullAnswer),
    Gone,
}

impl Follower {
    /// Runs forever (the server aborts the task at shutdown).
    pub async fn run(self) {
        let key = &self.spec.key;
        tracing::info!(upstream = %self.spec.upstream, app = %key.app, owner = %key.owner,
            collection = %key.name, "mirroring");
        let mut retry = FIRST_RETRY;
        // A reconciliation at start-up repairs whatever happened while the server was down.
        let mut reconcile_at = Instant::now();
        loop {
            let round = async {
                if Instant::now() >= reconcile_at {
                    self.reconcile().await?;
                    reconcile_at = Instant::now() + self.reconcile_interval;
                }
                self.catch_up().await
            };
            if let Err(failure) = round.await {
                tracing::warn!(%failure, collection = %key.name, ?retry, "mirroring failed; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(self.poll_interval.max(FIRST_RETRY));
                continue;
            }
            retry = FIRST_RETRY;
            match self.open_events().await {
                Some(events) => {
                    if let Err(failure) = self.follow(events, reconcile_at).await {
                        tracing::warn!(%failure, collection = %key.name, "following events failed");
                    }
                }
                None => {
                    let next_poll = Instant::now() + self.poll_interval;
                    tokio::time::sleep_until(next_poll.min(reconcile_at)).await;
                }
            }
        }
    }

    fn request(&self, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.get(url);
        match &self.spec.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// One page from the upstream.
    async fn pull(&self, since: u64, horizon: Option<u64>) -> Result<Pulled, Failure> {
        let mut url = format!("{}?since={since}&limit={PAGE}", self.spec.collection_url());
        if let Some(h) = horizon {
            url.push_str(&format!("&horizon={h}"));
        }
        let response = self.request(&url).timeout(REQUEST_TIMEOUT).send().await?;
        match response.status().as_u16() {
            200 => {
                let bytes = response.bytes().await?;
                serde_json::from_slice(&bytes)
                    .map(Pulled::Page)
                    .map_err(|e| Failure::Upstream(format!("a pull answer that is not ours: {e}")))
            }
            410 => Ok(Pulled::Gone),
            status => Err(Failure::Upstream(format!("pull answered {status}"))),
        }
    }

    /// Pulls until the copy has everything the upstream had when asked.
    async fn catch_up(&self) -> Result<(), Failure> {
        loop {
            let local = self.store.head(&self.spec.key).await?;
            let page = match self.pull(local.last_seq, None).await? {
                Pulled::Gone => return self.resync().await,
                Pulled::Page(page) => page,
            };
            match next_step(&local, &page) {
                Step::Nothing => return Ok(()),
                Step::Resync => return self.resync().await,
                Step::Append => {
                    let more = page.more;
                    self.fetch_blobs(&page.objects).await?;
                    let write = MirrorWrite::Append(page);
                    match self
                        .store
                        .apply_mirrored(&self.spec.key, write, now_ms())
                        .await?
                    {
                        MirrorApplied::Written(_) if more => continue,
                        MirrorApplied::Written(_) => return Ok(()),
                        // The head moved since we read it (another node of a PostgreSQL
                        // cluster follows the same upstream): pull again from where it is.
                        MirrorApplied::Stale(_) => continue,
                    }
                }
            }
        }
    }

    /// The upstream's whole collection, all pages joined; `None` if it was never written.
    async fn upstream_copy(&self) -> Result<Option<PullAnswer>, Failure> {
        let mut all: Option<PullAnswer> = None;
        loop {
            let (since, horizon) = all
                .as_ref()
                .map_or((0, None), |a| (a.until, Some(a.horizon)));
            let page = match self.pull(since, horizon).await? {
                Pulled::Page(page) => page,
                // Purged or reset while we paged: start again.
                Pulled::Gone => {
                    all = None;
                    continue;
                }
            };
            if page.collection_id.is_none() {
                return Ok(None);
            }
            let more = page.more;
            match &mut all {
                Some(a) if a.collection_id == page.collection_id => {
                    a.objects.extend(page.objects);
                    a.until = page.until;
                }
                // The first page, or the upstream was reset while we paged: start again.
                _ if since == 0 => all = Some(page),
                _ => {
                    all = None;
                    continue;
                }
            }
            if !more {
                let mut copy = all.expect("set above");
                copy.more = false;
                return Ok(Some(copy));
            }
        }
    }

    /// Replaces the copy with the upstream's whole collection.
    async fn resync(&self) -> Result<(), Failure> {
        let Some(copy) = self.upstream_copy().await? else {
            tracing::warn!(collection = %self.spec.key.name, "the upstream has no such collection (yet)");
            return Ok(());
        };
        tracing::info!(collection = %self.spec.key.name, collection_id = ?copy.collection_id,
            objects = copy.objects.len(), "resyncing the mirror from the upstream");
        self.fetch_blobs(&copy.objects).await?;
        self.store
            .apply_mirrored(&self.spec.key, MirrorWrite::Replace(copy), now_ms())
            .await?;
        Ok(())
    }

    /// Every object of the local copy, tombstones included.
    async fn local_copy(&self) -> Result<(Option<String>, Vec<Object>), Failure> {
        let mut objects = Vec::new();
        let mut query = PullQuery {
            since: 0,
            limit: PAGE,
            ..PullQuery::default()
        };
        loop {
            let page = match self.store.pull(&self.spec.key, &query).await? {
                Ok(page) => page.answer,
                // Our own horizon moved while we paged: the comparison will simply differ.
                Err(_) => return Ok((None, objects)),
            };
            objects.extend(page.objects);
            if !page.more {
                return Ok((page.collection_id, objects));
            }
            query.since = page.until;
            query.horizon = Some(page.horizon);
        }
    }

    /// Compares the whole copy with the upstream's and replaces it if they differ.
    async fn reconcile(&self) -> Result<(), Failure> {
        let Some(upstream) = self.upstream_copy().await? else {
            return Ok(());
        };
        let (epoch, ours) = self.local_copy().await?;
        self.fetch_blobs(&upstream.objects).await?;
        if epoch == upstream.collection_id && same_versions(&ours, &upstream.objects) {
            return Ok(());
        }
        if epoch.is_some() {
            tracing::warn!(collection = %self.spec.key.name, "the mirror drifted from its upstream; repairing");
        }
        self.store
            .apply_mirrored(&self.spec.key, MirrorWrite::Replace(upstream), now_ms())
            .await?;
        Ok(())
    }

    /// Fetches every blob the live `objects` refer to that the copy lacks.
    async fn fetch_blobs(&self, objects: &[Object]) -> Result<(), Failure> {
        let names = objects
            .iter()
            .filter(|o| !o.deleted)
            .filter_map(|o| o.data.as_ref())
            .flat_map(blob::refs);
        for name in names {
            if self.store.blob_size(&self.spec.key, &name).await?.is_some() {
                continue;
            }
            let url = format!("{}/blobs/{name}", self.spec.collection_url());
            let response = self.request(&url).timeout(REQUEST_TIMEOUT).send().await?;
            match response.status().as_u16() {
                200 => {}
                404 => {
                    tracing::warn!(blob = %name, "the upstream lacks a blob an object refers to");
                    continue;
                }
                status => return Err(Failure::Upstream(format!("blob {name}: {status}"))),
            }
            let bytes = response.bytes().await?.to_vec();
            if hash::sha256_hex(&bytes) != name {
                return Err(Failure::Upstream(format!(
                    "blob {name} arrived with another hash"
                )));
            }
            self.store
                .put_blob(&self.spec.key, &name, bytes, now_ms())
                .await?;
        }
        Ok(())
    }

    /// The upstream's event stream from the local head, if it has one.
    async fn open_events(&self) -> Option<reqwest::Response> {
        let since = self.store.head(&self.spec.key).await.ok()?.last_seq;
        let url = format!("{}/events?since={since}", self.spec.collection_url());
        let response = self
            .request(&url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .ok()?;
        (response.status() == reqwest::StatusCode::OK).then_some(response)
    }

    /// Catches up whenever the stream announces something the copy lacks; returns when the
    /// stream ends or at `until` (time to reconcile).
    async fn follow(&self, events: reqwest::Response, until: Instant) -> Result<(), Failure> {
        let mut events = events.bytes_stream().eventsource();
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                () = tokio::time::sleep_until(until) => return Ok(()),
            };
            match event {
                Some(Ok(event)) if event.event == "change" => {
                    let seq: u64 = event.id.parse().unwrap_or(u64::MAX);
                    if seq > self.store.head(&self.spec.key).await?.last_seq {
                        self.catch_up().await?;
                    }
                }
                Some(Ok(event)) if event.event == "reset" => self.catch_up().await?,
                // `error`: the upstream is about to close the stream.
                Some(Ok(event)) if event.event == "error" => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(Failure::Upstream(e.to_string())),
                None => return Ok(()),
            }
        }
    }
}
