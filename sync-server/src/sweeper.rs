//! The background sweeper: expires objects, purges tombstones past the retention window, and
//! deletes blobs that no live object has referred to for the blob retention window.
//!
//! It only asks the store to sweep; the rules live in `sync_core::horizon`. It runs as one
//! task per node; with several nodes on one database the store makes sure one sweep runs at a
//! time.

use std::sync::Arc;
use std::time::Duration;

use crate::store::{now_ms, Store};

/// Sweeps every `interval`, forever (the caller aborts the task at shutdown).
pub async fn run(
    store: Arc<dyn Store>,
    interval: Duration,
    retention: Duration,
    blob_retention: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match store.sweep(now_ms(), retention.as_millis() as u64).await {
            Ok(report) if report.expired + report.purged > 0 => {
                tracing::info!(expired = report.expired, purged = report.purged, "swept")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(?error, "sweep failed; will retry"),
        }
        match store
            .sweep_blobs(now_ms(), blob_retention.as_millis() as u64)
            .await
        {
            Ok(report) if report.orphaned + report.collected > 0 => tracing::info!(
                orphaned = report.orphaned,
                collected = report.collected,
                "swept blobs"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(?error, "blob sweep failed; will retry"),
        }
    }
}
