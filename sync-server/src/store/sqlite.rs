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
//!
//! # Durability
//!
//! WAL with `synchronous = FULL`: a push is answered only after its commit's WAL frames are
//! fsynced. An acknowledged write therefore survives `kill -9` of the server *and* a power
//! loss or OS crash (given a disk that honours fsync).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use sync_core::commit::{check_pull, decide_push, Current, Decision, Head};
use sync_core::error::ErrorCode;
use sync_core::memory_store::PushOutcome;
use sync_core::push::{Change, Conflict, ConflictAnswer, PushOk, ResetAnswer};
use sync_core::{horizon, JsonData, Object, PullAnswer, PullQuery, PushRequest};
use tokio::sync::{oneshot, Semaphore};

use super::{new_collection_id, CollectionKey, CollectionSummary, PullPage, Store, StoreError, SweepReport};

/// The most jobs one group commit takes.
const MAX_GROUP: usize = 512;
/// How many jobs may wait for the writer before pushes are refused with 503.
const QUEUE_CAPACITY: usize = 8192;
/// How many reads run at once (each holds a blocking thread and a connection).
const MAX_READERS: usize = 16;
/// A pull page stops early once its data adds up to this many bytes.
const MAX_PULL_BYTES: usize = 16 * 1024 * 1024;
/// How many objects a 409 answer carries in `changes`.
const CONFLICT_CHANGES_LIMIT: usize = 1000;

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
    modified_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS objects_by_id ON objects (cid, id);
CREATE UNIQUE INDEX IF NOT EXISTS objects_by_seq ON objects (cid, seq);
CREATE INDEX IF NOT EXISTS objects_expiring ON objects (expires) WHERE expires IS NOT NULL AND deleted = 0;
CREATE INDEX IF NOT EXISTS tombstones_by_age ON objects (modified_ms) WHERE deleted = 1;
-- First answers of committed pushes, for idempotent replays.
CREATE TABLE IF NOT EXISTS pushes (
    cid        INTEGER NOT NULL,
    push_id    TEXT NOT NULL,
    answer     TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (cid, push_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pushes_by_age ON pushes (created_ms);
PRAGMA user_version = 1;
";

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
    Push { key: CollectionKey, request: PushRequest, now_ms: u64, reply: oneshot::Sender<Result<PushOutcome, StoreError>> },
    Reset { key: CollectionKey, reply: oneshot::Sender<Result<Head, StoreError>> },
    Sweep { now_ms: u64, retention_ms: u64, reply: oneshot::Sender<Result<SweepReport, StoreError>> },
}

/// A job's answer, held until its group is committed.
enum Answer {
    Push(oneshot::Sender<Result<PushOutcome, StoreError>>, Result<PushOutcome, StoreError>),
    Reset(oneshot::Sender<Result<Head, StoreError>>, Result<Head, StoreError>),
    Sweep(oneshot::Sender<Result<SweepReport, StoreError>>, Result<SweepReport, StoreError>),
}

impl SqliteStore {
    /// Opens (creating if needed) the database in directory `dir` and starts the writer.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Internal(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join("tidemark.sqlite3");
        let conn = open_connection(&path).map_err(sql_error)?;
        conn.execute_batch(SCHEMA).map_err(sql_error)?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(sql_error)?;
        if check != "ok" {
            return Err(StoreError::Internal(format!("the database failed its integrity check: {check}")));
        }
        let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let backlog = Arc::new(AtomicUsize::new(0));
        let writer_backlog = backlog.clone();
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run_writer(conn, rx, writer_backlog))
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
    async fn write<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let sender = self.jobs.lock().expect("jobs lock").clone();
        let sender = sender.ok_or_else(|| StoreError::Unavailable("the server is shutting down".into()))?;
        self.backlog.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = sender.try_send(make(reply)) {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::Unavailable(match e {
                mpsc::TrySendError::Full(_) => "too many writes are waiting".into(),
                mpsc::TrySendError::Disconnected(_) => "the writer has stopped".into(),
            }));
        }
        answer.await.map_err(|_| StoreError::Unavailable("the writer stopped before answering".into()))?
    }

    /// Runs `f` on a read connection on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _slot = self.read_slots.acquire().await.map_err(|_| StoreError::Unavailable("closing".into()))?;
        let pool = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = pool.lock().expect("reader pool lock").pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => {
                    let conn = open_connection(&path).map_err(sql_error)?;
                    conn.execute_batch("PRAGMA query_only = 1").map_err(sql_error)?;
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
        self.read(move |conn| Ok(read_head(conn, &key).map_err(sql_error)?.map(|(_, h)| h).unwrap_or_default()))
            .await
    }

    async fn list(&self, app: &str, owner: &str) -> Result<Vec<CollectionSummary>, StoreError> {
        let (app, owner) = (app.to_string(), owner.to_string());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT name, collection_id, last_seq FROM collections WHERE app = ?1 AND owner = ?2 ORDER BY name")
                .map_err(sql_error)?;
            let rows = stmt
                .query_map(params![app, owner], |r| {
                    Ok(CollectionSummary { name: r.get(0)?, collection_id: r.get(1)?, last_seq: r.get::<_, i64>(2)? as u64 })
                })
                .map_err(sql_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)
        })
        .await
    }

    async fn pull(&self, key: &CollectionKey, query: &PullQuery) -> Result<Result<PullPage, ResetAnswer>, StoreError> {
        let (key, query) = (key.clone(), query.clone());
        self.read(move |conn| {
            // One transaction: the head and the rows come from the same snapshot.
            let tx = conn.transaction().map_err(sql_error)?;
            let Some((cid, head)) = read_head(&tx, &key).map_err(sql_error)? else {
                let head = Head::default();
                return Ok(match check_pull(&head, query.since) {
                    Ok(()) => Ok(PullPage { answer: PullAnswer::page(None, query.since, 0, 0, query.limit, vec![]), head }),
                    Err(_) => Err(reset_answer(&head)),
                });
            };
            if check_pull(&head, query.since).is_err() {
                return Ok(Err(reset_answer(&head)));
            }
            let answer = read_page(&tx, cid, &head, &query).map_err(sql_error)?;
            Ok(Ok(PullPage { answer, head }))
        })
        .await
    }

    async fn push(&self, key: &CollectionKey, request: PushRequest, now_ms: u64) -> Result<PushOutcome, StoreError> {
        let key = key.clone();
        self.write(|reply| Job::Push { key, request, now_ms, reply }).await
    }

    async fn reset(&self, key: &CollectionKey) -> Result<Head, StoreError> {
        let key = key.clone();
        self.write(|reply| Job::Reset { key, reply }).await
    }

    async fn sweep(&self, now_ms: u64, retention_ms: u64) -> Result<SweepReport, StoreError> {
        self.write(|reply| Job::Sweep { now_ms, retention_ms, reply }).await
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

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 5000;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;",
    )?;
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

fn reset_answer(head: &Head) -> ResetAnswer {
    ResetAnswer {
        error: ErrorCode::ResetRequired,
        message: "the cursor or collection_id is no longer valid; drop it and resync from since=0".into(),
        collection_id: head.collection_id.clone(),
        horizon: head.horizon,
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

const OBJECT_COLUMNS: &str = "id, type, seq, deleted, data, hash, expires";

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
    })
}

/// Reads one page after `query.since`, stopping at `query.limit` objects or
/// [`MAX_PULL_BYTES`] of data, whichever comes first.
fn read_page(conn: &Connection, cid: i64, head: &Head, query: &PullQuery) -> rusqlite::Result<PullAnswer> {
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
    let mut fetched = Vec::new();
    let mut bytes = 0usize;
    let mut limit = query.limit;
    while let Some(row) = rows.next()? {
        let object = object_from_row(row)?;
        bytes += object.data.as_ref().map_or(0, |d| d.as_str().len());
        fetched.push(object);
        if fetched.len() > limit {
            break;
        }
        if bytes >= MAX_PULL_BYTES {
            // Keep what we have; one more row (if any) tells the client there is more.
            limit = fetched.len();
        }
    }
    Ok(PullAnswer::page(head.collection_id.clone(), query.since, head.horizon, head.last_seq, limit, fetched))
}

/// The writer thread: group commits until every sender is gone.
fn run_writer(mut conn: Connection, jobs: mpsc::Receiver<Job>, backlog: Arc<AtomicUsize>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let taken = group.len();
        let answers = commit_group(&mut conn, group);
        backlog.fetch_sub(taken, Ordering::Relaxed);
        for answer in answers {
            // A receiver that went away (client disconnected) does not undo a commit.
            match answer {
                Answer::Push(tx, r) => drop(tx.send(r)),
                Answer::Reset(tx, r) => drop(tx.send(r)),
                Answer::Sweep(tx, r) => drop(tx.send(r)),
            }
        }
    }
    // Leave a clean database behind: fold the WAL back into the main file.
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "final checkpoint failed");
    }
    tracing::info!("database closed");
}

/// Runs a group of jobs in one transaction. Each job runs in its own savepoint, so one failing
/// job does not take the others down; if the commit itself fails, every job fails.
fn commit_group(conn: &mut Connection, group: Vec<Job>) -> Vec<Answer> {
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let error = sql_error(e);
            return group.into_iter().map(|job| fail(job, error.clone())).collect();
        }
    };
    let mut answers = Vec::with_capacity(group.len());
    for job in group {
        answers.push(match job {
            Job::Push { key, request, now_ms, reply } => {
                Answer::Push(reply, in_savepoint(&tx, |sp| push_in_tx(sp, &key, &request, now_ms)))
            }
            Job::Reset { key, reply } => Answer::Reset(reply, in_savepoint(&tx, |sp| reset_in_tx(sp, &key))),
            Job::Sweep { now_ms, retention_ms, reply } => {
                Answer::Sweep(reply, in_savepoint(&tx, |sp| sweep_in_tx(sp, now_ms, retention_ms)))
            }
        });
    }
    match tx.commit() {
        Ok(()) => answers,
        Err(e) => {
            let error = sql_error(e);
            tracing::error!(?error, "group commit failed");
            answers.into_iter().map(|a| a.fail(error.clone())).collect()
        }
    }
}

fn fail(job: Job, error: StoreError) -> Answer {
    match job {
        Job::Push { reply, .. } => Answer::Push(reply, Err(error)),
        Job::Reset { reply, .. } => Answer::Reset(reply, Err(error)),
        Job::Sweep { reply, .. } => Answer::Sweep(reply, Err(error)),
    }
}

impl Answer {
    fn fail(self, error: StoreError) -> Answer {
        match self {
            Answer::Push(tx, _) => Answer::Push(tx, Err(error)),
            Answer::Reset(tx, _) => Answer::Reset(tx, Err(error)),
            Answer::Sweep(tx, _) => Answer::Sweep(tx, Err(error)),
        }
    }
}

fn in_savepoint<T>(tx: &Transaction<'_>, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
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

fn push_in_tx(conn: &Connection, key: &CollectionKey, request: &PushRequest, now_ms: u64) -> rusqlite::Result<PushOutcome> {
    let existing = read_head(conn, key)?;
    if let (Some((cid, _)), Some(push_id)) = (&existing, &request.push_id) {
        let first: Option<String> = conn
            .prepare_cached("SELECT answer FROM pushes WHERE cid = ?1 AND push_id = ?2")?
            .query_row(params![cid, push_id], |r| r.get(0))
            .optional()?;
        if let Some(first) = first {
            let mut ok: PushOk = serde_json::from_str(&first)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))?;
            ok.replayed = true;
            return Ok(PushOutcome::Committed(ok));
        }
    }
    let head = existing.as_ref().map(|(_, h)| h.clone()).unwrap_or_default();
    let mut current = Vec::with_capacity(request.objects.len());
    if let Some((cid, _)) = &existing {
        let mut stmt = conn.prepare_cached("SELECT seq, deleted FROM objects WHERE cid = ?1 AND id = ?2")?;
        for object in &request.objects {
            current.push(
                stmt.query_row(params![cid, object.id], |r| {
                    Ok(Current { seq: r.get::<_, i64>(0)? as u64, deleted: r.get(1)? })
                })
                .optional()?,
            );
        }
    } else {
        current.resize(request.objects.len(), None);
    }
    match decide_push(&head, request, &current) {
        Decision::ResetRequired => Ok(PushOutcome::Reset(reset_answer(&head))),
        Decision::Conflicts(list) => {
            let cid = existing.as_ref().map(|(cid, _)| *cid);
            let mut conflicts = Vec::with_capacity(list.len());
            for (index, reason) in list {
                let id = &request.objects[index].id;
                let server = match cid {
                    Some(cid) => conn
                        .prepare_cached(&format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE cid = ?1 AND id = ?2"))?
                        .query_row(params![cid, id], object_from_row)
                        .optional()?,
                    None => None,
                };
                conflicts.push(Conflict { id: id.clone(), reason, server });
            }
            let (changes, until, more) = match (request.since, cid) {
                (Some(since), Some(cid)) => {
                    let query = PullQuery { since, limit: CONFLICT_CHANGES_LIMIT, ..PullQuery::default() };
                    let page = read_page(conn, cid, &head, &query)?;
                    (page.objects, page.until, page.more)
                }
                _ => (Vec::new(), 0, false),
            };
            Ok(PushOutcome::Conflict(ConflictAnswer {
                error: ErrorCode::Conflict,
                message: "the batch conflicts with newer changes; nothing was applied".into(),
                collection_id: head.collection_id.clone(),
                until,
                conflicts,
                changes,
                more,
            }))
        }
        Decision::Commit { first_seq } => {
            let (cid, collection_id) = match existing {
                Some((cid, head)) => (cid, head.collection_id.expect("stored heads have an epoch")),
                None => {
                    let epoch = new_collection_id();
                    conn.prepare_cached(
                        "INSERT INTO collections (app, owner, name, collection_id, last_seq, horizon) VALUES (?1, ?2, ?3, ?4, 0, 0)",
                    )?
                    .execute(params![key.app, key.owner, key.name, epoch])?;
                    (conn.last_insert_rowid(), epoch)
                }
            };
            let mut upsert = conn.prepare_cached(
                "INSERT INTO objects (cid, id, seq, type, deleted, data, hash, expires, modified_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (cid, id) DO UPDATE SET seq = excluded.seq, type = excluded.type,
                   deleted = excluded.deleted, data = excluded.data, hash = excluded.hash,
                   expires = excluded.expires, modified_ms = excluded.modified_ms",
            )?;
            let mut seqs = Vec::with_capacity(request.objects.len());
            for (i, object) in request.objects.iter().enumerate() {
                let seq = first_seq + i as u64;
                let (deleted, data, hash, expires) = match &object.change {
                    Change::Put { data, expires } => {
                        (false, Some(data.as_str()), Some(sync_core::hash::data_hash(data.as_str())), expires.map(|e| e as i64))
                    }
                    Change::Delete => (true, None, None, None),
                };
                upsert.execute(params![cid, object.id, seq as i64, object.kind, deleted, data, hash, expires, now_ms as i64])?;
                seqs.push(seq);
            }
            let until = first_seq - 1 + request.objects.len() as u64;
            conn.prepare_cached("UPDATE collections SET last_seq = ?1 WHERE cid = ?2")?.execute(params![until as i64, cid])?;
            let ok = PushOk { collection_id, seqs, until, replayed: false };
            if let Some(push_id) = &request.push_id {
                let first = serde_json::to_string(&ok).expect("a push answer serialises");
                conn.prepare_cached("INSERT INTO pushes (cid, push_id, answer, created_ms) VALUES (?1, ?2, ?3, ?4)")?
                    .execute(params![cid, push_id, first, now_ms as i64])?;
            }
            Ok(PushOutcome::Committed(ok))
        }
    }
}

fn reset_in_tx(conn: &Connection, key: &CollectionKey) -> rusqlite::Result<Head> {
    let epoch = new_collection_id();
    match read_head(conn, key)? {
        Some((cid, head)) => {
            conn.prepare_cached("DELETE FROM objects WHERE cid = ?1")?.execute([cid])?;
            conn.prepare_cached("DELETE FROM pushes WHERE cid = ?1")?.execute([cid])?;
            // Seqs keep counting up across epochs and every old cursor falls below the horizon,
            // so no cursor of the old epoch can pass for one of the new.
            conn.prepare_cached("UPDATE collections SET collection_id = ?1, horizon = last_seq WHERE cid = ?2")?
                .execute(params![epoch, cid])?;
            Ok(Head { collection_id: Some(epoch), last_seq: head.last_seq, horizon: head.last_seq })
        }
        None => {
            conn.prepare_cached(
                "INSERT INTO collections (app, owner, name, collection_id, last_seq, horizon) VALUES (?1, ?2, ?3, ?4, 0, 0)",
            )?
            .execute(params![key.app, key.owner, key.name, epoch])?;
            Ok(Head { collection_id: Some(epoch), last_seq: 0, horizon: 0 })
        }
    }
}

/// How many expired objects one sweep turns into tombstones (the rest wait for the next).
const SWEEP_BATCH: i64 = 10_000;

fn sweep_in_tx(conn: &Connection, now_ms: u64, retention_ms: u64) -> rusqlite::Result<SweepReport> {
    let mut report = SweepReport::default();
    // 1. Expired objects become tombstones, each with a new seq so that clients hear of it.
    let expired: Vec<(i64, String)> = conn
        // `expires <= now` is `horizon::is_expired`, evaluated by the index.
        .prepare_cached("SELECT cid, id FROM objects WHERE expires IS NOT NULL AND deleted = 0 AND expires <= ?1 ORDER BY cid, seq LIMIT ?2")?
        .query_map(params![now_ms as i64, SWEEP_BATCH], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (cid, id) in &expired {
        let seq: i64 = conn
            .prepare_cached("UPDATE collections SET last_seq = last_seq + 1 WHERE cid = ?1 RETURNING last_seq")?
            .query_row([cid], |r| r.get(0))?;
        conn.prepare_cached(
            "UPDATE objects SET seq = ?1, deleted = 1, data = NULL, hash = NULL, expires = NULL, modified_ms = ?2 WHERE cid = ?3 AND id = ?4",
        )?
        .execute(params![seq, now_ms as i64, cid, id])?;
        report.expired += 1;
    }
    // 2. Tombstones past the retention window are purged; the horizon moves up to the highest
    //    purged seq of each collection.
    let cutoff = horizon::purge_before(now_ms, retention_ms) as i64;
    let purged: Vec<(i64, i64, i64)> = conn
        .prepare_cached("SELECT cid, MAX(seq), COUNT(*) FROM objects WHERE deleted = 1 AND modified_ms < ?1 GROUP BY cid")?
        .query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (cid, max_seq, count) in purged {
        let old: i64 = conn.prepare_cached("SELECT horizon FROM collections WHERE cid = ?1")?.query_row([cid], |r| r.get(0))?;
        let new = horizon::horizon_after_purge(old as u64, Some(max_seq as u64));
        conn.prepare_cached("UPDATE collections SET horizon = ?1 WHERE cid = ?2")?.execute(params![new as i64, cid])?;
        report.purged += count as u64;
    }
    conn.prepare_cached("DELETE FROM objects WHERE deleted = 1 AND modified_ms < ?1")?.execute([cutoff])?;
    // 3. Replay records live as long as tombstones do.
    conn.prepare_cached("DELETE FROM pushes WHERE created_ms < ?1")?.execute([cutoff])?;
    Ok(report)
}
