//! Pulling changes: the query and the answer.

use crate::error::Detail;
use crate::object::{write_decimal, write_json_string, Object};
use crate::push::Limits;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// The most `type` or `exclude` values one pull may name.
pub const MAX_TYPE_FILTERS: usize = 32;

/// A validated pull query: `?since=N&limit=L[&horizon=H][&type=T…|&exclude=T…]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullQuery {
    /// Return objects with `seq > since`.
    pub since: u64,
    /// At most this many objects (already clamped to the server's `max_pull_limit`).
    pub limit: usize,
    /// Only these types (empty: all).
    pub types: Vec<String>,
    /// All types but these.
    pub exclude: Vec<String>,
    /// The `horizon` the first page of this client's full sync (from `since = 0`) carried,
    /// echoed on the following pages: while it is still the collection's horizon, a `since`
    /// below it can be answered ([`crate::horizon::since_is_answerable`]). `None`: not sent.
    pub horizon: Option<u64>,
}

/// A decimal integer written with digits only: `u64::from_str` also takes a leading `+`.
fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl PullQuery {
    /// Validates decoded query pairs. Unknown keys are ignored, as browsers and proxies add
    /// cache-busters; repeated `type`/`exclude` keys accumulate.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        limits: &Limits,
    ) -> Result<PullQuery, Vec<Detail>> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, message: String| {
            problems.push(Detail {
                index: None,
                field: field.to_string(),
                message,
            })
        };
        let mut query = PullQuery {
            limit: limits.max_pull_limit,
            ..PullQuery::default()
        };
        let mut seen = (false, false, false);
        for (key, value) in pairs {
            // A repeated parameter is refused rather than letting the last one win: a proxy or
            // a cache in front of us might read the first.
            let repeated = match key {
                "since" => core::mem::replace(&mut seen.0, true),
                "limit" => core::mem::replace(&mut seen.1, true),
                "horizon" => core::mem::replace(&mut seen.2, true),
                _ => false,
            };
            if repeated {
                bad(key, "must be given at most once".to_string());
                continue;
            }
            match key {
                "since" => match parse_digits(value) {
                    Some(v) => query.since = v,
                    None => bad("since", "must be a non-negative integer".to_string()),
                },
                "limit" => match parse_digits(value) {
                    Some(0) | None => bad(
                        "limit",
                        format!("must be an integer from 1 to {}", limits.max_pull_limit),
                    ),
                    Some(v) => {
                        query.limit = usize::try_from(v)
                            .map_or(limits.max_pull_limit, |v| v.min(limits.max_pull_limit))
                    }
                },
                "horizon" => match parse_digits(value) {
                    Some(v) => query.horizon = Some(v),
                    None => bad("horizon", "must be a non-negative integer".to_string()),
                },
                "type" => query.types.push(value.to_string()),
                "exclude" => query.exclude.push(value.to_string()),
                _ => {}
            }
        }
        if !query.types.is_empty() && !query.exclude.is_empty() {
            bad("exclude", "cannot be combined with type".to_string());
        }
        if query.types.len() + query.exclude.len() > MAX_TYPE_FILTERS {
            bad("type", format!("at most {MAX_TYPE_FILTERS} type filters"));
        }
        if problems.is_empty() {
            Ok(query)
        } else {
            Err(problems)
        }
    }

    /// Whether an object of type `kind` passes the filter.
    pub fn wants(&self, kind: &str) -> bool {
        if !self.types.is_empty() {
            self.types.iter().any(|t| t == kind)
        } else {
            !self.exclude.iter().any(|t| t == kind)
        }
    }
}

/// `200` to a pull: the objects with `since < seq <= until`, in seq order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullAnswer {
    /// The epoch; `null` for a collection that was never written.
    pub collection_id: Option<String>,
    /// The request's `since`.
    pub since: u64,
    /// The client's next cursor.
    pub until: u64,
    /// True if the client should ask again with `since=until`.
    pub more: bool,
    /// The lowest `since` (other than 0) that can still be answered incrementally.
    pub horizon: u64,
    /// The changes, in seq order.
    pub objects: Vec<Object>,
}

impl PullAnswer {
    /// Builds a page from the (filtered) objects a store read in one snapshot.
    ///
    /// `fetched` holds up to `limit + 1` objects with `seq > since`, so that a store can tell
    /// whether more follow without a second query. `last_seq` is the head as read in the same
    /// snapshot: when the page is the last one, the cursor moves to it even if the filter hid
    /// the newest objects, so the client does not ask for them again.
    pub fn page(
        collection_id: Option<String>,
        since: u64,
        horizon: u64,
        last_seq: u64,
        limit: usize,
        mut fetched: Vec<Object>,
    ) -> PullAnswer {
        let more = fetched.len() > limit;
        fetched.truncate(limit);
        let until = match (more, fetched.last()) {
            (true, Some(last)) => last.seq,
            _ => last_seq.max(since),
        };
        PullAnswer {
            collection_id,
            since,
            until,
            more,
            horizon,
            objects: fetched,
        }
    }

    /// The answer as JSON, written by hand for speed; equal to what serde writes.
    pub fn to_json(&self) -> String {
        // Sized up front: a page is up to 16 MiB, and growing by doubling would copy it
        // about twice more. The fixed part per object covers its keys, seq, hash and author.
        let estimate: usize = self
            .objects
            .iter()
            .map(|o| {
                160 + o.id.len() + o.kind.len() + o.data.as_ref().map_or(0, |d| d.as_str().len())
            })
            .sum();
        let mut out = String::with_capacity(128 + estimate);
        self.write_json_head(&mut out);
        for (i, object) in self.objects.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            object.write_json(&mut out);
        }
        out.push_str(PAGE_JSON_TAIL);
        out
    }

    /// Appends the JSON of everything but the objects, up to the `[` that opens them; the
    /// objects (comma-separated) and [`PAGE_JSON_TAIL`] follow. A server that writes the
    /// objects straight from its rows (see [`crate::ObjectRef`]) builds a page from these.
    pub fn write_json_head(&self, out: &mut String) {
        out.push_str("{\"collection_id\":");
        match &self.collection_id {
            Some(cid) => write_json_string(out, cid),
            None => out.push_str("null"),
        }
        out.push_str(",\"since\":");
        write_decimal(out, self.since);
        out.push_str(",\"until\":");
        write_decimal(out, self.until);
        out.push_str(if self.more {
            ",\"more\":true"
        } else {
            ",\"more\":false"
        });
        out.push_str(",\"horizon\":");
        write_decimal(out, self.horizon);
        out.push_str(",\"objects\":[");
    }
}

/// What closes a page's JSON after its objects.
pub const PAGE_JSON_TAIL: &str = "]}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::JsonData;

    #[test]
    fn query_rules() {
        let limits = Limits {
            max_pull_limit: 100,
            ..Limits::default()
        };
        let q = PullQuery::from_pairs(
            [("since", "5"), ("limit", "1000"), ("type", "a"), ("x", "y")],
            &limits,
        )
        .unwrap();
        assert_eq!((q.since, q.limit, q.types.len()), (5, 100, 1));
        assert!(q.wants("a") && !q.wants("b"));
        for bad in [
            &[("since", "-1")][..],
            &[("limit", "0")],
            &[("limit", "x")],
            &[("type", "a"), ("exclude", "b")],
        ] {
            assert!(
                PullQuery::from_pairs(bad.iter().copied(), &limits).is_err(),
                "{bad:?}"
            );
        }
        let ex = PullQuery::from_pairs([("exclude", "a")], &limits).unwrap();
        assert!(!ex.wants("a") && ex.wants(""));
    }

    #[test]
    fn the_echoed_horizon_is_parsed_and_checked() {
        let limits = Limits::default();
        let none = PullQuery::from_pairs([("since", "3")], &limits).unwrap();
        assert_eq!(none.horizon, None);
        let echoed = PullQuery::from_pairs([("since", "3"), ("horizon", "9")], &limits).unwrap();
        assert_eq!(echoed.horizon, Some(9));
        for bad in ["-1", "x", "", "1.5"] {
            let problems = PullQuery::from_pairs([("horizon", bad)], &limits).unwrap_err();
            assert_eq!(problems.len(), 1, "{bad:?}");
            assert_eq!(problems[0].field, "horizon");
        }
    }

    #[test]
    fn paging_and_json() {
        let obj = |seq| Object {
            id: format!("o{seq}"),
            kind: String::new(),
            seq,
            deleted: false,
            data: Some(JsonData::parse("{}").unwrap()),
            expires: None,
            hash: Some("h".into()),
            author: None,
        };
        let page = PullAnswer::page(
            Some("c".into()),
            0,
            0,
            9,
            2,
            alloc::vec![obj(3), obj(5), obj(7)],
        );
        assert!(page.more);
        assert_eq!(page.until, 5);
        assert_eq!(page.to_json(), serde_json::to_string(&page).unwrap());
        let last = PullAnswer::page(None, 5, 0, 9, 2, alloc::vec![obj(7)]);
        assert!(!last.more);
        assert_eq!(last.until, 9);
        assert_eq!(last.to_json(), serde_json::to_string(&last).unwrap());
    }
}
