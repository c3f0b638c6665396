//! Growth: one collection grows from `growth_start` to `growth_max` records. At the first
//! size and at every multiple of `growth_step`, the client times `growth_samples` pushes of
//! one batch (`batch`) of new records, each followed by a pull of exactly the changes that
//! push made (since the cursor before it), and the point is the median of each. Between
//! points the collection is loaded in batches of `load_batch`; that rate is reported too.
//! After loading, the client waits `growth_pause_secs` before timing: a point should measure
//! a push into a collection of that size, not the checkpoint (or vacuum) of the 50,000
//! records just loaded.
//!
//! A system that cannot reach `growth_max` within `growth_budget_secs` stops where it is,
//! measures that last size, and the report says how far it got.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::results::{median, GrowthPoint, GrowthResult};

use super::{load, Ctx};

/// Runs the growth test.
pub async fn run(ctx: &Arc<Ctx>) -> anyhow::Result<GrowthResult> {
    let p = &ctx.params;
    let collection = ctx.collection("growth");
    ctx.dialect
        .create_collection(&ctx.http, &collection)
        .await?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(p.growth_budget_secs);
    let batch = p.batch.max(1);

    let mut targets = vec![p.growth_start.min(p.growth_max)];
    let step = p.growth_step.max(1);
    targets.extend(
        (1..)
            .map(|i| i * step)
            .skip_while(|&s| s <= p.growth_start)
            .take_while(|&s| s <= p.growth_max),
    );
    if targets.last() != Some(&p.growth_max) {
        targets.push(p.growth_max);
    }

    let mut size = 0u64;
    let mut cursor = 0u64;
    let mut points = Vec::new();
    let mut stopped_by_budget = false;
    for target in targets {
        let mut load_records_per_s = 0.0;
        if target > size {
            let loaded = load(ctx, &collection, size, target - size, Some(deadline)).await?;
            size += loaded.records;
            cursor = cursor.max(loaded.max_version);
            load_records_per_s = loaded.records as f64 / loaded.seconds;
            stopped_by_budget = size < target;
            let pause = Duration::try_from_secs_f64(p.growth_pause_secs).unwrap_or_default();
            tokio::time::sleep(pause).await;
        }

        let pushes: Vec<_> = (0..p.growth_samples)
            .map(|s| ctx.prepare_creates(&collection, size + (s * batch) as u64, batch))
            .collect();
        let measured_at = size;
        let (mut push_ms, mut pull_ms) = (Vec::new(), Vec::new());
        for push in &pushes {
            let t = Instant::now();
            let versions = ctx.dialect.push_committed(&ctx.http, push, batch).await?;
            push_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            size += batch as u64;

            let t = Instant::now();
            let pulled = ctx
                .dialect
                .pull_all(&ctx.http, &collection, cursor, batch, false)
                .await?;
            pull_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            if pulled.count != batch {
                bail!(
                    "the pull after a push of {batch} returned {} records at size {size}",
                    pulled.count
                );
            }
            cursor = cursor
                .max(pulled.cursor)
                .max(versions.into_iter().max().unwrap_or(0));
        }
        let point = GrowthPoint {
            size: measured_at,
            push_ms: median(&push_ms),
            pull_ms: median(&pull_ms),
            load_records_per_s,
        };
        eprintln!(
            "  growth size={}: push {:.2} ms, pull {:.2} ms (loaded at {:.0} records/s)",
            point.size, point.push_ms, point.pull_ms, point.load_records_per_s
        );
        points.push(point);
        if stopped_by_budget || Instant::now() >= deadline {
            stopped_by_budget = size < p.growth_max;
            break;
        }
    }
    Ok(GrowthResult {
        points,
        target: p.growth_max,
        reached: size,
        stopped_by_budget,
        budget_seconds: p.growth_budget_secs,
        seconds: start.elapsed().as_secs_f64(),
    })
}
