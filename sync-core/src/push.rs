//! Pushing a batch: the request, its strict parser, and the answers.
//!
//! The parser is the one place where the batch checks live (The Cut-Out's client-side checks,
//! now enforced for every client): it reads each object on its own, field by field, so that
//! every problem is reported with the object's index and the field's name, all at once.

use crate::error::Detail;
use crate::json::JsonData;
use crate::names;
use crate::object::{write_decimal, write_json_string, Object};
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The latest `expires` accepted: 9999-12-31T23:59:59.999Z. Later values are surely
/// mistakes (seconds sent as milliseconds times a thousand, `u64::MAX`), and they would not fit
/// the signed 64-bit columns of SQL stores.
pub const MAX_EXPIRES_MS: u64 = 253_402_300_799_999;

/// The server's size limits, reported by `GET /v1/info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
    /// The most objects in one push.
    pub max_batch: usize,
    /// The largest `data` of one object, in bytes of JSON text.
    pub max_object_bytes: usize,
    /// The most objects in one pull page.
    pub max_pull_limit: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            max_batch: 1000,
            max_object_bytes: 256 * 1024,
            max_pull_limit: 10_000,
        }
    }
}

/// A validated push.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushRequest {
    /// The epoch the client believes in; a different current one means `reset_required`.
    pub collection_id: Option<String>,
    /// Collection-level check: reject the batch if anything was committed after this seq.
    pub since: Option<u64>,
    /// Idempotency key: a retry of a committed push replays the first answer.
    pub push_id: Option<String>,
    /// The objects, in the order they will take their seqs.
    pub objects: Vec<PushObject>,
}

/// One write in a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushObject {
    /// The object's id.
    pub id: String,
    /// Its type tag (`""` by default).
    pub kind: String,
    /// Object-level check: the object's current seq must equal this (`0`: must not exist, or
    /// be a tombstone).
    pub base_seq: Option<u64>,
    /// What to write.
    pub change: Change,
}

/// The write itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create or replace the object's data.
    Put {
        /// The new data.
        data: JsonData,
        /// When it expires (unix ms).
        expires: Option<u64>,
    },
    /// Delete the object, leaving a tombstone.
    Delete,
}

impl PushObject {
    /// The object this write produces once it is committed at `seq`.
    pub fn to_object(&self, seq: u64) -> Object {
        match &self.change {
            Change::Put { data, expires } => Object {
                id: self.id.clone(),
                kind: self.kind.clone(),
                seq,
                deleted: false,
                hash: Some(crate::hash::data_hash(data.as_str())),
                data: Some(data.clone()),
                expires: *expires,
                author: None,
            },
            Change::Delete => Object::tombstone(self.id.clone(), self.kind.clone(), seq),
        }
    }
}

/// Why a push body was refused before any storage was touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushParseError {
    /// Not valid UTF-8 or not JSON of the right overall shape (`400 invalid_request`).
    Malformed(String),
    /// More objects than `max_batch` (`413 too_large`).
    TooManyObjects {
        /// How many were sent.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// One object's data is over `max_object_bytes` (`413 too_large`).
    ObjectTooLarge {
        /// The object's position in the batch.
        index: usize,
        /// The limit.
        max: usize,
    },
    /// Field-level problems (`400 invalid_request`), every one of them.
    Invalid(Vec<Detail>),
}

/// The top level of the body, with each field kept as raw text so that we can say precisely
/// what is wrong with it; `objects` as `O`.
#[derive(Deserialize)]
#[serde(bound(deserialize = "O: Deserialize<'de>"))]
struct Body<'a, O> {
    #[serde(borrow, default)]
    collection_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    since: Option<&'a RawValue>,
    #[serde(borrow, default)]
    push_id: Option<&'a RawValue>,
    objects: Option<O>,
}

/// The body read by parts: `objects` as raw text, read next.
type RawRequest<'a> = Body<'a, &'a RawValue>;

/// A well-formed body in one pass: the top level and every object's fields at once. Any error
/// (or no `objects`) sends the parser back to [`RawRequest`], which reads the parts one by one
/// to say precisely what is wrong; on well-formed bodies this saves two passes over every
/// object's data.
type WellFormedRequest<'a> = Body<'a, Vec<RawObject<'a>>>;

/// How [`PushRequest::parse_with`] reads a body.
#[derive(Clone, Copy)]
enum Path {
    /// [`WellFormedRequest`] first, then by parts if that fails: what `parse` does.
    WellFormedFirst,
    /// By parts only: the reference the fast path is tested against.
    #[cfg_attr(not(test), allow(dead_code))]
    ByParts,
}

/// Each object's fields, or what made them unreadable; or why `objects` itself could not be
/// read, as a field detail.
type ObjectsRead<'a> = Result<Vec<Result<RawObject<'a>, String>>, &'static str>;

/// Reads a body that is not a [`WellFormedRequest`] one part at a time: its top level (or a
/// `Malformed` error if even that is not JSON of the right shape), then each object.
fn read_parts(text: &str) -> Result<(RawRequest<'_>, ObjectsRead<'_>), PushParseError> {
    let mut raw: RawRequest<'_> = serde_json::from_str(text).map_err(|e| {
        PushParseError::Malformed(format!("the body is not a valid push request: {e}"))
    })?;
    let Some(objects) = raw.objects.take() else {
        return Ok((raw, Err("is required")));
    };
    let Ok(list) = serde_json::from_str::<Vec<&RawValue>>(objects.get()) else {
        return Ok((raw, Err("must be an array of objects")));
    };
    let read = list
        .into_iter()
        .map(|object| serde_json::from_str(object.get()).map_err(|e| e.to_string()))
        .collect();
    Ok((raw, Ok(read)))
}

#[derive(Deserialize)]
struct RawObject<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    base_seq: Option<&'a RawValue>,
    #[serde(borrow, default)]
    deleted: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    expires: Option<&'a RawValue>,
}

/// Collects field problems for one request.
struct Problems(Vec<Detail>);

impl Problems {
    fn add(&mut self, index: Option<usize>, field: &str, message: impl Into<String>) {
        self.0.push(Detail {
            index,
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// Reads an optional field as `T`; JSON `null` counts as absent.
    fn field<'a, T: Deserialize<'a>>(
        &mut self,
        index: Option<usize>,
        name: &str,
        raw: Option<&'a RawValue>,
        expected: &str,
    ) -> Option<T> {
        let raw = raw.filter(|r| r.get() != "null")?;
        match serde_json::from_str::<T>(raw.get()) {
            Ok(v) => Some(v),
            Err(_) => {
                self.add(index, name, format!("must be {expected}"));
                None
            }
        }
    }
}

impl PushRequest {
    /// Parses and validates a push body against `limits`.
    ///
    /// Nothing here depends on stored state; the commit decision comes afterwards.
    pub fn parse(body: &[u8], limits: &Limits) -> Result<PushRequest, PushParseError> {
        Self::parse_with(body, limits, Path::WellFormedFirst)
    }

    fn parse_with(body: &[u8], limits: &Limits, path: Path) -> Result<PushRequest, PushParseError> {
        let text = core::str::from_utf8(body)
            .map_err(|_| PushParseError::Malformed("the body is not valid UTF-8".to_string()))?;
        // A cheap guard against pathological nesting before any parser runs; deep but plausible
        // data still reaches the field check below, which names the object and the field.
        if crate::json::nesting_depth(text) > crate::json::MAX_DEPTH + 16 {
            return Err(PushParseError::Malformed(
                "the body is nested too deeply".to_string(),
            ));
        }
        let well_formed = match path {
            Path::WellFormedFirst => serde_json::from_str::<WellFormedRequest<'_>>(text).ok(),
            Path::ByParts => None,
        };
        let (raw, objects_read) = match well_formed {
            Some(Body {
                collection_id,
                since,
                push_id,
                objects: Some(objects),
            }) => (
                RawRequest {
                    collection_id,
                    since,
                    push_id,
                    objects: None,
                },
                Ok(objects.into_iter().map(Ok).collect()),
            ),
            _ => read_parts(text)?,
        };
        let mut problems = Problems(Vec::new());

        let collection_id: Option<String> =
            problems.field(None, "collection_id", raw.collection_id, "a string");
        if let Some(cid) = &collection_id {
            if cid.is_empty() || cid.len() > 64 {
                problems.add(None, "collection_id", "must be 1 to 64 characters");
            }
        }
        let since: Option<u64> = problems.field(None, "since", raw.since, "a non-negative integer");
        let push_id: Option<String> = problems.field(None, "push_id", raw.push_id, "a string");
        if let Some(Err(e)) = push_id.as_deref().map(names::check_id) {
            problems.add(None, "push_id", e.message());
        }

        let parsed = match objects_read {
            Ok(parsed) => parsed,
            Err(problem) => {
                problems.add(None, "objects", problem);
                return Err(PushParseError::Invalid(problems.0));
            }
        };
        if parsed.len() > limits.max_batch {
            return Err(PushParseError::TooManyObjects {
                count: parsed.len(),
                max: limits.max_batch,
            });
        }

        let mut objects = Vec::with_capacity(parsed.len());
        let mut seen = BTreeSet::new();
        for (index, fields) in parsed.into_iter().enumerate() {
            let at = Some(index);
            let fields = match fields {
                Ok(f) => f,
                Err(e) => {
                    problems.add(at, "", format!("must be a JSON object: {e}"));
                    continue;
                }
            };
            let id: Option<String> = problems.field(at, "id", fields.id, "a string");
            match id.as_deref() {
                None if fields.id.is_none_or(|r| r.get() == "null") => {
                    problems.add(at, "id", "is required")
                }
                None => {}
                Some(id) => {
                    if let Err(e) = names::check_id(id) {
                        problems.add(at, "id", e.message());
                    } else if !seen.insert(id.to_string()) {
                        problems.add(at, "id", "appears more than once in this batch");
                    }
                }
            }
            let kind: String = problems
                .field(at, "type", fields.kind, "a string")
                .unwrap_or_default();
            if let Err(e) = names::check_type(&kind) {
                problems.add(at, "type", e.message());
            }
            let base_seq: Option<u64> =
                problems.field(at, "base_seq", fields.base_seq, "a non-negative integer");
            let deleted: bool = problems
                .field(at, "deleted", fields.deleted, "true or false")
                .unwrap_or(false);
            let expires: Option<u64> =
                problems.field(at, "expires", fields.expires, "a unix time in milliseconds");
            if expires.is_some_and(|e| e > MAX_EXPIRES_MS) {
                problems.add(
                    at,
                    "expires",
                    "must be a unix time in milliseconds before the year 10000",
                );
            }
            let data = fields.data.filter(|r| r.get() != "null");

            let change = if deleted {
                if data.is_some() {
                    problems.add(
                        at,
                        "data",
                        "a tombstone (deleted: true) must not carry data",
                    );
                }
                if expires.is_some() {
                    problems.add(at, "expires", "a tombstone (deleted: true) cannot expire");
                }
                Some(Change::Delete)
            } else {
                match data {
                    None => {
                        problems.add(at, "data", "is required unless deleted is true");
                        None
                    }
                    Some(raw_data) if raw_data.get().len() > limits.max_object_bytes => {
                        return Err(PushParseError::ObjectTooLarge {
                            index,
                            max: limits.max_object_bytes,
                        });
                    }
                    Some(raw_data) => match JsonData::parse(raw_data.get()) {
                        Ok(data) => Some(Change::Put { data, expires }),
                        Err(e) => {
                            problems.add(at, "data", e.message());
                            None
                        }
                    },
                }
            };
            if let (Some(id), Some(change)) = (id, change) {
                objects.push(PushObject {
                    id,
                    kind,
                    base_seq,
                    change,
                });
            }
        }
        if !problems.0.is_empty() {
            return Err(PushParseError::Invalid(problems.0));
        }
        Ok(PushRequest {
            collection_id,
            since,
            push_id,
            objects,
        })
    }

    /// The request as JSON, as a client sends it: what serde would write for the wire shape
    /// (optional fields left out, `type` only when not empty, `deleted` only when true).
    ///
    /// Written by hand, like [`Object::write_json`], so that a client built for the browser
    /// (`sync-wasm`) does not link serde_json's serializer; a test checks it against serde.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64 + self.objects.len() * 96);
        out.push('{');
        if let Some(cid) = &self.collection_id {
            out.push_str("\"collection_id\":");
            write_json_string(&mut out, cid);
            out.push(',');
        }
        if let Some(since) = self.since {
            out.push_str("\"since\":");
            write_decimal(&mut out, since);
            out.push(',');
        }
        if let Some(push_id) = &self.push_id {
            out.push_str("\"push_id\":");
            write_json_string(&mut out, push_id);
            out.push(',');
        }
        out.push_str("\"objects\":[");
        for (i, object) in self.objects.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"id\":");
            write_json_string(&mut out, &object.id);
            if !object.kind.is_empty() {
                out.push_str(",\"type\":");
                write_json_string(&mut out, &object.kind);
            }
            if let Some(base_seq) = object.base_seq {
                out.push_str(",\"base_seq\":");
                write_decimal(&mut out, base_seq);
            }
            match &object.change {
                Change::Put { data, expires } => {
                    out.push_str(",\"data\":");
                    out.push_str(data.as_str());
                    if let Some(expires) = expires {
                        out.push_str(",\"expires\":");
                        write_decimal(&mut out, *expires);
                    }
                }
                Change::Delete => out.push_str(",\"deleted\":true"),
            }
            out.push('}');
        }
        out.push_str("]}");
        out
    }
}

/// `200`: the batch is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushOk {
    /// The collection's epoch (new if this push created the collection).
    pub collection_id: String,
    /// One seq per object, in batch order.
    pub seqs: Vec<u64>,
    /// The collection's `last_seq` right after this commit.
    pub until: u64,
    /// True when this answer is the replay of an earlier commit with the same `push_id`.
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub replayed: bool,
}

/// Why an object of a batch conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictReason {
    /// The object's current seq is not the `base_seq` the client sent.
    StaleBase,
    /// Something was committed to the collection after the client's `since`.
    CollectionChanged,
}

/// One conflicting object of a rejected batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The object's id.
    pub id: String,
    /// Why it conflicts.
    pub reason: ConflictReason,
    /// The server's current version, or `null` if it has none.
    pub server: Option<Object>,
}

/// `409`: nothing was applied. The body carries what the client needs to merge in one round
/// trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictAnswer {
    /// Always `conflict`.
    pub error: crate::error::ErrorCode,
    /// A sentence for a person.
    pub message: String,
    /// The collection's epoch.
    pub collection_id: Option<String>,
    /// The seq up to which `changes` bring the client.
    pub until: u64,
    /// The conflicting objects.
    pub conflicts: Vec<Conflict>,
    /// The changes after the request's `since` (or after the lowest conflicting `base_seq`),
    /// at most a pull page of them.
    pub changes: Vec<Object>,
    /// True if there are more changes after `until`.
    pub more: bool,
}

/// `410`: the client must drop its cursor and resync from 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetAnswer {
    /// Always `reset_required`.
    pub error: crate::error::ErrorCode,
    /// A sentence for a person.
    pub message: String,
    /// The current epoch (`null` if the collection does not exist).
    pub collection_id: Option<String>,
    /// The current horizon.
    pub horizon: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A JSON value from a small set that covers every field's right and wrong types.
    fn json_value() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(
            &[
                "\"a\"",
                "\"b\"",
                "\"\\u0061\"",
                "\"\"",
                "1",
                "-1",
                "1.5",
                "1e400",
                "null",
                "true",
                "false",
                "[1]",
                "{\"k\":1}",
                "{\"k\":1,\"k\":2}",
                "[[[[1]]]]",
            ][..],
        )
    }

    /// `{"name": value, ...}` from a few of `names`, repeats and unknown names included.
    fn json_object(names: &'static [&'static str]) -> impl Strategy<Value = String> {
        proptest::collection::vec((proptest::sample::select(names), json_value()), 0..6).prop_map(
            |fields| {
                let fields: Vec<String> = fields
                    .into_iter()
                    .map(|(name, value)| format!("\"{name}\":{value}"))
                    .collect();
                format!("{{{}}}", fields.join(","))
            },
        )
    }

    /// Push bodies, mostly well formed, with every kind of fault now and then.
    fn push_body() -> impl Strategy<Value = String> {
        const OBJECT: &[&str] = &[
            "id", "id", "data", "data", "type", "base_seq", "deleted", "expires", "extra",
        ];
        const TOP: &[&str] = &["collection_id", "since", "push_id", "extra"];
        let element = prop_oneof![
            4 => json_object(OBJECT),
            1 => json_value().prop_map(String::from),
        ];
        let objects = prop_oneof![
            6 => proptest::collection::vec(element, 0..5)
                .prop_map(|list| format!("\"objects\":[{}]", list.join(","))),
            1 => json_value().prop_map(|v| format!("\"objects\":{v}")),
            1 => Just(String::new()),
        ];
        (json_object(TOP), objects, 0..3u8).prop_map(|(top, objects, shape)| {
            let inner = &top[1..top.len() - 1];
            let body = match (inner.is_empty(), objects.is_empty()) {
                (true, _) => format!("{{{objects}}}"),
                (false, true) => top.clone(),
                (false, false) => format!("{{{inner},{objects}}}"),
            };
            match shape {
                0 => body,
                1 => format!("[{body}]"),
                _ => body[..body.len() - 1].to_string(),
            }
        })
    }

    proptest! {
        /// Reading a body in one pass, when it is well formed, gives exactly what reading it by
        /// parts gives: the same request, or the same error with the same details.
        #[test]
        fn the_one_pass_parse_agrees_with_parsing_by_parts(body in push_body()) {
            let limits = Limits { max_batch: 3, ..Limits::default() };
            prop_assert_eq!(
                PushRequest::parse_with(body.as_bytes(), &limits, Path::WellFormedFirst),
                PushRequest::parse_with(body.as_bytes(), &limits, Path::ByParts),
                "{}", body
            );
        }
    }

    /// serde's view of the wire shape: the reference [`PushRequest::to_json`] must match.
    #[derive(serde::Serialize)]
    struct WireRequest<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        collection_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        push_id: Option<&'a str>,
        objects: Vec<WireObject<'a>>,
    }

    #[derive(serde::Serialize)]
    struct WireObject<'a> {
        id: &'a str,
        #[serde(rename = "type", skip_serializing_if = "str::is_empty")]
        kind: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        base_seq: Option<u64>,
        #[serde(skip_serializing_if = "core::ops::Not::not")]
        deleted: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a JsonData>,
        #[serde(skip_serializing_if = "Option::is_none")]
        expires: Option<u64>,
    }

    impl<'a> From<&'a PushRequest> for WireRequest<'a> {
        fn from(req: &'a PushRequest) -> Self {
            WireRequest {
                collection_id: req.collection_id.as_deref(),
                since: req.since,
                push_id: req.push_id.as_deref(),
                objects: req
                    .objects
                    .iter()
                    .map(|o| {
                        let (deleted, data, expires) = match &o.change {
                            Change::Put { data, expires } => (false, Some(data), *expires),
                            Change::Delete => (true, None, None),
                        };
                        WireObject {
                            id: &o.id,
                            kind: &o.kind,
                            base_seq: o.base_seq,
                            deleted,
                            data,
                            expires,
                        }
                    })
                    .collect(),
            }
        }
    }

    #[test]
    fn hand_written_json_matches_serde() {
        let data = |t: &str| JsonData::parse(t).unwrap();
        let object = |id: &str, kind: &str, base_seq, change| PushObject {
            id: id.to_string(),
            kind: kind.to_string(),
            base_seq,
            change,
        };
        let full = PushRequest {
            collection_id: Some("c\"1".to_string()),
            since: Some(41),
            push_id: Some("client\u{1}\\7:19".to_string()),
            objects: alloc::vec![
                object(
                    "a\n\u{7f}é",
                    "to\"do\t",
                    Some(12),
                    Change::Put {
                        data: data(r#"{"title":"x","n":[1,2.5,null]}"#),
                        expires: Some(MAX_EXPIRES_MS),
                    },
                ),
                object("b", "", Some(0), Change::Delete),
                object(
                    "c",
                    "note",
                    None,
                    Change::Put {
                        data: data("0"),
                        expires: None
                    }
                ),
            ],
        };
        let valid = PushRequest {
            collection_id: Some("c1".to_string()),
            push_id: Some("client-7:20".to_string()),
            objects: full.objects[1..].to_vec(),
            ..PushRequest::default()
        };
        for request in [&full, &valid, &PushRequest::default()] {
            let mine = request.to_json();
            let serde = serde_json::to_string(&WireRequest::from(request)).unwrap();
            assert_eq!(mine, serde);
        }
        // Ids with control characters are refused by the parser, the others round-trip.
        assert_eq!(parse(&valid.to_json()).unwrap(), valid);
        assert_eq!(
            parse(&PushRequest::default().to_json()).unwrap(),
            PushRequest::default()
        );
    }

    fn parse(body: &str) -> Result<PushRequest, PushParseError> {
        PushRequest::parse(body.as_bytes(), &Limits::default())
    }

    fn details(body: &str) -> Vec<(Option<usize>, String)> {
        match parse(body) {
            Err(PushParseError::Invalid(d)) => d.into_iter().map(|d| (d.index, d.field)).collect(),
            other => panic!("expected field problems, got {other:?}"),
        }
    }

    #[test]
    fn a_good_batch_round_trips() {
        let body = r#"{"collection_id":"c1","since":41,"push_id":"client-7:19",
          "objects":[{"id":"a","type":"todo","base_seq":12,"data":{"title":"x"}},
                     {"id":"b","deleted":true,"base_seq":40}]}"#;
        let req = parse(body).unwrap();
        assert_eq!(req.since, Some(41));
        assert_eq!(req.objects.len(), 2);
        assert_eq!(req.objects[1].change, Change::Delete);
        assert_eq!(parse(&req.to_json()).unwrap(), req);
    }

    #[test]
    fn every_problem_names_index_and_field() {
        let body = r#"{"objects":[
            {"id":"a","data":1},
            {"id":"a","data":2},
            {"data":3},
            {"id":"","data":4},
            {"id":"t","deleted":true,"data":5},
            {"id":7,"data":6},
            {"id":"x","base_seq":"1","data":7},
            {"id":"y"}
        ]}"#;
        assert_eq!(
            details(body),
            [
                (Some(1), "id".to_string()),
                (Some(2), "id".to_string()),
                (Some(3), "id".to_string()),
                (Some(4), "data".to_string()),
                (Some(5), "id".to_string()),
                (Some(6), "base_seq".to_string()),
                (Some(7), "data".to_string()),
            ]
        );
    }

    #[test]
    fn ids_over_256_bytes_or_with_control_characters_are_refused() {
        let long = "x".repeat(257);
        let body =
            format!(r#"{{"objects":[{{"id":"{long}","data":1}},{{"id":"a\u0007","data":1}}]}}"#);
        assert_eq!(
            details(&body),
            [(Some(0), "id".to_string()), (Some(1), "id".to_string())]
        );
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_batch: 2,
            max_object_bytes: 10,
            ..Limits::default()
        };
        let three = r#"{"objects":[{"id":"a","data":1},{"id":"b","data":1},{"id":"c","data":1}]}"#;
        assert_eq!(
            PushRequest::parse(three.as_bytes(), &limits),
            Err(PushParseError::TooManyObjects { count: 3, max: 2 })
        );
        let big = r#"{"objects":[{"id":"a","data":"0123456789"}]}"#;
        assert_eq!(
            PushRequest::parse(big.as_bytes(), &limits),
            Err(PushParseError::ObjectTooLarge { index: 0, max: 10 })
        );
    }

    #[test]
    fn malformed_bodies() {
        for body in [
            &b"not json"[..],
            b"[]",
            b"{\"objects\":1",
            b"\xff\xfe",
            b"{\"objects\":[],\"objects\":[]}",
        ] {
            assert!(
                matches!(
                    PushRequest::parse(body, &Limits::default()),
                    Err(PushParseError::Malformed(_))
                ),
                "{:?}",
                core::str::from_utf8(body)
            );
        }
        let deep = format!(
            "{{\"objects\":[{{\"id\":\"a\",\"data\":{}{}}}]}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(parse(&deep), Err(PushParseError::Malformed(_))));
        assert_eq!(
            details(r#"{"objects":{}}"#),
            [(None, "objects".to_string())]
        );
        assert_eq!(
            details(r#"{"since":-1,"objects":[]}"#),
            [(None, "since".to_string())]
        );
    }

    #[test]
    fn expiries_past_the_year_9999_are_refused() {
        let body = format!(
            r#"{{"objects":[{{"id":"a","data":1,"expires":{}}},{{"id":"b","data":1,"expires":{MAX_EXPIRES_MS}}}]}}"#,
            u64::MAX
        );
        assert_eq!(details(&body), [(Some(0), "expires".to_string())]);
    }

    #[test]
    fn data_nested_a_little_too_deep_gets_a_field_detail() {
        let deep = format!(
            "{}{}",
            "[".repeat(crate::json::MAX_DEPTH + 1),
            "]".repeat(crate::json::MAX_DEPTH + 1)
        );
        let body = format!(r#"{{"objects":[{{"id":"a","data":{deep}}}]}}"#);
        assert_eq!(details(&body), [(Some(0), "data".to_string())]);
    }
}
