//! JavaScript values ↔ `sync-core` types.
//!
//! Bodies are parsed with the host's `JSON.parse` and read field by field here, and an
//! object's `data` travels as the JSON text `JSON.stringify` gives for it. That keeps
//! serde_json and serde's error formatting out of the wasm (see the crate docs for the sizes),
//! and it gives every `data` one canonical text: the replica compares local and server content
//! as text, and both sides of that comparison are written by the same `JSON.stringify`.
//!
//! What the application sees:
//!
//! - a **server object** as the wire has it: `{id, type, seq, data?, deleted?, expires?, hash?,
//!   author?}`, `data` parsed;
//! - a **local object** (a pending edit): `{id, type, data?, deleted?, expires?, baseSeq}`;
//! - a **saved object** (a pushed edit, with its seq): `{id, type, seq, data?, deleted?,
//!   expires?}`;
//! - the **state**: [`ReplicaState`] exactly as serde writes it (`client_id`, `collection_id`,
//!   `cursor`, `next_push_number`, `in_flight` as the push's JSON text, `paging_horizon`).

use crate::js::{get, object, parse_json, set, to_json};
use js_sys::Array;
use sync_core::push::{Change, Conflict, ConflictAnswer, ResetAnswer};
use sync_core::{
    ConflictReason, ErrorCode, JsonData, Object, PendingChange, PullAnswer, PushObject, PushOk,
    PushRequest, ReplicaState, SavedObject,
};
use wasm_bindgen::JsValue;

/// What was wrong with a value: a static sentence, so no formatting code is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bad(pub &'static str);

type Read<T> = Result<T, Bad>;

/// The largest integer a JavaScript number holds exactly.
const MAX_SAFE: f64 = 9_007_199_254_740_991.0;

fn missing(value: &JsValue) -> bool {
    value.is_undefined() || value.is_null()
}

fn read_u64(value: &JsValue, what: &'static str) -> Read<u64> {
    match value.as_f64() {
        Some(n) if (0.0..=MAX_SAFE).contains(&n) && n == (n as u64) as f64 => Ok(n as u64),
        _ => Err(Bad(what)),
    }
}

fn read_opt_u64(value: &JsValue, what: &'static str) -> Read<Option<u64>> {
    if missing(value) {
        return Ok(None);
    }
    read_u64(value, what).map(Some)
}

fn read_string(value: &JsValue, what: &'static str) -> Read<String> {
    value.as_string().ok_or(Bad(what))
}

fn read_opt_string(value: &JsValue, what: &'static str) -> Read<Option<String>> {
    if missing(value) {
        return Ok(None);
    }
    read_string(value, what).map(Some)
}

fn read_bool(value: &JsValue) -> bool {
    value.as_bool() == Some(true)
}

fn read_array<T>(
    value: &JsValue,
    what: &'static str,
    item: impl Fn(&JsValue) -> Read<T>,
) -> Read<Vec<T>> {
    if !Array::is_array(value) {
        return Err(Bad(what));
    }
    Array::from(value).iter().map(|v| item(&v)).collect()
}

fn number(n: u64) -> JsValue {
    JsValue::from_f64(n as f64)
}

fn opt_number(n: Option<u64>) -> JsValue {
    n.map_or(JsValue::NULL, number)
}

fn opt_str(s: Option<&str>) -> JsValue {
    s.map_or(JsValue::NULL, JsValue::from_str)
}

/// The JSON text of an application value, for `data`.
pub fn data_text(value: &JsValue) -> Read<JsonData> {
    // `null` as data reads as "no data" on the wire; refuse it here, where the app can see why.
    if missing(value) {
        return Err(Bad("data is missing (null and undefined are not allowed)"));
    }
    to_json(value)
        .map(JsonData::from_trusted)
        .ok_or(Bad("data has no JSON form"))
}

fn read_change(value: &JsValue) -> Read<Change> {
    if read_bool(&get(value, "deleted")) {
        return Ok(Change::Delete);
    }
    Ok(Change::Put {
        data: data_text(&get(value, "data"))?,
        expires: read_opt_u64(&get(value, "expires"), "expires is not a unix time in ms")?,
    })
}

fn write_change(target: &JsValue, change: &Change) {
    match change {
        Change::Put { data, expires } => {
            set(target, "data", &parse_json(data.as_str()));
            if let Some(expires) = expires {
                set(target, "expires", &number(*expires));
            }
        }
        Change::Delete => set(target, "deleted", &JsValue::TRUE),
    }
}

fn read_kind(value: &JsValue) -> Read<String> {
    Ok(read_opt_string(&get(value, "type"), "type is not a string")?.unwrap_or_default())
}

/// A server object, from a parsed answer.
pub fn read_object(value: &JsValue) -> Read<Object> {
    let deleted = read_bool(&get(value, "deleted"));
    Ok(Object {
        id: read_string(&get(value, "id"), "an object has no id")?,
        kind: read_kind(value)?,
        seq: read_u64(&get(value, "seq"), "an object has no seq")?,
        deleted,
        data: match deleted {
            true => None,
            false => Some(data_text(&get(value, "data"))?),
        },
        expires: read_opt_u64(&get(value, "expires"), "expires is not a number")?,
        hash: read_opt_string(&get(value, "hash"), "hash is not a string")?,
        author: read_opt_string(&get(value, "author"), "author is not a string")?,
    })
}

/// A server object, for the application.
pub fn write_object(object_: &Object) -> JsValue {
    let out = object();
    set(&out, "id", &JsValue::from_str(&object_.id));
    set(&out, "type", &JsValue::from_str(&object_.kind));
    set(&out, "seq", &number(object_.seq));
    if object_.deleted {
        set(&out, "deleted", &JsValue::TRUE);
    }
    if let Some(data) = &object_.data {
        set(&out, "data", &parse_json(data.as_str()));
    }
    if let Some(expires) = object_.expires {
        set(&out, "expires", &number(expires));
    }
    if let Some(hash) = &object_.hash {
        set(&out, "hash", &JsValue::from_str(hash));
    }
    if let Some(author) = &object_.author {
        set(&out, "author", &JsValue::from_str(author));
    }
    out
}

/// Server objects, for the application.
pub fn write_objects(objects: &[Object]) -> JsValue {
    objects.iter().map(write_object).collect::<Array>().into()
}

/// A `200` pull answer.
pub fn read_pull(value: &JsValue) -> Read<PullAnswer> {
    Ok(PullAnswer {
        collection_id: read_opt_string(&get(value, "collection_id"), "bad collection_id")?,
        since: read_u64(&get(value, "since"), "the page has no since")?,
        until: read_u64(&get(value, "until"), "the page has no until")?,
        more: read_bool(&get(value, "more")),
        horizon: read_opt_u64(&get(value, "horizon"), "bad horizon")?.unwrap_or(0),
        objects: read_array(
            &get(value, "objects"),
            "the page has no objects",
            read_object,
        )?,
    })
}

/// A `200` push answer.
pub fn read_push_ok(value: &JsValue) -> Read<PushOk> {
    Ok(PushOk {
        collection_id: read_string(&get(value, "collection_id"), "bad collection_id")?,
        seqs: read_array(&get(value, "seqs"), "the answer has no seqs", |v| {
            read_u64(v, "a seq is not a number")
        })?,
        until: read_u64(&get(value, "until"), "the answer has no until")?,
        replayed: read_bool(&get(value, "replayed")),
    })
}

fn read_conflict(value: &JsValue) -> Read<Conflict> {
    let reason = match get(value, "reason").as_string().as_deref() {
        Some("stale_base") => ConflictReason::StaleBase,
        Some("collection_changed") => ConflictReason::CollectionChanged,
        _ => return Err(Bad("a conflict has an unknown reason")),
    };
    let server = get(value, "server");
    Ok(Conflict {
        id: read_string(&get(value, "id"), "a conflict has no id")?,
        reason,
        server: match missing(&server) {
            true => None,
            false => Some(read_object(&server)?),
        },
    })
}

/// A `409` push answer.
pub fn read_conflict_answer(value: &JsValue) -> Read<ConflictAnswer> {
    let changes = get(value, "changes");
    Ok(ConflictAnswer {
        error: ErrorCode::Conflict,
        message: String::new(),
        collection_id: read_opt_string(&get(value, "collection_id"), "bad collection_id")?,
        until: read_u64(&get(value, "until"), "the conflict has no until")?,
        conflicts: read_array(&get(value, "conflicts"), "no conflicts", read_conflict)?,
        changes: match missing(&changes) {
            true => Vec::new(),
            false => read_array(&changes, "bad changes", read_object)?,
        },
        more: read_bool(&get(value, "more")),
    })
}

/// A `410` answer.
pub fn read_reset(value: &JsValue) -> Read<ResetAnswer> {
    Ok(ResetAnswer {
        error: ErrorCode::ResetRequired,
        message: String::new(),
        collection_id: read_opt_string(&get(value, "collection_id"), "bad collection_id")?,
        horizon: read_opt_u64(&get(value, "horizon"), "bad horizon")?.unwrap_or(0),
    })
}

/// A push request from its JSON (the state's `in_flight`), parsed by the host.
fn read_push_request(value: &JsValue) -> Read<PushRequest> {
    let object = |v: &JsValue| -> Read<PushObject> {
        Ok(PushObject {
            id: read_string(&get(v, "id"), "an in-flight object has no id")?,
            kind: read_kind(v)?,
            base_seq: read_opt_u64(&get(v, "base_seq"), "bad base_seq")?,
            change: read_change(v)?,
        })
    };
    Ok(PushRequest {
        collection_id: read_opt_string(&get(value, "collection_id"), "bad collection_id")?,
        since: read_opt_u64(&get(value, "since"), "bad since")?,
        push_id: read_opt_string(&get(value, "push_id"), "bad push_id")?,
        objects: read_array(&get(value, "objects"), "in_flight has no objects", object)?,
    })
}

/// The persisted state, as the store gives it back.
pub fn read_state(value: &JsValue) -> Read<ReplicaState> {
    let in_flight = read_opt_string(&get(value, "in_flight"), "in_flight is not a string")?
        .map(|text| read_push_request(&parse_json(&text)))
        .transpose()?;
    Ok(ReplicaState {
        client_id: read_string(&get(value, "client_id"), "the state has no client_id")?,
        collection_id: read_opt_string(&get(value, "collection_id"), "bad collection_id")?,
        cursor: read_u64(&get(value, "cursor"), "the state has no cursor")?,
        next_push_number: read_u64(&get(value, "next_push_number"), "no next_push_number")?,
        in_flight,
        paging_horizon: read_opt_u64(&get(value, "paging_horizon"), "bad paging_horizon")?,
    })
}

/// The state to persist.
pub fn write_state(state: &ReplicaState) -> JsValue {
    let out = object();
    set(&out, "client_id", &JsValue::from_str(&state.client_id));
    set(
        &out,
        "collection_id",
        &opt_str(state.collection_id.as_deref()),
    );
    set(&out, "cursor", &number(state.cursor));
    set(&out, "next_push_number", &number(state.next_push_number));
    let in_flight = state.in_flight.as_ref().map(PushRequest::to_json);
    set(&out, "in_flight", &opt_str(in_flight.as_deref()));
    set(&out, "paging_horizon", &opt_number(state.paging_horizon));
    out
}

/// A pending edit, as the store lists it.
pub fn read_pending(value: &JsValue) -> Read<(String, PendingChange)> {
    let id = read_string(&get(value, "id"), "a pending object has no id")?;
    let pending = PendingChange {
        kind: read_kind(value)?,
        change: read_change(value)?,
        base_seq: read_opt_u64(&get(value, "baseSeq"), "baseSeq is not a seq")?.unwrap_or(0),
    };
    Ok((id, pending))
}

/// A pending edit, for the application.
pub fn write_pending(id: &str, pending: &PendingChange) -> JsValue {
    let out = object();
    set(&out, "id", &JsValue::from_str(id));
    set(&out, "type", &JsValue::from_str(&pending.kind));
    write_change(&out, &pending.change);
    set(&out, "baseSeq", &number(pending.base_seq));
    out
}

/// The objects of an accepted push, for the application.
pub fn write_saved(objects: &[SavedObject]) -> JsValue {
    objects
        .iter()
        .map(|saved| {
            let out = object();
            set(&out, "id", &JsValue::from_str(&saved.id));
            set(&out, "type", &JsValue::from_str(&saved.kind));
            set(&out, "seq", &number(saved.seq));
            write_change(&out, &saved.change);
            out
        })
        .collect::<Array>()
        .into()
}

/// What `resolveConflict` returned as the merged object: `{data}` (with `expires`) or
/// `{deleted: true}`.
pub fn read_merged(value: &JsValue) -> Read<Change> {
    read_change(value)
}
