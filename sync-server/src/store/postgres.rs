//! The PostgreSQL backend: many stateless nodes on one database.
//!
//! # Concurrency
//!
//! Every push is one transaction that first locks its collection's head row
//! (`SELECT … FOR UPDATE`). Writers of one collection are therefore serialised across all
//! nodes, seqs are allocated under that lock, and a rollback leaves no gap. The collection's
//! row also holds its usage counters, so writers of different collections do not meet at all,
//! unless a quota is set: then a push also locks its owner's `quota_locks` row (always after
//! the collection's) to sum and check the owner's usage. Pulls read the head and the rows in
//! one `REPEATABLE READ` snapshot.
//!
//! # Live events across nodes
//!
//! A commit sends `pg_notify` in its own transaction, so notifications arrive in commit order,
//! and only for commits. Each node listens on one dedicated connection and publishes what it
//! hears to its local [`Hub`], reading the committed objects once per node. All publishing goes
//! through that path (a node's own commits too), so every subscriber sees one order. If the
//! listening connection drops, the node publishes [`LiveEvent::Gap`] once it listens again, and
//! every stream catches up from the database.
//!
//! # Durability
//!
//! A push is answered after `COMMIT` returns, with PostgreSQL's default
//! `synchronous_commit = on`: the WAL is flushed first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sync_core::acl::Acl;
use sync_core::commit::{check_pull, plan_push, Current, Head, Plan, Stored, Writer};
use sync_core::error::ErrorCode;
use sync_core::memory_store::PushOutcome;
use sync_core::push::{Conflict, ConflictAnswer, PushOk, ResetAnswer};
use sync_core::{blob, horizon, JsonData, Object, PullAnswer, PullQuery, PushRequest};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::{
    change_event, new_collection_id, parse_acl, reset_answer, BlobSweep, CollectionKey,
    CollectionSummary, MirrorApplied, MirrorWrite, PageBuilder, PullPage, PushContext, PushReply,
    Store, StoreError, SweepReport,
};
use crate::live::{Hub, LiveEvent};
use sync_core::quota::{self, Usage, UsageDelta};

/// Schema migrations, applied in order at start-up; the number is the schema version.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "
CREATE TABLE collections (
    cid           BIGSERIAL PRIMARY KEY,
    app           TEXT NOT NULL,
    owner         TEXT NOT NULL,
    name          TEXT NOT NULL,
    collection_id TEXT NOT NULL,
    last_seq      BIGINT NOT NULL,
    horizon       BIGINT NOT NULL,
    UNIQUE (app, owner, name)
);
CREATE TABLE objects (
    cid         BIGINT NOT NULL REFERENCES collections (cid),
    id          TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    type        TEXT NOT NULL,
    deleted     BOOLEAN NOT NULL,
    data        TEXT,
    hash        TEXT,
    expires     BIGINT,
    modified_ms BIGINT NOT NULL,
    author      TEXT,
    PRIMARY KEY (cid, id)
);
CREATE UNIQUE INDEX objects_by_seq ON objects (cid, seq);
CREATE INDEX objects_expiring ON objects (expires) WHERE expires IS NOT NULL AND NOT deleted;
CREATE INDEX tombstones_by_age ON objects (modified_ms) WHERE deleted;
CREATE INDEX tombstones_by_seq ON objects (cid, seq) WHERE deleted;
CREATE TABLE pushes (
    cid        BIGINT NOT NULL,
    push_id    TEXT NOT NULL,
    answer     TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (cid, push_id)
);
CREATE INDEX pushes_by_age ON pushes (created_ms);
CREATE TABLE acls (
    app   TEXT NOT NULL,
    owner TEXT NOT NULL,
    name  TEXT NOT NULL,
    acl   TEXT NOT NULL,
    PRIMARY KEY (app, owner, name)
);
",
    ),
    (
        2,
        "
-- Each owner's stored data (see sync_core::quota), kept in step with every commit.
CREATE TABLE usage (
    owner   TEXT PRIMARY KEY,
    bytes   BIGINT NOT NULL,
    objects BIGINT NOT NULL
);
INSERT INTO usage (owner, bytes, objects)
    SELECT c.owner, COALESCE(SUM(octet_length(o.data)), 0), COUNT(*)
    FROM objects o JOIN collections c ON c.cid = o.cid
    WHERE NOT o.deleted GROUP BY c.owner;
",
    ),
    (
        3,
        "
-- Collections copied from an upstream: the sweeper leaves them alone.
ALTER TABLE collections ADD COLUMN mirrored BOOLEAN NOT NULL DEFAULT FALSE;
-- Content-addressed blobs, per collection; `orphaned_ms`: since when no live object refers
-- to the blob (see the SQLite schema).
CREATE TABLE blobs (
    app         TEXT NOT NULL,
    owner       TEXT NOT NULL,
    name        TEXT NOT NULL,
    hash        TEXT NOT NULL,
    size        BIGINT NOT NULL,
    data        BYTEA NOT NULL,
    created_ms  BIGINT NOT NULL,
    orphaned_ms BIGINT,
    PRIMARY KEY (app, owner, name, hash)
);
CREATE INDEX blobs_by_owner ON blobs (owner);
-- Which live objects refer to which blobs, kept by every write (see the SQLite schema).
CREATE TABLE blob_refs (
    cid  BIGINT NOT NULL,
    id   TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (cid, id, hash)
);
CREATE INDEX blob_refs_by_hash ON blob_refs (hash, cid);
",
    ),
    (
        4,
        "
-- Usage is counted per collection, on the row every writer of the collection already locks,
-- so pushes into different collections of one owner no longer queue on one counter row.
-- An owner's usage is the sum over their collections.
ALTER TABLE collections
    ADD COLUMN live_bytes BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN live_objects BIGINT NOT NULL DEFAULT 0;
UPDATE collections c SET live_bytes = s.bytes, live_objects = s.objects
    FROM (SELECT cid, COALESCE(SUM(octet_length(data)), 0) AS bytes, COUNT(*) AS objects
          FROM objects WHERE NOT deleted GROUP BY cid) s
    WHERE c.cid = s.cid;
CREATE INDEX collections_by_owner ON collections (owner);
DROP TABLE usage;
-- One row per owner, locked by a push only when a quota is set, while it sums the owner's
-- usage and checks it: the check is serialised per owner, and pushes without a quota skip it.
CREATE TABLE quota_locks (owner TEXT PRIMARY KEY);
",
    ),
];

/// Serialises migrations (and sweeps) across nodes; any constant unique to Tidemark.
const MIGRATION_LOCK: i64 = 0x7469_6465_6d61_7201;
const SWEEP_LOCK: i64 = 0x7469_6465_6d61_7202;
/// How long start-up waits for the notification listener's first `LISTEN` (a connection
/// that cannot be made fails sooner, by its own connect timeout).
const FIRST_LISTEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Notifications waiting for the listener before it declares a gap.
const NOTIFY_QUEUE: usize = 10_000;
/// How many expired objects one sweep turns into tombstones.
const SWEEP_BATCH: i64 = 10_000;

const OBJECT_COLUMNS: &str = "id, type, seq, deleted, data, hash, expires, author";

/// The objects of collection `$1` whose ids are in the array `$2`, for a `FROM` clause.
///
/// A join with the unnested ids, not `id = ANY($2)`: given a batch's thousand ids, the planner
/// can prefer scanning every row of the collection and filtering (300 ms at 278,000 rows,
/// growing with the collection) to a thousand primary-key probes (3 ms).
const OBJECTS_BY_ID: &str =
    "objects JOIN UNNEST($2::text[]) AS wanted (wanted_id) ON cid = $1 AND id = wanted_id";

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    /// Requests waiting for or holding a connection; a hint for `Backoff`.
    waiting: AtomicUsize,
    listener: Mutex<Option<JoinHandle<()>>>,
}

/// What a commit tells the other nodes.
#[derive(Debug, Serialize, Deserialize)]
struct Notice {
    app: String,
    owner: String,
    name: String,
    #[serde(flatten)]
    what: Announced,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Announced {
    /// Seqs `from+1 ..= to` were committed.
    Range {
        from: u64,
        to: u64,
    },
    Reset {
        collection_id: String,
        horizon: u64,
    },
    Acl,
}

impl PostgresStore {
    /// Connects to `url`, uses (creating if needed) `schema`, migrates it, and starts listening
    /// for other nodes' commits.
    pub async fn open(
        url: &str,
        schema: &str,
        pool_size: usize,
        hub: Arc<Hub>,
    ) -> Result<PostgresStore, StoreError> {
        // PostgreSQL identifiers stop at 63 bytes, and the notification channel is
        // `tidemark_presence_<schema>` at its longest.
        if schema.is_empty()
            || schema.len() > 40
            || !schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(StoreError::Internal(format!(
                "schema name {schema:?} must match [a-z0-9_]{{1,40}}"
            )));
        }
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Internal(format!("--database: {e}")))?;
        config.options(format!("-c search_path={schema}"));
        config.connect_timeout(Duration::from_secs(5));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Internal(format!("building the pool: {e}")))?;
        migrate(&pool, schema).await?;
        let channel = format!("tidemark_{schema}");
        // Serve only once this node listens: a commit made before then would never be
        // announced to the streams that subscribed in the meantime.
        let (listening, first_listen) = oneshot::channel();
        let listener = tokio::spawn(listen(config, channel, pool.clone(), hub, listening));
        let started = tokio::time::timeout(FIRST_LISTEN_TIMEOUT, first_listen).await;
        if let Err(why) = started
            .map_err(|_| "timed out".to_string())
            .and_then(|r| r.map_err(|_| "the listener ended".to_string()))
            .and_then(|r| r)
        {
            listener.abort();
            return Err(StoreError::Internal(format!(
                "listening for notifications: {why}"
            )));
        }
        Ok(PostgresStore {
            pool,
            waiting: AtomicUsize::new(0),
            listener: Mutex::new(Some(listener)),
        })
    }

    async fn client(&self) -> Result<Client<'_>, StoreError> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let guard = Waiting(&self.waiting);
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("database pool: {e}")))?;
        Ok(Client {
            client,
            _guard: guard,
        })
    }
}

/// A pooled connection, counted in `waiting` while held.
struct Client<'a> {
    client: deadpool_postgres::Object,
    _guard: Waiting<'a>,
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn pg_error(e: tokio_postgres::Error) -> StoreError {
    // tokio-postgres's Display says only "db error"; the log needs the code and message.
    let detail = match e.as_db_error() {
        Some(db) => format!("postgres {}: {}", db.code().code(), db.message()),
        None => format!("postgres: {e}"),
    };
    match e.as_db_error().map(|d| d.code().code()) {
        Some("53100") => StoreError::Full,
        // Serialisation failure, deadlock, shutdown, too many connections: try again later.
        Some("40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300") => {
            StoreError::Unavailable(detail)
        }
        Some(_) => StoreError::Internal(detail),
        // No server error: the connection broke or could not be made.
        None => StoreError::Unavailable(detail),
    }
}

async fn migrate(pool: &Pool, schema: &str) -> Result<(), StoreError> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| StoreError::Unavailable(format!("database pool: {e}")))?;
    let tx = client.transaction().await.map_err(pg_error)?;
    // One node migrates at a time; the others wait here, then find nothing left to do. The
    // schema is created under the lock too: two nodes creating it at once would collide.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error)?;
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .await
        .map_err(pg_error)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS tidemark_schema (version INT NOT NULL)")
        .await
        .map_err(pg_error)?;
    let version: i32 = tx
        .query_opt("SELECT version FROM tidemark_schema", &[])
        .await
        .map_err(pg_error)?
        .map_or(0, |r| r.get(0));
    for (number, sql) in MIGRATIONS.iter().filter(|(n, _)| *n > version) {
        tracing::info!(schema, version = number, "migrating");
        tx.batch_execute(sql).await.map_err(pg_error)?;
        if *number == 3 {
            // Objects written before blobs existed may name some already.
            let rows = tx
                .query(
                    "SELECT cid, id, data FROM objects
                     WHERE NOT deleted AND (strpos(data, 'blobs') > 0 OR strpos(data, '\\u') > 0)",
                    &[],
                )
                .await
                .map_err(pg_error)?;
            for row in rows {
                let data = JsonData::from_trusted(row.get(2));
                let names = blob::refs(&data);
                let (cid, id): (i64, String) = (row.get(0), row.get(1));
                tx.execute(
                    "INSERT INTO blob_refs (cid, id, hash) SELECT $1, $2, UNNEST($3::text[])",
                    &[&cid, &id, &names],
                )
                .await
                .map_err(pg_error)?;
            }
        }
        tx.execute("DELETE FROM tidemark_schema", &[])
            .await
            .map_err(pg_error)?;
        tx.execute(
            "INSERT INTO tidemark_schema (version) VALUES ($1)",
            &[number],
        )
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)
}

fn object_from_row(row: &Row) -> Object {
    Object {
        id: row.get(0),
        kind: row.get(1),
        seq: row.get::<_, i64>(2) as u64,
        deleted: row.get(3),
        // The text was validated before it was stored.
        data: row.get::<_, Option<String>>(4).map(JsonData::from_trusted),
        hash: row.get(5),
        expires: row.get::<_, Option<i64>>(6).map(|e| e as u64),
        author: row.get(7),
    }
}

fn head_from_row(row: &Row) -> (i64, Head) {
    (
        row.get(0),
        Head {
            collection_id: Some(row.get(1)),
            last_seq: row.get::<_, i64>(2) as u64,
            horizon: row.get::<_, i64>(3) as u64,
        },
    )
}

const HEAD_QUERY: &str =
    "SELECT cid, collection_id, last_seq, horizon FROM collections WHERE app = $1 AND owner = $2 AND name = $3";

async fn read_page(
    tx: &impl deadpool_postgres::GenericClient,
    cid: i64,
    head: &Head,
    query: &PullQuery,
) -> Result<PullAnswer, tokio_postgres::Error> {
    let filter = if !query.types.is_empty() {
        "AND type = ANY($3)"
    } else if !query.exclude.is_empty() {
        "AND NOT (type = ANY($3))"
    } else {
        "AND $3::text[] IS NOT NULL"
    };
    let names: &Vec<String> = if query.types.is_empty() {
        &query.exclude
    } else {
        &query.types
    };
    let sql = format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE cid = $1 AND seq > $2 {filter} ORDER BY seq LIMIT $4");
    let rows = tx
        .query(
            &sql,
            &[
                &cid,
                &(query.since as i64),
                names,
                &((query.limit + 1) as i64),
            ],
        )
        .await?;
    let mut page = PageBuilder::new(query.limit);
    for row in &rows {
        if !page.push(object_from_row(row)) {
            break;
        }
    }
    Ok(page.finish(head, query.since))
}

fn notify_sql() -> &'static str {
    "SELECT pg_notify('tidemark_' || current_schema(), $1)"
}

fn notice(key: &CollectionKey, what: Announced) -> String {
    let notice = Notice {
        app: key.app.clone(),
        owner: key.owner.clone(),
        name: key.name.clone(),
        what,
    };
    serde_json::to_string(&notice).expect("a notice serialises")
}

#[async_trait]
impl Store for PostgresStore {
    async fn head(&self, key: &CollectionKey) -> Result<Head, StoreError> {
        let client = self.client().await?;
        let row = client
            .client
            .query_opt(HEAD_QUERY, &[&key.app, &key.owner, &key.name])
            .await
            .map_err(pg_error)?;
        Ok(row.map(|r| head_from_row(&r).1).unwrap_or_default())
    }

    async fn list(&self, app: &str, owner: &str) -> Result<Vec<CollectionSummary>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .client
            .query(
                "SELECT c.name, c.collection_id, c.last_seq, a.acl FROM collections c
                 LEFT JOIN acls a ON a.app = c.app AND a.owner = c.owner AND a.name = c.name
                 WHERE c.app = $1 AND c.owner = $2 ORDER BY c.name",
                &[&app, &owner],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|r| {
                let acl = r
                    .get::<_, Option<String>>(3)
                    .as_deref()
                    .map(parse_acl)
                    .transpose()?;
                Ok(CollectionSummary {
                    name: r.get(0),
                    collection_id: r.get(1),
                    last_seq: r.get::<_, i64>(2) as u64,
                    acl,
                })
            })
            .collect()
    }

    async fn pull(
        &self,
        key: &CollectionKey,
        query: &PullQuery,
    ) -> Result<Result<PullPage, ResetAnswer>, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_error)?;
        let Some(row) = tx
            .query_opt(HEAD_QUERY, &[&key.app, &key.owner, &key.name])
            .await
            .map_err(pg_error)?
        else {
            let head = Head::default();
            return Ok(match check_pull(&head, query.since, query.horizon) {
                Ok(()) => Ok(PullPage {
                    answer: PullAnswer::page(None, query.since, 0, 0, query.limit, vec![]),
                    head,
                }),
                Err(_) => Err(reset_answer(&head)),
            });
        };
        let (cid, head) = head_from_row(&row);
        if check_pull(&head, query.since, query.horizon).is_err() {
            return Ok(Err(reset_answer(&head)));
        }
        let answer = read_page(&tx, cid, &head, query).await.map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Ok(PullPage { answer, head }))
    }

    async fn push(
        &self,
        key: &CollectionKey,
        request: PushRequest,
        context: PushContext,
        now_ms: u64,
    ) -> Result<PushReply, StoreError> {
        let mut client = self.client().await?;
        // Twice at most: the second time only if another node created the collection between
        // our read and our insert.
        for _ in 0..2 {
            let tx = client.client.transaction().await.map_err(pg_error)?;
            let existing = tx
                .query_opt(
                    &format!("{HEAD_QUERY} FOR UPDATE"),
                    &[&key.app, &key.owner, &key.name],
                )
                .await
                .map_err(pg_error)?
                .map(|r| head_from_row(&r));
            if let (Some((cid, _)), Some(push_id)) = (&existing, &request.push_id) {
                let first = tx
                    .query_opt(
                        "SELECT answer FROM pushes WHERE cid = $1 AND push_id = $2",
                        &[cid, push_id],
                    )
                    .await
                    .map_err(pg_error)?;
                if let Some(first) = first {
                    let mut ok: PushOk = serde_json::from_str(first.get(0))
                        .map_err(|e| StoreError::Internal(format!("a stored push answer: {e}")))?;
                    ok.replayed = true;
                    return Ok(PushReply::Outcome(PushOutcome::Committed(ok)));
                }
            }
            let head = existing
                .as_ref()
                .map(|(_, h)| h.clone())
                .unwrap_or_default();
            let ids: Vec<&str> = request.objects.iter().map(|o| o.id.as_str()).collect();
            let mut by_id: HashMap<String, (Stored, UsageDelta)> = HashMap::new();
            if let Some((cid, _)) = &existing {
                let rows = tx
                    .query(
                        &format!(
                            "SELECT id, seq, deleted, author, {DATA_BYTES} FROM {OBJECTS_BY_ID}"
                        ),
                        &[cid, &ids],
                    )
                    .await
                    .map_err(pg_error)?;
                for r in rows {
                    let current = Current {
                        seq: r.get::<_, i64>(1) as u64,
                        deleted: r.get(2),
                    };
                    let cost = quota::cost(current.deleted, r.get::<_, i32>(4) as u64);
                    by_id.insert(
                        r.get(0),
                        (
                            Stored {
                                current,
                                author: r.get(3),
                            },
                            cost,
                        ),
                    );
                }
            }
            // What each object of the batch replaces, and what that costs the owner's quota.
            let (stored, costs): (Vec<Option<Stored>>, Vec<UsageDelta>) = ids
                .iter()
                .map(|id| match by_id.remove(*id) {
                    Some((stored, cost)) => (Some(stored), cost),
                    None => (None, UsageDelta::default()),
                })
                .unzip();
            let writer = Writer {
                user: &context.user,
                creator_only: context.creator_only,
            };
            let rows = match plan_push(&head, &request, &stored, writer) {
                Plan::NotAuthor(indexes) => return Ok(PushReply::NotAuthor(indexes)),
                Plan::ResetRequired => {
                    return Ok(PushReply::Outcome(PushOutcome::Reset(reset_answer(&head))))
                }
                Plan::Conflicts(list) => {
                    let cid = existing.as_ref().map(|(cid, _)| *cid);
                    let conflicting: Vec<&str> = list
                        .iter()
                        .map(|(i, _)| request.objects[*i].id.as_str())
                        .collect();
                    let mut servers: HashMap<String, Object> = HashMap::new();
                    let (mut changes, mut until, mut more) = (Vec::new(), 0, false);
                    if let Some(cid) = cid {
                        let sql = format!("SELECT {OBJECT_COLUMNS} FROM {OBJECTS_BY_ID}");
                        for row in tx
                            .query(&sql, &[&cid, &conflicting])
                            .await
                            .map_err(pg_error)?
                        {
                            let object = object_from_row(&row);
                            servers.insert(object.id.clone(), object);
                        }
                        if let Some(since) = request.since {
                            let query = PullQuery {
                                since,
                                limit: context.changes_limit,
                                ..PullQuery::default()
                            };
                            let page =
                                read_page(&tx, cid, &head, &query).await.map_err(pg_error)?;
                            (changes, until, more) = (page.objects, page.until, page.more);
                        }
                    }
                    let conflicts = list
                        .into_iter()
                        .map(|(index, reason)| {
                            let id = request.objects[index].id.clone();
                            Conflict {
                                server: servers.get(&id).cloned(),
                                id,
                                reason,
                            }
                        })
                        .collect();
                    return Ok(PushReply::Outcome(PushOutcome::Conflict(ConflictAnswer {
                        error: ErrorCode::Conflict,
                        message: "the batch conflicts with newer changes; nothing was applied"
                            .into(),
                        collection_id: head.collection_id.clone(),
                        until,
                        conflicts,
                        changes,
                        more,
                    })));
                }
                Plan::Commit(rows) => rows,
            };
            let delta = quota::delta(&rows, &costs);
            if !context.quota.is_unlimited() {
                // The owner's quota lock is taken after the collection's row (as every writer
                // does, so no two transactions wait on each other); it serialises the check
                // between collections of one owner. Each statement of this READ COMMITTED
                // transaction reads afresh, so the sum sees every push that held the lock.
                let mut usage = lock_owner_usage(&tx, &key.owner).await.map_err(pg_error)?;
                // Blobs count toward the byte quota too; summed only when there is one.
                if context.quota.max_bytes.is_some() {
                    let blobs = owner_blob_bytes(&tx, &key.owner).await.map_err(pg_error)?;
                    usage.bytes = usage.bytes.saturating_add(blobs);
                }
                if let Err(exceeded) = context.quota.check(usage, delta) {
                    return Ok(PushReply::OverQuota {
                        exceeded,
                        usage,
                        quota: context.quota,
                    });
                }
            }
            let (cid, collection_id) = match existing {
                Some((cid, head)) => (cid, head.collection_id.expect("stored heads have an epoch")),
                None => {
                    let epoch = new_collection_id();
                    let created = tx
                        .query_opt(
                            "INSERT INTO collections (app, owner, name, collection_id, last_seq, horizon)
                             VALUES ($1, $2, $3, $4, 0, 0) ON CONFLICT (app, owner, name) DO NOTHING RETURNING cid",
                            &[&key.app, &key.owner, &key.name, &epoch],
                        )
                        .await
                        .map_err(pg_error)?;
                    match created {
                        Some(row) => (row.get(0), epoch),
                        None => continue, // created meanwhile by another node: start over
                    }
                }
            };
            write_rows(&tx, cid, &rows, now_ms)
                .await
                .map_err(pg_error)?;
            let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
            let until = seqs.last().copied().unwrap_or(head.last_seq);
            tx.execute(
                &format!("UPDATE collections SET {ADD_USAGE}, last_seq = $3 WHERE cid = $4"),
                &[&delta.bytes, &delta.objects, &(until as i64), &cid],
            )
            .await
            .map_err(pg_error)?;
            let ok = PushOk {
                collection_id,
                seqs,
                until,
                replayed: false,
            };
            if let Some(push_id) = &request.push_id {
                let first = serde_json::to_string(&ok).expect("a push answer serialises");
                tx.execute(
                    "INSERT INTO pushes (cid, push_id, answer, created_ms) VALUES ($1, $2, $3, $4)",
                    &[&cid, push_id, &first, &(now_ms as i64)],
                )
                .await
                .map_err(pg_error)?;
            }
            if !rows.is_empty() {
                let what = Announced::Range {
                    from: head.last_seq,
                    to: until,
                };
                tx.execute(notify_sql(), &[&notice(key, what)])
                    .await
                    .map_err(pg_error)?;
            }
            tx.commit().await.map_err(pg_error)?;
            return Ok(PushReply::Outcome(PushOutcome::Committed(ok)));
        }
        Err(StoreError::Unavailable(
            "the collection was being created concurrently; retry".into(),
        ))
    }

    async fn reset(&self, key: &CollectionKey) -> Result<Head, StoreError> {
        let mut client = self.client().await?;
        let tx = client.client.transaction().await.map_err(pg_error)?;
        let epoch = new_collection_id();
        // Create the row if it is missing, then lock it, in either case.
        tx.execute(
            "INSERT INTO collections (app, owner, name, collection_id, last_seq, horizon)
             VALUES ($1, $2, $3, $4, 0, 0) ON CONFLICT (app, owner, name) DO NOTHING",
            &[&key.app, &key.owner, &key.name, &epoch],
        )
        .await
        .map_err(pg_error)?;
        let row = tx
            .query_one(
                &format!("{HEAD_QUERY} FOR UPDATE"),
                &[&key.app, &key.owner, &key.name],
            )
            .await
            .map_err(pg_error)?;
        let (cid, head) = head_from_row(&row);
        empty_collection(&tx, cid).await.map_err(pg_error)?;
        tx.execute("DELETE FROM pushes WHERE cid = $1", &[&cid])
            .await
            .map_err(pg_error)?;
        // Seqs keep counting up across epochs and every old cursor falls below the horizon.
        tx.execute(
            "UPDATE collections SET collection_id = $1, horizon = last_seq WHERE cid = $2",
            &[&epoch, &cid],
        )
        .await
        .map_err(pg_error)?;
        let what = Announced::Reset {
            collection_id: epoch.clone(),
            horizon: head.last_seq,
        };
        tx.execute(notify_sql(), &[&notice(key, what)])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Head {
            collection_id: Some(epoch),
            last_seq: head.last_seq,
            horizon: head.last_seq,
        })
    }

    async fn sweep(&self, now_ms: u64, retention_ms: u64) -> Result<SweepReport, StoreError> {
        let mut client = self.client().await?;
        let tx = client.client.transaction().await.map_err(pg_error)?;
        let mut report = SweepReport::default();
        // One node sweeps at a time; the others skip this round.
        let got: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SWEEP_LOCK])
            .await
            .map_err(pg_error)?
            .get(0);
        if !got {
            return Ok(report);
        }
        // 1. Expired objects become tombstones with a new seq. Each is re-checked under its
        //    collection's lock: a push may have replaced it since the first read.
        let expired = tx
            .query(
                "SELECT cid, id FROM objects WHERE expires IS NOT NULL AND NOT deleted AND expires <= $1
                 AND cid NOT IN (SELECT cid FROM collections WHERE mirrored)
                 ORDER BY cid, seq LIMIT $2",
                &[&(now_ms as i64), &SWEEP_BATCH],
            )
            .await
            .map_err(pg_error)?;
        for row in expired {
            let (cid, id): (i64, String) = (row.get(0), row.get(1));
            let head = tx
                .query_one(
                    "SELECT app, owner, name, last_seq FROM collections WHERE cid = $1 FOR UPDATE",
                    &[&cid],
                )
                .await
                .map_err(pg_error)?;
            let seq = head.get::<_, i64>(3) + 1;
            let changed = tx
                .query_opt(
                    &format!("WITH old AS (SELECT {DATA_BYTES} AS bytes FROM objects WHERE cid = $3 AND id = $4)
                     UPDATE objects SET seq = $1, deleted = TRUE, data = NULL, hash = NULL, expires = NULL, modified_ms = $2
                     WHERE cid = $3 AND id = $4 AND NOT deleted AND expires <= $2 RETURNING (SELECT bytes FROM old)"),
                    &[&seq, &(now_ms as i64), &cid, &id],
                )
                .await
                .map_err(pg_error)?;
            let Some(changed) = changed else {
                continue;
            };
            let freed = UsageDelta {
                bytes: -i64::from(changed.get::<_, i32>(0)),
                objects: -1,
            };
            tx.execute(
                "DELETE FROM blob_refs WHERE cid = $1 AND id = $2",
                &[&cid, &id],
            )
            .await
            .map_err(pg_error)?;
            tx.execute(
                &format!("UPDATE collections SET {ADD_USAGE}, last_seq = $3 WHERE cid = $4"),
                &[&freed.bytes, &freed.objects, &seq, &cid],
            )
            .await
            .map_err(pg_error)?;
            let key = CollectionKey {
                app: head.get(0),
                owner: head.get(1),
                name: head.get(2),
            };
            let what = Announced::Range {
                from: seq as u64 - 1,
                to: seq as u64,
            };
            tx.execute(notify_sql(), &[&notice(&key, what)])
                .await
                .map_err(pg_error)?;
            report.expired += 1;
        }
        // 2. Purge every tombstone up to the highest one past the retention window, per
        //    collection, and move the horizon there (see `sync_core::horizon`).
        let cutoff = horizon::purge_before(now_ms, retention_ms) as i64;
        let purgeable = tx
            .query(
                "SELECT cid, MAX(seq) FROM objects WHERE deleted AND modified_ms < $1
                 AND cid NOT IN (SELECT cid FROM collections WHERE mirrored) GROUP BY cid",
                &[&cutoff],
            )
            .await
            .map_err(pg_error)?;
        for row in purgeable {
            let (cid, up_to): (i64, i64) = (row.get(0), row.get(1));
            let old: i64 = tx
                .query_one(
                    "SELECT horizon FROM collections WHERE cid = $1 FOR UPDATE",
                    &[&cid],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            let purged = tx
                .execute(
                    "DELETE FROM objects WHERE cid = $1 AND deleted AND seq <= $2",
                    &[&cid, &up_to],
                )
                .await
                .map_err(pg_error)?;
            let new = horizon::horizon_after_purge(old as u64, Some(up_to as u64)) as i64;
            tx.execute(
                "UPDATE collections SET horizon = $1 WHERE cid = $2",
                &[&new, &cid],
            )
            .await
            .map_err(pg_error)?;
            report.purged += purged;
        }
        // 3. Replay records live as long as tombstones do.
        tx.execute("DELETE FROM pushes WHERE created_ms < $1", &[&cutoff])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(report)
    }

    async fn object(&self, key: &CollectionKey, id: &str) -> Result<Option<Object>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE id = $4 AND cid =
             (SELECT cid FROM collections WHERE app = $1 AND owner = $2 AND name = $3)"
        );
        let row = client
            .client
            .query_opt(&sql, &[&key.app, &key.owner, &key.name, &id])
            .await
            .map_err(pg_error)?;
        Ok(row.as_ref().map(object_from_row))
    }

    async fn usage(&self, owner: &str) -> Result<Usage, StoreError> {
        let client = self.client().await?;
        owner_usage(&**client.client, owner).await.map_err(pg_error)
    }

    async fn acl(&self, key: &CollectionKey) -> Result<Option<Acl>, StoreError> {
        let client = self.client().await?;
        let row = client
            .client
            .query_opt(
                "SELECT acl FROM acls WHERE app = $1 AND owner = $2 AND name = $3",
                &[&key.app, &key.owner, &key.name],
            )
            .await
            .map_err(pg_error)?;
        row.map(|r| parse_acl(r.get(0))).transpose()
    }

    async fn set_acl(&self, key: &CollectionKey, acl: Acl) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.client.transaction().await.map_err(pg_error)?;
        let text = serde_json::to_string(&acl).expect("an ACL serialises");
        tx.execute(
            "INSERT INTO acls (app, owner, name, acl) VALUES ($1, $2, $3, $4)
             ON CONFLICT (app, owner, name) DO UPDATE SET acl = excluded.acl",
            &[&key.app, &key.owner, &key.name, &text],
        )
        .await
        .map_err(pg_error)?;
        tx.execute(notify_sql(), &[&notice(key, Announced::Acl)])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    async fn put_blob(
        &self,
        key: &CollectionKey,
        name: &str,
        bytes: Vec<u8>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let added = client
            .client
            .execute(
                "INSERT INTO blobs (app, owner, name, hash, size, data, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[
                    &key.app,
                    &key.owner,
                    &key.name,
                    &name,
                    &(bytes.len() as i64),
                    &bytes,
                    &(now_ms as i64),
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(added > 0)
    }

    async fn blob_size(&self, key: &CollectionKey, name: &str) -> Result<Option<u64>, StoreError> {
        let client = self.client().await?;
        let row = client
            .client
            .query_opt(
                "SELECT size FROM blobs WHERE app = $1 AND owner = $2 AND name = $3 AND hash = $4",
                &[&key.app, &key.owner, &key.name, &name],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u64))
    }

    async fn read_blob(
        &self,
        key: &CollectionKey,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        // substring() on bytea counts bytes, from 1.
        let row = client
            .client
            .query_opt(
                "SELECT substring(data FROM $5::int8::int4 FOR $6::int8::int4) FROM blobs
                 WHERE app = $1 AND owner = $2 AND name = $3 AND hash = $4",
                &[
                    &key.app,
                    &key.owner,
                    &key.name,
                    &name,
                    &(offset as i64 + 1),
                    &(len.min(i32::MAX as u64) as i64),
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn blob_bytes(&self, owner: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        owner_blob_bytes(&client.client, owner)
            .await
            .map_err(pg_error)
    }

    async fn sweep_blobs(&self, now_ms: u64, retention_ms: u64) -> Result<BlobSweep, StoreError> {
        let mut client = self.client().await?;
        let tx = client.client.transaction().await.map_err(pg_error)?;
        let got: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SWEEP_LOCK])
            .await
            .map_err(pg_error)?
            .get(0);
        if !got {
            return Ok(BlobSweep::default());
        }
        let orphaned = tx
            .execute(
                &format!("UPDATE blobs b SET orphaned_ms = $1 WHERE orphaned_ms IS NULL AND NOT {BLOB_IS_REFERENCED}"),
                &[&(now_ms as i64)],
            )
            .await
            .map_err(pg_error)?;
        tx.execute(
            &format!("UPDATE blobs b SET orphaned_ms = NULL WHERE orphaned_ms IS NOT NULL AND {BLOB_IS_REFERENCED}"),
            &[],
        )
        .await
        .map_err(pg_error)?;
        let cutoff = horizon::purge_before(now_ms, retention_ms) as i64;
        let collected = tx
            .execute(
                "DELETE FROM blobs WHERE orphaned_ms IS NOT NULL AND orphaned_ms < $1",
                &[&cutoff],
            )
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(BlobSweep {
            orphaned,
            collected,
        })
    }

    async fn apply_mirrored(
        &self,
        key: &CollectionKey,
        write: MirrorWrite,
        now_ms: u64,
    ) -> Result<MirrorApplied, StoreError> {
        let mut client = self.client().await?;
        let tx = client.client.transaction().await.map_err(pg_error)?;
        let existing = tx
            .query_opt(
                &format!("{HEAD_QUERY} FOR UPDATE"),
                &[&key.app, &key.owner, &key.name],
            )
            .await
            .map_err(pg_error)?
            .map(|r| head_from_row(&r));
        let local = existing
            .as_ref()
            .map(|(_, h)| h.clone())
            .unwrap_or_default();
        let (head, what) = match write {
            MirrorWrite::Append(page) => {
                let Some((cid, _)) = existing else {
                    return Ok(MirrorApplied::Stale(local));
                };
                if local.collection_id != page.collection_id || local.last_seq != page.since {
                    return Ok(MirrorApplied::Stale(local));
                }
                // The owner's usage follows the copy like any commit (no quota is enforced:
                // the upstream already accepted these writes).
                let ids: Vec<&str> = page.objects.iter().map(|o| o.id.as_str()).collect();
                let mut old: HashMap<String, UsageDelta> = HashMap::new();
                for r in tx
                    .query(
                        &format!("SELECT id, deleted, {DATA_BYTES} FROM {OBJECTS_BY_ID}"),
                        &[&cid, &ids],
                    )
                    .await
                    .map_err(pg_error)?
                {
                    old.insert(r.get(0), quota::cost(r.get(1), r.get::<_, i32>(2) as u64));
                }
                let before: Vec<UsageDelta> = ids
                    .iter()
                    .map(|id| old.get(*id).copied().unwrap_or_default())
                    .collect();
                add_usage(&tx, cid, quota::delta(&page.objects, &before))
                    .await
                    .map_err(pg_error)?;
                write_rows(&tx, cid, &page.objects, now_ms)
                    .await
                    .map_err(pg_error)?;
                let head = Head {
                    collection_id: local.collection_id.clone(),
                    last_seq: local.last_seq.max(page.until),
                    horizon: local.horizon.max(page.horizon),
                };
                tx.execute(
                    "UPDATE collections SET last_seq = $1, horizon = $2, mirrored = TRUE WHERE cid = $3",
                    &[&(head.last_seq as i64), &(head.horizon as i64), &cid],
                )
                .await
                .map_err(pg_error)?;
                let what = (!page.objects.is_empty()).then_some(Announced::Range {
                    from: local.last_seq,
                    to: head.last_seq,
                });
                (head, what)
            }
            MirrorWrite::Replace(page) => {
                let epoch = page
                    .collection_id
                    .clone()
                    .expect("a mirror replaces its copy only with an epoch");
                let cid: i64 = match &existing {
                    Some((cid, _)) => {
                        empty_collection(&tx, *cid)
                            .await
                            .map_err(pg_error)?;
                        tx.execute(
                            "UPDATE collections SET collection_id = $1, last_seq = $2, horizon = $3, mirrored = TRUE
                             WHERE cid = $4",
                            &[&epoch, &(page.until as i64), &(page.horizon as i64), cid],
                        )
                        .await
                        .map_err(pg_error)?;
                        *cid
                    }
                    None => tx
                        .query_one(
                            "INSERT INTO collections (app, owner, name, collection_id, last_seq, horizon, mirrored)
                             VALUES ($1, $2, $3, $4, $5, $6, TRUE) RETURNING cid",
                            &[&key.app, &key.owner, &key.name, &epoch, &(page.until as i64), &(page.horizon as i64)],
                        )
                        .await
                        .map_err(pg_error)?
                        .get(0),
                };
                let nothing_before = vec![UsageDelta::default(); page.objects.len()];
                add_usage(&tx, cid, quota::delta(&page.objects, &nothing_before))
                    .await
                    .map_err(pg_error)?;
                write_rows(&tx, cid, &page.objects, now_ms)
                    .await
                    .map_err(pg_error)?;
                let head = Head {
                    collection_id: Some(epoch.clone()),
                    last_seq: page.until,
                    horizon: page.horizon,
                };
                let what = if local.collection_id.as_deref() == Some(epoch.as_str()) {
                    // The same epoch, repaired: streams hear of what is newer than they had.
                    (head.last_seq > local.last_seq).then_some(Announced::Range {
                        from: local.last_seq,
                        to: head.last_seq,
                    })
                } else {
                    Some(Announced::Reset {
                        collection_id: epoch,
                        horizon: page.horizon,
                    })
                };
                (head, what)
            }
        };
        if let Some(what) = what {
            tx.execute(notify_sql(), &[&notice(key, what)])
                .await
                .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(MirrorApplied::Written(head))
    }

    fn backlog(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .client
            .simple_query("SELECT 1")
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    fn pool_usage(&self) -> Option<(usize, usize)> {
        let status = self.pool.status();
        Some((status.size, status.available))
    }

    async fn close(&self) {
        if let Some(listener) = self.listener.lock().expect("listener lock").take() {
            listener.abort();
        }
        self.pool.close();
    }
}

/// The size of a row's `data` in bytes, as `sync_core::quota::cost` counts it.
const DATA_BYTES: &str = "COALESCE(octet_length(data), 0)";

/// The SQL that adds a usage delta (`$1` bytes, `$2` objects) to a collection's counters, never
/// below zero; for the `SET` list of an `UPDATE collections`, whose other parameters follow.
const ADD_USAGE: &str = "live_bytes = GREATEST(live_bytes + $1::int8, 0), \
    live_objects = GREATEST(live_objects + $2::int8, 0)";

/// Locks `owner`'s quota row until the transaction ends (creating it if missing), then sums
/// their usage over their collections.
async fn lock_owner_usage(
    tx: &tokio_postgres::Transaction<'_>,
    owner: &str,
) -> Result<Usage, tokio_postgres::Error> {
    // The no-op update on conflict locks an existing row.
    tx.execute(
        "INSERT INTO quota_locks (owner) VALUES ($1)
         ON CONFLICT (owner) DO UPDATE SET owner = excluded.owner",
        &[&owner],
    )
    .await?;
    owner_usage(tx, owner).await
}

/// `owner`'s usage: the sum of their collections' counters.
async fn owner_usage(
    client: &impl tokio_postgres::GenericClient,
    owner: &str,
) -> Result<Usage, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT COALESCE(SUM(live_bytes), 0)::int8, COALESCE(SUM(live_objects), 0)::int8
             FROM collections WHERE owner = $1",
            &[&owner],
        )
        .await?;
    Ok(Usage {
        bytes: row.get::<_, i64>(0) as u64,
        objects: row.get::<_, i64>(1) as u64,
    })
}

/// The bytes of an owner's blobs (they count toward the byte quota).
async fn owner_blob_bytes(
    client: &impl deadpool_postgres::GenericClient,
    owner: &str,
) -> Result<u64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT COALESCE(SUM(size), 0)::int8 FROM blobs WHERE owner = $1",
            &[&owner],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Empties collection `cid` (its objects, their blob references and its usage). The
/// collection's row, epoch and push records are the caller's.
async fn empty_collection(
    tx: &tokio_postgres::Transaction<'_>,
    cid: i64,
) -> Result<(), tokio_postgres::Error> {
    tx.execute("DELETE FROM objects WHERE cid = $1", &[&cid])
        .await?;
    tx.execute("DELETE FROM blob_refs WHERE cid = $1", &[&cid])
        .await?;
    tx.execute(
        "UPDATE collections SET live_bytes = 0, live_objects = 0 WHERE cid = $1",
        &[&cid],
    )
    .await?;
    Ok(())
}

/// Adds `delta` to collection `cid`'s usage counters (in the caller's transaction, which
/// holds the collection's row).
async fn add_usage(
    tx: &tokio_postgres::Transaction<'_>,
    cid: i64,
    delta: UsageDelta,
) -> Result<(), tokio_postgres::Error> {
    if delta == UsageDelta::default() {
        return Ok(());
    }
    tx.execute(
        &format!("UPDATE collections SET {ADD_USAGE} WHERE cid = $3"),
        &[&delta.bytes, &delta.objects, &cid],
    )
    .await
    .map(|_| ())
}

/// Whether a live object of the blob `b`'s collection refers to it (`blob_refs`, kept by
/// [`write_rows`] from `sync_core::blob::refs`).
const BLOB_IS_REFERENCED: &str = "EXISTS (
    SELECT 1 FROM blob_refs r JOIN collections c ON c.cid = r.cid
    WHERE r.hash = b.hash AND c.app = b.app AND c.owner = b.owner AND c.name = b.name)";

/// Writes a commit's rows in one statement (also a mirror's rows, verbatim).
async fn write_rows(
    tx: &tokio_postgres::Transaction<'_>,
    cid: i64,
    rows: &[Object],
    now_ms: u64,
) -> Result<(), tokio_postgres::Error> {
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq as i64).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    let deleted: Vec<bool> = rows.iter().map(|r| r.deleted).collect();
    let data: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.data.as_ref().map(JsonData::as_str))
        .collect();
    let hashes: Vec<Option<&str>> = rows.iter().map(|r| r.hash.as_deref()).collect();
    let expires: Vec<Option<i64>> = rows.iter().map(|r| r.expires.map(|e| e as i64)).collect();
    let authors: Vec<Option<&str>> = rows.iter().map(|r| r.author.as_deref()).collect();
    tx.execute(
        "INSERT INTO objects (cid, id, seq, type, deleted, data, hash, expires, modified_ms, author)
         SELECT $1, u.id, u.seq, u.type, u.deleted, u.data, u.hash, u.expires, $10, u.author
         FROM UNNEST($2::text[], $3::int8[], $4::text[], $5::bool[], $6::text[], $7::text[], $8::int8[], $9::text[])
           AS u (id, seq, type, deleted, data, hash, expires, author)
         ON CONFLICT (cid, id) DO UPDATE SET seq = excluded.seq, type = excluded.type,
           deleted = excluded.deleted, data = excluded.data, hash = excluded.hash,
           expires = excluded.expires, modified_ms = excluded.modified_ms, author = excluded.author",
        &[&cid, &ids, &seqs, &kinds, &deleted, &data, &hashes, &expires, &authors, &(now_ms as i64)],
    )
    .await?;
    // The blob references of these ids are those of their new versions.
    tx.execute(
        "DELETE FROM blob_refs USING UNNEST($2::text[]) AS wanted (wanted_id)
         WHERE cid = $1 AND id = wanted_id",
        &[&cid, &ids],
    )
    .await?;
    let (mut ref_ids, mut ref_names): (Vec<&str>, Vec<String>) = (Vec::new(), Vec::new());
    for row in rows.iter().filter(|r| !r.deleted) {
        for name in row.data.as_ref().map(blob::refs).unwrap_or_default() {
            ref_ids.push(&row.id);
            ref_names.push(name);
        }
    }
    if !ref_ids.is_empty() {
        tx.execute(
            "INSERT INTO blob_refs (cid, id, hash) SELECT $1, u.id, u.hash
             FROM UNNEST($2::text[], $3::text[]) AS u (id, hash)",
            &[&cid, &ref_ids, &ref_names],
        )
        .await?;
    }
    Ok(())
}

/// Listens for commits of every node and publishes them to this node's hub, reconnecting
/// forever (the task is aborted at shutdown).
///
/// `listening` hears whether the first attempt got as far as listening; it is taken then, so
/// every later attempt is a reconnection.
async fn listen(
    config: tokio_postgres::Config,
    channel: String,
    pool: Pool,
    hub: Arc<Hub>,
    listening: oneshot::Sender<Result<(), String>>,
) {
    let mut listening = Some(listening);
    loop {
        if let Err(error) = listen_once(&config, &channel, &pool, &hub, &mut listening).await {
            if let Some(first) = listening.take() {
                let _ = first.send(Err(error.clone()));
            }
            tracing::warn!(%error, "the notification listener lost its connection; reconnecting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    channel: &str,
    pool: &Pool,
    hub: &Hub,
    listening: &mut Option<oneshot::Sender<Result<(), String>>>,
) -> Result<(), String> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    let (notices, mut received) = mpsc::channel::<String>(NOTIFY_QUEUE);
    let overflowed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let overflow_flag = overflowed.clone();
    let pump = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if notices.try_send(n.payload().to_string()).is_err() {
                        overflow_flag.store(true, Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
        }
        "the connection closed".to_string()
    });
    client
        .batch_execute(&format!("LISTEN \"{channel}\""))
        .await
        .map_err(|e| e.to_string())?;
    match listening.take() {
        // Start-up may go on: from now on every commit is heard.
        Some(first) => drop(first.send(Ok(()))),
        // Commits made while we were not listening were not heard: every stream catches up.
        None => hub.publish_everywhere(LiveEvent::Gap),
    }
    while let Some(payload) = received.recv().await {
        if overflowed.swap(false, Ordering::Relaxed) {
            hub.publish_everywhere(LiveEvent::Gap);
        }
        match serde_json::from_str::<Notice>(&payload) {
            Ok(notice) => {
                if let Err(error) = announce(pool, hub, notice).await {
                    tracing::warn!(
                        ?error,
                        "could not read announced changes; streams will catch up"
                    );
                    hub.publish_everywhere(LiveEvent::Gap);
                }
            }
            Err(e) => tracing::warn!(error = %e, "ignoring a malformed notification"),
        }
    }
    drop(client);
    Err(pump.await.unwrap_or_else(|e| e.to_string()))
}

/// Publishes one notice to the local hub, reading the committed objects if anyone listens.
async fn announce(pool: &Pool, hub: &Hub, notice: Notice) -> Result<(), StoreError> {
    let key = CollectionKey {
        app: notice.app,
        owner: notice.owner,
        name: notice.name,
    };
    if !hub.is_watched(&key) {
        return Ok(());
    }
    match notice.what {
        Announced::Range { from, to } => {
            let client = pool
                .get()
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            // Objects superseded since are simply absent: their newer version has a later seq.
            let rows = client
                .query(
                    &format!(
                        "SELECT {} FROM objects o JOIN collections c ON c.cid = o.cid
                         WHERE c.app = $1 AND c.owner = $2 AND c.name = $3 AND o.seq > $4 AND o.seq <= $5
                         ORDER BY o.seq",
                        OBJECT_COLUMNS.split(", ").map(|c| format!("o.{c}")).collect::<Vec<_>>().join(", ")
                    ),
                    &[&key.app, &key.owner, &key.name, &(from as i64), &(to as i64)],
                )
                .await
                .map_err(pg_error)?;
            hub.publish(&key, rows.iter().map(|r| change_event(&object_from_row(r))));
        }
        Announced::Reset {
            collection_id,
            horizon,
        } => hub.publish(
            &key,
            [LiveEvent::Reset {
                collection_id,
                horizon,
            }],
        ),
        Announced::Acl => hub.access_changed(&key),
    }
    Ok(())
}
