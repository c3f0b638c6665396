//! Decoding and validation of what arrives over the wire.
//!
//! The first byte picks what the rest is fed to; the rest goes in as it is, so the fuzzer
//! mutates the very bytes a hostile client (or a broken server) would send:
//!
//! - a push body, to [`PushRequest::parse`] under small and default limits;
//! - a pull query string, decoded as the server does, to [`PullQuery::from_pairs`];
//! - a name, to the app, collection, id and type rules;
//! - object data, to [`JsonData::parse`];
//! - a server answer, decoded as a client does, and written back by the hand-made writers.

use serde_json::Value;
use sync_core::json::{nesting_depth, JsonDataError, MAX_DEPTH};
use sync_core::names::{self, MAX_ID_BYTES};
use sync_core::object::Object;
use sync_core::pull::MAX_TYPE_FILTERS;
use sync_core::push::{
    Change, ConflictAnswer, PushOk, PushParseError, ResetAnswer, MAX_EXPIRES_MS,
};
use sync_core::{JsonData, Limits, PullAnswer, PullQuery, PushRequest};

/// Small limits, so that the fuzzer reaches the limit checks with small inputs.
const SMALL: Limits = Limits {
    max_body_bytes: 4096,
    max_batch: 4,
    max_object_bytes: 64,
    max_pull_limit: 50,
};

/// Runs one input; panics if a promise is broken.
pub fn check(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => push_body(rest),
        1 => pull_query(rest),
        2 => name(&String::from_utf8_lossy(rest)),
        3 => json_data(&String::from_utf8_lossy(rest)),
        _ => server_answer(rest),
    }
}

/// A push body: any bytes either fail to parse or give a request that keeps every rule, and
/// that reads back the same from its own JSON.
fn push_body(body: &[u8]) {
    let small = PushRequest::parse(body, &SMALL);
    let default = PushRequest::parse(body, &Limits::default());
    if let Ok(request) = &small {
        assert_eq!(
            default.as_ref(),
            Ok(request),
            "a body valid under small limits is valid under larger ones"
        );
    }
    for (result, limits) in [(small, SMALL), (default, Limits::default())] {
        match result {
            Ok(request) => valid_push(&request, &limits),
            Err(PushParseError::Invalid(details)) => {
                assert!(!details.is_empty(), "an invalid body names its problems")
            }
            Err(PushParseError::TooManyObjects { count, max }) => assert!(count > max),
            Err(PushParseError::ObjectTooLarge { max, .. }) => {
                assert_eq!(max, limits.max_object_bytes)
            }
            Err(PushParseError::Malformed(message)) => assert!(!message.is_empty()),
        }
    }
}

fn valid_push(request: &PushRequest, limits: &Limits) {
    assert!(request.objects.len() <= limits.max_batch);
    if let Some(cid) = &request.collection_id {
        assert!((1..=64).contains(&cid.len()), "collection_id {cid:?}");
    }
    if let Some(push_id) = &request.push_id {
        assert_eq!(names::check_id(push_id), Ok(()));
    }
    let mut ids = std::collections::BTreeSet::new();
    for object in &request.objects {
        assert_eq!(names::check_id(&object.id), Ok(()));
        assert_eq!(names::check_type(&object.kind), Ok(()));
        assert!(ids.insert(&object.id), "duplicate id {:?}", object.id);
        if let Change::Put { data, expires } = &object.change {
            assert!(data.as_str().len() <= limits.max_object_bytes);
            valid_data(data);
            assert!(expires.is_none_or(|e| e <= MAX_EXPIRES_MS));
        }
    }
    let json = request.to_json();
    assert_eq!(
        PushRequest::parse(json.as_bytes(), limits).as_ref(),
        Ok(request),
        "the request reads back from its own JSON: {json}"
    );
}

/// Stored data: valid JSON, within the depth limit, already in its stored form.
fn valid_data(data: &JsonData) {
    let depth = nesting_depth(data.as_str());
    assert!(depth <= MAX_DEPTH);
    match serde_json::from_str::<Value>(data.as_str()) {
        // Never less than the true depth: an undercount would let deep input through. (More
        // is possible where a duplicate key hid a deeper value from `Value`.)
        Ok(value) => assert!(depth >= value_depth(&value), "the depth guard undercounts"),
        // JSON has no range for numbers; only a `Value` has to fit one in an f64.
        Err(e) => assert!(e.to_string().starts_with("number out of range"), "{e}"),
    }
    assert_eq!(JsonData::parse(data.as_str()).as_ref(), Ok(data));
    assert_eq!(
        serde_json::to_string(data).expect("serializes"),
        data.as_str()
    );
}

fn value_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A pull query string, decoded exactly as the server decodes it.
fn pull_query(query: &[u8]) {
    for limits in [SMALL, Limits::default()] {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query).into_owned().collect();
        let result =
            PullQuery::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())), &limits);
        match result {
            Ok(q) => {
                assert!((1..=limits.max_pull_limit).contains(&q.limit));
                assert!(q.types.is_empty() || q.exclude.is_empty());
                assert!(q.types.len() + q.exclude.len() <= MAX_TYPE_FILTERS);
                let last = |key: &str| pairs.iter().rev().find(|(k, _)| k == key);
                match last("since") {
                    Some((_, v)) => assert_eq!(v.parse::<u64>(), Ok(q.since)),
                    None => assert_eq!(q.since, 0),
                }
                for t in &q.types {
                    assert!(q.wants(t));
                }
                for t in &q.exclude {
                    assert!(!q.wants(t));
                }
            }
            Err(problems) => assert!(!problems.is_empty()),
        }
    }
}

/// A name: whatever passes the rules cannot climb out of its place in a path or a key.
fn name(name: &str) {
    for (valid, what) in [
        (names::is_valid_app(name), "app"),
        (names::is_valid_collection(name), "collection"),
    ] {
        if valid {
            assert!((1..=64).contains(&name.len()), "{what} {name:?}");
            assert!(name != "." && name != "..", "{what} {name:?}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
                "{what} {name:?}"
            );
        }
    }
    if names::is_valid_app(name) {
        assert!(!name.starts_with('.') && !name.bytes().any(|b| b.is_ascii_uppercase()));
    }
    match names::check_id(name) {
        Ok(()) => {
            assert!((1..=MAX_ID_BYTES).contains(&name.len()));
            assert!(!name.chars().any(char::is_control));
            assert_eq!(names::check_type(name), Ok(()));
        }
        Err(e) => {
            assert!(!e.message().is_empty());
            assert_eq!(names::check_type(name).is_ok(), name.is_empty());
        }
    }
}

/// Object data, as the push parser hands it over.
fn json_data(text: &str) {
    match JsonData::parse(text) {
        Ok(data) => {
            valid_data(&data);
            assert_eq!(data.as_str(), text.trim());
        }
        Err(e) => assert_eq!(
            e == JsonDataError::TooDeep,
            nesting_depth(text) > MAX_DEPTH,
            "too deep exactly when the depth guard says so: {e:?}"
        ),
    }
}

/// A server answer, decoded as a client decodes it. Whatever decodes is valid (its data was
/// checked on the way in), and the hand-written writers say byte for byte what serde says.
fn server_answer(body: &[u8]) {
    if let Ok(page) = serde_json::from_slice::<PullAnswer>(body) {
        let json = page.to_json();
        assert_eq!(json, serde_json::to_string(&page).expect("serializes"));
        assert_eq!(
            serde_json::from_str::<PullAnswer>(&json).ok(),
            Some(page.clone())
        );
        for object in &page.objects {
            valid_object(object);
        }
    }
    if let Ok(object) = serde_json::from_slice::<Object>(body) {
        valid_object(&object);
    }
    // These are decoded with serde alone; they must simply never panic, and read back.
    if let Ok(ok) = serde_json::from_slice::<PushOk>(body) {
        let json = serde_json::to_string(&ok).expect("serializes");
        assert_eq!(serde_json::from_str::<PushOk>(&json).ok(), Some(ok));
    }
    if let Ok(conflict) = serde_json::from_slice::<ConflictAnswer>(body) {
        conflict.changes.iter().for_each(valid_object);
        for c in &conflict.conflicts {
            c.server.iter().for_each(valid_object);
        }
    }
    let _ = serde_json::from_slice::<ResetAnswer>(body);
}

fn valid_object(object: &Object) {
    if let Some(data) = &object.data {
        valid_data(data);
    }
    let mut json = String::new();
    object.write_json(&mut json);
    assert_eq!(json, serde_json::to_string(object).expect("serializes"));
}
