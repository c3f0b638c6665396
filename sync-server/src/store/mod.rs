//! Storage: one trait, one method per operation; the backends only load and save.
//!
//! Every decision (may this batch commit, at which seqs, must this client reset, how far the
//! horizon moves) is made by `sync-core`, called by the backend inside its transaction.

pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use serde::Serialize;
use sync_core::acl::Acl;
use sync_core::error::ErrorCode;
use sync_core::pull::PAGE_JSON_TAIL;
use sync_core::{Object, ObjectRef};

use crate::live::LiveEvent;
use sync_core::memory_store::PushOutcome;
use sync_core::push::ResetAnswer;
use sync_core::quota::{Exceeded, Quota, Usage};
use sync_core::{Head, PullAnswer, PullQuery, PushRequest};

/// Which collection: `(app, owner, name)`, all validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CollectionKey {
    /// The app name.
    pub app: String,
    /// The owner's user id.
    pub owner: String,
    /// The collection name.
    pub name: String,
}

/// One row of `GET /v1/data/{app}/{owner}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CollectionSummary {
    /// The collection name.
    pub name: String,
    /// Its epoch.
    pub collection_id: Option<String>,
    /// Its highest committed seq.
    pub last_seq: u64,
    /// Its grants, for filtering the list for callers other than the owner.
    #[serde(skip)]
    pub acl: Option<Acl>,
}

/// A pull page together with the head it was read against (for the `ETag`).
#[derive(Debug, Clone)]
pub struct PullPage {
    /// The answer.
    pub answer: PullAnswer,
    /// The collection head in the same snapshot.
    pub head: Head,
}

/// Who writes a batch, and what the answer may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushContext {
    /// The caller; recorded as the `author` of the objects they create.
    pub user: String,
    /// A creator (see `sync_core::acl`): may only create objects or change their own. Checked
    /// inside the write transaction, against the authors as stored.
    pub creator_only: bool,
    /// The most changes a 409 answer carries (the server's `max_pull_limit`).
    pub changes_limit: usize,
    /// The limits of the collection's owner, checked against the usage counter inside the
    /// write transaction.
    pub quota: Quota,
}

/// The answer to a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushReply {
    /// Committed, conflicting or reset, as the core decided.
    Outcome(PushOutcome),
    /// A creator tried to change objects someone else created (their batch indexes); nothing
    /// was written.
    NotAuthor(Vec<usize>),
    /// The batch would take the owner's stored data over a limit; nothing was written.
    OverQuota {
        /// The limit it would break.
        exceeded: Exceeded,
        /// The owner's usage before the batch.
        usage: Usage,
        /// The owner's limits.
        quota: Quota,
    },
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Objects that expired and became tombstones.
    pub expired: u64,
    /// Tombstones purged after the retention window.
    pub purged: u64,
}

/// A page pulled from a mirror's upstream, to write verbatim (see `sync_core::mirror`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorWrite {
    /// Continue the copy: write `page.objects` as they are and move the head to `page.until`
    /// and the upstream's horizon, if the local head is still `(page.collection_id,
    /// page.since)`.
    Append(PullAnswer),
    /// Replace the copy: every object of the upstream's collection (a full pull from 0,
    /// all pages joined), its epoch, `until` and horizon.
    Replace(PullAnswer),
}

/// What [`Store::apply_mirrored`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorApplied {
    /// Written; the new head.
    Written(Head),
    /// An append that no longer starts at the local head (which is returned): nothing was
    /// written. Only one task mirrors a collection, so this means a resync is due.
    Stale(Head),
}

/// What one blob collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobSweep {
    /// Blobs that became unreferenced (their retention window starts).
    pub orphaned: u64,
    /// Blobs deleted after their retention window.
    pub collected: u64,
}

/// Why the store could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Out of disk space: nothing was written (507).
    Full,
    /// Temporarily unable: overloaded, shutting down, or the database is unreachable (503).
    Unavailable(String),
    /// Anything else: a bug or corruption (500).
    Internal(String),
}

/// A pull page as the JSON text of its answer, with the head it was read against.
#[derive(Debug, Clone)]
pub struct PullJson {
    /// The answer's JSON, as [`PullAnswer::to_json`] would write it.
    pub json: String,
    /// The collection head in the same snapshot.
    pub head: Head,
}

/// A place to keep collections.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The head of one collection (a default, empty head if it was never written).
    async fn head(&self, key: &CollectionKey) -> Result<Head, StoreError>;

    /// The collections of one owner in one app, by name.
    async fn list(&self, app: &str, owner: &str) -> Result<Vec<CollectionSummary>, StoreError>;

    /// One page of changes, or the reason the client must reset.
    async fn pull(
        &self,
        key: &CollectionKey,
        query: &PullQuery,
    ) -> Result<Result<PullPage, ResetAnswer>, StoreError>;

    /// The page [`Store::pull`] reads, as JSON: what a pull request is answered with. A
    /// backend may write it straight from its rows (see [`PageJson`]); this default renders
    /// the objects `pull` built.
    async fn pull_json(
        &self,
        key: &CollectionKey,
        query: &PullQuery,
    ) -> Result<Result<PullJson, ResetAnswer>, StoreError> {
        Ok(self.pull(key, query).await?.map(|page| PullJson {
            json: page.answer.to_json(),
            head: page.head,
        }))
    }

    /// Commits a batch (durably, before answering), or says why not.
    async fn push(
        &self,
        key: &CollectionKey,
        request: PushRequest,
        context: PushContext,
        now_ms: u64,
    ) -> Result<PushReply, StoreError>;

    /// Removes everything in a collection and gives it a new epoch; returns the new head.
    async fn reset(&self, key: &CollectionKey) -> Result<Head, StoreError>;

    /// Expires objects and purges tombstones older than `retention_ms`.
    async fn sweep(&self, now_ms: u64, retention_ms: u64) -> Result<SweepReport, StoreError>;

    /// The current version of one object (a tombstone if it was deleted and not yet purged),
    /// or `None` if the collection never held it.
    async fn object(&self, key: &CollectionKey, id: &str) -> Result<Option<Object>, StoreError>;
    /// An owner's stored data, across all apps (see `sync_core::quota`).
    async fn usage(&self, owner: &str) -> Result<Usage, StoreError>;

    /// A collection's grants, if it has any.
    async fn acl(&self, key: &CollectionKey) -> Result<Option<Acl>, StoreError>;

    /// Replaces a collection's grants and tells its event streams to re-check access.
    async fn set_acl(&self, key: &CollectionKey, acl: Acl) -> Result<(), StoreError>;

    /// Stores a blob (already checked against its name); false if it was there already.
    /// Acknowledged means durable, as for pushes.
    async fn put_blob(
        &self,
        key: &CollectionKey,
        name: &str,
        bytes: Vec<u8>,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// A blob's size in bytes, if the collection holds it.
    async fn blob_size(&self, key: &CollectionKey, name: &str) -> Result<Option<u64>, StoreError>;

    /// `len` bytes of a blob from `offset` (fewer at its end), if the collection holds it.
    async fn read_blob(
        &self,
        key: &CollectionKey,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// The bytes of all the blobs an owner's collections hold, in every app (for quotas).
    async fn blob_bytes(&self, owner: &str) -> Result<u64, StoreError>;

    /// An owner's usage as the quota counts it: their objects' data and their blobs.
    async fn quota_usage(&self, owner: &str) -> Result<Usage, StoreError> {
        let mut usage = self.usage(owner).await?;
        usage.bytes = usage.bytes.saturating_add(self.blob_bytes(owner).await?);
        Ok(usage)
    }

    /// Marks the blobs that no live object of their collection refers to (see
    /// `sync_core::blob`) and deletes those unreferenced for longer than `retention_ms`.
    async fn sweep_blobs(&self, now_ms: u64, retention_ms: u64) -> Result<BlobSweep, StoreError>;

    /// Writes a page pulled from a mirror's upstream verbatim (upstream seqs, hashes, authors,
    /// epoch and horizon), in one transaction, and announces it to live streams.
    async fn apply_mirrored(
        &self,
        key: &CollectionKey,
        write: MirrorWrite,
        now_ms: u64,
    ) -> Result<MirrorApplied, StoreError>;

    /// Succeeds if the database answers a trivial query (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Connections in the pool and how many are idle, for backends with a pool.
    fn pool_usage(&self) -> Option<(usize, usize)> {
        None
    }

    /// Writes waiting for the writer; a hint for `Backoff`.
    fn backlog(&self) -> usize;

    /// Finishes queued writes and closes the database cleanly.
    async fn close(&self);
}

/// A fresh random epoch: 128 bits, hex.
pub fn new_collection_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("the OS random source is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds since the Unix epoch, by the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A pull page stops early once its data adds up to this many bytes, so that an answer stays
/// bounded whatever `max_object_bytes × max_pull_limit` allows.
pub const MAX_PULL_BYTES: usize = 16 * 1024 * 1024;

/// Collects the rows of one pull page (read with `LIMIT query.limit + 1`), stopping at the
/// limit or at [`MAX_PULL_BYTES`], whichever comes first. Shared by every backend so that
/// paging is the same everywhere.
pub struct PageBuilder {
    limit: usize,
    bytes: usize,
    fetched: Vec<Object>,
}

impl PageBuilder {
    /// An empty page for `limit` objects.
    pub fn new(limit: usize) -> PageBuilder {
        PageBuilder {
            limit,
            bytes: 0,
            fetched: Vec::new(),
        }
    }

    /// Adds a row; returns false once no more rows are wanted.
    pub fn push(&mut self, object: Object) -> bool {
        self.bytes += object.data.as_ref().map_or(0, |d| d.as_str().len());
        self.fetched.push(object);
        if self.fetched.len() > self.limit {
            return false;
        }
        if self.bytes >= MAX_PULL_BYTES {
            // Keep what we have; one more row (if any) tells the client there is more.
            self.limit = self.fetched.len();
        }
        true
    }

    /// The answer, for a head read in the same snapshot.
    pub fn finish(self, head: &Head, since: u64) -> PullAnswer {
        PullAnswer::page(
            head.collection_id.clone(),
            since,
            head.horizon,
            head.last_seq,
            self.limit,
            self.fetched,
        )
    }
}

/// [`PageBuilder`]'s paging, writing each row's JSON as it comes instead of keeping
/// `Object`s: the pull route's fast path, where a page is up to 10,000 objects that are only
/// ever turned into text. `finish` gives exactly what `PageBuilder::finish(..).to_json()`
/// would (a test in each backend that uses it checks so).
pub struct PageJson {
    limit: usize,
    /// At most how many objects the page can hold (see [`PageJson::new`]).
    most: usize,
    bytes: usize,
    count: usize,
    more: bool,
    last_seq: u64,
    objects: String,
}

impl PageJson {
    /// An empty page for `limit` objects, read after `since` from a collection at `head`:
    /// a page cannot hold more objects than there are seqs after `since`.
    pub fn new(limit: usize, head: &Head, since: u64) -> PageJson {
        let seqs = usize::try_from(head.last_seq.saturating_sub(since)).unwrap_or(usize::MAX);
        PageJson {
            limit,
            most: limit.min(seqs),
            bytes: 0,
            count: 0,
            more: false,
            last_seq: 0,
            objects: String::new(),
        }
    }

    /// Adds a row (read with `LIMIT limit + 1`); returns false once no more rows are wanted.
    pub fn push(&mut self, object: ObjectRef<'_>) -> bool {
        if self.count >= self.limit {
            // One row past the page: the client is told there is more.
            self.more = true;
            return false;
        }
        if self.count > 0 {
            self.objects.push(',');
        }
        object.write_json(&mut self.objects);
        if self.count == 0 {
            // Size the page by its first object, so that a 10 MB page is not copied again
            // and again as it doubles (a profile put a tenth of a pull's time there). Pages
            // this large come from `mmap`, whose untouched pages cost nothing.
            let first = self.objects.len();
            let estimate = first
                .saturating_mul(self.most)
                .min(MAX_PULL_BYTES + 2 * first);
            self.objects.reserve(estimate.saturating_add(estimate / 8));
        }
        self.count += 1;
        self.last_seq = object.seq;
        self.bytes += object.data.map_or(0, str::len);
        if self.bytes >= MAX_PULL_BYTES {
            self.limit = self.count;
        }
        true
    }

    /// The answer's JSON, for a head read in the same snapshot.
    pub fn finish(self, head: &Head, since: u64) -> String {
        let answer = PullAnswer {
            collection_id: head.collection_id.clone(),
            since,
            until: if self.more {
                self.last_seq
            } else {
                head.last_seq.max(since)
            },
            more: self.more,
            horizon: head.horizon,
            objects: Vec::new(),
        };
        let mut json = String::with_capacity(256 + self.objects.len());
        answer.write_json_head(&mut json);
        json.push_str(&self.objects);
        json.push_str(PAGE_JSON_TAIL);
        json
    }
}

/// The `410` body for a head.
pub fn reset_answer(head: &Head) -> ResetAnswer {
    ResetAnswer {
        error: ErrorCode::ResetRequired,
        message: "the cursor or collection_id is no longer valid; drop it and resync from since=0"
            .into(),
        collection_id: head.collection_id.clone(),
        horizon: head.horizon,
    }
}

/// An ACL as stored (JSON text).
pub fn parse_acl(text: &str) -> Result<Acl, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Internal(format!("a stored ACL: {e}")))
}

/// The live event for a stored object.
pub fn change_event(object: &Object) -> LiveEvent {
    let mut json = String::new();
    object.write_json(&mut json);
    LiveEvent::Change {
        seq: object.seq,
        json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_core::JsonData;

    fn object(seq: u64, data: Option<&str>) -> Object {
        Object {
            id: format!("o{seq}"),
            kind: if seq.is_multiple_of(2) {
                "even".into()
            } else {
                String::new()
            },
            seq,
            deleted: data.is_none(),
            data: data.map(|d| JsonData::from_trusted(d.to_string())),
            expires: seq.is_multiple_of(3).then_some(seq * 1000),
            hash: data.map(|_| format!("h{seq}")),
            author: seq.is_multiple_of(4).then(|| "alice".to_string()),
        }
    }

    /// Feeds the same rows to both builders the way a backend does (until one says stop).
    fn both(limit: usize, rows: &[Object], head: &Head, since: u64) -> (String, String) {
        let mut builder = PageBuilder::new(limit);
        for row in rows {
            if !builder.push(row.clone()) {
                break;
            }
        }
        let mut json = PageJson::new(limit, head, since);
        for row in rows {
            if !json.push(row.as_ref()) {
                break;
            }
        }
        (
            builder.finish(head, since).to_json(),
            json.finish(head, since),
        )
    }

    #[test]
    fn page_json_pages_as_page_builder_does() {
        let head = Head {
            collection_id: Some("c1".into()),
            last_seq: 40,
            horizon: 2,
        };
        let small = "{\"n\":\"x\"}";
        let rows: Vec<Object> = (3..=40)
            .map(|seq| object(seq, (!seq.is_multiple_of(5)).then_some(small)))
            .collect();
        for limit in [1, 2, 5, 37, 38, 39, 100] {
            // A backend reads `limit + 1` rows.
            let read = &rows[..rows.len().min(limit + 1)];
            let (expected, written) = both(limit, read, &head, 2);
            assert_eq!(written, expected, "limit {limit}");
        }
        let (expected, written) = both(10, &[], &head, 40);
        assert_eq!(written, expected);
    }

    #[test]
    fn page_json_stops_at_the_byte_cap_as_page_builder_does() {
        // Five 4 MiB objects: the page stops after the fourth (16 MiB), with `more`.
        let big = format!("\"{}\"", "x".repeat(4 * 1024 * 1024));
        let rows: Vec<Object> = (1..=5).map(|seq| object(seq, Some(&big))).collect();
        let head = Head {
            last_seq: 5,
            ..Head::default()
        };
        let (expected, written) = both(100, &rows, &head, 0);
        assert!(written == expected, "the two pages differ");
        let answer: PullAnswer = serde_json::from_str(&written).unwrap();
        assert_eq!(
            (answer.objects.len(), answer.more, answer.until),
            (4, true, 4)
        );
    }
}
