//! The four measurements, and the untimed loading they share.
//!
//! - [`push`]: push throughput with 1, 8 and 64 clients, one collection each.
//! - [`pull`]: initial pull of a large collection into an empty client.
//! - [`latency`]: a push/pull mix at a fixed arrival rate (open loop).
//! - [`growth`]: push and pull latency while one collection grows.
//!
//! Two benchmarks of their own (Tidemark only, each with its own subcommand and table):
//! [`presence`] (issue #10) and [`fanout`] (one write reaching many live-event subscribers).

pub mod fanout;
pub mod growth;
pub mod latency;
pub mod presence;
pub mod pull;
pub mod push;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dialect::{Base, Dialect, Write};
use crate::http::{Http, Prepared};
use crate::params::Params;
use crate::payload::{record_data, record_id};

/// What every workload needs.
pub struct Ctx {
    /// The dialect.
    pub dialect: Dialect,
    /// The client.
    pub http: Http,
    /// Sizes and rates.
    pub params: Params,
    /// Prefix of every collection name, so that two runs against one server never collide.
    pub tag: String,
}

impl Ctx {
    /// A collection name unique to this run.
    pub fn collection(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    /// The push of new records `first..first + count` into `collection`.
    pub fn prepare_creates(&self, collection: &str, first: u64, count: usize) -> Prepared {
        let ids: Vec<String> = (first..first + count as u64)
            .map(|n| record_id("r", n))
            .collect();
        let data: Vec<String> = (first..first + count as u64)
            .map(|n| record_data(n, 0, self.params.record_bytes))
            .collect();
        let writes: Vec<Write<'_>> = ids
            .iter()
            .zip(&data)
            .map(|(id, data)| Write {
                id,
                data,
                base: Base::Create,
            })
            .collect();
        self.dialect.prepare_push(collection, &writes)
    }
}

/// Waits until the server answers its cheap GET within 200 ms, for at most two minutes.
///
/// A server that fell behind in the latency test may still be working through requests the
/// client abandoned; the next measurement should not pay for them.
pub async fn settle(ctx: &Ctx) {
    let ready = Prepared::get(ctx.dialect.ready_path().to_string());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sent = Instant::now();
        let ok = ctx
            .http
            .send(&ready)
            .await
            .is_ok_and(|r| r.status.is_success());
        if ok && sent.elapsed() < Duration::from_millis(200) {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("  warning: the server is still slow to answer after two minutes; going on");
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What [`load`] did.
pub struct Loaded {
    /// Records written.
    pub records: u64,
    /// The highest version any push returned: the collection's cursor when only the loader
    /// writes to it.
    pub max_version: u64,
    /// Seconds taken.
    pub seconds: f64,
}

/// Writes new records `first..first + count` into `collection` in batches of `load_batch`,
/// `load_clients` pushes at a time, making each body as it goes. Stops starting batches at
/// `deadline`, if one is given.
pub async fn load(
    ctx: &Arc<Ctx>,
    collection: &str,
    first: u64,
    count: u64,
    deadline: Option<Instant>,
) -> anyhow::Result<Loaded> {
    let batch = ctx.params.load_batch.max(1) as u64;
    let batches = count.div_ceil(batch);
    let next = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let max_version = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..ctx.params.load_clients.max(1) {
        let (ctx, collection) = (ctx.clone(), collection.to_string());
        let (next, written, max_version) = (next.clone(), written.clone(), max_version.clone());
        tasks.spawn(async move {
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches || deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok::<_, anyhow::Error>(());
                }
                let from = first + b * batch;
                let n = batch.min(first + count - from) as usize;
                let push = ctx.prepare_creates(&collection, from, n);
                let versions = ctx.dialect.push_committed(&ctx.http, &push, n).await?;
                written.fetch_add(n as u64, Ordering::Relaxed);
                max_version.fetch_max(versions.into_iter().max().unwrap_or(0), Ordering::Relaxed);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(Loaded {
        records: written.load(Ordering::Relaxed),
        max_version: max_version.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
    })
}
