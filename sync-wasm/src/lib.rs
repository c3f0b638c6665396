//! Tidemark's browser SDK: the npm package `tidemark`.
//!
//! The package is two halves, split the way `sync-core` is split from the server:
//!
//! - **This crate (the wasm)** makes every decision: `sync-core`'s [`Replica`] says which
//!   request to send and what the application must store, [`answer`] reads each HTTP answer
//!   as the replica's [`Response`], [`schedule`] decides when to sync next, and the option
//!   checks use `sync-core`'s name rules. It does no I/O and keeps no timers.
//! - **The JavaScript shell** (`npm/client.js`, the `SyncClient` class) moves the bytes: it
//!   calls `fetch`, awaits the application's store, sets the timers, holds the Web Lock and
//!   talks to the other tabs over a BroadcastChannel, and turns outcomes into events.
//!
//! The split is for size: driving `fetch` and the store from Rust needs async state machines,
//! futures glue and a binding for every host API, which were more than half of the wasm
//! (about 50 KB of 139 KB before gzip). `sync-wasm/build.sh` prints the gzipped size.
//!
//! # Layout
//!
//! - this file: the exports the shell calls (`checkOptions`, `openReplica`, `newScheduler`).
//! - `answer`: HTTP status and body → the replica's `Response`.
//! - `convert`: JavaScript values ↔ `sync-core` types, by hand (no serde: see there).
//! - `schedule`: when to sync next (interval, hidden pages, `Backoff`, `Retry-After`,
//!   `X-Sync-Poll-Time`, exponential backoff), pure and tested natively.
//! - `js`: small helpers over `js_sys`.

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

mod answer;
mod convert;
mod js;
mod schedule;

use answer::Sent;
use convert::Bad;
use js::{get, object, set};
use sync_core::names;
use sync_core::replica::{EditError, ResolveError};
use sync_core::{
    Config, ConflictOutcome, ConflictPolicy, Failure, ReplicaEvent, Request, Resolution,
};
use wasm_bindgen::prelude::*;

/// The name of the first option that is not valid (`"app"`, `"owner"`, `"collection"`,
/// `"clientId"`), or `undefined` when all are. `owner` and `clientId` may be `undefined`.
#[wasm_bindgen(js_name = checkOptions)]
pub fn check_options(
    app: JsValue,
    owner: JsValue,
    collection: JsValue,
    client_id: JsValue,
) -> Option<String> {
    let valid =
        |value: &JsValue, rule: fn(&str) -> bool| value.as_string().is_some_and(|s| rule(&s));
    let valid_id = |id: &str| names::check_id(id).is_ok();
    let bad = if !valid(&app, names::is_valid_app) {
        "app"
    } else if !owner.is_undefined() && !valid(&owner, valid_id) {
        "owner"
    } else if !valid(&collection, names::is_valid_collection) {
        "collection"
    } else if !client_id.is_undefined()
        // Room for ":{push number}" within the 256 bytes of a push_id.
        && !valid(&client_id, |id| id.len() <= 200 && names::check_id(id).is_ok())
    {
        "clientId"
    } else {
        return None;
    };
    Some(String::from(bad))
}

/// A replica restored from what the store holds: `state` (`null` on a first run, when
/// `clientId` names the new replica), the `config` (`{pullLimit?, maxBatch?, maxRounds?,
/// manual}`; `manual`: conflicts wait for the application's resolution) and every pending
/// edit. Throws an `Error` naming what does not read.
#[wasm_bindgen(js_name = openReplica)]
pub fn open_replica(
    state: JsValue,
    client_id: String,
    config: JsValue,
    pending: JsValue,
) -> Result<SyncReplica, JsValue> {
    let defaults = Config::default();
    let size = |key: &str, default: usize| {
        get(&config, key)
            .as_f64()
            .filter(|n| *n >= 1.0)
            .map_or(default, |n| n as usize)
    };
    let config = Config {
        pull_limit: size("pullLimit", defaults.pull_limit),
        max_batch: size("maxBatch", defaults.max_batch),
        max_rounds: size("maxRounds", defaults.max_rounds as usize) as u32,
        policy: match get(&config, "manual").as_bool() {
            Some(true) => ConflictPolicy::Manual,
            _ => ConflictPolicy::ServerWins,
        },
    };
    let mut replica = if state.is_undefined() || state.is_null() {
        sync_core::Replica::new(client_id, config)
    } else {
        sync_core::Replica::restore(convert::read_state(&state).map_err(error)?, config)
    };
    if !js_sys::Array::is_array(&pending) {
        return Err(error(Bad("getPendingObjects must return an array")));
    }
    for item in js_sys::Array::from(&pending).iter() {
        let (id, change) = convert::read_pending(&item).map_err(error)?;
        replica.add_pending(id, change).map_err(|e| {
            error(Bad(match e {
                EditError::Unpushable(why) => why,
                EditError::Id(_) | EditError::Type(_) => {
                    "a pending object has an invalid id or type"
                }
            }))
        })?;
    }
    Ok(SyncReplica {
        replica,
        sent: None,
    })
}

/// A `sync-core` [`Replica`](sync_core::Replica) for one sync cycle, with its inputs and
/// outputs as JavaScript values.
#[wasm_bindgen]
pub struct SyncReplica {
    replica: sync_core::Replica,
    /// What the request being answered was.
    sent: Option<Sent>,
}

#[wasm_bindgen]
impl SyncReplica {
    /// Starts a cycle: pull every page, then push the pending edits.
    #[wasm_bindgen(js_name = startSync)]
    pub fn start_sync(&mut self) {
        self.replica.start_sync();
    }

    /// The cursor: every change up to it has been handed to the store.
    pub fn cursor(&self) -> f64 {
        self.replica.cursor() as f64
    }

    /// The state to persist.
    pub fn state(&self) -> JsValue {
        convert::write_state(&self.replica.state())
    }

    /// The next request, or `undefined` while an answer or a resolution is awaited:
    /// `{push: false, query: "?since=…"}` (a GET of the collection) or `{push: true, body}` (a
    /// POST of the JSON text `body`). Persist [`SyncReplica::state`] before sending a push.
    #[wasm_bindgen(js_name = pollRequest)]
    pub fn poll_request(&mut self) -> JsValue {
        let Some(request) = self.replica.poll_request() else {
            return JsValue::UNDEFINED;
        };
        let out = object();
        match request {
            Request::Pull {
                since,
                limit,
                horizon,
            } => {
                let mut query = String::from("?since=");
                query.push_str(&js::decimal(since));
                query.push_str("&limit=");
                query.push_str(&js::decimal(limit as u64));
                if let Some(horizon) = horizon {
                    query.push_str("&horizon=");
                    query.push_str(&js::decimal(horizon));
                }
                set(&out, "push", &JsValue::FALSE);
                set(&out, "query", &JsValue::from_str(&query));
                self.sent = Some(Sent::Pull);
            }
            Request::Push(push) => {
                set(&out, "push", &JsValue::TRUE);
                set(&out, "body", &JsValue::from_str(&push.to_json()));
                self.sent = Some(Sent::Push);
            }
        }
        out
    }

    /// The answer to the request last handed out: its status (0: no answer), its body as
    /// `JSON.parse` gave it (`undefined` if it was not JSON) and its `Retry-After` in ms.
    #[wasm_bindgen(js_name = handleAnswer)]
    pub fn handle_answer(&mut self, status: u16, body: JsValue, retry_after_ms: Option<f64>) {
        let Some(sent) = self.sent.take() else {
            return;
        };
        let response = answer::to_response(sent, status, &body, retry_after_ms.map(|ms| ms as u64));
        // Cannot fail: the request just handed out is the one outstanding.
        let _ = self.replica.handle_response(response);
    }

    /// The next event, or `undefined`. One of:
    /// `{type: "received", objects, state}`, `{type: "saved", objects, state}`,
    /// `{type: "reset", epochChanged, state}`,
    /// `{type: "conflict", id, local, server, outcome}` (`outcome`: `"awaiting"` a
    /// [`SyncReplica::resolve`], or already settled: `"server"`, `"local"`),
    /// `{type: "done", pulled, pushed, conflicts}` and
    /// `{type: "failed", code, message, status?, retryAfter?}`.
    #[wasm_bindgen(js_name = pollEvent)]
    pub fn poll_event(&mut self) -> JsValue {
        let Some(event) = self.replica.poll_event() else {
            return JsValue::UNDEFINED;
        };
        let out = object();
        let kind = match event {
            ReplicaEvent::Received { objects, state } => {
                set(&out, "objects", &convert::write_objects(&objects));
                set(&out, "state", &convert::write_state(&state));
                "received"
            }
            ReplicaEvent::Saved { objects, state } => {
                set(&out, "objects", &convert::write_saved(&objects));
                set(&out, "state", &convert::write_state(&state));
                "saved"
            }
            ReplicaEvent::Reset {
                epoch_changed,
                state,
            } => {
                set(&out, "epochChanged", &JsValue::from_bool(epoch_changed));
                set(&out, "state", &convert::write_state(&state));
                "reset"
            }
            ReplicaEvent::Conflict {
                id,
                local,
                server,
                outcome,
            } => {
                set(&out, "local", &convert::write_pending(&id, &local));
                set(&out, "id", &JsValue::from_str(&id));
                let server = server.as_ref().map_or(JsValue::NULL, convert::write_object);
                set(&out, "server", &server);
                let outcome = match outcome {
                    ConflictOutcome::AwaitingResolution => "awaiting",
                    ConflictOutcome::KeptServer => "server",
                    ConflictOutcome::KeptLocal => "local",
                };
                set(&out, "outcome", &JsValue::from_str(outcome));
                "conflict"
            }
            ReplicaEvent::SyncDone {
                pulled,
                pushed,
                conflicts,
            } => {
                set(&out, "pulled", &JsValue::from_f64(pulled as f64));
                set(&out, "pushed", &JsValue::from_f64(pushed as f64));
                set(&out, "conflicts", &JsValue::from_f64(conflicts as f64));
                "done"
            }
            ReplicaEvent::SyncFailed { failure } => {
                write_failure(&out, failure);
                "failed"
            }
        };
        set(&out, "type", &JsValue::from_str(kind));
        out
    }

    /// Settles a conflict that waits: `"server"` (the server's version wins), `"local"` (the
    /// local edit is rebased and pushed) or `"merged"` with `merged` = `{data, expires?}` or
    /// `{deleted: true}`. Throws if the conflict was not waiting or `merged` does not read.
    pub fn resolve(&mut self, id: &str, resolution: &str, merged: JsValue) -> Result<(), JsValue> {
        let resolution = match resolution {
            "server" => Resolution::KeepServer,
            "local" => Resolution::KeepLocal,
            _ => Resolution::Merged(convert::read_merged(&merged).map_err(error)?),
        };
        self.replica.resolve(id, resolution).map_err(|e| {
            error(Bad(match e {
                ResolveError::Unpushable(why) => why,
                ResolveError::NotAwaiting => "the conflict was not waiting for a resolution",
            }))
        })
    }

    /// The pending edit of `id` as it now stands (`{id, type, data?, deleted?, baseSeq}`), or
    /// `null` if there is none.
    #[wasm_bindgen(js_name = pendingRecord)]
    pub fn pending_record(&self, id: &str) -> JsValue {
        self.replica
            .pending()
            .get(id)
            .map_or(JsValue::NULL, |pending| convert::write_pending(id, pending))
    }
}

/// A failed cycle as `{code, message, status?, retryAfter?}`. The codes are the `SyncError`
/// codes the package documents.
fn write_failure(out: &JsValue, failure: Failure) {
    let (code, message) = match failure {
        Failure::Network => ("network", "the server could not be reached"),
        Failure::Unauthorized => {
            set(out, "status", &JsValue::from(401));
            ("unauthorized", "the server refused the token")
        }
        Failure::Status {
            status,
            retry_after_ms,
        } => {
            set(out, "status", &JsValue::from(status));
            if let Some(ms) = retry_after_ms {
                set(out, "retryAfter", &JsValue::from_f64(ms as f64));
            }
            ("http", "the server answered with an error")
        }
        Failure::Contention { .. } => (
            "contention",
            "other writers kept winning; the edits stay pending",
        ),
        Failure::Protocol(why) => ("protocol", why),
    };
    set(out, "code", &JsValue::from_str(code));
    set(out, "message", &JsValue::from_str(message));
}

/// An `Error` with the sentence of a [`Bad`].
fn error(bad: Bad) -> JsValue {
    js_sys::Error::new(bad.0).into()
}

/// The scheduler's policy and memory ([`schedule`]), for the shell's timers.
#[wasm_bindgen]
pub struct Scheduler {
    policy: schedule::Policy,
    plan: schedule::Plan,
}

/// A scheduler with the default policy.
#[wasm_bindgen(js_name = newScheduler)]
pub fn new_scheduler() -> Scheduler {
    Scheduler {
        policy: schedule::Policy::default(),
        plan: schedule::Plan::default(),
    }
}

#[wasm_bindgen]
impl Scheduler {
    /// From `start({interval, hiddenInterval})`, in ms; `undefined` takes the default.
    #[wasm_bindgen(js_name = setPolicy)]
    pub fn set_policy(&mut self, interval_ms: Option<f64>, hidden_interval_ms: Option<f64>) {
        self.policy = schedule::Policy::new(interval_ms, hidden_interval_ms);
    }

    /// A cycle completed, with the `Backoff` and `X-Sync-Poll-Time` its answers carried.
    pub fn synced(&mut self, now: f64, backoff_ms: Option<f64>, poll_ms: Option<f64>, jitter: f64) {
        let outcome = schedule::Outcome::Synced {
            backoff_ms: backoff_ms.map(|ms| ms as u64),
            poll_ms: poll_ms.map(|ms| ms as u64),
        };
        self.plan.record(outcome, now, jitter);
    }

    /// A cycle failed; `offline` when the server could not be reached at all.
    pub fn failed(&mut self, now: f64, retry_after_ms: Option<f64>, offline: bool, jitter: f64) {
        let outcome = schedule::Outcome::Failed {
            retry_after_ms: retry_after_ms.map(|ms| ms as u64),
            offline,
        };
        self.plan.record(outcome, now, jitter);
    }

    /// The network came back.
    pub fn online(&mut self, now: f64) {
        self.plan.online(now);
    }

    /// The delay before the next periodic sync, right after a cycle.
    #[wasm_bindgen(js_name = periodicDelay)]
    pub fn periodic_delay(&self, now: f64, hidden: bool) -> f64 {
        self.plan.periodic_delay(&self.policy, now, hidden)
    }

    /// The delay before a sync asked for now: after a local change (`changed`, debounced) or
    /// because the page became visible or the network came back.
    #[wasm_bindgen(js_name = soonDelay)]
    pub fn soon_delay(&self, now: f64, changed: bool) -> f64 {
        let min = if changed { schedule::DEBOUNCE_MS } else { 0.0 };
        self.plan.soon_delay(now, min)
    }
}
