//! `sync-bench`: a load generator that measures Tidemark and Kinto with the same workloads.
//!
//! # Layout
//!
//! - [`params`]: the command-line parameters (which server, which sizes and rates).
//! - [`http`]: the keep-alive HTTP client and requests prepared ahead of time.
//! - [`dialect`]: how each operation is spelled for Tidemark and for Kinto, and how their
//!   answers are read (no I/O but the set-up calls and [`dialect::Dialect::pull_all`]).
//! - [`payload`]: the 1 KB records.
//! - [`workload`]: the four measurements (push, pull, latency, growth) and the loader.
//! - [`smoke`]: a tiny checked workload for CI that times nothing.
//! - [`local`]: a server a benchmark starts itself, and its memory from `/proc`.
//! - [`results`]: what a run measured, as JSON; [`report`]: `BENCHMARKS.md` from those files.
//!
//! `main.rs` parses the command line and calls these. `scripts/bench.sh` runs the whole
//! comparison (build, start each system in turn, run, report).
#![warn(missing_docs)]

pub mod dialect;
pub mod http;
pub mod local;
pub mod params;
pub mod payload;
pub mod report;
pub mod results;
pub mod smoke;
pub mod workload;

use std::sync::Arc;

use crate::params::{Params, Target, Workload};
use crate::results::SystemResults;
use crate::workload::Ctx;

/// Runs the chosen workloads against one system.
pub async fn run(
    target: &Target,
    params: Params,
    label: &str,
    tag: String,
) -> anyhow::Result<SystemResults> {
    let dialect = target.dialect();
    let http = target.http();
    dialect.prepare_server(&http).await?;
    let ctx = Arc::new(Ctx {
        dialect,
        http,
        params: params.clone(),
        tag,
    });
    let mut results = SystemResults {
        label: label.to_string(),
        dialect: ctx.dialect.name().to_string(),
        params: serde_json::to_value(&params)?,
        ..SystemResults::default()
    };
    for workload in &params.workloads {
        eprintln!("{label}: {workload:?}");
        workload::settle(&ctx).await;
        match workload {
            Workload::Push => results.push = workload::push::run(&ctx).await?,
            Workload::Pull => results.pull = Some(workload::pull::run(&ctx).await?),
            Workload::Latency => results.latency = Some(workload::latency::run(&ctx).await?),
            Workload::Growth => results.growth = Some(workload::growth::run(&ctx).await?),
        }
    }
    Ok(results)
}

/// Polls the server's cheap GET until it answers 200, for at most `seconds`.
pub async fn wait_ready(target: &Target, seconds: u64) -> anyhow::Result<()> {
    let dialect = target.dialect();
    let http = target.http();
    let ready = http::Prepared::get(dialect.ready_path().to_string());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        match http.send(&ready).await {
            Ok(reply) if reply.status.is_success() => return Ok(()),
            outcome if std::time::Instant::now() >= deadline => {
                let why = match outcome {
                    Ok(reply) => format!("it answers {}", reply.status),
                    Err(e) => format!("{e:#}"),
                };
                anyhow::bail!("{} is not up after {seconds} s: {why}", target.url);
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}
