//! Initial pull: one client with an empty replica pulls a whole collection of
//! `pull_records` 1 KB records, page after page (`pull_page` per request), as a new device
//! would. The number is records over the time from the first request to the last byte of
//! the last page. The collection is loaded once beforehand and pulled `reps` times.
//!
//! With `pull_preloaded` the server already holds the collection (Kinto's, written through
//! its storage layer by `scripts/bench_kinto.py`, as its HTTP API is too slow to load
//! 100,000 records in bounded time), and the client only makes sure the collection exists.

use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;

use crate::results::{median, PullResult, PullRun};

use super::{load, Ctx};

/// Runs the pull test.
pub async fn run(ctx: &Arc<Ctx>) -> anyhow::Result<PullResult> {
    let p = &ctx.params;
    let collection = ctx.collection("pull");
    ctx.dialect
        .create_collection(&ctx.http, &collection)
        .await?;
    let load_records_per_s = if p.pull_preloaded {
        eprintln!(
            "  pull: {} records preloaded outside the HTTP API",
            p.pull_records
        );
        None
    } else {
        let loaded = load(ctx, &collection, 0, p.pull_records, None).await?;
        let rate = loaded.records as f64 / loaded.seconds;
        eprintln!(
            "  pull: loaded {} records at {rate:.0} records/s",
            loaded.records
        );
        Some(rate)
    };

    let mut runs = Vec::new();
    for rep in 0..p.reps {
        let start = Instant::now();
        let pulled = ctx
            .dialect
            .pull_all(&ctx.http, &collection, 0, p.pull_page, false)
            .await?;
        let seconds = start.elapsed().as_secs_f64();
        if pulled.count as u64 != p.pull_records {
            bail!(
                "the initial pull returned {} records, not {}",
                pulled.count,
                p.pull_records
            );
        }
        let run = PullRun {
            seconds,
            records_per_s: pulled.count as f64 / seconds,
            pages: pulled.pages,
        };
        eprintln!(
            "  pull rep={rep}: {} records in {} pages, {seconds:.3} s = {:.0} records/s",
            pulled.count, pulled.pages, run.records_per_s
        );
        runs.push(run);
    }
    Ok(PullResult {
        records: p.pull_records,
        page: p.pull_page,
        median_records_per_s: median(&runs.iter().map(|r| r.records_per_s).collect::<Vec<_>>()),
        median_seconds: median(&runs.iter().map(|r| r.seconds).collect::<Vec<_>>()),
        runs,
        load_records_per_s,
    })
}
