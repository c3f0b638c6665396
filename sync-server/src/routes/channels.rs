//! `/v1/channels/{app}/{channel}`: presence channels (the logic is in [`crate::presence`]).
//!
//! - `POST` `{"client", "client_seq", "state": {…}, "ttl_ms"?}` writes the caller's
//!   participant and answers `{"applied", "reason"?, "client_seq", "ttl_ms", "peers",
//!   "server_time_ms"}`, `peers` being everyone else. With `"leave": true` (and no `state`)
//!   the participant leaves instead.
//! - `GET` answers `{"participants", "server_time_ms"}`: everyone, for observers.
//! - `GET …/events`: Server-Sent Events. First `snapshot` (the participants now), then
//!   `join`, `update` and `leave` (`reason`: `left` or `timeout`); `error` just before the
//!   server closes the stream (`too_slow`, `shutting_down`). There are no ids to resume from:
//!   a reconnecting client gets a fresh snapshot. A comment heartbeat keeps idle streams open.
//! - `DELETE …/participants/{client}`: the caller's participant leaves, at its seq in force.
//!
//! Any authenticated user of the app may read and join any channel of the app (the sharing
//! ACL is for collections); a participant is `(user, client)`, so callers only ever write
//! their own. Channel names follow the collection rule.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::Router;
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use sync_core::{names, ErrorBody, ErrorCode};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{watch, OwnedSemaphorePermit};

use crate::auth::{Caller, StreamCaller};
use crate::error::{body_read_error, json_response, ApiError};
use crate::presence::{Answer, ChannelKey, Now, ParticipantKey, Peer, PresenceError, Subscription};
use crate::AppState;

/// Seconds a client is asked to wait after a 429 (a slot frees up when someone leaves or
/// falls silent).
const FULL_RETRY_AFTER_S: u32 = 5;
/// Room in a body for everything but the state: ids of up to 256 bytes, escaped, and the
/// other fields.
const BODY_SLACK: usize = 4096;

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/channels/{app}/{channel}", get(read).post(exchange))
        .route("/v1/channels/{app}/{channel}/events", get(events))
        .route(
            "/v1/channels/{app}/{channel}/participants/{client}",
            delete(leave),
        )
}

/// What a channel handler can answer besides success: the usual errors, and 429 when a
/// bound is reached.
#[derive(Debug)]
enum ChannelError {
    Api(ApiError),
    Full(String),
}

impl From<ApiError> for ChannelError {
    fn from(e: ApiError) -> ChannelError {
        ChannelError::Api(e)
    }
}

impl From<PresenceError> for ChannelError {
    fn from(e: PresenceError) -> ChannelError {
        let message = e.to_string();
        match e {
            PresenceError::StateNotObject => {
                ApiError::invalid_field("state", "must be a JSON object").into()
            }
            PresenceError::StateTooLarge { .. } => ApiError::TooLarge(message).into(),
            PresenceError::TtlOutOfRange { .. } => {
                ApiError::invalid_field("ttl_ms", &message).into()
            }
            PresenceError::ChannelFull { .. }
            | PresenceError::TooManyChannels { .. }
            | PresenceError::TooManyParticipants { .. } => ChannelError::Full(message),
        }
    }
}

impl IntoResponse for ChannelError {
    fn into_response(self) -> Response {
        match self {
            ChannelError::Api(e) => e.into_response(),
            ChannelError::Full(message) => {
                let mut response = json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    &ErrorBody::new(ErrorCode::RateLimited, message),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, FULL_RETRY_AFTER_S.into());
                response
            }
        }
    }
}

/// Checks the names in a channel path.
fn channel_key(app: String, name: String) -> Result<ChannelKey, ApiError> {
    if !names::is_valid_app(&app) {
        return Err(ApiError::invalid_field(
            "app",
            "must match [a-z0-9][a-z0-9._-]{0,63}",
        ));
    }
    if !names::is_valid_collection(&name) {
        return Err(ApiError::invalid_field(
            "channel",
            "must match [A-Za-z0-9_.-]{1,64} and not be . or ..",
        ));
    }
    Ok(ChannelKey { app, name })
}

/// The caller's participant `client`.
fn participant(caller: Caller, client: String) -> Result<ParticipantKey, ApiError> {
    names::check_id(&client).map_err(|e| ApiError::invalid_field("client", e.message()))?;
    Ok(ParticipantKey {
        user: caller.0,
        client,
    })
}

#[derive(Deserialize)]
struct ExchangeBody {
    client: String,
    client_seq: u64,
    #[serde(default)]
    state: Option<Box<RawValue>>,
    #[serde(default)]
    ttl_ms: Option<u64>,
    #[serde(default)]
    leave: bool,
}

#[derive(Serialize)]
struct ExchangeAnswer {
    applied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
    peers: Vec<Peer>,
    server_time_ms: u64,
}

/// Everyone in a channel (a `GET`, and the `snapshot` event).
#[derive(Serialize)]
struct Participants {
    participants: Vec<Peer>,
    server_time_ms: u64,
}

fn exchange_answer(answer: Answer, now: Now) -> Response {
    let body = ExchangeAnswer {
        applied: answer.outcome.changed(),
        reason: answer.outcome.reason(),
        client_seq: answer.client_seq,
        ttl_ms: answer.ttl.map(|ttl| ttl.as_millis() as u64),
        peers: answer.peers,
        server_time_ms: now.ms,
    };
    json_response(StatusCode::OK, &body)
}

async fn exchange(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, channel)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ChannelError> {
    let key = channel_key(app, channel)?;
    let limit = state.presence.limits().max_state_bytes + BODY_SLACK;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        body_read_error(&e, || {
            format!(
                "the body is over {limit} bytes (the state may have at most {})",
                state.presence.limits().max_state_bytes
            )
        })
    })?;
    let body: ExchangeBody = serde_json::from_slice(&bytes).map_err(|e| ApiError::Invalid {
        message: format!(
            "the body must be {{\"client\", \"client_seq\", \"state\": {{…}}, \"ttl_ms\"?}}: {e}"
        ),
        details: vec![],
    })?;
    let who = participant(caller, body.client)?;
    let now = Now::read();
    let answer = if body.leave {
        state.presence.leave(&key, who, Some(body.client_seq), now)
    } else {
        let Some(participant_state) = body.state else {
            return Err(ApiError::invalid_field("state", "is required (a JSON object)").into());
        };
        let write =
            state
                .presence
                .limits()
                .write(body.client_seq, participant_state, body.ttl_ms)?;
        state.presence.exchange(&key, who, write, now)?
    };
    Ok(exchange_answer(answer, now))
}

async fn read(
    State(state): State<AppState>,
    _caller: Caller,
    Path((app, channel)): Path<(String, String)>,
) -> Result<Response, ChannelError> {
    let key = channel_key(app, channel)?;
    let now = Now::read();
    let participants = Participants {
        participants: state.presence.participants(&key, now),
        server_time_ms: now.ms,
    };
    Ok(json_response(StatusCode::OK, &participants))
}

async fn leave(
    State(state): State<AppState>,
    caller: Caller,
    Path((app, channel, client)): Path<(String, String, String)>,
) -> Result<Response, ChannelError> {
    let key = channel_key(app, channel)?;
    let who = participant(caller, client)?;
    let now = Now::read();
    Ok(exchange_answer(
        state.presence.leave(&key, who, None, now),
        now,
    ))
}

async fn events(
    State(state): State<AppState>,
    StreamCaller(_caller): StreamCaller,
    Path((app, channel)): Path<(String, String)>,
) -> Result<Response, ChannelError> {
    let key = channel_key(app, channel)?;
    let permit = state
        .stream_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Unavailable("too many event streams are open".into()))?;
    let now = Now::read();
    let mut subscription = state.presence.watch(&key, now);
    let snapshot = Participants {
        participants: std::mem::take(&mut subscription.snapshot),
        server_time_ms: now.ms,
    };
    let snapshot = serde_json::to_string(&snapshot)
        .map_err(|e| ApiError::Internal(format!("serialising a snapshot: {e}")))?;
    let feed = Feed {
        queue: VecDeque::from([Event::default().event("snapshot").data(snapshot)]),
        subscription,
        closed: false,
        shutting_down: state.shutting_down.clone(),
        _permit: permit,
    };
    let heartbeat = KeepAlive::new()
        .interval(state.config.sse_heartbeat)
        .text("");
    Ok(Sse::new(feed.into_stream())
        .keep_alive(heartbeat)
        .into_response())
}

/// One watcher's stream.
struct Feed {
    subscription: Subscription,
    /// Events ready to send.
    queue: VecDeque<Event>,
    closed: bool,
    /// The server's shutdown flag.
    shutting_down: watch::Receiver<bool>,
    /// Held for as long as the stream is open.
    _permit: OwnedSemaphorePermit,
}

impl Feed {
    fn close_with(&mut self, code: &str, message: &str) {
        let body = json!({ "error": code, "message": message }).to_string();
        self.queue
            .push_back(Event::default().event("error").data(body));
        self.closed = true;
    }

    /// The next event to send, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.closed {
                return None;
            }
            let (subscription, shutting_down) = (&mut self.subscription, &mut self.shutting_down);
            let received = tokio::select! {
                received = subscription.recv() => Some(received),
                _ = shutting_down.wait_for(|&down| down) => None,
            };
            match received {
                Some(Ok(event)) => self
                    .queue
                    .push_back(Event::default().event(event.kind).data(&*event.data)),
                Some(Err(RecvError::Lagged(missed))) => {
                    tracing::info!(missed, "closing a presence stream that fell behind");
                    self.close_with(
                        "too_slow",
                        "this stream fell too far behind; reconnect for a fresh snapshot",
                    );
                }
                Some(Err(RecvError::Closed)) => self.closed = true,
                None => self.close_with(
                    "shutting_down",
                    "the server is restarting; reconnect for a fresh snapshot",
                ),
            }
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        stream::unfold(self, |mut feed| async move {
            feed.next().await.map(|event| (Ok(event), feed))
        })
    }
}
