//! Storage: one trait, one method per operation; the backends only load and save.
//!
//! Every decision (may this batch commit, at which seqs, must this client reset, how far the
//! horizon moves) is made by `sync-core`, called by the backend inside its transaction.

pub mod sqlite;

use async_trait::async_trait;
use serde::Serialize;
use sync_core::memory_store::PushOutcome;
use sync_core::push::ResetAnswer;
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
}

/// A pull page together with the head it was read against (for the `ETag`).
#[derive(Debug, Clone)]
pub struct PullPage {
    /// The answer.
    pub answer: PullAnswer,
    /// The collection head in the same snapshot.
    pub head: Head,
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Objects that expired and became tombstones.
    pub expired: u64,
    /// Tombstones purged after the retention window.
    pub purged: u64,
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

/// A place to keep collections.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The head of one collection (a default, empty head if it was never written).
    async fn head(&self, key: &CollectionKey) -> Result<Head, StoreError>;

    /// The collections of one owner in one app, by name.
    async fn list(&self, app: &str, owner: &str) -> Result<Vec<CollectionSummary>, StoreError>;

    /// One page of changes, or the reason the client must reset.
    async fn pull(&self, key: &CollectionKey, query: &PullQuery) -> Result<Result<PullPage, ResetAnswer>, StoreError>;

    /// Commits a batch (durably, before answering), or says why not.
    async fn push(&self, key: &CollectionKey, request: PushRequest, now_ms: u64) -> Result<PushOutcome, StoreError>;

    /// Removes everything in a collection and gives it a new epoch; returns the new head.
    async fn reset(&self, key: &CollectionKey) -> Result<Head, StoreError>;

    /// Expires objects and purges tombstones older than `retention_ms`.
    async fn sweep(&self, now_ms: u64, retention_ms: u64) -> Result<SweepReport, StoreError>;

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
