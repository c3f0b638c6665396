//! Tidemark's browser SDK: the npm package `tidemark`.
//!
//! [`SyncClient`] keeps one collection of an app in step with a Tidemark server. It is a
//! driver around `sync-core`'s [`Replica`](sync_core::Replica) and makes no protocol decision
//! of its own: the replica says which request to send and what the application must store;
//! this crate moves the bytes (`fetch`, through gloo-net), calls the application's store, and
//! keeps time (the scheduler). The store is the application's own object (the *glue*), or one
//! of the adapters shipped in the package's JavaScript (`IndexedDbStore`, `MemoryStore`).
//!
//! # Layout
//!
//! - [`SyncClient`] (this file): the JavaScript API, and the options it reads.
//! - `client`: the sync cycle (storage → replica → server and back), events, the token, the
//!   scheduler's timers, the Web Lock and the BroadcastChannel.
//! - `schedule`: when to sync next (interval, hidden pages, `Backoff`, `Retry-After`,
//!   `X-Sync-Poll-Time`, exponential backoff), pure and tested natively.
//! - `http`: one exchange with the server, and how its status and body read as the replica's
//!   `Response`.
//! - `convert`: JavaScript values ↔ `sync-core` types, by hand.
//! - `js`: small helpers and the host APIs, looked up at run time.
//!
//! # Size
//!
//! The package must stay small (kinto.js is 18 KB gzipped). Bodies are parsed by the host's
//! `JSON.parse` and read field by field in `convert`, and an object's `data` is carried as
//! the text `JSON.stringify` gives, so neither serde_json nor serde's error messages are
//! linked; messages are static strings; host APIs are called by name rather than through
//! typed web-sys bindings. `sync-wasm/build.sh` prints the gzipped size of the result.

mod client;
mod convert;
mod http;
mod js;
mod schedule;

use client::{Inner, Settings, TokenSource, STORE_METHODS};
use js::{get, type_error};
use js_sys::{Function, Promise};
use std::rc::Rc;
use sync_core::names;
use sync_core::{Config, ConflictPolicy};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// Keeps one collection in step with the server. See the package README for the options, the
/// store interface and the events.
#[wasm_bindgen]
pub struct SyncClient {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl SyncClient {
    /// `new SyncClient({url, app, collection, owner?, token, clientId?, store,
    /// resolveConflict?, pullLimit?, maxBatch?, maxRounds?})`. Throws a `TypeError` naming
    /// the first option that is missing or invalid.
    #[wasm_bindgen(constructor)]
    pub fn new(options: JsValue) -> Result<SyncClient, JsValue> {
        let settings = settings(&options)?;
        Ok(SyncClient {
            inner: Rc::new(Inner::new(settings)),
        })
    }

    /// Runs one sync cycle: pull (every page), push the pending edits, resolve conflicts.
    /// Resolves to `{pulled, pushed, conflicts}`; rejects with a `SyncError`. Calls made while
    /// a cycle runs are served by one more cycle after it.
    #[wasm_bindgen(js_name = syncNow)]
    pub fn sync_now(&self) -> Promise {
        self.inner.sync_promise()
    }

    /// Adds a listener: `status`, `progress`, `conflict`, `error`, `reset` or `change`.
    pub fn on(&self, event: String, listener: Function) {
        self.inner.on(event, listener);
    }

    /// Removes a listener added with [`SyncClient::on`].
    pub fn off(&self, event: String, listener: Function) {
        self.inner.off(&event, &listener);
    }

    /// Starts the scheduler: a sync now, then every `interval` ms (default 5 minutes, at least
    /// 30 s; `hiddenInterval` while the page is hidden, default 6 × `interval`), soon after
    /// [`SyncClient::notify_changed`], and when the page becomes visible or the network comes
    /// back.
    pub fn start(&self, options: JsValue) {
        let ms = |key| get(&options, key).as_f64();
        self.inner.start(ms("interval"), ms("hiddenInterval"));
    }

    /// Stops the scheduler, its listeners and its BroadcastChannel. A cycle that is running
    /// finishes.
    pub fn stop(&self) {
        self.inner.stop();
    }

    /// Tells the scheduler that local data changed: a sync follows in about 500 ms.
    #[wasm_bindgen(js_name = notifyChanged)]
    pub fn notify_changed(&self) {
        self.inner.notify_changed();
    }
}

/// Reads and checks the constructor's options.
fn settings(options: &JsValue) -> Result<Settings, JsValue> {
    let text = |key: &str| get(options, key).as_string();
    let url = text("url").ok_or_else(|| type_error("options.url"))?;
    let app = text("app")
        .filter(|app| names::is_valid_app(app))
        .ok_or_else(|| type_error("options.app"))?;
    let collection = text("collection")
        .filter(|c| names::is_valid_collection(c))
        .ok_or_else(|| type_error("options.collection"))?;
    let owner = match text("owner") {
        None => String::from("~"),
        Some(owner) if names::check_id(&owner).is_ok() => owner,
        Some(_) => return Err(type_error("options.owner")),
    };
    let token = get(options, "token");
    let token = match (token.as_string(), token.dyn_into::<Function>()) {
        (Some(token), _) => TokenSource::Fixed(token),
        (None, Ok(provider)) => TokenSource::Provider(provider),
        (None, Err(_)) => return Err(type_error("options.token")),
    };
    let store = get(options, "store");
    for method in STORE_METHODS {
        if !get(&store, method).is_function() {
            let mut what = String::from("options.store.");
            what.push_str(method);
            return Err(type_error(&what));
        }
    }
    // Room for ":{push number}" within the 256 bytes of a push_id.
    let client_id = match text("clientId") {
        Some(id) if id.len() > 200 || names::check_id(&id).is_err() => {
            return Err(type_error("options.clientId"))
        }
        id => id,
    };
    let resolve_conflict = get(options, "resolveConflict").dyn_into::<Function>().ok();
    let defaults = Config::default();
    let size = |key: &str, default: usize| {
        get(options, key)
            .as_f64()
            .filter(|n| *n >= 1.0)
            .map_or(default, |n| n as usize)
    };
    let config = Config {
        pull_limit: size("pullLimit", defaults.pull_limit),
        max_batch: size("maxBatch", defaults.max_batch),
        max_rounds: size("maxRounds", defaults.max_rounds as usize) as u32,
        policy: match resolve_conflict {
            Some(_) => ConflictPolicy::Manual,
            None => ConflictPolicy::ServerWins,
        },
    };
    let mut listing_url = String::from(url.trim_end_matches('/'));
    for part in ["/v1/data/", &js::encode(&app), "/", &js::encode(&owner)] {
        listing_url.push_str(part);
    }
    let mut collection_url = listing_url.clone();
    collection_url.push('/');
    collection_url.push_str(&js::encode(&collection));
    Ok(Settings {
        collection_url,
        listing_url,
        collection,
        store,
        resolve_conflict,
        client_id,
        config,
        token,
    })
}
