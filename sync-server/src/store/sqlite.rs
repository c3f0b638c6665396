//! The embedded SQLite backend: one file, nothing to install.
//!
//! # Concurrency
//!
//! - **One writer thread** owns the only write connection. Handlers send it jobs over a
//!   bounded channel. It takes every job that is waiting (up to [`MAX_GROUP`]), runs them in
//!   one transaction, each inside its own savepoint, commits once, and only then answers them
//!   all. That is group commit: many concurrent pushes share one fsync, and writers to one
//!   collection are serialised for free.
//! - **Readers** use their own connections (WAL mode), so they never wait for the writer, and
//!   each pull reads in one snapshot.
//! - **Checkpoints** (folding the WAL back into the database file, with its fsync) run on a
//!   thread and connection of their own, woken by commits, so that the writer never pauses
//!   for them; its automatic checkpoints are off. Only when the WAL has grown past
//!   [`WAL_RESTART_BYTES`] does the writer pause, once, to let it start over ([`restart_wal`]).
//!
//! # Durability
//!
//! WAL with `synchronous = FULL`: a push is answered only after its commit's WAL frames are
//! fsynced. An acknowledged write therefore survives `kill -9` of the server *and* a power
//! loss or OS crash (given a disk that honours fsync).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use sync_core::acl::Acl;
use sync_core::commit::{check_pull, plan_push, Current, Head, Plan, Stored, Writer};
use sync_core::error::ErrorCode;
use sync_core::memory_store::PushOutcome;
use sync_core::push::{Conflict, ConflictAnswer, PushOk, ResetAnswer};
use sync_core::quota::{self, Usage, UsageDelta};
use sync_core::{blob, horizon, JsonData, Object, ObjectRef, PullAnswer, PullQuery, PushRequest};
use tokio::sync::{oneshot, Semaphore};

use crate::live::{Hub, LiveEvent};

use super::{
    change_event, new_collection_id, parse_acl, reset_answer, BlobSweep, CollectionKey,
    CollectionSummary, MirrorApplied, MirrorWrite, PageBuilder, PageJson, PullJson, PullPage,
    PushContext, PushReply, Store, StoreError, SweepReport,
};

/// The most jobs one group commit takes.
const MAX_GROUP: usize = 512;
/// How many jobs may wait for the writer before pushes are refused with 503.
const QUEUE_CAPACITY: usize = 8192;
/// How many reads run at once (each holds a blocking thread and a connection).
const MAX_READERS: usize = 16;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS collections (
    cid           INTEGER PRIMARY KEY,
    app           TEXT NOT NULL,
    owner         TEXT NOT NULL,
    name          TEXT NOT NULL,
    collection_id TEXT NOT NULL,
    last_seq      INTEGER NOT NULL,
    horizon       INTEGER NOT NULL,
    UNIQUE (app, owner, name)
);
-- Only the latest version of each id is kept.
CREATE TABLE IF NOT EXISTS objects (
    cid         INTEGER NOT NULL REFERENCES collections (cid),
    id          TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    type        TEXT NOT NULL,
    deleted     INTEGER NOT NULL,
    data        TEXT,
    hash        TEXT,
    expires     INTEGER,
    modified_ms INTEGER NOT NULL,
    author      TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS objects_by_id ON objects (cid, id);
CREATE UNIQUE INDEX IF NOT EXISTS objects_by_seq ON objects (cid, seq);
CREATE INDEX IF NOT EXISTS objects_expiring ON objects (expires) WHERE expires IS NOT NULL AND deleted = 0;
CREATE INDEX IF NOT EXISTS tombstones_by_age ON objects (modified_ms) WHERE deleted = 1;
CREATE INDEX IF NOT EXISTS tombstones_by_seq ON objects (cid, seq) WHERE deleted = 1;
-- First answers of committed pushes, for idempotent replays.
CREATE TABLE IF NOT EXISTS pushes (
    cid        INTEGER NOT NULL,
    push_id    TEXT NOT NULL,
    answer     TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (cid, push_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pushes_by_age ON pushes (created_ms);
-- Sharing grants; a collection need not exist (or be written) to be shared.
CREATE TABLE IF NOT EXISTS acls (
    app   TEXT NOT NULL,
    owner TEXT NOT NULL,
    name  TEXT NOT NULL,
    acl   TEXT NOT NULL,
    PRIMARY KEY (app, owner, name)
) WITHOUT ROWID;
-- Each owner's stored data (see sync_core::quota), kept in step with every commit.
CREATE TABLE IF NOT EXISTS usage (
    owner   TEXT PRIMARY KEY,
    bytes   INTEGER NOT NULL,
    objects INTEGER NOT NULL
) WITHOUT ROWID;
-- Content-addressed blobs, per collection (a collection need not exist to hold them).
-- `orphaned_ms`: since when no live object refers to the blob (NULL: referenced, or not
-- checked yet); the sweeper deletes it once that is older than the retention window.
CREATE TABLE IF NOT EXISTS blobs (
    app         TEXT NOT NULL,
    owner       TEXT NOT NULL,
    name        TEXT NOT NULL,
    hash        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    data        BLOB NOT NULL,
    created_ms  INTEGER NOT NULL,
    orphaned_ms INTEGER,
    PRIMARY KEY (app, owner, name, hash)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blobs_by_owner ON blobs (owner);
-- Which live objects refer to which blobs (`sync_core::blob::refs` of their data), kept by
-- every write, so that collecting blobs never has to read the objects' data.
CREATE TABLE IF NOT EXISTS blob_refs (
    cid  INTEGER NOT NULL,
    id   TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (cid, id, hash)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blob_refs_by_hash ON blob_refs (hash, cid);
";

/// The schema version [`SCHEMA`] leaves behind (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 3;

/// Fills the usage counters from the objects: for a database made before they existed
/// (version 1). On a new database it finds nothing to count.
const BACKFILL_USAGE: &str = "
DELETE FROM usage;
INSERT INTO usage (owner, bytes, objects)
    SELECT c.owner, COALESCE(SUM(length(CAST(o.data AS BLOB))), 0), COUNT(*)
    FROM objects o JOIN collections c ON c.cid = o.cid
    WHERE o.deleted = 0 GROUP BY c.owner;
";

/// Columns added after the first release, with the statement that adds each.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[(
    "collections",
    "mirrored",
    // Set on collections copied from an upstream: the sweeper leaves them alone (the
    // upstream's sweeper expires and purges, and the copy follows).
    "ALTER TABLE collections ADD COLUMN mirrored INTEGER NOT NULL DEFAULT 0",
)];

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    jobs: Mutex<Option<mpsc::SyncSender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    backlog: Arc<AtomicUsize>,
    readers: Arc<Mutex<Vec<Connection>>>,
    read_slots: Semaphore,
}

/// Work for the writer thread.
enum Job {
    Push {
        key: CollectionKey,
        request: PushRequest,
        context: PushContext,
        now_ms: u64,
        reply: oneshot::Sender<Result<PushReply, StoreError>>,
    },
    Reset {
        key: CollectionKey,
        reply: oneshot::Sender<Result<Head, StoreError>>,
    },
    Sweep {
        now_ms: u64,
        retention_ms: u64,
        reply: oneshot::Sender<Result<SweepReport, StoreError>>,
    },
    SetAcl {
        key: CollectionKey,
        acl: Acl,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Blobs and mirrors: the work runs in its own savepoint like the jobs above, and may
    /// announce what it wrote.
    Other {
        work: OtherWork,
        reply: oneshot::Sender<Result<OtherReply, StoreError>>,
    },
}

type OtherWork =
    Box<dyn FnOnce(&Connection, &mut GroupEvents) -> rusqlite::Result<OtherReply> + Send>;

/// What an [`Job::Other`] answers.
enum OtherReply {
    Stored(bool),
    BlobSweep(BlobSweep),
    Mirror(MirrorApplied),
}

/// A job's answer, held until its group is committed.
enum Answer {
    Push(
        oneshot::Sender<Result<PushReply, StoreError>>,
        Result<PushReply, StoreError>,
    ),
    Reset(
        oneshot::Sender<Result<Head, StoreError>>,
        Result<Head, StoreError>,
    ),
    Sweep(
        oneshot::Sender<Result<SweepReport, StoreError>>,
        Result<SweepReport, StoreError>,
    ),
    SetAcl(
        oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
    ),
    Other(
        oneshot::Sender<Result<OtherReply, StoreError>>,
        Result<OtherReply, StoreError>,
    ),
}

impl SqliteStore {
    /// Opens (creating if needed) the database in directory `dir` and starts the writer, which
    /// publishes every commit to `hub`.
    pub fn open(dir: &Path, hub: Arc<Hub>) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with_wal_limit(dir, hub, WAL_RESTART_BYTES)
    }

    /// [`SqliteStore::open`] with the WAL size past which the writer restarts it.
    fn open_with_wal_limit(
        dir: &Path,
        hub: Arc<Hub>,
        wal_restart_bytes: u64,
    ) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Internal(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join("tidemark.sqlite3");
        let mut conn = open_connection(&path).map_err(sql_error)?;
        migrate(&mut conn).map_err(sql_error)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(sql_error)?;
        if check != "ok" {
            return Err(StoreError::Internal(format!(
                "the database failed its integrity check: {check}"
            )));
        }
        // Checkpoints run on their own connection and thread, so that the writer never stops
        // committing to copy WAL pages into the database file and fsync it.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0")
            .map_err(sql_error)?;
        let checkpoints = open_connection(&path).map_err(sql_error)?;
        let (committed, commits) = mpsc::sync_channel(1);
        let wal_bytes = Arc::new(AtomicU64::new(0));
        let checkpointed_wal_bytes = wal_bytes.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpointer".into())
            .spawn(move || run_checkpointer(checkpoints, commits, checkpointed_wal_bytes))
            .map_err(|e| StoreError::Internal(format!("starting the checkpointer: {e}")))?;
        let checkpointer = Checkpointer {
            committed,
            wal_bytes,
            wal_restart_bytes,
            thread,
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let backlog = Arc::new(AtomicUsize::new(0));
        let writer_backlog = backlog.clone();
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run_writer(conn, rx, writer_backlog, hub, checkpointer))
            .map_err(|e| StoreError::Internal(format!("starting the writer thread: {e}")))?;
        Ok(SqliteStore {
            path,
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            backlog,
            readers: Arc::new(Mutex::new(Vec::new())),
            read_slots: Semaphore::new(MAX_READERS),
        })
    }

    /// Queues a job for the writer and waits for its (committed) answer.
    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let sender = self.jobs.lock().expect("jobs lock").clone();
        let sender =
            sender.ok_or_else(|| StoreError::Unavailable("the server is shutting down".into()))?;
        self.backlog.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = sender.try_send(make(reply)) {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::Unavailable(match e {
                mpsc::TrySendError::Full(_) => "too many writes are waiting".into(),
                mpsc::TrySendError::Disconnected(_) => "the writer has stopped".into(),
            }));
        }
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer stopped before answering".into()))?
    }

    /// Queues an [`Job::Other`] and waits for its committed answer.
    async fn other(&self, work: OtherWork) -> Result<OtherReply, StoreError> {
        self.write(|reply| Job::Other { work, reply }).await
    }

    /// The common part of `pull` and `pull_json`: in one read transaction (so that the head
    /// and the rows come from the same snapshot), the head, then the reset check, then
    /// `read` of the rows; a collection never written to gets `unwritten` of its empty page.
    async fn read_pull_page<T: Send + 'static>(
        &self,
        key: &CollectionKey,
        query: &PullQuery,
        unwritten: impl FnOnce(PullPage) -> T + Send + 'static,
        read: impl FnOnce(&Transaction<'_>, i64, &Head, &PullQuery) -> rusqlite::Result<T>
            + Send
            + 'static,
    ) -> Result<Result<T, ResetAnswer>, StoreError> {
        let (key, query) = (key.clone(), query.clone());
        self.read(move |conn| {
            let tx = conn.transaction().map_err(sql_error)?;
            let Some((cid, head)) = read_head(&tx, &key).map_err(sql_error)? else {
                return Ok(unwritten_page(&query).map(unwritten));
            };
            if check_pull(&head, query.since, query.horizon).is_err() {
                return Ok(Err(reset_answer(&head)));
            }
            read(&tx, cid, &head, &query).map(Ok).map_err(sql_error)
        })
        .await
    }

    /// Runs `f` on a read connection on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _slot = self
            .read_slots
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("closing".into()))?;
        let pool = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = pool.lock().expect("reader pool lock").pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => {
                    let conn = open_connection(&path).map_err(sql_error)?;
                    // Readers map the file instead of copying each page out of the kernel's
                    // cache with a read(2): a 10,000-object pull touches thousands of pages.
                    // (Writes still go through write(2); in WAL mode that is safe.)
                    conn.execute_batch(&format!(
                        "PRAGMA query_only = 1; PRAGMA mmap_size = {READER_MMAP_BYTES}"
                    ))
                    .map_err(sql_error)?;
                    conn
                }
            };
            let result = f(&mut conn);
            pool.lock().expect("reader pool lock").push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("a read task failed: {e}")))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn head(&self, key: &CollectionKey) -> Result<Head, StoreError> {
        let key = key.clone();
        self.read(move |conn| {
            Ok(read_head(conn, &key)
                .map_err(sql_error)?
                .map(|(_, h)| h)
                .unwrap_or_default())
        })
        .await
    }

    async fn list(&self, app: &str, owner: &str) -> Result<Vec<CollectionSummary>, StoreError> {
        let (app, owner) = (app.to_string(), owner.to_string());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT c.name, c.collection_id, c.last_seq, a.acl FROM collections c
                     LEFT JOIN acls a ON a.app = c.app AND a.owner = c.owner AND a.name = c.name
                     WHERE c.app = ?1 AND c.owner = ?2 ORDER BY c.name",
                )
                .map_err(sql_error)?;
            let rows = stmt
                .query_map(params![app, owner], |r| {
                    let last_seq = r.get::<_, i64>(2)? as u64;
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        last_seq,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })
                .map_err(sql_error)?;
            let mut list = Vec::new();
            for row in rows {
                let (name, collection_id, last_seq, acl) = row.map_err(sql_error)?;
                let acl = acl.as_deref().map(parse_acl).transpose()?;
                list.push(CollectionSummary {
                    name,
                    collection_id,
                    last_seq,
                    acl,
                });
            }
            Ok(list)
        })
        .await
    }

    async fn pull(
        &self,
        key: &CollectionKey,
        query: &PullQuery,
    ) -> Result<Result<PullPage, ResetAnswer>, StoreError> {
        self.read_pull_page(
            key,
            query,
            |page| page,
            |tx, cid, head, query| {
                let answer = read_page(tx, cid, head, query)?;
                Ok(PullPage {
                    answer,
                    head: head.clone(),
                })
            },
        )
        .await
    }

    async fn pull_json(
        &self,
        key: &CollectionKey,
        query: &PullQuery,
    ) -> Result<Result<PullJson, ResetAnswer>, StoreError> {
        let unwritten = |page: PullPage| PullJson {
            json: page.answer.to_json(),
            head: page.head,
        };
        self.read_pull_page(key, query, unwritten, |tx, cid, head, query| {
            let json = read_page_json(tx, cid, head, query)?;
            Ok(PullJson {
                json,
                head: head.clone(),
            })
        })
        .await
    }

    async fn push(
        &self,
        key: &CollectionKey,
        request: PushRequest,
        context: PushContext,
        now_ms: u64,
    ) -> Result<PushReply, StoreError> {
        let key = key.clone();
        self.write(|reply| Job::Push {
            key,
            request,
            context,
            now_ms,
            reply,
        })
        .await
    }

    async fn reset(&self, key: &CollectionKey) -> Result<Head, StoreError> {
        let key = key.clone();
        self.write(|reply| Job::Reset { key, reply }).await
    }

    async fn sweep(&self, now_ms: u64, retention_ms: u64) -> Result<SweepReport, StoreError> {
        self.write(|reply| Job::Sweep {
            now_ms,
            retention_ms,
            reply,
        })
        .await
    }

    async fn object(&self, key: &CollectionKey, id: &str) -> Result<Option<Object>, StoreError> {
        let (key, id) = (key.clone(), id.to_string());
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {OBJECT_COLUMNS} FROM objects WHERE id = ?4 AND cid =
                 (SELECT cid FROM collections WHERE app = ?1 AND owner = ?2 AND name = ?3)"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(params![key.app, key.owner, key.name, id], object_from_row)
                    .optional()
            })
            .map_err(sql_error)
        })
        .await
    }

    async fn usage(&self, owner: &str) -> Result<Usage, StoreError> {
        let owner = owner.to_string();
        self.read(move |conn| read_usage(conn, &owner).map_err(sql_error))
            .await
    }

    async fn acl(&self, key: &CollectionKey) -> Result<Option<Acl>, StoreError> {
        let key = key.clone();
        self.read(move |conn| {
            let text: Option<String> = conn
                .prepare_cached("SELECT acl FROM acls WHERE app = ?1 AND owner = ?2 AND name = ?3")
                .and_then(|mut stmt| {
                    stmt.query_row(params![key.app, key.owner, key.name], |r| r.get(0))
                        .optional()
                })
                .map_err(sql_error)?;
            text.map(|t| parse_acl(&t)).transpose()
        })
        .await
    }

    async fn set_acl(&self, key: &CollectionKey, acl: Acl) -> Result<(), StoreError> {
        let key = key.clone();
        self.write(|reply| Job::SetAcl { key, acl, reply }).await
    }

    async fn put_blob(
        &self,
        key: &CollectionKey,
        name: &str,
        bytes: Vec<u8>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let (key, name) = (key.clone(), name.to_string());
        let work: OtherWork = Box::new(move |conn, _| {
            let added = conn
                .prepare_cached(
                    "INSERT INTO blobs (app, owner, name, hash, size, data, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    key.app,
                    key.owner,
                    key.name,
                    name,
                    bytes.len() as i64,
                    bytes,
                    now_ms as i64
                ])?;
            Ok(OtherReply::Stored(added > 0))
        });
        match self.other(work).await? {
            OtherReply::Stored(added) => Ok(added),
            _ => unreachable!("put_blob answers Stored"),
        }
    }

    async fn blob_size(&self, key: &CollectionKey, name: &str) -> Result<Option<u64>, StoreError> {
        let (key, name) = (key.clone(), name.to_string());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT size FROM blobs WHERE app = ?1 AND owner = ?2 AND name = ?3 AND hash = ?4",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![key.app, key.owner, key.name, name], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()
            })
            .map(|size| size.map(|s| s as u64))
            .map_err(sql_error)
        })
        .await
    }

    async fn read_blob(
        &self,
        key: &CollectionKey,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (key, name) = (key.clone(), name.to_string());
        self.read(move |conn| {
            // substr() on a BLOB counts bytes, from 1.
            conn.prepare_cached(
                "SELECT substr(data, ?5, ?6) FROM blobs
                 WHERE app = ?1 AND owner = ?2 AND name = ?3 AND hash = ?4",
            )
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![
                        key.app,
                        key.owner,
                        key.name,
                        name,
                        offset as i64 + 1,
                        len as i64
                    ],
                    |r| r.get::<_, Vec<u8>>(0),
                )
                .optional()
            })
            .map_err(sql_error)
        })
        .await
    }

    async fn blob_bytes(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_string();
        self.read(move |conn| owner_blob_bytes(conn, &owner).map_err(sql_error))
            .await
    }

    async fn sweep_blobs(&self, now_ms: u64, retention_ms: u64) -> Result<BlobSweep, StoreError> {
        let work: OtherWork = Box::new(move |conn, _| {
            sweep_blobs_in_tx(conn, now_ms, retention_ms).map(OtherReply::BlobSweep)
        });
        match self.other(work).await? {
            OtherReply::BlobSweep(report) => Ok(report),
            _ => unreachable!("sweep_blobs answers BlobSweep"),
        }
    }

    async fn apply_mirrored(
        &self,
        key: &CollectionKey,
        write: MirrorWrite,
        now_ms: u64,
    ) -> Result<MirrorApplied, StoreError> {
        let key = key.clone();
        let work: OtherWork = Box::new(move |conn, events| {
            apply_mirrored_in_tx(conn, &key, write, now_ms, events).map(OtherReply::Mirror)
        });
        match self.other(work).await? {
            OtherReply::Mirror(applied) => Ok(applied),
            _ => unreachable!("apply_mirrored answers Mirror"),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(sql_error)
        })
        .await
    }

    fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    async fn close(&self) {
        // Dropping the only sender ends the writer's loop once the queue is drained.
        drop(self.jobs.lock().expect("jobs lock").take());
        let writer = self.writer.lock().expect("writer lock").take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
        self.readers.lock().expect("reader pool lock").clear();
    }
}

/// Creates what is missing and brings an older database up to [`SCHEMA_VERSION`], in one
/// transaction.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    tx.execute_batch(SCHEMA)?;
    for (table, column, add) in ADDED_COLUMNS {
        let present: bool = tx.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
            params![table, column],
            |r| r.get(0),
        )?;
        if !present {
            tx.execute_batch(add)?;
        }
    }
    if version < 2 {
        tx.execute_batch(BACKFILL_USAGE)?;
    }
    if version < 3 {
        // Objects written before blobs existed may name some already.
        backfill_blob_refs(&tx)?;
    }
    if version < SCHEMA_VERSION {
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
    }
    tx.commit()
}

/// The size of a row's `data` in bytes, as `sync_core::quota::cost` counts it.
const DATA_BYTES: &str = "COALESCE(length(CAST(data AS BLOB)), 0)";

/// The bytes of an owner's blobs (through `blobs_by_owner`; `size` comes before the data in
/// each row, so the blobs' bytes are not read).
fn owner_blob_bytes(conn: &Connection, owner: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT COALESCE(SUM(size), 0) FROM blobs WHERE owner = ?1")?
        .query_row([owner], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}

/// Empties collection `cid` (its objects and their blob references) and gives its owner back
/// what the live objects cost. The collection's row, epoch and push records are the caller's.
fn empty_collection(conn: &Connection, owner: &str, cid: i64) -> rusqlite::Result<()> {
    let (bytes, objects): (i64, i64) = conn
        .prepare_cached(&format!(
            "SELECT COALESCE(SUM({DATA_BYTES}), 0), COUNT(*) FROM objects WHERE cid = ?1 AND deleted = 0"
        ))?
        .query_row([cid], |r| Ok((r.get(0)?, r.get(1)?)))?;
    add_usage(
        conn,
        owner,
        UsageDelta {
            bytes: -bytes,
            objects: -objects,
        },
    )?;
    conn.prepare_cached("DELETE FROM objects WHERE cid = ?1")?
        .execute([cid])?;
    conn.prepare_cached("DELETE FROM blob_refs WHERE cid = ?1")?
        .execute([cid])?;
    Ok(())
}

fn read_usage(conn: &Connection, owner: &str) -> rusqlite::Result<Usage> {
    conn.prepare_cached("SELECT bytes, objects FROM usage WHERE owner = ?1")?
        .query_row([owner], |r| {
            Ok(Usage {
                bytes: r.get::<_, i64>(0)? as u64,
                objects: r.get::<_, i64>(1)? as u64,
            })
        })
        .optional()
        .map(Option::unwrap_or_default)
}

/// Adds `delta` to an owner's usage counter (in the caller's transaction).
fn add_usage(conn: &Connection, owner: &str, delta: UsageDelta) -> rusqlite::Result<()> {
    if delta == UsageDelta::default() {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO usage (owner, bytes, objects) VALUES (?1, MAX(?2, 0), MAX(?3, 0))
         ON CONFLICT (owner) DO UPDATE SET bytes = MAX(bytes + ?2, 0), objects = MAX(objects + ?3, 0)",
    )?
    .execute(params![owner, delta.bytes, delta.objects])?;
    Ok(())
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // 16 KiB pages (SQLite's default is 4): the writer appends a WAL frame per dirty page with
    // a syscall or two each, so a batch of 1 KiB records costs a quarter of the frames, and
    // 8 clients push about 10% more records per second. The size only takes effect when the
    // file is created (before WAL mode is set); an existing database keeps its own.
    conn.execute_batch(
        "PRAGMA page_size = 16384;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;",
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

fn sql_error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full,
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(format!("database busy: {e}"))
        }
        _ => StoreError::Internal(format!("sqlite: {e}")),
    }
}

fn read_head(conn: &Connection, key: &CollectionKey) -> rusqlite::Result<Option<(i64, Head)>> {
    conn.prepare_cached("SELECT cid, collection_id, last_seq, horizon FROM collections WHERE app = ?1 AND owner = ?2 AND name = ?3")?
        .query_row(params![key.app, key.owner, key.name], |r| {
            Ok((
                r.get(0)?,
                Head {
                    collection_id: Some(r.get(1)?),
                    last_seq: r.get::<_, i64>(2)? as u64,
                    horizon: r.get::<_, i64>(3)? as u64,
                },
            ))
        })
        .optional()
}

const OBJECT_COLUMNS: &str = "id, type, seq, deleted, data, hash, expires, author";

fn object_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Object> {
    Ok(Object {
        id: r.get(0)?,
        kind: r.get(1)?,
        seq: r.get::<_, i64>(2)? as u64,
        deleted: r.get(3)?,
        // The text was validated before it was stored.
        data: r.get::<_, Option<String>>(4)?.map(JsonData::from_trusted),
        hash: r.get(5)?,
        expires: r.get::<_, Option<i64>>(6)?.map(|e| e as u64),
        author: r.get(7)?,
    })
}

/// The page of a collection never written to: empty, or a reset for a cursor it cannot have.
fn unwritten_page(query: &PullQuery) -> Result<PullPage, ResetAnswer> {
    let head = Head::default();
    match check_pull(&head, query.since, query.horizon) {
        Ok(()) => Ok(PullPage {
            answer: PullAnswer::page(None, query.since, 0, 0, query.limit, vec![]),
            head,
        }),
        Err(_) => Err(reset_answer(&head)),
    }
}

/// Reads one page after `query.since`, stopping at `query.limit` objects or
/// [`MAX_PULL_BYTES`] of data, whichever comes first.
fn read_page(
    conn: &Connection,
    cid: i64,
    head: &Head,
    query: &PullQuery,
) -> rusqlite::Result<PullAnswer> {
    let mut page = PageBuilder::new(query.limit);
    for_each_page_row(conn, cid, query, |row| Ok(page.push(object_from_row(row)?)))?;
    Ok(page.finish(head, query.since))
}

/// [`read_page`], written as the answer's JSON straight from the rows: no `Object` and no
/// owned string per row (the text is borrowed from SQLite's row buffer).
fn read_page_json(
    conn: &Connection,
    cid: i64,
    head: &Head,
    query: &PullQuery,
) -> rusqlite::Result<String> {
    let mut page = PageJson::new(query.limit, head, query.since);
    for_each_page_row(conn, cid, query, |r| {
        let text = |i: usize| r.get_ref(i).and_then(|v| Ok(v.as_str_or_null()?));
        Ok(page.push(ObjectRef {
            id: text(0)?.unwrap_or_default(),
            kind: text(1)?.unwrap_or_default(),
            seq: r.get::<_, i64>(2)? as u64,
            deleted: r.get(3)?,
            // The text was validated before it was stored.
            data: text(4)?,
            hash: text(5)?,
            expires: r.get::<_, Option<i64>>(6)?.map(|e| e as u64),
            author: text(7)?,
        }))
    })?;
    Ok(page.finish(head, query.since))
}

/// Runs the query of a pull page (`query.limit + 1` rows of [`OBJECT_COLUMNS`] after
/// `query.since`, filtered by type) and hands each row to `take` until it returns false.
fn for_each_page_row(
    conn: &Connection,
    cid: i64,
    query: &PullQuery,
    mut take: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<bool>,
) -> rusqlite::Result<()> {
    let (filter, names) = if !query.types.is_empty() {
        ("AND type IN", &query.types)
    } else if !query.exclude.is_empty() {
        ("AND type NOT IN", &query.exclude)
    } else {
        ("", &query.types)
    };
    let placeholders = if names.is_empty() {
        String::new()
    } else {
        format!("{filter} ({})", vec!["?"; names.len()].join(","))
    };
    let sql = format!(
        "SELECT {OBJECT_COLUMNS} FROM objects WHERE cid = ? AND seq > ? {placeholders} ORDER BY seq LIMIT ?"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut values: Vec<rusqlite::types::Value> = vec![cid.into(), (query.since as i64).into()];
    values.extend(names.iter().map(|n| n.clone().into()));
    values.push(((query.limit + 1) as i64).into());
    let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
    while let Some(row) = rows.next()? {
        if !take(row)? {
            break;
        }
    }
    Ok(())
}

/// How much of the database file each reader maps into memory (address space, not RAM: the
/// pages stay in the kernel's cache, shared by every reader).
const READER_MMAP_BYTES: u64 = 1 << 30;

/// How often at most the checkpointer runs while commits keep coming.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// The WAL size past which the writer pauses to let it start over (see [`restart_wal`]).
const WAL_RESTART_BYTES: u64 = 64 << 20;
/// How long that pause may wait for readers to leave the WAL before giving up until the
/// checkpointer's next report.
const WAL_RESTART_WAIT: Duration = Duration::from_millis(100);
/// Every connection's wait for a lock (`busy_timeout`) otherwise.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer's side of the checkpointer thread.
struct Checkpointer {
    /// Wakes the checkpointer after a commit (the channel holds one wake-up).
    committed: mpsc::SyncSender<()>,
    /// The WAL's size in bytes as the checkpointer last saw it.
    wal_bytes: Arc<AtomicU64>,
    /// Past this size the writer restarts the WAL ([`WAL_RESTART_BYTES`] but in tests).
    wal_restart_bytes: u64,
    thread: JoinHandle<()>,
}

/// Folds the WAL back into the database file after commits, off the writer's thread: a
/// `PASSIVE` checkpoint copies what no reader still needs and never blocks the writer, which
/// goes on appending meanwhile. The writer's own automatic checkpoints are off; this thread
/// does what they did, at most every [`CHECKPOINT_EVERY`], and reports the WAL's size in
/// `wal_bytes`. It ends when the writer drops `commits`, which the writer does before its
/// final `TRUNCATE` checkpoint.
fn run_checkpointer(conn: Connection, commits: mpsc::Receiver<()>, wal_bytes: Arc<AtomicU64>) {
    // Each WAL frame is a page and a 24-byte header.
    let frame_bytes = conn
        .query_row("PRAGMA page_size", [], |r| r.get::<_, u64>(0))
        .unwrap_or(4096)
        + 24;
    while commits.recv().is_ok() {
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) => wal_bytes.store(frames.max(0) as u64 * frame_bytes, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "checkpoint failed"),
        }
        std::thread::sleep(CHECKPOINT_EVERY);
    }
}

/// Lets a WAL grown past its limit ([`WAL_RESTART_BYTES`]) start over from its beginning.
///
/// SQLite writes from the start of the WAL again only when a transaction begins after a
/// checkpoint has copied every frame and while no reader still needs one. Passive checkpoints
/// running beside a steady stream of commits never get there, so under sustained writes the
/// WAL grew without bound (1.6 GB while the growth benchmark loaded 1.2M records): disk
/// space, and a start-up after a crash that reads it all. A `RESTART` checkpoint on the
/// writer's own connection, between groups, copies what the passive ones left (at most
/// [`CHECKPOINT_EVERY`] of writes) and waits for readers to leave the WAL, so that the next
/// commit writes from the start. The pause is paid once per [`WAL_RESTART_BYTES`] written.
///
/// Commits wait while it waits, so it waits for readers at most [`WAL_RESTART_WAIT`]: a
/// long read (a mirror's reconcile of a big collection, say) makes it give up, and the next
/// try comes after the checkpointer's next report, not at the next commit.
fn restart_wal(conn: &Connection, checkpointer: &Checkpointer) {
    if checkpointer.wal_bytes.load(Ordering::Relaxed) < checkpointer.wal_restart_bytes {
        return;
    }
    let restart = conn.busy_timeout(WAL_RESTART_WAIT).and_then(|()| {
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0))
    });
    if let Err(e) = conn.busy_timeout(BUSY_TIMEOUT) {
        tracing::warn!(error = %e, "could not set the busy timeout back");
    }
    match restart {
        Ok(0) => {}
        Ok(_busy) => tracing::debug!("readers kept the WAL from starting over; trying later"),
        Err(e) => tracing::warn!(error = %e, "checkpoint failed"),
    }
    checkpointer.wal_bytes.store(0, Ordering::Relaxed);
}

fn run_writer(
    mut conn: Connection,
    jobs: mpsc::Receiver<Job>,
    backlog: Arc<AtomicUsize>,
    hub: Arc<Hub>,
    checkpointer: Checkpointer,
) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let taken = group.len();
        let (answers, events) = commit_group(&mut conn, group);
        backlog.fetch_sub(taken, Ordering::Relaxed);
        // Wakes the checkpointer, or finds it already due to run (the channel holds one).
        let _ = checkpointer.committed.try_send(());
        // Subscribers hear of a commit before its writer does, and never of one that failed.
        // Whether anyone listens is asked only now, after the commit: a stream that subscribes
        // later reads its backlog after the commit, so it finds these rows there.
        for (key, announcement) in events {
            if hub.is_watched(&key) {
                match announcement {
                    Announcement::Rows(rows) => hub.publish(&key, rows.iter().map(change_event)),
                    Announcement::Event(event) => hub.publish(&key, [event]),
                }
            }
        }
        for answer in answers {
            // A receiver that went away (client disconnected) does not undo a commit.
            match answer {
                Answer::Push(tx, r) => drop(tx.send(r)),
                Answer::Reset(tx, r) => drop(tx.send(r)),
                Answer::Sweep(tx, r) => drop(tx.send(r)),
                Answer::SetAcl(tx, r) => drop(tx.send(r)),
                Answer::Other(tx, r) => drop(tx.send(r)),
            }
        }
        restart_wal(&conn, &checkpointer);
    }
    let Checkpointer {
        committed, thread, ..
    } = checkpointer;
    drop(committed);
    let _ = thread.join();
    // Leave a clean database behind: fold the WAL back into the main file.
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "final checkpoint failed");
    }
    tracing::info!("database closed");
}

/// What a group's jobs wrote, to announce to the live hub once the group is committed.
type GroupEvents = Vec<(CollectionKey, Announcement)>;

enum Announcement {
    /// Rows written (their events are built only if someone listens).
    Rows(Vec<Object>),
    /// A reset or an ACL change.
    Event(LiveEvent),
}

/// Runs a group of jobs in one transaction. Each job runs in its own savepoint, so one failing
/// job does not take the others down; if the commit itself fails, every job fails.
fn commit_group(conn: &mut Connection, group: Vec<Job>) -> (Vec<Answer>, GroupEvents) {
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let error = sql_error(e);
            return (
                group
                    .into_iter()
                    .map(|job| fail(job, error.clone()))
                    .collect(),
                Vec::new(),
            );
        }
    };
    let mut answers = Vec::with_capacity(group.len());
    let mut events = GroupEvents::new();
    for job in group {
        answers.push(match job {
            Job::Push {
                key,
                request,
                context,
                now_ms,
                reply,
            } => {
                let mut written = Written::new();
                let outcome = in_savepoint(&tx, |sp| {
                    push_in_tx(sp, &key, &request, &context, now_ms, &mut written)
                });
                let committed =
                    matches!(outcome, Ok(PushReply::Outcome(PushOutcome::Committed(_))));
                if committed && !written.is_empty() {
                    events.push((key, Announcement::Rows(written)));
                }
                Answer::Push(reply, outcome)
            }
            Job::Reset { key, reply } => {
                let outcome = in_savepoint(&tx, |sp| reset_in_tx(sp, &key));
                if let Ok(head) = &outcome {
                    let collection_id = head
                        .collection_id
                        .clone()
                        .expect("a reset head has an epoch");
                    let horizon = head.horizon;
                    events.push((
                        key,
                        Announcement::Event(LiveEvent::Reset {
                            collection_id,
                            horizon,
                        }),
                    ));
                }
                Answer::Reset(reply, outcome)
            }
            Job::SetAcl { key, acl, reply } => {
                let outcome = in_savepoint(&tx, |sp| set_acl_in_tx(sp, &key, &acl));
                if outcome.is_ok() {
                    events.push((key, Announcement::Event(LiveEvent::AccessChanged)));
                }
                Answer::SetAcl(reply, outcome)
            }
            Job::Sweep {
                now_ms,
                retention_ms,
                reply,
            } => {
                let mut swept = GroupEvents::new();
                let outcome =
                    in_savepoint(&tx, |sp| sweep_in_tx(sp, now_ms, retention_ms, &mut swept));
                if outcome.is_ok() {
                    events.append(&mut swept);
                }
                Answer::Sweep(reply, outcome)
            }
            Job::Other { work, reply } => {
                let mut own = GroupEvents::new();
                let outcome = in_savepoint(&tx, |sp| work(sp, &mut own));
                if outcome.is_ok() {
                    events.append(&mut own);
                }
                Answer::Other(reply, outcome)
            }
        });
    }
    match tx.commit() {
        Ok(()) => (answers, events),
        Err(e) => {
            let error = sql_error(e);
            tracing::error!(?error, "group commit failed");
            (
                answers.into_iter().map(|a| a.fail(error.clone())).collect(),
                Vec::new(),
            )
        }
    }
}

fn fail(job: Job, error: StoreError) -> Answer {
    match job {
        Job::Push { reply, .. } => Answer::Push(reply, Err(error)),
        Job::Reset { reply, .. } => Answer::Reset(reply, Err(error)),
        Job::Sweep { reply, .. } => Answer::Sweep(reply, Err(error)),
        Job::SetAcl { reply, .. } => Answer::SetAcl(reply, Err(error)),
        Job::Other { reply, .. } => Answer::Other(reply, Err(error)),
    }
}

impl Answer {
    fn fail(self, error: StoreError) -> Answer {
        match self {
            Answer::Push(tx, _) => Answer::Push(tx, Err(error)),
            Answer::Reset(tx, _) => Answer::Reset(tx, Err(error)),
            Answer::Sweep(tx, _) => Answer::Sweep(tx, Err(error)),
            Answer::SetAcl(tx, _) => Answer::SetAcl(tx, Err(error)),
            Answer::Other(tx, _) => Answer::Other(tx, Err(error)),
        }
    }
}

fn in_savepoint<T>(
    tx: &Transaction<'_>,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    tx.execute_batch("SAVEPOINT job").map_err(sql_error)?;
    match f(tx) {
        Ok(value) => {
            tx.execute_batch("RELEASE job").map_err(sql_error)?;
            Ok(value)
        }
        Err(e) => {
            let _ = tx.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(sql_error(e))
        }
    }
}

/// What a committed push wrote, for the live hub (only collected when someone listens).
type Written = Vec<Object>;

fn push_in_tx(
    conn: &Connection,
    key: &CollectionKey,
    request: &PushRequest,
    context: &PushContext,
    now_ms: u64,
    written: &mut Written,
) -> rusqlite::Result<PushReply> {
    let existing = read_head(conn, key)?;
    if let (Some((cid, _)), Some(push_id)) = (&existing, &request.push_id) {
        let first: Option<String> = conn
            .prepare_cached("SELECT answer FROM pushes WHERE cid = ?1 AND push_id = ?2")?
            .query_row(params![cid, push_id], |r| r.get(0))
            .optional()?;
        if let Some(first) = first {
            let mut ok: PushOk = serde_json::from_str(&first).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?;
            ok.replayed = true;
            return Ok(PushReply::Outcome(PushOutcome::Committed(ok)));
        }
    }
    let head = existing
        .as_ref()
        .map(|(_, h)| h.clone())
        .unwrap_or_default();

    // The stored state of every id in the batch: seq, tombstone flag and author, and what it
    // costs the owner's quota.
    let mut stored: Vec<Option<Stored>> = Vec::with_capacity(request.objects.len());
    let mut costs: Vec<UsageDelta> = Vec::with_capacity(request.objects.len());
    if let Some((cid, _)) = &existing {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT seq, deleted, author, {DATA_BYTES} FROM objects WHERE cid = ?1 AND id = ?2"
        ))?;
        for object in &request.objects {
            let row = stmt
                .query_row(params![cid, object.id], |r| {
                    let current = Current {
                        seq: r.get::<_, i64>(0)? as u64,
                        deleted: r.get(1)?,
                    };
                    let cost = quota::cost(current.deleted, r.get::<_, i64>(3)? as u64);
                    Ok((
                        Stored {
                            current,
                            author: r.get(2)?,
                        },
                        cost,
                    ))
                })
                .optional()?;
            costs.push(row.as_ref().map(|(_, c)| *c).unwrap_or_default());
            stored.push(row.map(|(s, _)| s));
        }
    } else {
        stored.resize(request.objects.len(), None);
        costs.resize(request.objects.len(), UsageDelta::default());
    }
    let writer = Writer {
        user: &context.user,
        creator_only: context.creator_only,
    };
    match plan_push(&head, request, &stored, writer) {
        Plan::NotAuthor(indexes) => Ok(PushReply::NotAuthor(indexes)),
        Plan::ResetRequired => Ok(PushReply::Outcome(PushOutcome::Reset(reset_answer(&head)))),
        Plan::Conflicts(list) => {
            let cid = existing.as_ref().map(|(cid, _)| *cid);
            let mut conflicts = Vec::with_capacity(list.len());
            for (index, reason) in list {
                let id = &request.objects[index].id;
                let server = match cid {
                    Some(cid) => conn
                        .prepare_cached(&format!(
                            "SELECT {OBJECT_COLUMNS} FROM objects WHERE cid = ?1 AND id = ?2"
                        ))?
                        .query_row(params![cid, id], object_from_row)
                        .optional()?,
                    None => None,
                };
                conflicts.push(Conflict {
                    id: id.clone(),
                    reason,
                    server,
                });
            }
            let (changes, until, more) = match (request.since, cid) {
                (Some(since), Some(cid)) => {
                    let query = PullQuery {
                        since,
                        limit: context.changes_limit,
                        ..PullQuery::default()
                    };
                    let page = read_page(conn, cid, &head, &query)?;
                    (page.objects, page.until, page.more)
                }
                _ => (Vec::new(), 0, false),
            };
            Ok(PushReply::Outcome(PushOutcome::Conflict(ConflictAnswer {
                error: ErrorCode::Conflict,
                message: "the batch conflicts with newer changes; nothing was applied".into(),
                collection_id: head.collection_id.clone(),
                until,
                conflicts,
                changes,
                more,
            })))
        }
        Plan::Commit(rows) => {
            let delta = quota::delta(&rows, &costs);
            let mut usage = read_usage(conn, &key.owner)?;
            // Blobs count toward the byte quota too; summed only when there is one.
            if context.quota.max_bytes.is_some() {
                usage.bytes = usage
                    .bytes
                    .saturating_add(owner_blob_bytes(conn, &key.owner)?);
            }
            if let Err(exceeded) = context.quota.check(usage, delta) {
                return Ok(PushReply::OverQuota {
                    exceeded,
                    usage,
                    quota: context.quota,
                });
            }
            add_usage(conn, &key.owner, delta)?;
            let (cid, collection_id) = match existing {
                Some((cid, head)) => (cid, head.collection_id.expect("stored heads have an epoch")),
                None => {
                    let epoch = new_collection_id();
                    conn.prepare_cached(
                        "INSERT INTO collections (app, owner, name, collection_id, last_seq, horizon)
                         VALUES (?1, ?2, ?3, ?4, 0, 0)",
                    )?
                    .execute(params![key.app, key.owner, key.name, epoch])?;
                    (conn.last_insert_rowid(), epoch)
                }
            };
            write_objects(conn, cid, &rows, now_ms)?;
            let seqs: Vec<u64> = rows.iter().map(|row| row.seq).collect();
            let until = seqs.last().copied().unwrap_or(head.last_seq);
            *written = rows;
            conn.prepare_cached("UPDATE collections SET last_seq = ?1 WHERE cid = ?2")?
                .execute(params![until as i64, cid])?;
            let ok = PushOk {
                collection_id,
                seqs,
                until,
                replayed: false,
            };
            if let Some(push_id) = &request.push_id {
                let first = serde_json::to_string(&ok).expect("a push answer serialises");
                conn.prepare_cached(
                    "INSERT INTO pushes (cid, push_id, answer, created_ms) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![cid, push_id, first, now_ms as i64])?;
            }
            Ok(PushReply::Outcome(PushOutcome::Committed(ok)))
        }
    }
}

fn set_acl_in_tx(conn: &Connection, key: &CollectionKey, acl: &Acl) -> rusqlite::Result<()> {
    let text = serde_json::to_string(acl).expect("an ACL serialises");
    conn.prepare_cached(
        "INSERT INTO acls (app, owner, name, acl) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (app, owner, name) DO UPDATE SET acl = excluded.acl",
    )?
    .execute(params![key.app, key.owner, key.name, text])?;
    Ok(())
}

fn reset_in_tx(conn: &Connection, key: &CollectionKey) -> rusqlite::Result<Head> {
    let epoch = new_collection_id();
    match read_head(conn, key)? {
        Some((cid, head)) => {
            // Everything live in the collection goes, and so does what it cost its owner.
            empty_collection(conn, &key.owner, cid)?;
            conn.prepare_cached("DELETE FROM pushes WHERE cid = ?1")?
                .execute([cid])?;
            // Seqs keep counting up across epochs and every old cursor falls below the horizon,
            // so no cursor of the old epoch can pass for one of the new.
            conn.prepare_cached(
                "UPDATE collections SET collection_id = ?1, horizon = last_seq WHERE cid = ?2",
            )?
            .execute(params![epoch, cid])?;
            Ok(Head {
                collection_id: Some(epoch),
                last_seq: head.last_seq,
                horizon: head.last_seq,
            })
        }
        None => {
            conn.prepare_cached(
                "INSERT INTO collections (app, owner, name, collection_id, last_seq, horizon) VALUES (?1, ?2, ?3, ?4, 0, 0)",
            )?
            .execute(params![key.app, key.owner, key.name, epoch])?;
            Ok(Head {
                collection_id: Some(epoch),
                last_seq: 0,
                horizon: 0,
            })
        }
    }
}

/// How many expired objects one sweep turns into tombstones (the rest wait for the next).
const SWEEP_BATCH: i64 = 10_000;

fn sweep_in_tx(
    conn: &Connection,
    now_ms: u64,
    retention_ms: u64,
    events: &mut GroupEvents,
) -> rusqlite::Result<SweepReport> {
    let mut report = SweepReport::default();
    // 1. Expired objects become tombstones, each with a new seq so that clients hear of it.
    let expired: Vec<(i64, String, String)> = conn
        // `expires <= now` is `horizon::is_expired`, evaluated by the index.
        .prepare_cached("SELECT cid, id, type FROM objects WHERE expires IS NOT NULL AND deleted = 0 AND expires <= ?1
                          AND cid NOT IN (SELECT cid FROM collections WHERE mirrored = 1) ORDER BY cid, seq LIMIT ?2")?
        .query_map(params![now_ms as i64, SWEEP_BATCH], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (cid, id, kind) in expired {
        let (seq, app, owner, name): (i64, String, String, String) = conn
            .prepare_cached("UPDATE collections SET last_seq = last_seq + 1 WHERE cid = ?1 RETURNING last_seq, app, owner, name")?
            .query_row([cid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        // The object becomes a tombstone: its owner gets its space back.
        let bytes: i64 = conn
            .prepare_cached(&format!(
                "SELECT {DATA_BYTES} FROM objects WHERE cid = ?1 AND id = ?2"
            ))?
            .query_row(params![cid, id], |r| r.get(0))?;
        add_usage(
            conn,
            &owner,
            UsageDelta {
                bytes: -bytes,
                objects: -1,
            },
        )?;
        conn.prepare_cached(
            "UPDATE objects SET seq = ?1, deleted = 1, data = NULL, hash = NULL, expires = NULL, modified_ms = ?2 WHERE cid = ?3 AND id = ?4",
        )?
        .execute(params![seq, now_ms as i64, cid, id])?;
        conn.prepare_cached("DELETE FROM blob_refs WHERE cid = ?1 AND id = ?2")?
            .execute(params![cid, id])?;
        report.expired += 1;
        let key = CollectionKey { app, owner, name };
        let tombstone = Object::tombstone(id, kind, seq as u64);
        events.push((key, Announcement::Rows(vec![tombstone])));
    }
    // 2. Tombstones past the retention window are purged: in each collection, every tombstone
    //    up to the highest such seq, so that the horizon moves whenever anything is purged and
    //    a client that echoes the horizon it started paging with can trust it.
    let cutoff = horizon::purge_before(now_ms, retention_ms) as i64;
    let purgeable: Vec<(i64, i64)> = conn
        .prepare_cached(
            "SELECT cid, MAX(seq) FROM objects WHERE deleted = 1 AND modified_ms < ?1
             AND cid NOT IN (SELECT cid FROM collections WHERE mirrored = 1) GROUP BY cid",
        )?
        .query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (cid, up_to) in purgeable {
        let purged = conn
            .prepare_cached("DELETE FROM objects WHERE cid = ?1 AND deleted = 1 AND seq <= ?2")?
            .execute(params![cid, up_to])?;
        let old: i64 = conn
            .prepare_cached("SELECT horizon FROM collections WHERE cid = ?1")?
            .query_row([cid], |r| r.get(0))?;
        let new = horizon::horizon_after_purge(old as u64, Some(up_to as u64));
        conn.prepare_cached("UPDATE collections SET horizon = ?1 WHERE cid = ?2")?
            .execute(params![new as i64, cid])?;
        report.purged += purged as u64;
    }
    // 3. Replay records live as long as tombstones do.
    conn.prepare_cached("DELETE FROM pushes WHERE created_ms < ?1")?
        .execute([cutoff])?;
    Ok(report)
}

/// Whether a live object of the blob's collection refers to it (`sync_core::blob::refs`: the
/// top-level `"blobs"` array of the object's data). Used inside statements on `blobs`.
const BLOB_IS_REFERENCED: &str = "EXISTS (
    SELECT 1 FROM blob_refs r JOIN collections c ON c.cid = r.cid
    WHERE r.hash = blobs.hash AND c.app = blobs.app AND c.owner = blobs.owner AND c.name = blobs.name)";

/// Fills `blob_refs` from the objects already stored.
fn backfill_blob_refs(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT cid, id, seq, type, data FROM objects WHERE deleted = 0 AND (data LIKE '%blobs%' OR data LIKE '%\\u%')",
    )?;
    let rows: Vec<(i64, Object)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                Object {
                    id: r.get(1)?,
                    kind: r.get(3)?,
                    seq: r.get::<_, i64>(2)? as u64,
                    deleted: false,
                    data: r.get::<_, Option<String>>(4)?.map(JsonData::from_trusted),
                    expires: None,
                    hash: None,
                    author: None,
                },
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (cid, object) in rows {
        insert_blob_refs(conn, cid, &object)?;
    }
    Ok(())
}

/// Records the blobs a new version of an object refers to (its old references are gone).
fn insert_blob_refs(conn: &Connection, cid: i64, object: &Object) -> rusqlite::Result<()> {
    let names = match (&object.data, object.deleted) {
        (Some(data), false) => blob::refs(data),
        _ => return Ok(()),
    };
    let mut insert =
        conn.prepare_cached("INSERT INTO blob_refs (cid, id, hash) VALUES (?1, ?2, ?3)")?;
    for name in names {
        insert.execute(params![cid, object.id, name])?;
    }
    Ok(())
}

fn sweep_blobs_in_tx(
    conn: &Connection,
    now_ms: u64,
    retention_ms: u64,
) -> rusqlite::Result<BlobSweep> {
    let orphaned = conn.execute(
        &format!(
            "UPDATE blobs SET orphaned_ms = ?1 WHERE orphaned_ms IS NULL AND NOT {BLOB_IS_REFERENCED}"
        ),
        [now_ms as i64],
    )?;
    conn.execute(
        &format!("UPDATE blobs SET orphaned_ms = NULL WHERE orphaned_ms IS NOT NULL AND {BLOB_IS_REFERENCED}"),
        [],
    )?;
    let cutoff = horizon::purge_before(now_ms, retention_ms) as i64;
    let collected = conn.execute(
        "DELETE FROM blobs WHERE orphaned_ms IS NOT NULL AND orphaned_ms < ?1",
        [cutoff],
    )?;
    Ok(BlobSweep {
        orphaned: orphaned as u64,
        collected: collected as u64,
    })
}

/// Writes rows as they are: a push's planned rows, or a mirror's, verbatim from upstream.
fn write_objects(
    conn: &Connection,
    cid: i64,
    objects: &[Object],
    now_ms: u64,
) -> rusqlite::Result<()> {
    let mut upsert = conn.prepare_cached(
        "INSERT INTO objects (cid, id, seq, type, deleted, data, hash, expires, modified_ms, author)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (cid, id) DO UPDATE SET seq = excluded.seq, type = excluded.type,
           deleted = excluded.deleted, data = excluded.data, hash = excluded.hash,
           expires = excluded.expires, modified_ms = excluded.modified_ms,
           author = excluded.author",
    )?;
    // Most collections name no blobs at all: one lookup spares them a delete per row.
    let may_have_refs: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM blob_refs WHERE cid = ?1)")?
        .query_row([cid], |r| r.get(0))?;
    for o in objects {
        upsert.execute(params![
            cid,
            o.id,
            o.seq as i64,
            o.kind,
            o.deleted,
            o.data.as_ref().map(JsonData::as_str),
            o.hash,
            o.expires.map(|e| e as i64),
            now_ms as i64,
            o.author,
        ])?;
        if may_have_refs {
            conn.prepare_cached("DELETE FROM blob_refs WHERE cid = ?1 AND id = ?2")?
                .execute(params![cid, o.id])?;
        }
        insert_blob_refs(conn, cid, o)?;
    }
    Ok(())
}

fn apply_mirrored_in_tx(
    conn: &Connection,
    key: &CollectionKey,
    write: MirrorWrite,
    now_ms: u64,
    events: &mut GroupEvents,
) -> rusqlite::Result<MirrorApplied> {
    let existing = read_head(conn, key)?;
    let local = existing
        .as_ref()
        .map(|(_, h)| h.clone())
        .unwrap_or_default();
    match write {
        MirrorWrite::Append(page) => {
            let Some((cid, _)) = existing else {
                return Ok(MirrorApplied::Stale(local));
            };
            if local.collection_id != page.collection_id || local.last_seq != page.since {
                return Ok(MirrorApplied::Stale(local));
            }
            // The owner's usage follows the copy like any commit (no quota is enforced: the
            // upstream already accepted these writes).
            let mut before = Vec::with_capacity(page.objects.len());
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT deleted, {DATA_BYTES} FROM objects WHERE cid = ?1 AND id = ?2"
            ))?;
            for o in &page.objects {
                before.push(
                    stmt.query_row(params![cid, o.id], |r| {
                        Ok(quota::cost(r.get(0)?, r.get::<_, i64>(1)? as u64))
                    })
                    .optional()?
                    .unwrap_or_default(),
                );
            }
            add_usage(conn, &key.owner, quota::delta(&page.objects, &before))?;
            write_objects(conn, cid, &page.objects, now_ms)?;
            let head = Head {
                collection_id: local.collection_id,
                last_seq: local.last_seq.max(page.until),
                horizon: local.horizon.max(page.horizon),
            };
            conn.prepare_cached(
                "UPDATE collections SET last_seq = ?1, horizon = ?2, mirrored = 1 WHERE cid = ?3",
            )?
            .execute(params![head.last_seq as i64, head.horizon as i64, cid])?;
            if !page.objects.is_empty() {
                events.push((key.clone(), Announcement::Rows(page.objects)));
            }
            Ok(MirrorApplied::Written(head))
        }
        MirrorWrite::Replace(page) => {
            let epoch = page
                .collection_id
                .clone()
                .expect("a mirror replaces its copy only with an epoch");
            let cid = match &existing {
                Some((cid, _)) => {
                    empty_collection(conn, &key.owner, *cid)?;
                    conn.prepare_cached(
                        "UPDATE collections SET collection_id = ?1, last_seq = ?2, horizon = ?3, mirrored = 1
                         WHERE cid = ?4",
                    )?
                    .execute(params![epoch, page.until as i64, page.horizon as i64, cid])?;
                    *cid
                }
                None => {
                    conn.prepare_cached(
                        "INSERT INTO collections (app, owner, name, collection_id, last_seq, horizon, mirrored)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1)",
                    )?
                    .execute(params![key.app, key.owner, key.name, epoch, page.until as i64, page.horizon as i64])?;
                    conn.last_insert_rowid()
                }
            };
            let nothing_before = vec![UsageDelta::default(); page.objects.len()];
            add_usage(
                conn,
                &key.owner,
                quota::delta(&page.objects, &nothing_before),
            )?;
            write_objects(conn, cid, &page.objects, now_ms)?;
            let head = Head {
                collection_id: Some(epoch.clone()),
                last_seq: page.until,
                horizon: page.horizon,
            };
            if local.collection_id.as_deref() == Some(epoch.as_str()) {
                // The same epoch, repaired: streams hear of what is newer than they had.
                let newer: Vec<Object> = page
                    .objects
                    .into_iter()
                    .filter(|o| o.seq > local.last_seq)
                    .collect();
                if !newer.is_empty() {
                    events.push((key.clone(), Announcement::Rows(newer)));
                }
            } else {
                events.push((
                    key.clone(),
                    Announcement::Event(LiveEvent::Reset {
                        collection_id: epoch,
                        horizon: page.horizon,
                    }),
                ));
            }
            Ok(MirrorApplied::Written(head))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_core::quota::Quota;
    use sync_core::Limits;

    fn key(owner: &str, name: &str) -> CollectionKey {
        CollectionKey {
            app: "notes".into(),
            owner: owner.into(),
            name: name.into(),
        }
    }

    async fn push(store: &SqliteStore, key: &CollectionKey, body: &str) {
        let request = PushRequest::parse(body.as_bytes(), &Limits::default()).unwrap();
        let context = PushContext {
            user: key.owner.clone(),
            creator_only: false,
            changes_limit: 100,
            quota: Quota::default(),
        };
        let reply = store.push(key, request, context, 1).await.unwrap();
        assert!(matches!(
            reply,
            PushReply::Outcome(PushOutcome::Committed(_))
        ));
    }

    /// A push body of 64 new records of about 1 KB each, with ids `{prefix}-0` to `{prefix}-63`.
    fn batch_of_64(prefix: &str) -> String {
        let objects: Vec<String> = (0..64)
            .map(|i| {
                format!(
                    r#"{{"id": "{prefix}-{i}", "data": "{}"}}"#,
                    "x".repeat(1000)
                )
            })
            .collect();
        format!(r#"{{"objects": [{}]}}"#, objects.join(","))
    }

    /// The size of the WAL file: SQLite overwrites it from the start after a restart and never
    /// shrinks it while open, so this is the most it ever held.
    fn wal_file_bytes(dir: &Path) -> u64 {
        std::fs::metadata(dir.join("tidemark.sqlite3-wal"))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Four clients push 24 MiB of records without a pause while a fifth pulls: the WAL
    /// starts over at its limit instead of growing with all that was written.
    async fn wal_after_sustained_writes(name: &str, wal_restart_bytes: u64) -> u64 {
        let dir = std::env::temp_dir().join(format!("tidemark-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(
            SqliteStore::open_with_wal_limit(&dir, Arc::new(Hub::new(16)), wal_restart_bytes)
                .unwrap(),
        );
        let notes = key("alice", "notes");
        let pushers: Vec<_> = (0..4)
            .map(|client| {
                let (store, notes) = (store.clone(), notes.clone());
                tokio::spawn(async move {
                    for batch in 0..96 {
                        push(&store, &notes, &batch_of_64(&format!("{client}-{batch}"))).await;
                    }
                })
            })
            .collect();
        let puller = {
            let (store, notes) = (store.clone(), notes.clone());
            tokio::spawn(async move {
                let query = PullQuery::from_pairs([("limit", "100")], &Limits::default()).unwrap();
                loop {
                    store.pull(&notes, &query).await.unwrap().unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        for pusher in pushers {
            pusher.await.unwrap();
        }
        puller.abort();
        assert_eq!(store.head(&notes).await.unwrap().last_seq, 4 * 96 * 64);
        let wal = wal_file_bytes(&dir);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
        wal
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_wal_stays_near_its_limit_under_sustained_writes() {
        let bounded = wal_after_sustained_writes("wal-bounded", 1 << 20).await;
        // The same load without restarts: the WAL holds about all that was written (65 MB
        // here), which is why the writer restarts it.
        let unbounded = wal_after_sustained_writes("wal-unbounded", u64::MAX).await;
        // The limit is checked against the checkpointer's latest reading, which lags by up to
        // a checkpoint period of writes: with a 1 MiB limit the WAL went to 12-13 MB.
        assert!(
            bounded * 3 < unbounded,
            "the WAL grew to {bounded} bytes, and to {unbounded} without restarts"
        );
    }

    /// A reader that holds an old snapshot keeps the WAL from starting over; the writer gives
    /// up waiting for it after a moment instead of holding every commit for the busy timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_read_does_not_stall_commits_while_the_wal_waits_to_restart() {
        let dir = std::env::temp_dir().join(format!("tidemark-wal-reader-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store =
            SqliteStore::open_with_wal_limit(&dir, Arc::new(Hub::new(16)), 256 << 10).unwrap();
        let notes = key("alice", "notes");
        push(&store, &notes, &batch_of_64("0")).await;
        let reader = Connection::open(dir.join("tidemark.sqlite3")).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let seen: i64 = reader
            .query_row("SELECT count(*) FROM objects", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seen, 64);
        let started = std::time::Instant::now();
        let mut slowest = Duration::ZERO;
        let mut n = 1;
        while started.elapsed() < Duration::from_secs(2) {
            let sent = std::time::Instant::now();
            push(&store, &notes, &batch_of_64(&n.to_string())).await;
            slowest = slowest.max(sent.elapsed());
            n += 1;
        }
        // The WAL passed its limit within the first few pushes, so restarts were tried all
        // along; waiting out the busy timeout (5 s) on each would show here.
        assert!(n > 20, "only {n} pushes in 2 s");
        assert!(slowest < Duration::from_secs(1), "a push took {slowest:?}");
        reader.execute_batch("COMMIT").unwrap();
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The pull route's JSON, written straight from the rows, is the page `pull` reads.
    #[tokio::test]
    async fn pull_json_is_the_pull_page_rendered() {
        let dir = std::env::temp_dir().join(format!("tidemark-pulljson-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SqliteStore::open(&dir, Arc::new(Hub::new(16))).unwrap();
        let notes = key("alice", "notes");
        push(
            &store,
            &notes,
            r#"{"objects": [
                {"id": "a", "type": "note", "data": {"t": "say \"hi\"\n", "é": [1, 2.5, null]}},
                {"id": "b\"q", "type": "todo", "data": true, "expires": 99999999999999},
                {"id": "c", "data": "plain"},
                {"id": "d", "type": "note", "data": 7}
            ]}"#,
        )
        .await;
        push(
            &store,
            &notes,
            r#"{"objects": [{"id": "c", "deleted": true}, {"id": "e", "type": "todo", "data": []}]}"#,
        )
        .await;
        let last = store.head(&notes).await.unwrap().last_seq;
        assert_eq!(last, 6);
        let limits = Limits::default();
        let never_written = key("alice", "empty");
        for (collection, pairs) in [
            (&notes, vec![]),
            (&notes, vec![("limit", "1")]),
            (&notes, vec![("limit", "3")]),
            (&notes, vec![("since", "2"), ("limit", "2")]),
            (&notes, vec![("since", "5")]),
            (&notes, vec![("since", "6")]),
            (&notes, vec![("type", "note")]),
            (&notes, vec![("type", "todo"), ("limit", "1")]),
            (&notes, vec![("exclude", "note")]),
            (&never_written, vec![]),
            (&never_written, vec![("since", "3")]),
        ] {
            let query = PullQuery::from_pairs(pairs.iter().copied(), &limits).unwrap();
            let page = store.pull(collection, &query).await.unwrap();
            let json = store.pull_json(collection, &query).await.unwrap();
            match (page, json) {
                (Ok(page), Ok(json)) => {
                    assert_eq!(json.json, page.answer.to_json(), "{pairs:?}");
                    assert_eq!(json.head, page.head, "{pairs:?}");
                    // And it is the JSON serde writes for the answer.
                    let parsed: PullAnswer = serde_json::from_str(&json.json).unwrap();
                    assert_eq!(parsed, page.answer, "{pairs:?}");
                }
                (Err(reset), Err(reset_json)) => assert_eq!(reset, reset_json, "{pairs:?}"),
                (page, json) => panic!("{pairs:?}: pull {page:?} but pull_json {json:?}"),
            }
        }
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_database_from_before_the_usage_counters_gets_them_filled_in() {
        let dir = std::env::temp_dir().join(format!("tidemark-usage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let hub = Arc::new(Hub::new(16));
        let store = SqliteStore::open(&dir, hub.clone()).unwrap();
        push(
            &store,
            &key("alice", "a"),
            r#"{"objects": [{"id": "x", "data": "abc"}, {"id": "y", "data": [1]}]}"#,
        )
        .await;
        push(
            &store,
            &key("alice", "b"),
            r#"{"objects": [{"id": "z", "data": 12}, {"id": "x", "deleted": true}]}"#,
        )
        .await;
        push(
            &store,
            &key("bob", "a"),
            r#"{"objects": [{"id": "x", "data": {}}, {"id": "x2", "data": 1}]}"#,
        )
        .await;
        push(
            &store,
            &key("bob", "a"),
            r#"{"objects": [{"id": "x2", "deleted": true}]}"#,
        )
        .await;
        let counted = (
            store.usage("alice").await.unwrap(),
            store.usage("bob").await.unwrap(),
        );
        assert_eq!(
            counted.0,
            Usage {
                bytes: 3 + 5 + 2,
                objects: 3
            }
        );
        assert_eq!(
            counted.1,
            Usage {
                bytes: 2,
                objects: 1
            }
        );
        store.close().await;

        // Make it look like a version-1 database: no counters at all.
        let conn = Connection::open(dir.join("tidemark.sqlite3")).unwrap();
        conn.execute_batch("DROP TABLE usage; PRAGMA user_version = 1;")
            .unwrap();
        drop(conn);
        let store = SqliteStore::open(&dir, hub).unwrap();
        assert_eq!(store.usage("alice").await.unwrap(), counted.0);
        assert_eq!(store.usage("bob").await.unwrap(), counted.1);
        assert_eq!(store.usage("carol").await.unwrap(), Usage::default());
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
