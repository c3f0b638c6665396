//! A short fuzz on stable Rust: proptest feeds the same checks as the fuzz targets, with
//! random bytes (the structured checks read any bytes) and, for decoding, JSON built from the
//! protocol's own field names, so that it reaches past the first syntax error. The cases are
//! bounded so that this takes seconds; the long runs are `scripts/fuzz.sh`.

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::Value;

/// Field names of requests and answers, so that random objects look like protocol ones.
const KEYS: [&str; 16] = [
    "objects",
    "id",
    "type",
    "base_seq",
    "deleted",
    "data",
    "expires",
    "since",
    "collection_id",
    "push_id",
    "until",
    "more",
    "horizon",
    "seq",
    "hash",
    "seqs",
];

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-z\u{0}-\u{1f}\u{e9}\u{202e}\u{1f600}]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((proptest::sample::select(&KEYS[..]), inner), 0..6).prop_map(|fields| {
                Value::Object(
                    fields
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                )
            }),
        ]
    })
}

/// A request-target input: a selector byte, then JSON text, sometimes with one byte changed.
fn request_input() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), json(), any::<Option<(usize, u8)>>()).prop_map(|(selector, value, flip)| {
        let mut input = vec![selector];
        input.extend(value.to_string().into_bytes());
        if let Some((at, byte)) = flip {
            let at = 1 + at % input.len();
            if at < input.len() {
                input[at] = byte;
            }
        }
        input
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decoding_keeps_its_promises_on_json(input in request_input()) {
        sync_fuzz::request::check(&input);
    }

    #[test]
    fn decoding_keeps_its_promises_on_bytes(input in vec(any::<u8>(), 0..512)) {
        sync_fuzz::request::check(&input);
    }

    #[test]
    fn the_commit_decision_keeps_its_promises(input in vec(any::<u8>(), 0..256)) {
        sync_fuzz::commit::check(&input);
    }

    #[test]
    fn the_replica_keeps_its_promises(input in vec(any::<u8>(), 0..2048)) {
        sync_fuzz::replica::check(&input);
    }
}
