//! `GET /v1/data/{app}/{owner}/{collection}/events`: live changes as Server-Sent Events.
//!
//! A stream first catches up from `since` (or `Last-Event-ID`) by reading pages from the
//! store, then follows the live hub. It subscribes to the hub *before* the first read, and
//! skips live events at or below the seq it has reached, so no change is lost or sent twice at
//! the seam.
//!
//! Events: `change` (one object, `id:` its seq), `reset` (the new `collection_id`; `id:` the
//! new horizon, so a reconnect resumes at the new epoch's start), and `error` just before the
//! server closes a stream (`too_slow`: the client fell a whole ring behind; it reconnects and
//! catches up from the store). A comment heartbeat keeps idle streams open through proxies.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream};
use serde_json::json;
use sync_core::{PullAnswer, PullQuery};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{watch, OwnedSemaphorePermit};

use crate::auth::StreamCaller;
use crate::error::ApiError;
use crate::live::LiveEvent;
use crate::routes::access::{authorize, refuse_if_mirror_behind, role_of, Need};
use crate::store::CollectionKey;
use crate::AppState;

/// Objects read from the store per catch-up page.
const CATCH_UP_PAGE: usize = 1000;

/// The route.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/data/{app}/{owner}/{collection}/events", get(events))
}

async fn events(
    State(state): State<AppState>,
    StreamCaller(caller): StreamCaller,
    Path(path): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Read before the role is checked: any ACL change after this makes the stream look again.
    let access_checked_at = state.hub.access_generation();
    let (key, _) = authorize(&state, &caller, path, Need::Read).await?;
    let mut since = 0;
    for (k, v) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        if k == "since" {
            since = v
                .parse()
                .map_err(|_| ApiError::invalid_field("since", "must be a non-negative integer"))?;
        }
    }
    if let Some(last) = headers.get("last-event-id") {
        since = last
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| ApiError::invalid_field("Last-Event-ID", "must be a seq"))?;
    }
    refuse_if_mirror_behind(&state, &key, since).await?;
    let permit = state
        .stream_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Unavailable("too many event streams are open".into()))?;

    // Subscribe first, then read: every commit after the read's snapshot is in the channel.
    let live = state.hub.subscribe(&key);
    let first = read_page(&state, &key, since)
        .await?
        .map_err(ApiError::Reset)?;
    let mut feed = Feed {
        shutting_down: state.shutting_down.clone(),
        state: state.clone(),
        key,
        live,
        caller: caller.0,
        recheck_access: false,
        access_checked_at,
        announced_epoch: None,
        cursor: since,
        queue: VecDeque::new(),
        phase: Phase::CatchingUp,
        _permit: permit,
    };
    feed.take_page(first);
    let heartbeat = KeepAlive::new()
        .interval(state.config.sse_heartbeat)
        .text("");
    Ok(Sse::new(feed.into_stream())
        .keep_alive(heartbeat)
        .into_response())
}

async fn read_page(
    state: &AppState,
    key: &CollectionKey,
    since: u64,
) -> Result<Result<PullAnswer, sync_core::push::ResetAnswer>, ApiError> {
    let query = PullQuery {
        since,
        limit: CATCH_UP_PAGE,
        ..PullQuery::default()
    };
    Ok(state.store.pull(key, &query).await?.map(|page| page.answer))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    CatchingUp,
    Live,
    Closed,
}

/// One subscriber's stream.
struct Feed {
    state: AppState,
    key: CollectionKey,
    live: broadcast::Receiver<Arc<LiveEvent>>,
    /// Who is listening (re-checked when the ACL changes).
    caller: String,
    /// Set when the ACL changed; the next step re-reads it before sending anything more.
    recheck_access: bool,
    /// The hub's ACL-change count when access was last checked: a change anywhere makes the
    /// stream re-check before its next event, even in the middle of a catch-up.
    access_checked_at: u64,
    /// The last epoch a `reset` event announced, so that one reset is told once even when
    /// both the catch-up and the live channel see it.
    announced_epoch: Option<String>,
    /// The highest seq this stream has reached (sent, or known to be superseded).
    cursor: u64,
    /// Events ready to send.
    queue: VecDeque<Event>,
    phase: Phase,
    /// Held for as long as the stream is open.
    _permit: OwnedSemaphorePermit,
    /// The server's shutdown flag.
    shutting_down: watch::Receiver<bool>,
}

impl Feed {
    fn take_page(&mut self, page: PullAnswer) {
        for object in &page.objects {
            let mut data = String::new();
            object.write_json(&mut data);
            self.queue.push_back(
                Event::default()
                    .event("change")
                    .id(object.seq.to_string())
                    .data(data),
            );
        }
        self.cursor = self.cursor.max(page.until);
        if !page.more {
            self.phase = Phase::Live;
        }
    }

    fn close_with(&mut self, code: &str, message: &str) {
        let body = json!({ "error": code, "message": message }).to_string();
        self.queue
            .push_back(Event::default().event("error").data(body));
        self.phase = Phase::Closed;
    }

    /// Access was revoked: nothing queued may be sent any more.
    fn revoke(&mut self) {
        self.queue.clear();
        self.close_with("not_found", "no such collection (access was revoked)");
    }

    /// The next event to send, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Event> {
        loop {
            let generation = self.state.hub.access_generation();
            if self.recheck_access
                || (generation != self.access_checked_at && self.caller != self.key.owner)
            {
                self.recheck_access = false;
                self.access_checked_at = generation;
                match role_of(&self.state, &self.caller, &self.key).await {
                    Ok(role) if role.can_read() => {}
                    Ok(_) => self.revoke(),
                    Err(_) => {
                        self.close_with("unavailable", "could not re-check access; reconnect")
                    }
                }
            }
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            match self.phase {
                Phase::Closed => return None,
                Phase::CatchingUp => match read_page(&self.state, &self.key, self.cursor).await {
                    Ok(Ok(page)) => self.take_page(page),
                    // A reset happened while we were catching up.
                    Ok(Err(reset)) => {
                        if let Some(collection_id) = reset.collection_id {
                            self.announce_reset(collection_id, reset.horizon);
                        } else {
                            self.close_with("reset_required", "the collection is gone; resync");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = ?e, "event stream catch-up failed");
                        self.close_with(
                            "unavailable",
                            "the server could not read the backlog; reconnect",
                        );
                    }
                },
                Phase::Live => {
                    let (live, shutting_down) = (&mut self.live, &mut self.shutting_down);
                    let received = tokio::select! {
                        received = live.recv() => Some(received),
                        _ = shutting_down.wait_for(|&down| down) => None,
                    };
                    match received {
                        Some(received) => self.take_received(received),
                        None => self.close_with(
                            "shutting_down",
                            "the server is restarting; reconnect with Last-Event-ID",
                        ),
                    }
                }
            }
        }
    }

    fn take_received(&mut self, received: Result<Arc<LiveEvent>, RecvError>) {
        match received {
            Ok(event) => self.take_live(&event),
            Err(RecvError::Lagged(missed)) => {
                tracing::info!(missed, "closing a stream that fell behind");
                self.close_with(
                    "too_slow",
                    "this stream fell too far behind; reconnect with Last-Event-ID to catch up",
                );
            }
            Err(RecvError::Closed) => self.phase = Phase::Closed,
        }
    }

    fn take_live(&mut self, event: &LiveEvent) {
        match event {
            LiveEvent::Change { seq, json } if *seq > self.cursor => {
                self.cursor = *seq;
                self.queue.push_back(
                    Event::default()
                        .event("change")
                        .id(seq.to_string())
                        .data(json.as_str()),
                );
            }
            LiveEvent::Change { .. } => {} // already sent during catch-up
            LiveEvent::Reset {
                collection_id,
                horizon,
            } => {
                self.announce_reset(collection_id.clone(), *horizon);
            }
            LiveEvent::AccessChanged => self.recheck_access = true,
            LiveEvent::Gap => self.phase = Phase::CatchingUp,
        }
    }

    /// Tells the client about a new epoch, once, and goes on from its start.
    fn announce_reset(&mut self, collection_id: String, horizon: u64) {
        if self.announced_epoch.as_deref() == Some(collection_id.as_str()) {
            return;
        }
        self.cursor = horizon;
        let body = json!({ "collection_id": collection_id, "horizon": horizon }).to_string();
        self.queue.push_back(
            Event::default()
                .event("reset")
                .id(horizon.to_string())
                .data(body),
        );
        self.announced_epoch = Some(collection_id);
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        stream::unfold(self, |mut feed| async move {
            feed.next().await.map(|event| (Ok(event), feed))
        })
    }
}
