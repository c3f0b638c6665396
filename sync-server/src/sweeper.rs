//! The background sweeper: expires objects and purges tombstones past the retention window.
//!
//! It only asks the store to sweep; the rules live in `sync_core::horizon`. It runs as one
//! task per node; with several nodes on one database the store makes sure one sweep runs at a
//! time.

use std::sync::Arc;
use std::time::Duration;

use crate::store::{now_ms, Store};

/// Sweeps every `interval`, forever (the caller aborts the task at shutdown).
pub async fn run(store: Arc<dyn Store>, interval: Duration, retention: Duration) {
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
    }
}
