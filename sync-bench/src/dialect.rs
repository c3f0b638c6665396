//! The two wire dialects: how each sync operation is spelled for Tidemark and for Kinto.
//!
//! Building a request and reading an answer do no I/O, so workloads can prepare every body
//! before the clock starts. Only [`Dialect::pull_all`] and the set-up calls talk to a server.
//!
//! | operation | Tidemark | Kinto |
//! |---|---|---|
//! | push a batch | `POST /v1/data/{app}/~/{c}` `{"objects":[…]}` | `POST /v1/batch` of `PUT …/records/{id}` |
//! | create only | `"base_seq": 0` | `If-None-Match: *` |
//! | update a known version | `"base_seq": seq` | `If-Match: "last_modified"` |
//! | pull changes | `GET …/{c}?since=N&limit=L`, again while `more` | `GET …/records?_since=T&_sort=last_modified&_limit=L`, following `Next-Page` |
//! | cursor | `until` of the last page | `ETag` of the first page |
//! | conflict | `409` for the whole batch | `412` for that sub-request |

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::http::{Http, Prepared, Reply};

/// Which server to speak to.
#[derive(Clone, Debug)]
pub enum Dialect {
    /// Tidemark: collections of `user` in `app`, dev auth (the bearer token is the user id).
    Tidemark {
        /// The app every collection belongs to.
        app: String,
        /// The user, sent as the bearer token.
        user: String,
    },
    /// Kinto: collections in `bucket`, with Kinto's `basicauth` policy.
    Kinto {
        /// The bucket every collection belongs to.
        bucket: String,
        /// The Basic auth user.
        user: String,
        /// The Basic auth password.
        password: String,
    },
}

/// What a write expects to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    /// The record must not exist yet.
    Create,
    /// The record must be at this version (Tidemark seq, Kinto `last_modified`).
    Version(u64),
}

/// One record to write.
#[derive(Clone, Copy, Debug)]
pub struct Write<'a> {
    /// The record id (letters, digits, `-` and `_`).
    pub id: &'a str,
    /// The record's data, as JSON text of an object.
    pub data: &'a str,
    /// The precondition.
    pub base: Base,
}

/// How a push ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Every write committed; the new version of each, in order.
    Committed(Vec<u64>),
    /// These ids failed their precondition. Tidemark then wrote nothing; Kinto still wrote
    /// the other records of the batch (its batches are not atomic for `412`).
    Conflict(Vec<String>),
}

/// One record as a pull returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The id.
    pub id: String,
    /// Tidemark's seq or Kinto's `last_modified`.
    pub version: u64,
    /// Whether this is a tombstone.
    pub deleted: bool,
    /// The data (none for a tombstone).
    pub data: Option<Value>,
}

/// One page of a pull.
#[derive(Debug)]
pub struct Page {
    /// How many records it held.
    pub count: usize,
    /// The records, when asked for (`detail`); otherwise they are only counted.
    pub records: Vec<Record>,
    /// The cursor this page gives (see [`Dialect::pull_all`] for which page's counts).
    pub cursor: u64,
    /// The request for the next page, if there is one.
    pub next: Option<Prepared>,
}

/// A whole pull, every page followed.
#[derive(Debug, Default)]
pub struct Pulled {
    /// How many records came.
    pub count: usize,
    /// The records, when asked for.
    pub records: Vec<Record>,
    /// Where the next incremental pull starts.
    pub cursor: u64,
    /// How many requests it took.
    pub pages: usize,
}

impl Dialect {
    /// The short name used in results (`tidemark` or `kinto`).
    pub fn name(&self) -> &'static str {
        match self {
            Dialect::Tidemark { .. } => "tidemark",
            Dialect::Kinto { .. } => "kinto",
        }
    }

    /// The `Authorization` header value.
    pub fn auth_header(&self) -> HeaderValue {
        let text = match self {
            Dialect::Tidemark { user, .. } => format!("Bearer {user}"),
            Dialect::Kinto { user, password, .. } => {
                let pair =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                format!("Basic {pair}")
            }
        };
        HeaderValue::from_str(&text).expect("user names are header-safe")
    }

    /// A cheap GET that answers 200 once the server is up.
    pub fn ready_path(&self) -> &'static str {
        match self {
            Dialect::Tidemark { .. } => "/v1/info",
            Dialect::Kinto { .. } => "/v1/",
        }
    }

    fn collection_path(&self, collection: &str) -> String {
        match self {
            Dialect::Tidemark { app, .. } => format!("/v1/data/{app}/~/{collection}"),
            Dialect::Kinto { bucket, .. } => {
                format!("/v1/buckets/{bucket}/collections/{collection}")
            }
        }
    }

    /// The push of `writes` to `collection`, as one request.
    pub fn prepare_push(&self, collection: &str, writes: &[Write<'_>]) -> Prepared {
        let size: usize = writes.iter().map(|w| w.data.len() + w.id.len() + 160).sum();
        let mut body = String::with_capacity(size + 32);
        let mut headers = Vec::new();
        let path = match self {
            Dialect::Tidemark { .. } => {
                body.push_str("{\"objects\":[");
                for (i, w) in writes.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    let base = match w.base {
                        Base::Create => 0,
                        Base::Version(v) => v,
                    };
                    body.push_str("{\"id\":");
                    body.push_str(&json_string(w.id));
                    body.push_str(",\"type\":\"bench\",\"base_seq\":");
                    body.push_str(&base.to_string());
                    body.push_str(",\"data\":");
                    body.push_str(w.data);
                    body.push('}');
                }
                body.push_str("]}");
                self.collection_path(collection)
            }
            Dialect::Kinto { .. } => {
                let records = self.collection_path(collection);
                // Sub-request paths are relative to the API root (`/v1`).
                let records = records.trim_start_matches("/v1");
                body.push_str("{\"defaults\":{\"method\":\"PUT\"},\"requests\":[");
                for (i, w) in writes.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    body.push_str("{\"path\":");
                    body.push_str(&json_string(&format!("{records}/records/{}", w.id)));
                    body.push_str(",\"headers\":");
                    match w.base {
                        Base::Create => body.push_str("{\"If-None-Match\":\"*\"}"),
                        Base::Version(v) => {
                            body.push_str(&format!("{{\"If-Match\":\"\\\"{v}\\\"\"}}"))
                        }
                    }
                    body.push_str(",\"body\":{\"data\":");
                    body.push_str(w.data);
                    body.push_str("}}");
                }
                body.push_str("]}");
                headers.push((
                    HeaderName::from_static("accept"),
                    HeaderValue::from_static("application/json"),
                ));
                "/v1/batch".to_string()
            }
        };
        Prepared {
            method: Method::POST,
            path,
            headers,
            body: Bytes::from(body),
        }
    }

    /// Reads the answer to a push of `n` writes.
    pub fn parse_push(&self, reply: &Reply, n: usize) -> anyhow::Result<PushOutcome> {
        match self {
            Dialect::Tidemark { .. } => match reply.status {
                StatusCode::OK => {
                    #[derive(Deserialize)]
                    struct Ok {
                        seqs: Vec<u64>,
                    }
                    let ok: Ok =
                        serde_json::from_slice(&reply.body).context("reading a push answer")?;
                    if ok.seqs.len() != n {
                        bail!("the push of {n} objects got {} seqs", ok.seqs.len());
                    }
                    if ok.seqs.windows(2).any(|w| w[1] <= w[0]) {
                        bail!("the seqs of one push are not increasing: {:?}", ok.seqs);
                    }
                    Ok(PushOutcome::Committed(ok.seqs))
                }
                StatusCode::CONFLICT => {
                    #[derive(Deserialize)]
                    struct Conflict {
                        id: String,
                    }
                    #[derive(Deserialize)]
                    struct Answer {
                        conflicts: Vec<Conflict>,
                    }
                    let answer: Answer =
                        serde_json::from_slice(&reply.body).context("reading a 409 answer")?;
                    Ok(PushOutcome::Conflict(
                        answer.conflicts.into_iter().map(|c| c.id).collect(),
                    ))
                }
                status => bail!("push answered {status}: {}", reply.body_excerpt()),
            },
            Dialect::Kinto { .. } => {
                if reply.status != StatusCode::OK {
                    bail!("batch answered {}: {}", reply.status, reply.body_excerpt());
                }
                #[derive(Deserialize)]
                struct Sub {
                    status: u16,
                    path: String,
                    #[serde(default)]
                    body: Value,
                }
                #[derive(Deserialize)]
                struct Answer {
                    responses: Vec<Sub>,
                }
                let answer: Answer =
                    serde_json::from_slice(&reply.body).context("reading a batch answer")?;
                if answer.responses.len() != n {
                    bail!(
                        "the batch of {n} requests got {} answers",
                        answer.responses.len()
                    );
                }
                let mut versions = Vec::with_capacity(n);
                let mut conflicts = Vec::new();
                for sub in answer.responses {
                    match sub.status {
                        200 | 201 => {
                            let version =
                                sub.body["data"]["last_modified"].as_u64().ok_or_else(|| {
                                    anyhow!("a batch answer has no last_modified: {}", sub.body)
                                })?;
                            versions.push(version);
                        }
                        412 => conflicts
                            .push(sub.path.rsplit('/').next().unwrap_or_default().to_string()),
                        status => bail!("a batch sub-request answered {status}: {}", sub.body),
                    }
                }
                if conflicts.is_empty() {
                    Ok(PushOutcome::Committed(versions))
                } else {
                    Ok(PushOutcome::Conflict(conflicts))
                }
            }
        }
    }

    /// Sends a prepared push and insists that all `n` writes committed.
    pub async fn push_committed(
        &self,
        http: &Http,
        push: &Prepared,
        n: usize,
    ) -> anyhow::Result<Vec<u64>> {
        let reply = http.send(push).await?;
        match self.parse_push(&reply, n)? {
            PushOutcome::Committed(versions) => Ok(versions),
            PushOutcome::Conflict(ids) => bail!("unexpected conflict on {ids:?}"),
        }
    }

    /// The first page of the changes of `collection` after cursor `since`.
    pub fn pull_request(&self, collection: &str, since: u64, limit: usize) -> Prepared {
        let base = self.collection_path(collection);
        let path = match self {
            Dialect::Tidemark { .. } => format!("{base}?since={since}&limit={limit}"),
            Dialect::Kinto { .. } => {
                format!("{base}/records?_since={since}&_sort=last_modified&_limit={limit}")
            }
        };
        Prepared::get(path)
    }

    /// Reads one page. With `detail` the records are kept, otherwise only counted.
    pub fn parse_page(
        &self,
        collection: &str,
        limit: usize,
        reply: &Reply,
        detail: bool,
    ) -> anyhow::Result<Page> {
        if reply.status != StatusCode::OK {
            bail!("pull answered {}: {}", reply.status, reply.body_excerpt());
        }
        match self {
            Dialect::Tidemark { .. } => {
                #[derive(Deserialize)]
                struct Object {
                    id: String,
                    seq: u64,
                    #[serde(default)]
                    deleted: bool,
                    data: Option<Value>,
                }
                #[derive(Deserialize)]
                struct PageOf<T> {
                    until: u64,
                    more: bool,
                    objects: Vec<T>,
                }
                let (count, records, until, more) = if detail {
                    let page: PageOf<Object> =
                        serde_json::from_slice(&reply.body).context("reading a pull answer")?;
                    let records: Vec<Record> = page
                        .objects
                        .into_iter()
                        .map(|o| Record {
                            id: o.id,
                            version: o.seq,
                            deleted: o.deleted,
                            data: o.data,
                        })
                        .collect();
                    (records.len(), records, page.until, page.more)
                } else {
                    let page: PageOf<IgnoredAny> =
                        serde_json::from_slice(&reply.body).context("reading a pull answer")?;
                    (page.objects.len(), Vec::new(), page.until, page.more)
                };
                let next = more.then(|| self.pull_request(collection, until, limit));
                Ok(Page {
                    count,
                    records,
                    cursor: until,
                    next,
                })
            }
            Dialect::Kinto { .. } => {
                let etag = reply
                    .header("etag")
                    .ok_or_else(|| anyhow!("a Kinto list answer has no ETag"))?;
                let cursor: u64 = etag
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .parse()
                    .with_context(|| format!("ETag {etag}"))?;
                let next = match reply.header("next-page") {
                    Some(url) => Some(Prepared::get(path_of(url)?)),
                    None => None,
                };
                let (count, records) = if detail {
                    #[derive(Deserialize)]
                    struct List {
                        data: Vec<Map<String, Value>>,
                    }
                    let list: List =
                        serde_json::from_slice(&reply.body).context("reading a Kinto list")?;
                    let records = list
                        .data
                        .into_iter()
                        .map(kinto_record)
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    (records.len(), records)
                } else {
                    #[derive(Deserialize)]
                    struct List {
                        data: Vec<IgnoredAny>,
                    }
                    let list: List =
                        serde_json::from_slice(&reply.body).context("reading a Kinto list")?;
                    (list.data.len(), Vec::new())
                };
                Ok(Page {
                    count,
                    records,
                    cursor,
                    next,
                })
            }
        }
    }

    /// Pulls every change of `collection` after `since`, page by page.
    ///
    /// The cursor returned is Tidemark's `until` of the last page, or Kinto's `ETag` of the
    /// first page (what Kinto's own clients keep: the collection's timestamp when the pull
    /// began; later pages may have grown past it).
    pub async fn pull_all(
        &self,
        http: &Http,
        collection: &str,
        since: u64,
        limit: usize,
        detail: bool,
    ) -> anyhow::Result<Pulled> {
        let mut request = self.pull_request(collection, since, limit);
        let mut pulled = Pulled {
            cursor: since,
            ..Pulled::default()
        };
        loop {
            let reply = http.send(&request).await?;
            let page = self.parse_page(collection, limit, &reply, detail)?;
            pulled.count += page.count;
            pulled.records.extend(page.records);
            match self {
                Dialect::Tidemark { .. } => pulled.cursor = page.cursor,
                Dialect::Kinto { .. } if pulled.pages == 0 => pulled.cursor = page.cursor,
                Dialect::Kinto { .. } => {}
            }
            pulled.pages += 1;
            match page.next {
                Some(next) => request = next,
                None => return Ok(pulled),
            }
        }
    }

    /// Whatever must exist before the first collection is made (Kinto's bucket).
    pub async fn prepare_server(&self, http: &Http) -> anyhow::Result<()> {
        if let Dialect::Kinto { bucket, .. } = self {
            http.send_ok(&put_json(format!("/v1/buckets/{bucket}"), "{\"data\":{}}"))
                .await?;
        }
        Ok(())
    }

    /// Makes `collection` ready for writes (Tidemark makes collections on their first write).
    pub async fn create_collection(&self, http: &Http, collection: &str) -> anyhow::Result<()> {
        if let Dialect::Kinto { .. } = self {
            http.send_ok(&put_json(self.collection_path(collection), "{\"data\":{}}"))
                .await?;
        }
        Ok(())
    }

    /// Removes `collection` and everything in it.
    pub async fn delete_collection(&self, http: &Http, collection: &str) -> anyhow::Result<()> {
        let request = Prepared {
            method: Method::DELETE,
            path: self.collection_path(collection),
            headers: Vec::new(),
            body: Bytes::new(),
        };
        http.send_ok(&request).await?;
        Ok(())
    }
}

fn put_json(path: String, body: &'static str) -> Prepared {
    Prepared {
        method: Method::PUT,
        path,
        headers: Vec::new(),
        body: Bytes::from_static(body.as_bytes()),
    }
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The path and query of an absolute URL (Kinto's `Next-Page`).
fn path_of(url: &str) -> anyhow::Result<String> {
    let rest = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url);
    let slash = rest
        .find('/')
        .ok_or_else(|| anyhow!("Next-Page {url} has no path"))?;
    Ok(rest[slash..].to_string())
}

/// A Kinto record: its own fields sit next to `id`, `last_modified` and `deleted`.
fn kinto_record(mut fields: Map<String, Value>) -> anyhow::Result<Record> {
    let id = match fields.remove("id") {
        Some(Value::String(id)) => id,
        other => bail!("a Kinto record has no string id: {other:?}"),
    };
    let version = fields
        .remove("last_modified")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| anyhow!("Kinto record {id} has no last_modified"))?;
    let deleted = fields
        .remove("deleted")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let data = (!deleted).then_some(Value::Object(fields));
    Ok(Record {
        id,
        version,
        deleted,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tidemark() -> Dialect {
        Dialect::Tidemark {
            app: "bench".into(),
            user: "u".into(),
        }
    }

    fn kinto() -> Dialect {
        Dialect::Kinto {
            bucket: "b".into(),
            user: "u".into(),
            password: "p".into(),
        }
    }

    #[test]
    fn a_tidemark_push_carries_base_seqs() {
        let writes = [
            Write {
                id: "a",
                data: "{\"x\":1}",
                base: Base::Create,
            },
            Write {
                id: "b",
                data: "{}",
                base: Base::Version(7),
            },
        ];
        let push = tidemark().prepare_push("c1", &writes);
        assert_eq!(push.path, "/v1/data/bench/~/c1");
        let body: Value = serde_json::from_slice(&push.body).unwrap();
        assert_eq!(body["objects"][0]["base_seq"], 0);
        assert_eq!(body["objects"][0]["data"]["x"], 1);
        assert_eq!(body["objects"][1]["base_seq"], 7);
    }

    #[test]
    fn a_kinto_push_is_a_batch_of_conditional_puts() {
        let writes = [
            Write {
                id: "a",
                data: "{\"x\":1}",
                base: Base::Create,
            },
            Write {
                id: "b",
                data: "{}",
                base: Base::Version(7),
            },
        ];
        let push = kinto().prepare_push("c1", &writes);
        assert_eq!(push.path, "/v1/batch");
        let body: Value = serde_json::from_slice(&push.body).unwrap();
        assert_eq!(body["defaults"]["method"], "PUT");
        assert_eq!(
            body["requests"][0]["path"],
            "/buckets/b/collections/c1/records/a"
        );
        assert_eq!(body["requests"][0]["headers"]["If-None-Match"], "*");
        assert_eq!(body["requests"][1]["headers"]["If-Match"], "\"7\"");
        assert_eq!(body["requests"][0]["body"]["data"]["x"], 1);
    }

    #[test]
    fn kinto_basic_auth_is_user_colon_password() {
        assert_eq!(kinto().auth_header(), "Basic dTpw");
        assert_eq!(tidemark().auth_header(), "Bearer u");
    }

    #[test]
    fn next_page_urls_become_paths() {
        assert_eq!(
            path_of("http://127.0.0.1:9/v1/x?_token=a").unwrap(),
            "/v1/x?_token=a"
        );
    }

    #[test]
    fn kinto_records_split_their_fields() {
        let fields: Map<String, Value> =
            serde_json::from_str("{\"id\":\"a\",\"last_modified\":5,\"title\":\"t\"}").unwrap();
        let record = kinto_record(fields).unwrap();
        assert_eq!(record.version, 5);
        assert_eq!(record.data, Some(serde_json::json!({"title": "t"})));
    }
}
