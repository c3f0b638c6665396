//! Push throughput: N clients, each pushing batches of new 1 KB records into its own
//! collection as fast as answers come back (closed loop).
//!
//! Every body is made before the clock starts. A repetition ends when the clients have
//! pushed `push_records` between them, or `push_max_secs` after the start (a client then
//! finishes the push it is waiting for). Throughput is acknowledged records over the time
//! from the first push sent to the last answer read. The collections are deleted afterwards
//! (untimed), so every repetition starts from the same state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::Prepared;
use crate::results::{median, PushResult, PushRun};

use super::Ctx;

/// Runs the push test for every client count.
pub async fn run(ctx: &Arc<Ctx>) -> anyhow::Result<Vec<PushResult>> {
    let p = &ctx.params;
    let mut results = Vec::new();
    for &clients in &p.push_clients {
        let clients = clients.max(1);
        let mut runs = Vec::new();
        for rep in 0..p.reps {
            let run = one(ctx, clients, rep).await?;
            eprintln!(
                "  push clients={clients} rep={rep}: {} records in {:.2} s = {:.0} records/s{}",
                run.records,
                run.seconds,
                run.records_per_s,
                if run.capped { " (time cap)" } else { "" }
            );
            runs.push(run);
        }
        let median_records_per_s =
            median(&runs.iter().map(|r| r.records_per_s).collect::<Vec<_>>());
        results.push(PushResult {
            clients,
            batch: p.batch,
            runs,
            median_records_per_s,
        });
    }
    Ok(results)
}

async fn one(ctx: &Arc<Ctx>, clients: usize, rep: usize) -> anyhow::Result<PushRun> {
    let p = &ctx.params;
    let batch = p.batch.max(1);
    let per_client = (p.push_records as usize).div_ceil(clients * batch).max(1);
    let collections: Vec<String> = (0..clients)
        .map(|c| ctx.collection(&format!("push{clients}-r{rep}-c{c}")))
        .collect();
    let mut bodies: Vec<Vec<Prepared>> = Vec::with_capacity(clients);
    for collection in &collections {
        ctx.dialect.create_collection(&ctx.http, collection).await?;
        bodies.push(
            (0..per_client)
                .map(|b| ctx.prepare_creates(collection, (b * batch) as u64, batch))
                .collect(),
        );
    }
    let planned = (clients * per_client * batch) as u64;

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(p.push_max_secs);
    let mut tasks = tokio::task::JoinSet::new();
    for pushes in bodies {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let mut acked = 0u64;
            for push in &pushes {
                if Instant::now() >= deadline {
                    break;
                }
                ctx.dialect.push_committed(&ctx.http, push, batch).await?;
                acked += batch as u64;
            }
            Ok::<_, anyhow::Error>(acked)
        });
    }
    let mut records = 0;
    while let Some(done) = tasks.join_next().await {
        records += done??;
    }
    let seconds = start.elapsed().as_secs_f64();

    for collection in &collections {
        ctx.dialect.delete_collection(&ctx.http, collection).await?;
    }
    Ok(PushRun {
        records,
        seconds,
        records_per_s: records as f64 / seconds,
        capped: records < planned,
    })
}
