//! The client behind [`crate::SyncClient`]: options, the store glue, events, the sync cycle
//! that drives the replica, and the scheduler's timers.
//!
//! # One cycle
//!
//! Each cycle starts from storage, not from memory: it loads the state and the pending edits
//! from the store, restores a [`Replica`] from them, and then only moves messages: requests
//! from [`Replica::poll_request`] go to the server, answers go to
//! [`Replica::handle_response`], and events from [`Replica::poll_event`] go to the store, in
//! order, each awaited before the next. Starting from storage is what makes several tabs safe
//! (under the Web Lock, a tab always continues from what the previous holder stored, so no
//! `push_id` is used twice) and what makes a reload resume where the last cycle stopped.
//!
//! The state is saved after `poll_request` hands out a push and before it is sent (the
//! replica's rule), with every event that carries one, and once more when a cycle fails (the
//! replica may have dropped a push the server refused; the stored state must forget it too).
//! If a store call fails, the cycle stops where it is: the replica in memory is dropped, and
//! the next cycle starts again from what was stored.

use crate::convert::{self, Bad};
use crate::http::{self, Answer, Hints, Sent};
use crate::js::{self, get, now, object, set, settle, Listener};
use crate::schedule::{Outcome, Plan, Policy, DEBOUNCE_MS};
use gloo_net::http::Method;
use js_sys::{Array, Function, Promise};
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use sync_core::{
    Config, ConflictOutcome, Failure, Object, PendingChange, Replica, ReplicaEvent, Request,
    Resolution, Response,
};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{future_to_promise, spawn_local, JsFuture};

/// The store methods a glue object must have.
pub const STORE_METHODS: [&str; 7] = [
    "loadState",
    "saveState",
    "getPendingObjects",
    "objectsReceived",
    "objectsSaved",
    "resetSaved",
    "conflictResolved",
];

/// Where a cycle stopped early.
pub enum Stop {
    /// The replica ended the cycle ([`ReplicaEvent::SyncFailed`]).
    Failed(Failure),
    /// A store method threw or rejected.
    Store(JsValue),
    /// The token function or `resolveConflict` threw or rejected.
    Callback(JsValue),
    /// The store or a callback gave something that does not read.
    Invalid(Bad),
}

impl From<Bad> for Stop {
    fn from(bad: Bad) -> Stop {
        Stop::Invalid(bad)
    }
}

/// How requests are authorised.
pub enum TokenSource {
    /// The same token always.
    Fixed(String),
    /// `() => string | Promise<string>`: called for the first request, and again after a 401.
    Provider(Function),
}

/// What the client was created with.
pub struct Settings {
    /// `{url}/v1/data/{app}/{owner}/{collection}`.
    pub collection_url: String,
    /// `{url}/v1/data/{app}/{owner}`, which lists each collection's `last_seq`.
    pub listing_url: String,
    pub collection: String,
    pub store: JsValue,
    pub resolve_conflict: Option<Function>,
    /// For a first run, when the store has no state yet.
    pub client_id: Option<String>,
    pub config: Config,
    pub token: TokenSource,
}

/// A cycle's totals.
struct Totals {
    pulled: u64,
    pushed: u64,
    conflicts: u64,
    reset: bool,
}

/// For `progress` events during a long pull.
struct Progress {
    /// The cursor the pull started from.
    start: u64,
    /// The collection's `last_seq` when the pull turned out to need several pages.
    head: Option<u64>,
    pulled: u64,
}

/// The scheduler's state. Plain `RefCell`: no borrow is ever held across an `await` or a call
/// into JavaScript, so a callback that calls back into the client cannot find it borrowed.
#[derive(Default)]
struct Sched {
    started: bool,
    policy: Policy,
    plan: Plan,
    /// The pending `setTimeout`: its handle and when it is due.
    timer: Option<(JsValue, f64)>,
    /// The one function every timer calls; freed by `stop`.
    tick: Option<Closure<dyn FnMut()>>,
    listeners: Vec<Listener>,
    /// The BroadcastChannel to the other tabs.
    channel: Option<JsValue>,
    /// A cycle is running.
    running: bool,
    /// Something asked for a sync while a cycle was running: another one follows it soon.
    dirty: bool,
}

pub struct Inner {
    settings: Settings,
    /// The token last obtained from the provider.
    token: RefCell<Option<String>>,
    listeners: RefCell<Vec<(String, Function)>>,
    /// The promise of a `syncNow` that has not started yet: later calls share it.
    queued: RefCell<Option<Promise>>,
    /// The promise of the last cycle asked for; the next one starts after it.
    tail: RefCell<Option<Promise>>,
    sched: RefCell<Sched>,
    /// The timing hints of the current cycle's answers.
    hints: RefCell<Hints>,
    /// The body of the last error answer, given with the error (`details` of a 400).
    error_body: RefCell<JsValue>,
}

impl Inner {
    pub fn new(settings: Settings) -> Inner {
        Inner {
            settings,
            token: RefCell::new(None),
            listeners: RefCell::new(Vec::new()),
            queued: RefCell::new(None),
            tail: RefCell::new(None),
            sched: RefCell::new(Sched::default()),
            hints: RefCell::new(Hints::default()),
            error_body: RefCell::new(JsValue::UNDEFINED),
        }
    }

    // --- events ----------------------------------------------------------------------

    pub fn on(&self, name: String, listener: Function) {
        self.listeners.borrow_mut().push((name, listener));
    }

    pub fn off(&self, name: &str, listener: &Function) {
        self.listeners
            .borrow_mut()
            .retain(|(n, f)| !(n == name && f == listener));
    }

    /// Calls every listener of `name`. A listener that throws does not stop the others, nor
    /// the sync.
    fn emit(&self, name: &str, payload: &JsValue) {
        let listeners: Vec<Function> = self
            .listeners
            .borrow()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .collect();
        for listener in listeners {
            let _ = listener.call1(&JsValue::NULL, payload);
        }
    }

    fn emit_status(&self, status: &str) {
        let payload = object();
        set(&payload, "status", &JsValue::from_str(status));
        self.emit("status", &payload);
    }

    // --- the store -------------------------------------------------------------------

    async fn store(&self, method: &str, args: &[&JsValue]) -> Result<JsValue, Stop> {
        let result = js::call(&self.settings.store, method, args).map_err(Stop::Store)?;
        settle(result).await.map_err(Stop::Store)
    }

    // --- requests --------------------------------------------------------------------

    async fn token(&self, refresh: bool) -> Result<String, Stop> {
        let provider = match &self.settings.token {
            TokenSource::Fixed(token) => return Ok(token.clone()),
            TokenSource::Provider(provider) => provider,
        };
        if !refresh {
            if let Some(token) = self.token.borrow().clone() {
                return Ok(token);
            }
        }
        let value = provider.call0(&JsValue::NULL).map_err(Stop::Callback)?;
        let token = settle(value)
            .await
            .map_err(Stop::Callback)?
            .as_string()
            .ok_or(Bad("the token function must return a string"))?;
        *self.token.borrow_mut() = Some(token.clone());
        Ok(token)
    }

    /// Sends with the current token; after a 401, asks the token function once more and
    /// sends again. The answer's hints are kept for the scheduler.
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&str>,
    ) -> Result<Option<Answer>, Stop> {
        let refreshable = matches!(self.settings.token, TokenSource::Provider(_));
        let mut refreshed = false;
        loop {
            let token = self.token(refreshed).await?;
            let answer = http::send(method.clone(), url, &token, body).await;
            let status = answer.as_ref().map_or(0, |a| a.status);
            if status == 401 && refreshable && !refreshed {
                refreshed = true;
                continue;
            }
            if let Some(answer) = &answer {
                let mut hints = self.hints.borrow_mut();
                if (200..300).contains(&status) {
                    hints.backoff_ms = hints.backoff_ms.max(answer.hints.backoff_ms);
                    hints.poll_ms = answer.hints.poll_ms.or(hints.poll_ms);
                } else {
                    hints.retry_after_ms = answer.hints.retry_after_ms;
                    *self.error_body.borrow_mut() = answer.body.clone();
                }
            }
            return Ok(answer);
        }
    }

    /// The replica's request, sent; its answer, as the replica reads it.
    async fn exchange(&self, request: &Request) -> Result<Response, Stop> {
        let url = &self.settings.collection_url;
        match request {
            Request::Pull {
                since,
                limit,
                horizon,
            } => {
                let mut url = url.clone();
                url.push_str("?since=");
                url.push_str(&js::decimal(*since));
                url.push_str("&limit=");
                url.push_str(&js::decimal(*limit as u64));
                if let Some(horizon) = horizon {
                    url.push_str("&horizon=");
                    url.push_str(&js::decimal(*horizon));
                }
                let answer = self.send(Method::GET, &url, None).await?;
                Ok(http::to_response(Sent::Pull, answer.as_ref()))
            }
            Request::Push(push) => {
                let body = push.to_json();
                let answer = self.send(Method::POST, url, Some(&body)).await?;
                Ok(http::to_response(Sent::Push, answer.as_ref()))
            }
        }
    }

    /// The collection's `last_seq`, for progress; `None` if the listing does not say.
    async fn head(&self) -> Option<u64> {
        let answer = self
            .send(Method::GET, &self.settings.listing_url, None)
            .await
            .ok()??;
        let collections = get(&answer.body, "collections");
        if !Array::is_array(&collections) {
            return None;
        }
        Array::from(&collections)
            .iter()
            .find(|c| get(c, "name").as_string().as_deref() == Some(&self.settings.collection))
            .and_then(|c| get(&c, "last_seq").as_f64())
            .map(|seq| seq as u64)
    }

    // --- one cycle -------------------------------------------------------------------

    /// A replica restored from what the store holds: the state (or a new one) and every
    /// pending edit.
    async fn load(&self) -> Result<Replica, Stop> {
        let config = self.settings.config.clone();
        let stored = self.store("loadState", &[]).await?;
        let mut replica = if stored.is_undefined() || stored.is_null() {
            let client_id = self
                .settings
                .client_id
                .clone()
                .unwrap_or_else(js::random_id);
            Replica::new(client_id, config)
        } else {
            Replica::restore(convert::read_state(&stored)?, config)
        };
        let pending = self.store("getPendingObjects", &[]).await?;
        if !Array::is_array(&pending) {
            return Err(Bad("getPendingObjects must return an array").into());
        }
        for item in Array::from(&pending).iter() {
            let (id, change) = convert::read_pending(&item)?;
            replica
                .add_pending(id, change)
                .map_err(|_| Bad("a pending object has an invalid id or type"))?;
        }
        Ok(replica)
    }

    async fn run_cycle(&self) -> Result<Totals, Stop> {
        let mut replica = self.load().await?;
        let mut progress = Progress {
            start: replica.cursor(),
            head: None,
            pulled: 0,
        };
        let mut reset = false;
        replica.start_sync();
        loop {
            while let Some(event) = replica.poll_event() {
                match event {
                    ReplicaEvent::Received { objects, state } => {
                        progress.pulled += objects.len() as u64;
                        let objects = convert::write_objects(&objects);
                        let js_state = convert::write_state(&state);
                        self.store("objectsReceived", &[&objects, &js_state])
                            .await?;
                        self.emit_progress(&progress, state.cursor);
                    }
                    ReplicaEvent::Saved { objects, state } => {
                        let objects = convert::write_saved(&objects);
                        let state = convert::write_state(&state);
                        self.store("objectsSaved", &[&objects, &state]).await?;
                    }
                    ReplicaEvent::Reset {
                        epoch_changed,
                        state,
                    } => {
                        let info = object();
                        set(&info, "epochChanged", &JsValue::from_bool(epoch_changed));
                        let state = convert::write_state(&state);
                        self.store("resetSaved", &[&state, &info]).await?;
                        self.emit("reset", &info);
                        progress.start = 0;
                        reset = true;
                    }
                    ReplicaEvent::Conflict {
                        id,
                        local,
                        server,
                        outcome,
                    } => {
                        self.conflict(&mut replica, id, local, server, outcome)
                            .await?
                    }
                    ReplicaEvent::SyncDone {
                        pulled,
                        pushed,
                        conflicts,
                    } => {
                        return Ok(Totals {
                            pulled,
                            pushed,
                            conflicts,
                            reset,
                        })
                    }
                    ReplicaEvent::SyncFailed { failure } => {
                        let state = convert::write_state(&replica.state());
                        self.store("saveState", &[&state]).await?;
                        return Err(Stop::Failed(failure));
                    }
                }
            }
            let Some(request) = replica.poll_request() else {
                // Every conflict is resolved as it comes, so the replica always has a request
                // or has ended the cycle.
                return Err(Bad("the replica stopped without ending its cycle").into());
            };
            if let Request::Push(_) = request {
                // Recorded as in flight before it leaves: a lost answer is resent as it was.
                let state = convert::write_state(&replica.state());
                self.store("saveState", &[&state]).await?;
            }
            let response = self.exchange(&request).await?;
            if progress.head.is_none() && matches!(&response, Response::Pulled(p) if p.more) {
                progress.head = Some(self.head().await.unwrap_or(0));
            }
            // Cannot fail: the request just handed out is the one outstanding.
            let _ = replica.handle_response(response);
        }
    }

    fn emit_progress(&self, progress: &Progress, cursor: u64) {
        let loaded = cursor.saturating_sub(progress.start);
        let total = progress.head.map_or(loaded, |head| {
            head.saturating_sub(progress.start).max(loaded)
        });
        let payload = object();
        set(&payload, "loaded", &JsValue::from_f64(loaded as f64));
        set(&payload, "total", &JsValue::from_f64(total as f64));
        set(
            &payload,
            "pulled",
            &JsValue::from_f64(progress.pulled as f64),
        );
        self.emit("progress", &payload);
    }

    /// A pending edit met a newer server version. With `resolveConflict`, the application
    /// decides; without it the replica's policy (server wins) has already decided. Either
    /// way the store hears what the local record now is, and a `conflict` event reports it.
    async fn conflict(
        &self,
        replica: &mut Replica,
        id: String,
        local: PendingChange,
        server: Option<Object>,
        outcome: ConflictOutcome,
    ) -> Result<(), Stop> {
        let local = convert::write_pending(&id, &local);
        let server = server.as_ref().map_or(JsValue::NULL, convert::write_object);
        let resolution = match (outcome, &self.settings.resolve_conflict) {
            (ConflictOutcome::AwaitingResolution, Some(hook)) => {
                let merged = hook
                    .call2(&JsValue::NULL, &local, &server)
                    .map_err(Stop::Callback)?;
                let merged = settle(merged).await.map_err(Stop::Callback)?;
                let (resolution, name) =
                    if merged.is_undefined() || merged.is_null() || merged == server {
                        (Resolution::KeepServer, "server")
                    } else if merged == local {
                        (Resolution::KeepLocal, "local")
                    } else {
                        (Resolution::Merged(convert::read_merged(&merged)?), "merged")
                    };
                replica
                    .resolve(&id, resolution)
                    .map_err(|_| Bad("the conflict was not waiting for a resolution"))?;
                name
            }
            (ConflictOutcome::AwaitingResolution, None) => {
                return Err(Bad("a conflict waits but there is no resolveConflict").into())
            }
            (ConflictOutcome::KeptServer, _) => "server",
            (ConflictOutcome::KeptLocal, _) => "local",
        };
        let record = replica.pending().get(&id).map_or(JsValue::NULL, |pending| {
            convert::write_pending(&id, pending)
        });
        let id = JsValue::from_str(&id);
        self.store("conflictResolved", &[&id, &record]).await?;
        let payload = object();
        set(&payload, "id", &id);
        set(&payload, "local", &local);
        set(&payload, "server", &server);
        set(&payload, "resolution", &JsValue::from_str(resolution));
        set(&payload, "merged", &record);
        self.emit("conflict", &payload);
        Ok(())
    }

    /// One cycle with its events and bookkeeping: `status` before and after, `error` or
    /// `change` after, the outcome recorded for the scheduler, and the other tabs told.
    async fn cycle(self: Rc<Self>) -> Result<JsValue, JsValue> {
        *self.hints.borrow_mut() = Hints::default();
        self.emit_status("syncing");
        let result = self.run_cycle().await;
        let hints = *self.hints.borrow();
        let outcome = match &result {
            Ok(_) => Outcome::Synced {
                backoff_ms: hints.backoff_ms,
                poll_ms: hints.poll_ms,
            },
            Err(stop) => Outcome::Failed {
                retry_after_ms: match stop {
                    Stop::Failed(Failure::Status { retry_after_ms, .. }) => *retry_after_ms,
                    _ => None,
                },
                offline: matches!(stop, Stop::Failed(Failure::Network)),
            },
        };
        let channel = {
            let mut sched = self.sched.borrow_mut();
            sched.plan.record(outcome, now(), js_sys::Math::random());
            sched.channel.clone()
        };
        match result {
            Ok(totals) => {
                self.emit_status("idle");
                let summary = object();
                set(&summary, "pulled", &JsValue::from_f64(totals.pulled as f64));
                set(&summary, "pushed", &JsValue::from_f64(totals.pushed as f64));
                set(
                    &summary,
                    "conflicts",
                    &JsValue::from_f64(totals.conflicts as f64),
                );
                if totals.pulled + totals.pushed > 0 || totals.reset {
                    let change = object();
                    set(&change, "pulled", &get(&summary, "pulled"));
                    set(&change, "pushed", &get(&summary, "pushed"));
                    set(&change, "reset", &JsValue::from_bool(totals.reset));
                    if let Some(channel) = channel {
                        let _ = js::call(&channel, "postMessage", &[&change]);
                    }
                    set(&change, "source", &JsValue::from_str("sync"));
                    self.emit("change", &change);
                }
                Ok(summary)
            }
            Err(stop) => {
                let offline = matches!(stop, Stop::Failed(Failure::Network));
                let error = self.error(stop);
                self.emit_status(if offline { "offline" } else { "error" });
                self.emit("error", &error);
                Err(error)
            }
        }
    }

    /// A `SyncError`: an `Error` with `code` (`network`, `unauthorized`, `http`,
    /// `contention`, `protocol`, `store`, `callback`, `invalid`), and `status`, `retryAfter`,
    /// `body` and `cause` where they apply.
    fn error(&self, stop: Stop) -> JsValue {
        let mut status = None;
        let mut retry_after = None;
        let mut cause = JsValue::UNDEFINED;
        let (code, message) = match stop {
            Stop::Failed(Failure::Network) => ("network", "the server could not be reached"),
            Stop::Failed(Failure::Unauthorized) => {
                status = Some(401);
                ("unauthorized", "the server refused the token")
            }
            Stop::Failed(Failure::Status {
                status: s,
                retry_after_ms,
            }) => {
                status = Some(s);
                retry_after = retry_after_ms;
                ("http", "the server answered with an error")
            }
            Stop::Failed(Failure::Contention { .. }) => (
                "contention",
                "other writers kept winning; the edits stay pending",
            ),
            Stop::Failed(Failure::Protocol(why)) => ("protocol", why),
            Stop::Store(e) => {
                cause = e;
                ("store", "a store method failed")
            }
            Stop::Callback(e) => {
                cause = e;
                ("callback", "the token function or resolveConflict failed")
            }
            Stop::Invalid(Bad(why)) => ("invalid", why),
        };
        let error: JsValue = js_sys::Error::new(message).into();
        set(&error, "name", &JsValue::from_str("SyncError"));
        set(&error, "code", &JsValue::from_str(code));
        if let Some(status) = status {
            set(&error, "status", &JsValue::from(status));
            set(&error, "body", &self.error_body.borrow());
        }
        if let Some(ms) = retry_after {
            set(&error, "retryAfter", &JsValue::from_f64(ms as f64));
        }
        if !cause.is_undefined() {
            set(&error, "cause", &cause);
        }
        error
    }

    /// A cycle inside the Web Lock, where the host has Web Locks: one tab at a time.
    async fn locked_cycle(self: Rc<Self>) -> Result<JsValue, JsValue> {
        let Some(locks) = js::web_locks() else {
            return self.cycle().await;
        };
        let name = JsValue::from_str(&self.settings.collection_url);
        let me = self.clone();
        let callback = Closure::once_into_js(move |_lock: JsValue| future_to_promise(me.cycle()));
        settle(js::call(&locks, "request", &[&name, &callback])?).await
    }

    /// The promise of the next cycle. Cycles run one after another; calls made while one
    /// waits to start share it, since it will see all their edits.
    pub fn sync_promise(self: &Rc<Self>) -> Promise {
        if let Some(queued) = self.queued.borrow().clone() {
            return queued;
        }
        let previous = self.tail.borrow().clone();
        let me = self.clone();
        let promise = future_to_promise(async move {
            if let Some(previous) = previous {
                let _ = JsFuture::from(previous).await;
            }
            me.queued.borrow_mut().take();
            me.sched.borrow_mut().running = true;
            let result = me.clone().locked_cycle().await;
            me.after_cycle();
            result
        });
        *self.queued.borrow_mut() = Some(promise.clone());
        *self.tail.borrow_mut() = Some(promise.clone());
        promise
    }

    // --- the scheduler ---------------------------------------------------------------

    pub fn start(self: &Rc<Self>, interval_ms: Option<f64>, hidden_interval_ms: Option<f64>) {
        self.stop();
        let weak = Rc::downgrade(self);
        let tick = Closure::<dyn FnMut()>::new({
            let weak = weak.clone();
            move || {
                if let Some(me) = weak.upgrade() {
                    me.on_tick();
                }
            }
        });
        let mut listeners = Vec::new();
        let listen = |target: JsValue, event, on: fn(&Rc<Inner>, JsValue)| {
            let weak: Weak<Inner> = weak.clone();
            let callback = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
                if let Some(me) = weak.upgrade() {
                    on(&me, e);
                }
            });
            Listener::add(target, event, callback)
        };
        let document = get(&js::global(), "document");
        listeners.extend(listen(document, "visibilitychange", |me, _| {
            if !js::page_hidden() {
                me.sync_soon(0.0);
            }
        }));
        listeners.extend(listen(js::global(), "online", |me, _| {
            me.sched.borrow_mut().plan.online(now());
            me.sync_soon(0.0);
        }));
        let channel = js::broadcast_channel(&self.settings.collection_url);
        if let Some(channel) = &channel {
            listeners.extend(listen(channel.clone(), "message", |me, e| {
                let change = get(&e, "data");
                if change.is_object() {
                    set(&change, "source", &JsValue::from_str("tab"));
                    me.emit("change", &change);
                }
            }));
        }
        {
            let mut sched = self.sched.borrow_mut();
            sched.started = true;
            sched.policy = Policy::new(interval_ms, hidden_interval_ms);
            sched.tick = Some(tick);
            sched.listeners = listeners;
            sched.channel = channel;
        }
        self.sync_soon(0.0);
    }

    pub fn stop(&self) {
        let (timer, listeners, channel, tick) = {
            let mut sched = self.sched.borrow_mut();
            sched.started = false;
            sched.dirty = false;
            (
                sched.timer.take(),
                std::mem::take(&mut sched.listeners),
                sched.channel.take(),
                sched.tick.take(),
            )
        };
        if let Some((handle, _)) = timer {
            js::clear_timeout(&handle);
        }
        for listener in listeners {
            listener.remove();
        }
        if let Some(channel) = channel {
            let _ = js::call(&channel, "close", &[]);
        }
        drop(tick);
    }

    /// A sync soon: after a local change (`min` = the debounce), or when the page becomes
    /// visible or the network comes back (`min` = 0). Never before the server allows, and
    /// never later than a timer that is already due sooner.
    pub fn sync_soon(&self, min: f64) {
        let now = now();
        let delay = {
            let mut sched = self.sched.borrow_mut();
            if !sched.started {
                return;
            }
            if sched.running {
                sched.dirty = true;
                return;
            }
            let delay = sched.plan.soon_delay(now, min);
            if sched
                .timer
                .as_ref()
                .is_some_and(|(_, due)| *due <= now + delay)
            {
                return;
            }
            delay
        };
        self.set_timer(delay);
    }

    pub fn notify_changed(&self) {
        self.sync_soon(DEBOUNCE_MS);
    }

    fn set_timer(&self, delay: f64) {
        let mut sched = self.sched.borrow_mut();
        if let Some((handle, _)) = sched.timer.take() {
            js::clear_timeout(&handle);
        }
        let Some(tick) = sched.tick.as_ref() else {
            return;
        };
        let handle = js::set_timeout(tick.as_ref().unchecked_ref(), delay);
        sched.timer = Some((handle, now() + delay));
    }

    fn on_tick(self: &Rc<Self>) {
        {
            let mut sched = self.sched.borrow_mut();
            sched.timer = None;
            if sched.running {
                sched.dirty = true;
                return;
            }
        }
        let promise = self.sync_promise();
        // Awaited so that a failed scheduled sync is not an unhandled rejection; its error
        // has gone out as an `error` event.
        spawn_local(async move {
            let _ = JsFuture::from(promise).await;
        });
    }

    /// After any cycle: schedule the next one, if the scheduler runs.
    fn after_cycle(&self) {
        let now = now();
        let delay = {
            let mut sched = self.sched.borrow_mut();
            sched.running = false;
            if !sched.started {
                return;
            }
            if std::mem::take(&mut sched.dirty) {
                sched.plan.soon_delay(now, DEBOUNCE_MS)
            } else {
                sched
                    .plan
                    .periodic_delay(&sched.policy, now, js::page_hidden())
            }
        };
        self.set_timer(delay);
    }
}
