//! Latency under a fixed arrival rate: `rate` requests per second, half small pushes
//! (`latency_push` new 1 KB records) and half incremental pulls (the changes since that
//! collection's cursor, `latency_pull_limit` per page), spread over `latency_collections`
//! collections, like many devices syncing.
//!
//! The load is **open loop**: request `i` is due at `start + i / rate` whatever happened to
//! the earlier ones, and its latency runs from that due time to the last byte of its answer.
//! A slow server therefore shows up as queueing in the numbers rather than as a lower
//! request rate (no coordinated omission). The schedule is kept by an OS thread sleeping
//! with `nanosleep` precision, not by tokio's millisecond timer. At most `max_in_flight`
//! requests are outstanding; any beyond wait, and their wait counts.
//!
//! A request still unanswered `latency_timeout_secs` after its due time is abandoned and
//! counted as failed *and* recorded at that latency, so a server that cannot keep up ends
//! the repetition in bounded time and its percentiles show it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use crate::http::Prepared;
use crate::results::{median, LatencyResult, LatencyRun};

use super::{load, Ctx};

/// Records already in each collection before the clock starts.
const SEED_RECORDS: u64 = 10;

enum Op {
    Push(Prepared),
    Pull,
}

#[derive(Clone, Copy)]
enum Kind {
    All = 0,
    Push = 1,
    Pull = 2,
}

struct Tally {
    histograms: [Histogram<u64>; 3],
    errors: u64,
    timeouts: u64,
    first_error: Option<String>,
    /// Requests answered successfully, warm-up included.
    answered: u64,
    last_done: Option<Instant>,
}

/// Runs the latency test.
pub async fn run(ctx: &Arc<Ctx>) -> anyhow::Result<LatencyResult> {
    let p = &ctx.params;
    let mut runs = Vec::new();
    for rep in 0..p.reps {
        let run = one(ctx, rep).await?;
        eprintln!(
            "  latency rep={rep}: {} requests at {:.0}/s: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, {} errors",
            run.requests, run.achieved_rate, run.p50_ms, run.p99_ms, run.p999_ms, run.max_ms, run.errors
        );
        runs.push(run);
    }
    let pick = |f: fn(&LatencyRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    Ok(LatencyResult {
        rate: p.rate,
        seconds: p.latency_secs,
        median_p50_ms: pick(|r| r.p50_ms),
        median_p99_ms: pick(|r| r.p99_ms),
        median_p999_ms: pick(|r| r.p999_ms),
        median_achieved_rate: pick(|r| r.achieved_rate),
        errors: runs.iter().map(|r| r.errors).sum(),
        timeouts: runs.iter().map(|r| r.timeouts).sum(),
        runs,
    })
}

async fn one(ctx: &Arc<Ctx>, rep: usize) -> anyhow::Result<LatencyRun> {
    let p = &ctx.params;
    let k = p.latency_collections.max(1);
    let collections: Arc<Vec<String>> = Arc::new(
        (0..k)
            .map(|c| ctx.collection(&format!("lat-r{rep}-c{c}")))
            .collect(),
    );
    let mut cursors = Vec::with_capacity(k);
    for collection in collections.iter() {
        ctx.dialect.create_collection(&ctx.http, collection).await?;
        let seeded = load(ctx, collection, 0, SEED_RECORDS, None).await?;
        cursors.push(AtomicU64::new(seeded.max_version));
    }
    let cursors = Arc::new(cursors);

    // Every request, bodies included, before the clock starts.
    let total = ((p.latency_warmup_secs + p.latency_secs) * p.rate).round() as usize;
    let warm = (p.latency_warmup_secs * p.rate).round() as usize;
    let mut next_id = vec![SEED_RECORDS; k];
    let ops: Vec<(usize, Op)> = (0..total)
        .map(|i| {
            let c = i % k;
            if (i / k) % 2 == 0 {
                let push = ctx.prepare_creates(&collections[c], next_id[c], p.latency_push);
                next_id[c] += p.latency_push as u64;
                (c, Op::Push(push))
            } else {
                (c, Op::Pull)
            }
        })
        .collect();

    let new_histogram =
        || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    let tally = Arc::new(Mutex::new(Tally {
        histograms: [new_histogram(), new_histogram(), new_histogram()],
        errors: 0,
        timeouts: 0,
        first_error: None,
        answered: 0,
        last_done: None,
    }));
    let slots = Arc::new(Semaphore::new(p.max_in_flight.max(1)));
    let rate = p.rate;
    let start = Instant::now() + Duration::from_millis(50);

    let runtime = tokio::runtime::Handle::current();
    let dispatch = {
        let (ctx, tally, collections, cursors) = (
            ctx.clone(),
            tally.clone(),
            collections.clone(),
            cursors.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let mut handles = Vec::with_capacity(ops.len());
            for (i, (c, op)) in ops.into_iter().enumerate() {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let measured = i >= warm;
                let (ctx, tally, collections, cursors, slots) = (
                    ctx.clone(),
                    tally.clone(),
                    collections.clone(),
                    cursors.clone(),
                    slots.clone(),
                );
                handles.push(runtime.spawn(async move {
                    let kind = match op {
                        Op::Push(_) => Kind::Push,
                        Op::Pull => Kind::Pull,
                    };
                    let exchange = async {
                        let _slot = slots.acquire_owned().await.expect("never closed");
                        match op {
                            Op::Push(push) => {
                                let n = ctx.params.latency_push;
                                ctx.dialect
                                    .push_committed(&ctx.http, &push, n)
                                    .await
                                    .map(|_| ())
                            }
                            Op::Pull => {
                                let since = cursors[c].load(Ordering::Relaxed);
                                let limit = ctx.params.latency_pull_limit;
                                let pulled = ctx
                                    .dialect
                                    .pull_all(&ctx.http, &collections[c], since, limit, false)
                                    .await?;
                                cursors[c].fetch_max(pulled.cursor, Ordering::Relaxed);
                                Ok(())
                            }
                        }
                    };
                    let give_up = due + Duration::from_secs_f64(ctx.params.latency_timeout_secs);
                    let (result, timed_out) =
                        match tokio::time::timeout_at(give_up.into(), exchange).await {
                            Ok(result) => (result, false),
                            Err(_) => (
                                Err(anyhow::anyhow!("no answer within the latency timeout")),
                                true,
                            ),
                        };
                    let done = Instant::now();
                    let mut tally = tally.lock().expect("tally lock");
                    if result.is_ok() {
                        // Warm-up included: the rate the server actually served.
                        tally.answered += 1;
                        tally.last_done = Some(tally.last_done.map_or(done, |t| t.max(done)));
                    }
                    if !measured {
                        return;
                    }
                    let micros = done.duration_since(due).as_micros() as u64;
                    if result.is_ok() || timed_out {
                        tally.histograms[Kind::All as usize].saturating_record(micros);
                        tally.histograms[kind as usize].saturating_record(micros);
                    }
                    if let Err(e) = result {
                        tally.errors += 1;
                        tally.timeouts += u64::from(timed_out);
                        tally.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }));
            }
            handles
        })
    };
    let handles = dispatch.await.context("the dispatcher thread failed")?;
    for handle in handles {
        handle.await.context("a request task failed")?;
    }

    super::settle(ctx).await;
    for collection in collections.iter() {
        ctx.dialect.delete_collection(&ctx.http, collection).await?;
    }
    let tally = tally.lock().expect("tally lock");
    if let Some(e) = &tally.first_error {
        eprintln!(
            "  latency rep={rep}: {} requests failed; the first: {e}",
            tally.errors
        );
    }
    let all = &tally.histograms[Kind::All as usize];
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let requests = all.len() + tally.errors - tally.timeouts;
    let window = tally
        .last_done
        .map_or(0.0, |t| t.duration_since(start).as_secs_f64());
    Ok(LatencyRun {
        requests,
        errors: tally.errors,
        timeouts: tally.timeouts,
        achieved_rate: if window > 0.0 {
            tally.answered as f64 / window
        } else {
            0.0
        },
        p50_ms: ms(all, 0.5),
        p99_ms: ms(all, 0.99),
        p999_ms: ms(all, 0.999),
        max_ms: all.max() as f64 / 1000.0,
        push_p99_ms: ms(&tally.histograms[Kind::Push as usize], 0.99),
        pull_p99_ms: ms(&tally.histograms[Kind::Pull as usize], 0.99),
    })
}
