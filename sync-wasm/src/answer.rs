//! How an HTTP answer reads as the replica's [`Response`].
//!
//! The JavaScript shell sends the request and hands over the status and the parsed body; the
//! mapping below is mechanical (the status picks the variant, [`crate::convert`] reads the
//! body). What to do with the answer is the replica's decision, never this module's.

use crate::convert::{self, Bad};
use sync_core::{Failure, Response};
use wasm_bindgen::JsValue;

/// Which request an answer belongs to: the same status means different things to each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Pull,
    Push,
}

/// The replica's reading of an answer. `status` 0 is no answer at all (offline, connection
/// reset, CORS refusal, or a success whose body was cut short): a push may or may not have
/// been committed. `retry_after_ms` is the answer's `Retry-After`.
pub fn to_response(
    sent: Sent,
    status: u16,
    body: &JsValue,
    retry_after_ms: Option<u64>,
) -> Response {
    if status == 0 {
        return Response::Failed(Failure::Network);
    }
    let read: Result<Response, Bad> = match (status, sent) {
        (200, Sent::Pull) => convert::read_pull(body).map(Response::Pulled),
        (200, Sent::Push) => convert::read_push_ok(body).map(Response::Pushed),
        (409, Sent::Push) => convert::read_conflict_answer(body).map(Response::Conflict),
        (410, _) => convert::read_reset(body).map(Response::ResetRequired),
        (401, _) => Ok(Response::Failed(Failure::Unauthorized)),
        (status, _) => Ok(Response::Failed(Failure::Status {
            status,
            retry_after_ms,
        })),
    };
    // An answer that does not read is treated like an error status: a push that got it stays
    // in flight (only a 4xx says the server wrote nothing), and the cycle ends.
    read.unwrap_or(Response::Failed(Failure::Status {
        status,
        retry_after_ms: None,
    }))
}
