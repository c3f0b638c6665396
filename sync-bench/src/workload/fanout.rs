//! Fan-out (issue #7, workload 5): one write reaching many live-event subscribers.
//!
//! For each subscriber count `N` (1,000 and 10,000 by default): `N` connections each hold
//! `GET /v1/data/{app}/~/{collection}/events?since=S` open, all as the collection's owner
//! (dev auth, `Authorization: Bearer {user}`), where `S` is the seq of a set-up write, so no
//! stream has a backlog. Once every stream has answered `200` and every subscriber has read a
//! warm-up write, the benchmark reads the server's VmRSS again: the growth over the VmRSS
//! before the streams were opened, divided by `N`, is the memory of one idle subscriber.
//!
//! Then `reps` repetitions of `writes` single-object pushes. Before each push the clock is
//! read; every subscriber notes when it reads the `change` event of that seq. Delivery
//! latency = that moment minus the push's start, so it includes the commit. The next push
//! waits until every subscriber has the last one (or `timeout_secs` passed) and then
//! `spacing_ms` more, so that one write's fan-out is measured at a time. Each repetition
//! reports the p50, p99 and max over its `N × writes` deliveries; the summary takes medians.
//!
//! A subscriber is a plain tokio `TcpStream` task that writes a prepared HTTP/1.1 request and
//! scans the bytes it reads for `id:` lines (the SSE framing and the chunked encoding need no
//! parsing beyond that), so that the client costs little next to the server. The client and
//! the server share the machine; on 2 cores the client's reads of `N` sockets are part of
//! what is measured.
//!
//! Without `--url` every subscriber count gets a server of its own (started like
//! [`super::presence`]'s), so that the memory of one count's connections does not hide in the
//! allocator's free lists during the next.
//!
//! [`smoke`] is the tiny checked variant for CI: it times nothing and fails unless every
//! subscriber received every write.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::dialect::{Base, Dialect, Write};
use crate::http::Http;
use crate::local::{cpu_seconds, default_server_bin, memory, Memory, Started};
use crate::params::{DialectName, Target};
use crate::results::median;

/// Bytes each subscriber reads into at a time (a change event of the small objects pushed
/// here is about 200 bytes).
const READ_BUFFER: usize = 2048;

/// The most bytes of a response head a subscriber accepts.
const MAX_HEAD: usize = 16 * 1024;

/// The data of every write: small, so that the fan-out, not the payload, is measured.
const DATA: &str = r#"{"n":1}"#;

/// The parameters of `sync-bench fanout`.
#[derive(Args, Clone, Debug, Serialize)]
pub struct FanoutParams {
    /// The server's base URL; without it the benchmark starts `--server-bin` itself on
    /// `127.0.0.1:0` with a new data directory for every subscriber count.
    #[arg(long)]
    pub url: Option<String>,
    /// The server's process id (for its memory), with `--url`.
    #[arg(long, requires = "url")]
    pub server_pid: Option<u32>,
    /// The server to start without `--url` (default: `sync-server` next to this binary).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// A flag for the server it starts (repeatable), e.g. `--server-arg=--sse-heartbeat=5s`.
    #[arg(long, allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
    /// Tidemark's app name.
    #[arg(long, default_value = "bench")]
    pub app: String,
    /// The collection's owner; every subscriber reads as this user.
    #[arg(long, default_value = "fan")]
    pub user: String,
    /// Prefix of the collection names (default: `fanout-` and the clock).
    #[arg(long)]
    pub tag: Option<String>,
    /// Subscriber counts, measured one after another (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 10000])]
    pub subscribers: Vec<usize>,
    /// Writes per repetition.
    #[arg(long, default_value_t = 20)]
    pub writes: usize,
    /// Repetitions per subscriber count (the summary gives medians).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// The pause after every subscriber has a write, before the next write, in ms.
    #[arg(long, default_value_t = 100)]
    pub spacing_ms: u64,
    /// Streams being opened at once while the subscribers connect (untimed).
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// The wait between the last subscriber reading the warm-up write and reading the
    /// server's memory, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub settle_secs: f64,
    /// A write that not every subscriber has after this many seconds counts as missed by
    /// those that do not have it yet.
    #[arg(long, default_value_t = 10.0)]
    pub timeout_secs: f64,
    /// Where to write the results as JSON.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where to write the Markdown table.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// The tiny checked run for CI (20 subscribers, 2 writes, one repetition); fails unless
    /// every subscriber received every write, and times nothing.
    #[arg(long)]
    pub smoke: bool,
}

/// What `sync-bench fanout` measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FanoutResult {
    /// The parameters.
    pub params: serde_json::Value,
    /// One entry per subscriber count.
    pub levels: Vec<FanoutLevel>,
}

/// One subscriber count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FanoutLevel {
    /// Streams open.
    pub subscribers: usize,
    /// Seconds it took to open them all (untimed otherwise; for context).
    pub connect_secs: f64,
    /// Server memory before the streams were opened.
    pub memory_before: Option<Memory>,
    /// Server memory with every stream open, caught up and idle.
    pub memory_idle: Option<Memory>,
    /// (idle VmRSS − VmRSS before) / subscribers, in bytes.
    pub rss_per_subscriber_bytes: Option<f64>,
    /// Streams the server ended before the benchmark did (none expected).
    pub closed_early: usize,
    /// Every repetition.
    pub runs: Vec<FanoutRun>,
    /// Median of the runs' delivery p50, in ms.
    pub median_p50_ms: f64,
    /// Median of the runs' p99.
    pub median_p99_ms: f64,
    /// Median of the runs' max.
    pub median_max_ms: f64,
    /// Median of the runs' push round-trip p50 (the commit alone), in ms.
    pub median_push_p50_ms: f64,
}

/// One repetition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FanoutRun {
    /// Deliveries expected: subscribers × writes.
    pub expected: u64,
    /// Deliveries seen.
    pub received: u64,
    /// Delivery latency percentiles over all deliveries, in ms.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The slowest delivery.
    pub max_ms: f64,
    /// The median push round trip, in ms.
    pub push_p50_ms: f64,
    /// The server's CPU seconds over the repetition's wall seconds (cores used).
    pub server_cores: Option<f64>,
    /// This load generator's own cores used, for context (it shares the machine).
    pub client_cores: Option<f64>,
}

/// What the subscriber tasks share with the driver.
struct Shared {
    /// Every timestamp is nanoseconds since this.
    base: Instant,
    /// Only seqs above this (the set-up write's) count.
    floor: u64,
    connected: AtomicUsize,
    failed: AtomicUsize,
    closed: AtomicUsize,
    /// Deliveries counted so far, over all subscribers.
    delivered: AtomicU64,
    problem: Mutex<Option<String>>,
    /// Per subscriber: `(seq, nanos since base)` of each change it read.
    received: Vec<Mutex<Vec<(u64, u64)>>>,
}

impl Shared {
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn problem(&self, what: String) {
        self.problem
            .lock()
            .expect("problem lock")
            .get_or_insert(what);
    }

    fn first_problem(&self) -> String {
        self.problem
            .lock()
            .expect("problem lock")
            .clone()
            .unwrap_or_else(|| "none recorded".into())
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Raises this process's soft limit on open files to its hard limit (every subscriber is a
/// socket; a server started from here inherits it) and returns the soft limit.
#[cfg(unix)]
fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls only read or write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(not(unix))]
fn raise_open_files_limit() -> Option<u64> {
    None
}

/// Runs `sync-bench fanout` and returns the results (also written to `--out` and
/// `--markdown` if given).
pub async fn main(mut p: FanoutParams) -> anyhow::Result<FanoutResult> {
    if p.smoke {
        p.subscribers = vec![20];
        p.writes = 2;
        p.reps = 1;
        p.spacing_ms = 10;
        p.settle_secs = 0.0;
    }
    anyhow::ensure!(
        !p.subscribers.is_empty() && p.subscribers.iter().all(|&n| n > 0),
        "--subscribers must be positive"
    );
    anyhow::ensure!(
        p.writes > 0 && p.reps > 0,
        "--writes and --reps must be positive"
    );
    let most = p.subscribers.iter().copied().max().unwrap_or(0);
    if let Some(limit) = raise_open_files_limit() {
        anyhow::ensure!(
            most as u64 + 64 <= limit,
            "{most} subscribers need that many open files, and this process may open {limit} \
             (raise `ulimit -Hn`)"
        );
    }
    let tag = p
        .tag
        .clone()
        .unwrap_or_else(|| format!("fanout-{}", unix_ms()));
    let mut levels = Vec::new();
    for &n in &p.subscribers {
        let started = match &p.url {
            Some(_) => None,
            None => {
                let binary = match &p.server_bin {
                    Some(b) => b.clone(),
                    None => default_server_bin()?,
                };
                let mut args = Vec::new();
                // Its default (20,000) would refuse the streams of a bigger run.
                if n + 100 > 20_000 {
                    args.push(format!("--max-event-streams={}", n + 100));
                }
                args.extend(p.server_arg.iter().cloned());
                let server = Started::start(&binary, "fanout", &args)?;
                eprintln!(
                    "fanout: started {} (pid {}) at {}",
                    binary.display(),
                    server.pid(),
                    server.url()
                );
                Some(server)
            }
        };
        let (url, pid) = match &started {
            Some(server) => (server.url().to_string(), Some(server.pid())),
            None => (p.url.clone().expect("a URL"), p.server_pid),
        };
        let level = level(&p, &url, pid, n, &format!("{tag}-n{n}")).await?;
        eprintln!(
            "  fanout n={n}: delivery p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; RSS per idle \
             subscriber {}",
            level.median_p50_ms,
            level.median_p99_ms,
            level.median_max_ms,
            level
                .rss_per_subscriber_bytes
                .map_or("?".into(), |b| format!("{:.1} KiB", b / 1024.0))
        );
        levels.push(level);
        drop(started);
    }
    let result = FanoutResult {
        params: serde_json::to_value(&p)?,
        levels,
    };
    crate::local::write_results(p.out.as_deref(), p.markdown.as_deref(), &result, || {
        render(&result, &p)
    })?;
    Ok(result)
}

/// The tiny checked run against the server at `url` with the app `app`: fails unless every
/// subscriber received every write. Returns what it checked.
pub async fn smoke(url: &str, app: &str) -> anyhow::Result<Vec<String>> {
    let params = FanoutParams {
        url: Some(url.to_string()),
        server_pid: None,
        server_bin: None,
        server_arg: Vec::new(),
        app: app.into(),
        user: "fan".into(),
        tag: Some(format!("smoke-{}", unix_ms())),
        subscribers: vec![20],
        writes: 2,
        reps: 1,
        spacing_ms: 10,
        connect_concurrency: 8,
        settle_secs: 0.0,
        timeout_secs: 10.0,
        out: None,
        markdown: None,
        smoke: true,
    };
    let result = main(params).await?;
    check(&result)
}

/// Checks a run: every subscriber received every write, and no stream ended early.
pub fn check(result: &FanoutResult) -> anyhow::Result<Vec<String>> {
    let mut checked = Vec::new();
    for level in &result.levels {
        let n = level.subscribers;
        for (rep, run) in level.runs.iter().enumerate() {
            if run.received != run.expected {
                bail!(
                    "{n} subscribers, rep {rep}: {} of {} deliveries",
                    run.received,
                    run.expected
                );
            }
            checked.push(format!(
                "{n} subscribers, rep {rep}: all {} deliveries",
                run.expected
            ));
        }
        if level.closed_early > 0 {
            bail!(
                "{n} subscribers: the server ended {} streams",
                level.closed_early
            );
        }
        checked.push(format!("{n} subscribers: every stream stayed open"));
    }
    Ok(checked)
}

/// One subscriber count against the server at `url`.
async fn level(
    p: &FanoutParams,
    url: &str,
    pid: Option<u32>,
    n: usize,
    collection: &str,
) -> anyhow::Result<FanoutLevel> {
    let target = Target {
        url: url.to_string(),
        dialect: DialectName::Tidemark,
        user: p.user.clone(),
        password: String::new(),
        app: p.app.clone(),
        bucket: "bench".into(),
        timeout_secs: 30,
    };
    crate::wait_ready(&target, 30).await?;
    let dialect = target.dialect();
    let http = target.http();
    let push = |id: &str| {
        dialect.prepare_push(
            collection,
            &[Write {
                id,
                data: DATA,
                base: Base::Create,
            }],
        )
    };
    let floor = push_one(&dialect, &http, &push("setup")).await?;
    // The set-up write's own work (the store, the hub) is done before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let memory_before = pid.and_then(memory);

    let authority = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let addr: SocketAddr = tokio::net::lookup_host(authority.as_str())
        .await
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .ok_or_else(|| anyhow!("{authority} resolves to nothing"))?;
    let request: Arc<[u8]> = format!(
        "GET /v1/data/{}/~/{collection}/events?since={floor} HTTP/1.1\r\nHost: {authority}\r\n\
         Authorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
        p.app, p.user
    )
    .into_bytes()
    .into();
    let shared = Arc::new(Shared {
        base: Instant::now(),
        floor,
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        closed: AtomicUsize::new(0),
        delivered: AtomicU64::new(0),
        problem: Mutex::new(None),
        received: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
    });

    // Open every stream (untimed). Dropping the set aborts the subscribers.
    let connecting = Instant::now();
    let gate = Arc::new(Semaphore::new(p.connect_concurrency.max(1)));
    let mut subscribers = JoinSet::new();
    for index in 0..n {
        subscribers.spawn(subscriber(
            shared.clone(),
            index,
            addr,
            request.clone(),
            gate.clone(),
        ));
    }
    let deadline = connecting + Duration::from_secs(60) + Duration::from_millis(n as u64 * 10);
    loop {
        let (up, failed) = (
            shared.connected.load(Ordering::Acquire),
            shared.failed.load(Ordering::Acquire),
        );
        if failed > 0 {
            bail!(
                "{failed} of {n} subscribers could not open their stream; the first problem: {}",
                shared.first_problem()
            );
        }
        if up == n {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {up} of {n} streams opened in time");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connect_secs = connecting.elapsed().as_secs_f64();

    // Every stream is live once it has the warm-up write.
    let timeout = Duration::from_secs_f64(p.timeout_secs);
    push_one(&dialect, &http, &push("warm-up")).await?;
    if !wait_for(&shared, n as u64, timeout).await {
        bail!(
            "only {} of {n} subscribers read the warm-up write; the first problem: {}",
            shared.delivered.load(Ordering::Acquire),
            shared.first_problem()
        );
    }
    tokio::time::sleep(Duration::from_secs_f64(p.settle_secs)).await;
    let memory_idle = pid.and_then(memory);
    for slot in &shared.received {
        slot.lock().expect("received lock").clear();
    }

    // Every request body is made before the clock starts.
    let prepared: Vec<Vec<_>> = (0..p.reps)
        .map(|rep| {
            (0..p.writes)
                .map(|k| push(&format!("r{rep}-w{k}")))
                .collect()
        })
        .collect();
    let mut runs = Vec::new();
    for (rep, pushes) in prepared.iter().enumerate() {
        let mut started_at: HashMap<u64, u64> = HashMap::new();
        let mut push_times = Vec::new();
        let cpu_before = (
            Instant::now(),
            pid.and_then(|p| cpu_seconds(Some(p))),
            cpu_seconds(None),
        );
        for request in pushes {
            let before = shared.delivered.load(Ordering::Acquire);
            let t0 = shared.now();
            let seq = push_one(&dialect, &http, request).await?;
            push_times.push((shared.now() - t0) as f64 / 1e6);
            started_at.insert(seq, t0);
            wait_for(&shared, before + n as u64, timeout).await;
            tokio::time::sleep(Duration::from_millis(p.spacing_ms)).await;
        }
        let wall = cpu_before.0.elapsed().as_secs_f64().max(1e-9);
        let cores = |before: Option<f64>, after: Option<f64>| match (before, after) {
            (Some(b), Some(a)) => Some((a - b) / wall),
            _ => None,
        };
        let server_cores = cores(cpu_before.1, pid.and_then(|p| cpu_seconds(Some(p))));
        let client_cores = cores(cpu_before.2, cpu_seconds(None));
        let mut latency =
            Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        let mut received = 0;
        for slot in &shared.received {
            for (seq, at) in slot.lock().expect("received lock").drain(..) {
                if let Some(t0) = started_at.get(&seq) {
                    latency.saturating_record((at.saturating_sub(*t0) / 1000).max(1));
                    received += 1;
                }
            }
        }
        let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
        let run = FanoutRun {
            expected: (n * p.writes) as u64,
            received,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            max_ms: latency.max() as f64 / 1000.0,
            push_p50_ms: median(&push_times),
            server_cores,
            client_cores,
        };
        eprintln!(
            "  fanout n={n} rep={rep}: {} of {} deliveries, p50 {:.2} ms, p99 {:.2} ms, max \
             {:.2} ms; push p50 {:.2} ms; server {} cores, client {} cores",
            run.received,
            run.expected,
            run.p50_ms,
            run.p99_ms,
            run.max_ms,
            run.push_p50_ms,
            cores_text(run.server_cores),
            cores_text(run.client_cores)
        );
        runs.push(run);
    }
    let closed_early = shared.closed.load(Ordering::Acquire);
    if closed_early > 0 {
        eprintln!(
            "  fanout n={n}: the server ended {closed_early} streams; the first problem: {}",
            shared.first_problem()
        );
    }
    drop(subscribers);

    let pick = |f: fn(&FanoutRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    Ok(FanoutLevel {
        subscribers: n,
        connect_secs,
        memory_before,
        memory_idle,
        rss_per_subscriber_bytes: match (memory_before, memory_idle) {
            (Some(before), Some(idle)) => {
                Some((idle.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / n as f64)
            }
            _ => None,
        },
        closed_early,
        median_p50_ms: pick(|r| r.p50_ms),
        median_p99_ms: pick(|r| r.p99_ms),
        median_max_ms: pick(|r| r.max_ms),
        median_push_p50_ms: pick(|r| r.push_p50_ms),
        runs,
    })
}

/// Pushes one object and returns its seq.
async fn push_one(
    dialect: &Dialect,
    http: &Http,
    request: &crate::http::Prepared,
) -> anyhow::Result<u64> {
    let seqs = dialect.push_committed(http, request, 1).await?;
    seqs.first()
        .copied()
        .ok_or_else(|| anyhow!("a push answered no seq"))
}

/// Waits until `count` deliveries were seen, for at most `timeout`; whether they were.
async fn wait_for(shared: &Shared, count: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while shared.delivered.load(Ordering::Acquire) < count {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// One subscriber: opens its stream (holding a `gate` permit meanwhile), then notes every
/// change it reads until it is aborted or the server ends the stream.
async fn subscriber(
    shared: Arc<Shared>,
    index: usize,
    addr: SocketAddr,
    request: Arc<[u8]>,
    gate: Arc<Semaphore>,
) {
    let mut opened = false;
    let outcome = async {
        let permit = gate.acquire().await.expect("never closed");
        let mut stream = TcpStream::connect(addr).await.context("connecting")?;
        stream.set_nodelay(true)?;
        stream.write_all(&request).await.context("sending")?;
        let mut buf = Vec::with_capacity(READ_BUFFER);
        let head_end = loop {
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("the server closed the connection before its answer's head");
            }
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > MAX_HEAD {
                bail!("an answer's head of more than {MAX_HEAD} bytes");
            }
        };
        if !buf.starts_with(b"HTTP/1.1 200") {
            let text = String::from_utf8_lossy(&buf);
            bail!(
                "the stream answered {}",
                text.chars().take(300).collect::<String>()
            );
        }
        buf.drain(..head_end);
        drop(permit);
        opened = true;
        shared.connected.fetch_add(1, Ordering::AcqRel);
        follow(&shared, index, &mut stream, buf).await
    }
    .await;
    if let Err(e) = outcome {
        let counter = if opened {
            &shared.closed
        } else {
            &shared.failed
        };
        counter.fetch_add(1, Ordering::AcqRel);
        shared.problem(format!("{e:#}"));
    }
}

/// Reads an open stream: every complete `id:` line above the floor is a delivery, timed at
/// the read that completed it.
async fn follow(
    shared: &Shared,
    index: usize,
    stream: &mut TcpStream,
    mut buf: Vec<u8>,
) -> anyhow::Result<()> {
    let mut at = shared.now();
    loop {
        let mut start = 0;
        while let Some(newline) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + newline];
            start += newline + 1;
            let Some(value) = line.strip_prefix(b"id:") else {
                continue;
            };
            let seq = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(seq) = seq.filter(|&s| s > shared.floor) {
                shared.received[index]
                    .lock()
                    .expect("received lock")
                    .push((seq, at));
                shared.delivered.fetch_add(1, Ordering::AcqRel);
            }
        }
        buf.drain(..start);
        if buf.capacity() - buf.len() < READ_BUFFER / 2 {
            buf.reserve(READ_BUFFER);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            bail!("the server ended a stream");
        }
        at = shared.now();
    }
}

fn cores_text(cores: Option<f64>) -> String {
    cores.map_or("?".into(), |c| format!("{c:.2}"))
}

/// The median over a level's repetitions of a CPU reading, if every one has it.
fn pick_cores(level: &FanoutLevel, f: fn(&FanoutRun) -> Option<f64>) -> Option<f64> {
    let values: Option<Vec<f64>> = level.runs.iter().map(f).collect();
    values.filter(|v| !v.is_empty()).map(|v| median(&v))
}

/// The results as a Markdown table, one row per subscriber count.
pub fn render(r: &FanoutResult, p: &FanoutParams) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Every subscriber is its own HTTP/1.1 connection holding `GET …/events` open (SSE), all \
         as the collection's owner. Per subscriber count: {} repetition(s) of {} single-object \
         writes, each sent once every subscriber has the previous one, {} ms apart. Delivery = \
         from just before the push is sent until a subscriber reads its `change` event (the \
         commit included); p50/p99/max over every subscriber × write of a repetition, then the \
         median of the repetitions. RSS per idle subscriber = (the server's VmRSS with every \
         stream open, caught up and idle for {} s − its VmRSS before they connected) / \
         subscribers. Cores = CPU seconds over wall seconds during the repetitions (medians).\n\n",
        p.reps, p.writes, p.spacing_ms, p.settle_secs
    ));
    s.push_str(
        "| subscribers | delivery p50 ms | p99 ms | max ms | RSS per idle subscriber | \
         deliveries | p99 per repetition ms | push p50 ms | server / client cores |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for level in &r.levels {
        let received: u64 = level.runs.iter().map(|r| r.received).sum();
        let expected: u64 = level.runs.iter().map(|r| r.expected).sum();
        let per_rep: Vec<String> = level
            .runs
            .iter()
            .map(|r| format!("{:.1}", r.p99_ms))
            .collect();
        s.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {} | {received} of {expected} | {} | {:.2} | {} / {} |\n",
            level.subscribers,
            level.median_p50_ms,
            level.median_p99_ms,
            level.median_max_ms,
            level
                .rss_per_subscriber_bytes
                .map_or("?".into(), |b| format!("{:.1} KiB", b / 1024.0)),
            per_rep.join(", "),
            level.median_push_p50_ms,
            cores_text(pick_cores(level, |r| r.server_cores)),
            cores_text(pick_cores(level, |r| r.client_cores)),
        ));
    }
    s.push('\n');
    for level in &r.levels {
        if let (Some(before), Some(idle)) = (level.memory_before, level.memory_idle) {
            s.push_str(&format!(
                "{} subscribers: server VmRSS {:.1} MiB before, {:.1} MiB with them idle; streams \
                 opened in {:.1} s{}.\n",
                level.subscribers,
                before.rss_kib as f64 / 1024.0,
                idle.rss_kib as f64 / 1024.0,
                level.connect_secs,
                if level.closed_early > 0 {
                    format!("; the server ended {} streams early", level.closed_early)
                } else {
                    String::new()
                }
            ));
        }
    }
    s
}
