//! Command-line parameters shared by the subcommands.

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::dialect::Dialect;
use crate::http::Http;

/// Which server to talk to and as whom.
#[derive(Args, Clone, Debug)]
pub struct Target {
    /// The server's base URL, e.g. `http://127.0.0.1:8080` (no `/v1`).
    #[arg(long)]
    pub url: String,
    /// The wire dialect.
    #[arg(long, value_enum, default_value_t = DialectName::Tidemark)]
    pub dialect: DialectName,
    /// The user: Tidemark's dev bearer token, Kinto's Basic auth user.
    #[arg(long, default_value = "bench")]
    pub user: String,
    /// Kinto's Basic auth password.
    #[arg(long, default_value = "bench")]
    pub password: String,
    /// Tidemark's app name.
    #[arg(long, default_value = "bench")]
    pub app: String,
    /// Kinto's bucket.
    #[arg(long, default_value = "bench")]
    pub bucket: String,
    /// Any request slower than this fails.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
}

/// The dialects, as named on the command line.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialectName {
    /// Tidemark's `/v1/data` API.
    Tidemark,
    /// Kinto's buckets, collections and records.
    Kinto,
}

impl Target {
    /// The dialect with its names and credentials.
    pub fn dialect(&self) -> Dialect {
        match self.dialect {
            DialectName::Tidemark => Dialect::Tidemark {
                app: self.app.clone(),
                user: self.user.clone(),
            },
            DialectName::Kinto => Dialect::Kinto {
                bucket: self.bucket.clone(),
                user: self.user.clone(),
                password: self.password.clone(),
            },
        }
    }

    /// A client for the server.
    pub fn http(&self) -> Http {
        Http::new(
            &self.url,
            self.dialect().auth_header(),
            Duration::from_secs(self.timeout_secs),
        )
    }
}

/// The workloads `run` can do.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Push throughput.
    Push,
    /// Initial pull.
    Pull,
    /// Open-loop latency of a push/pull mix.
    Latency,
    /// Latency while a collection grows.
    Growth,
}

/// Sizes, repetitions and rates of the workloads.
#[derive(Args, Clone, Debug, Serialize)]
pub struct Params {
    /// Which workloads to run, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "push,pull,latency,growth"
    )]
    pub workloads: Vec<Workload>,
    /// Repetitions of each measurement (the report gives the median).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Bytes of JSON per record's data.
    #[arg(long, default_value_t = crate::payload::RECORD_BYTES)]
    pub record_bytes: usize,

    /// Push test: records per push.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Push test: numbers of concurrent clients, one collection each.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub push_clients: Vec<usize>,
    /// Push test: records prepared per repetition, shared among the clients.
    #[arg(long, default_value_t = 100_000)]
    pub push_records: u64,
    /// Push test: the clients stop starting pushes after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub push_max_secs: f64,

    /// Pull test: records in the collection.
    #[arg(long, default_value_t = 100_000)]
    pub pull_records: u64,
    /// Pull test: the server already holds the collection `{tag}-pull` with `pull_records`
    /// records (written outside the HTTP API, see scripts/bench_kinto.py), so do not load it.
    #[arg(long)]
    pub pull_preloaded: bool,
    /// Pull test: records per page (`limit` / `_limit`).
    #[arg(long, default_value_t = 10_000)]
    pub pull_page: usize,

    /// Latency test: requests per second, scheduled by the clock (open loop).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Latency test: measured seconds per repetition.
    #[arg(long, default_value_t = 10.0)]
    pub latency_secs: f64,
    /// Latency test: seconds at the same rate before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub latency_warmup_secs: f64,
    /// Latency test: collections the requests are spread over.
    #[arg(long, default_value_t = 16)]
    pub latency_collections: usize,
    /// Latency test: records per push (half of the requests are pushes, half pulls).
    #[arg(long, default_value_t = 10)]
    pub latency_push: usize,
    /// Latency test: records per pull page.
    #[arg(long, default_value_t = 100)]
    pub latency_pull_limit: usize,
    /// Latency test: most requests outstanding at once, like a bounded population of
    /// connections (later ones wait in the client, and their wait counts). It also bounds the
    /// work a server that fell behind is left with when requests are abandoned.
    #[arg(long, default_value_t = 64)]
    pub max_in_flight: usize,
    /// Latency test: a request unanswered this long after its due time is abandoned, counted
    /// as failed and recorded at this latency.
    #[arg(long, default_value_t = 10.0)]
    pub latency_timeout_secs: f64,

    /// Growth test: the first size measured.
    #[arg(long, default_value_t = 10_000)]
    pub growth_start: u64,
    /// Growth test: measure at every multiple of this size.
    #[arg(long, default_value_t = 50_000)]
    pub growth_step: u64,
    /// Growth test: the size aimed at.
    #[arg(long, default_value_t = 1_000_000)]
    pub growth_max: u64,
    /// Growth test: pushes (each followed by a pull) timed per point.
    #[arg(long, default_value_t = 20)]
    pub growth_samples: usize,
    /// Growth test: seconds to wait after loading, before timing a point, so that the work
    /// the load left behind (checkpoints, vacuum) is not what the point measures.
    #[arg(long, default_value_t = 1.0)]
    pub growth_pause_secs: f64,
    /// Growth test: stop growing after this many seconds.
    #[arg(long, default_value_t = 240.0)]
    pub growth_budget_secs: f64,

    /// Loading (untimed, or timed for context only): records per push.
    #[arg(long, default_value_t = 1000)]
    pub load_batch: usize,
    /// Loading: concurrent pushes into the one collection.
    #[arg(long, default_value_t = 4)]
    pub load_clients: usize,
}
