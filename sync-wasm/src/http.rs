//! One HTTP exchange with the server (gloo-net over `fetch`), and how its answer reads as the
//! replica's [`Response`].
//!
//! The mapping is mechanical: the status picks the variant, the body is parsed by the host's
//! `JSON.parse` and read by [`crate::convert`]. What to do with the answer is the replica's
//! decision, never this module's.

use crate::convert::{self, Bad};
use crate::js::{now, parse_json};
use gloo_net::http::{Method, RequestBuilder};
use sync_core::{Failure, Response};
use wasm_bindgen::JsValue;

/// What the server asked of the client's timing, from the answer's headers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Hints {
    /// `Backoff` (any 2xx): send nothing for this long.
    pub backoff_ms: Option<u64>,
    /// `Retry-After` (429, 503): try again after this long.
    pub retry_after_ms: Option<u64>,
    /// `X-Sync-Poll-Time`: the polling interval the server suggests.
    pub poll_ms: Option<u64>,
}

/// An answer: status, parsed body (`undefined` if it was not JSON) and timing hints.
pub struct Answer {
    pub status: u16,
    pub body: JsValue,
    pub hints: Hints,
}

/// Sends one request. `None`: no answer (offline, connection reset, CORS refusal, or a body
/// cut short), so a push may or may not have been committed.
pub async fn send(method: Method, url: &str, token: &str, body: Option<&str>) -> Option<Answer> {
    let mut bearer = String::from("Bearer ");
    bearer.push_str(token);
    let builder = RequestBuilder::new(url)
        .method(method)
        .header("Authorization", &bearer);
    let request = match body {
        Some(body) => builder
            .header("Content-Type", "application/json")
            .body(body)
            .ok()?,
        None => builder.build().ok()?,
    };
    let response = request.send().await.ok()?;
    let status = response.status();
    let headers = response.headers();
    let header = |name: &str| headers.get(name);
    let hints = Hints {
        backoff_ms: header("backoff").as_deref().and_then(seconds),
        retry_after_ms: header("retry-after").as_deref().and_then(retry_after),
        poll_ms: header("x-sync-poll-time").as_deref().and_then(seconds),
    };
    let body = match response.text().await {
        Ok(text) => parse_json(&text),
        // A success whose body was lost is no answer at all: its outcome is unknown.
        Err(_) if (200..300).contains(&status) => return None,
        Err(_) => JsValue::UNDEFINED,
    };
    Some(Answer {
        status,
        body,
        hints,
    })
}

/// Whole seconds, as milliseconds.
fn seconds(value: &str) -> Option<u64> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| s.saturating_mul(1000))
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(value: &str) -> Option<u64> {
    seconds(value).or_else(|| {
        let at = js_sys::Date::parse(value);
        at.is_finite().then(|| (at - now()).max(0.0) as u64)
    })
}

/// Which request an answer belongs to: the same status means different things to each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Pull,
    Push,
}

/// The replica's reading of an answer (`None`: no answer).
pub fn to_response(sent: Sent, answer: Option<&Answer>) -> Response {
    let Some(answer) = answer else {
        return Response::Failed(Failure::Network);
    };
    let body = &answer.body;
    let read: Result<Response, Bad> = match (answer.status, sent) {
        (200, Sent::Pull) => convert::read_pull(body).map(Response::Pulled),
        (200, Sent::Push) => convert::read_push_ok(body).map(Response::Pushed),
        (409, Sent::Push) => convert::read_conflict_answer(body).map(Response::Conflict),
        (410, _) => convert::read_reset(body).map(Response::ResetRequired),
        (401, _) => Ok(Response::Failed(Failure::Unauthorized)),
        (status, _) => Ok(Response::Failed(Failure::Status {
            status,
            retry_after_ms: answer.hints.retry_after_ms,
        })),
    };
    // An answer that does not read is treated like an error status: a push that got it stays
    // in flight (only a 4xx says the server wrote nothing), and the cycle ends.
    read.unwrap_or(Response::Failed(Failure::Status {
        status: answer.status,
        retry_after_ms: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_seconds() {
        assert_eq!(seconds(" 5 "), Some(5000));
        assert_eq!(seconds("1.5"), None);
        assert_eq!(seconds("-1"), None);
    }
}
