//! Presence channels under load (issue #10): `channels` channels of `participants`
//! participants each, every participant POSTing its whole state to its channel `hz` times a
//! second and reading everyone else's state back.
//!
//! Each participant is its own user (`u{channel}-{j}`, dev auth) with client id `p{j}`, and
//! sends `{"client", "client_seq", "state": {"sent_ms", "counter", "pad"}, "ttl_ms"}` with a
//! state of about `state_bytes` bytes.
//!
//! The load is **open loop**: the `i`-th request of the whole run is due at
//! `start + i / (channels × participants × hz)` and belongs to participant
//! `i mod (channels × participants)`, so every participant sends every `1 / hz` seconds on a
//! fixed schedule, the participants evenly staggered. A participant that already has
//! `max_in_flight` requests outstanding when its next one is due skips it (counted as
//! skipped, not timed). The schedule is kept by an OS thread, as in [`super::latency`].
//! Requests share one keep-alive pool of at most `connections` requests (hence connections)
//! at once; a request's round trip runs from its due time to the last byte of its answer, so
//! time spent waiting for a connection counts.
//!
//! Measured per repetition (after `warmup_secs` at the same rate): round-trip percentiles,
//! the answered request rate, errors (transport failures and timeouts) and non-2xx answers
//! (429s apart), answers whose `peers` are not everyone else, and the age of the peers'
//! states (the answer's arrival minus the `sent_ms` they were written with; at 10 Hz about
//! 50 ms on average even with an instant server). The server's CPU (utime + stime from
//! `/proc/<pid>/stat`) is read at the edges of the measured window, and its memory (VmRSS,
//! VmHWM from `/proc/<pid>/status`) before the first repetition and after the last.
//!
//! [`smoke`] is the tiny checked variant for CI: it times nothing and fails on any wrong
//! answer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::local::{cpu_seconds, default_server_bin, memory, Memory, Started};
use crate::params::{DialectName, Target};
use crate::results::median;

/// The parameters of `sync-bench presence`.
#[derive(Args, Clone, Debug, Serialize)]
pub struct PresenceParams {
    /// The server's base URL; without it the benchmark starts `--server-bin` itself on
    /// `127.0.0.1:0` with a new data directory, and stops it at the end.
    #[arg(long)]
    pub url: Option<String>,
    /// The server's process id (for CPU and memory), with `--url`.
    #[arg(long, requires = "url")]
    pub server_pid: Option<u32>,
    /// The server to start without `--url` (default: `sync-server` next to this binary).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Tidemark's app name.
    #[arg(long, default_value = "bench")]
    pub app: String,
    /// Prefix of the channel names (default: `presence-` and the clock).
    #[arg(long)]
    pub tag: Option<String>,
    /// Channels.
    #[arg(long, default_value_t = 100)]
    pub channels: usize,
    /// Participants per channel, one user each.
    #[arg(long, default_value_t = 20)]
    pub participants: usize,
    /// Updates per second of each participant.
    #[arg(long, default_value_t = 10.0)]
    pub hz: f64,
    /// Measured seconds per repetition.
    #[arg(long, default_value_t = 20.0)]
    pub secs: f64,
    /// Seconds at the same rate before measuring (every repetition).
    #[arg(long, default_value_t = 3.0)]
    pub warmup_secs: f64,
    /// Repetitions (the summary gives medians).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Most requests outstanding at once over the whole keep-alive pool, so also the most
    /// connections.
    #[arg(long, default_value_t = 128)]
    pub connections: usize,
    /// Most requests one participant may have outstanding; a send due beyond it is skipped.
    #[arg(long, default_value_t = 1)]
    pub max_in_flight: usize,
    /// Approximate bytes of each participant's state (JSON).
    #[arg(long, default_value_t = 200)]
    pub state_bytes: usize,
    /// The `ttl_ms` of every write.
    #[arg(long, default_value_t = 5000)]
    pub ttl_ms: u64,
    /// A request unanswered this long after its due time fails (and is timed at this).
    #[arg(long, default_value_t = 10.0)]
    pub timeout_secs: f64,
    /// Where to write the results as JSON.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where to write the Markdown table.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// The tiny checked run for CI (2 channels × 3 participants × 1 s, one repetition, no
    /// warm-up); fails on any wrong answer and times nothing.
    #[arg(long)]
    pub smoke: bool,
}

/// What `sync-bench presence` measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PresenceResult {
    /// The parameters.
    pub params: serde_json::Value,
    /// Requests per second scheduled (`channels × participants × hz`).
    pub scheduled_rate: f64,
    /// Every repetition.
    pub runs: Vec<PresenceRun>,
    /// Median of the runs' round-trip p50, in ms.
    pub median_p50_ms: f64,
    /// Median of the runs' p99.
    pub median_p99_ms: f64,
    /// Median of the runs' p99.9.
    pub median_p999_ms: f64,
    /// Median of the runs' answered rates.
    pub median_achieved_rate: f64,
    /// Median of the runs' server cores used.
    pub median_server_cores: Option<f64>,
    /// Server memory before the first repetition (after start-up).
    pub memory_before: Option<Memory>,
    /// Server memory after the last repetition.
    pub memory_after: Option<Memory>,
}

/// One repetition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PresenceRun {
    /// Sends due in the measured window.
    pub scheduled: u64,
    /// Of those, skipped because the participant had `max_in_flight` outstanding.
    pub skipped: u64,
    /// Sent in the measured window.
    pub sent: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Transport failures and timeouts.
    pub errors: u64,
    /// Of those, timeouts.
    pub timeouts: u64,
    /// Non-2xx answers.
    pub non_2xx: u64,
    /// Of those, 429s.
    pub status_429: u64,
    /// 2xx answers with `"applied": false`.
    pub not_applied: u64,
    /// 2xx answers whose `peers` did not hold everyone else (`participants - 1`).
    pub peers_wrong: u64,
    /// The fewest and most peers in an answer.
    pub peers_min: usize,
    /// The most.
    pub peers_max: usize,
    /// 2xx answers over the measured seconds (first due time to last answer).
    pub achieved_rate: f64,
    /// Round trip, due time to last byte, in ms.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// The slowest.
    pub max_ms: f64,
    /// Age of the peers' states when the answer arrived (arrival minus their `sent_ms`), ms.
    pub age_p50_ms: f64,
    /// 99th percentile of the age.
    pub age_p99_ms: f64,
    /// Server CPU seconds over wall seconds in the measured window (cores used).
    pub server_cores: Option<f64>,
    /// This load generator's own cores used, for context (it shares the machine).
    pub client_cores: f64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The client: one keep-alive pool, a request cap, and per-participant credentials.
struct Pool {
    client: Client<HttpConnector, Full<Bytes>>,
    slots: Arc<Semaphore>,
}

/// One participant.
struct Participant {
    uri: hyper::Uri,
    auth: HeaderValue,
    user: String,
    client: String,
    in_flight: AtomicUsize,
}

#[derive(Deserialize)]
struct Answer {
    applied: bool,
    peers: Vec<PeerAnswer>,
}

#[derive(Deserialize)]
struct PeerAnswer {
    user: String,
    client: String,
    state: PeerState,
}

#[derive(Deserialize)]
struct PeerState {
    sent_ms: u64,
}

struct Tally {
    round_trip: Histogram<u64>,
    age: Histogram<u64>,
    sent: u64,
    ok: u64,
    errors: u64,
    timeouts: u64,
    non_2xx: u64,
    status_429: u64,
    not_applied: u64,
    peers_wrong: u64,
    peers_min: usize,
    peers_max: usize,
    first_problem: Option<String>,
    last_done: Option<Instant>,
}

impl Tally {
    fn problem(&mut self, what: String) {
        self.first_problem.get_or_insert(what);
    }
}

/// Runs `sync-bench presence` and returns the results (also written to `--out` and
/// `--markdown` if given).
pub async fn main(mut p: PresenceParams) -> anyhow::Result<PresenceResult> {
    if p.smoke {
        p.channels = 2;
        p.participants = 3;
        p.secs = 1.0;
        p.warmup_secs = 0.0;
        p.reps = 1;
    }
    anyhow::ensure!(
        p.channels > 0 && p.participants > 0 && p.hz > 0.0 && p.reps > 0,
        "--channels, --participants, --hz and --reps must be positive"
    );
    let (started, url, pid) = match &p.url {
        Some(url) => (None, url.clone(), p.server_pid),
        None => {
            let binary = match &p.server_bin {
                Some(b) => b.clone(),
                None => default_server_bin()?,
            };
            let server = Started::start(&binary, "presence", &[])?;
            let (url, pid) = (server.url().to_string(), server.pid());
            eprintln!(
                "presence: started {} (pid {pid}) at {url}",
                binary.display()
            );
            (Some(server), url, Some(pid))
        }
    };
    let target = Target {
        url: url.clone(),
        dialect: DialectName::Tidemark,
        user: "bench".into(),
        password: "bench".into(),
        app: p.app.clone(),
        bucket: "bench".into(),
        timeout_secs: 30,
    };
    crate::wait_ready(&target, 30).await?;

    let tag = p
        .tag
        .clone()
        .unwrap_or_else(|| format!("presence-{}", unix_ms()));
    let base = url.trim_end_matches('/');
    let participants: Arc<Vec<Participant>> = Arc::new(
        (0..p.channels * p.participants)
            .map(|n| {
                let (c, j) = (n % p.channels, n / p.channels);
                let uri = format!("{base}/v1/channels/{}/{tag}-c{c}", p.app);
                Ok(Participant {
                    uri: uri.parse().with_context(|| format!("the URL {uri}"))?,
                    auth: HeaderValue::from_str(&format!("Bearer u{c}-{j}"))?,
                    user: format!("u{c}-{j}"),
                    client: format!("p{j}"),
                    in_flight: AtomicUsize::new(0),
                })
            })
            .collect::<anyhow::Result<_>>()?,
    );
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.enforce_http(true);
    let client = Arc::new(Pool {
        client: Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(120))
            .build(connector),
        slots: Arc::new(Semaphore::new(p.connections.max(1))),
    });

    let memory_before = pid.and_then(memory);
    let mut runs = Vec::new();
    for rep in 0..p.reps {
        let run = one(&p, &client, &participants, pid, rep).await?;
        eprintln!(
            "  presence rep={rep}: {} sent ({} skipped) at {:.0}/s answered: p50 {:.2} ms, p99 {:.2} ms, \
             p99.9 {:.2} ms; {} errors, {} non-2xx ({} 429), {} with wrong peers; state age p50 {:.1} ms, \
             p99 {:.1} ms; server {} cores, client {:.2} cores",
            run.sent, run.skipped, run.achieved_rate, run.p50_ms, run.p99_ms, run.p999_ms,
            run.errors, run.non_2xx, run.status_429, run.peers_wrong, run.age_p50_ms,
            run.age_p99_ms,
            run.server_cores.map_or("?".into(), |c| format!("{c:.2}")),
            run.client_cores
        );
        runs.push(run);
    }
    let memory_after = pid.and_then(memory);
    drop(started);

    let pick = |f: fn(&PresenceRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let cores: Vec<f64> = runs.iter().filter_map(|r| r.server_cores).collect();
    let result = PresenceResult {
        params: serde_json::to_value(&p)?,
        scheduled_rate: (p.channels * p.participants) as f64 * p.hz,
        median_p50_ms: pick(|r| r.p50_ms),
        median_p99_ms: pick(|r| r.p99_ms),
        median_p999_ms: pick(|r| r.p999_ms),
        median_achieved_rate: pick(|r| r.achieved_rate),
        median_server_cores: (!cores.is_empty()).then(|| median(&cores)),
        memory_before,
        memory_after,
        runs,
    };
    crate::local::write_results(p.out.as_deref(), p.markdown.as_deref(), &result, || {
        render(&result, &p)
    })?;
    Ok(result)
}

/// The tiny checked run against the app `app`: fails unless every answer was right.
/// Returns what it checked.
pub async fn smoke(url: &str, app: &str) -> anyhow::Result<Vec<String>> {
    let params = PresenceParams {
        url: Some(url.to_string()),
        server_pid: None,
        server_bin: None,
        app: app.into(),
        tag: Some(format!("smoke-{}", unix_ms())),
        channels: 2,
        participants: 3,
        hz: 10.0,
        secs: 1.0,
        warmup_secs: 0.0,
        reps: 1,
        connections: 8,
        max_in_flight: 2,
        state_bytes: 200,
        ttl_ms: 5000,
        timeout_secs: 10.0,
        out: None,
        markdown: None,
        smoke: true,
    };
    let result = main(params).await?;
    check(&result)
}

/// Checks the answers of a run: all 2xx, applied, and (after each participant's first send)
/// peers that are everyone else.
pub fn check(result: &PresenceResult) -> anyhow::Result<Vec<String>> {
    let mut checked = Vec::new();
    for (rep, run) in result.runs.iter().enumerate() {
        if run.sent == 0 || run.ok != run.sent {
            bail!(
                "rep {rep}: {} of {} requests answered 2xx ({} errors, {} non-2xx)",
                run.ok,
                run.sent,
                run.errors,
                run.non_2xx
            );
        }
        checked.push(format!("rep {rep}: {} requests answered 2xx", run.ok));
        if run.not_applied > 0 {
            bail!("rep {rep}: {} writes were not applied", run.not_applied);
        }
        checked.push(format!("rep {rep}: every write applied"));
        if run.peers_wrong > 0 {
            bail!(
                "rep {rep}: {} answers did not list everyone else (peers {}..={})",
                run.peers_wrong,
                run.peers_min,
                run.peers_max
            );
        }
        checked.push(format!(
            "rep {rep}: every answer after the joins listed the {} others with their states",
            run.peers_max
        ));
    }
    Ok(checked)
}

/// One repetition.
async fn one(
    p: &PresenceParams,
    client: &Arc<Pool>,
    participants: &Arc<Vec<Participant>>,
    pid: Option<u32>,
    rep: usize,
) -> anyhow::Result<PresenceRun> {
    let n = participants.len();
    let rate = n as f64 * p.hz;
    let warm = (p.warmup_secs * rate).round() as u64;
    let total = warm + (p.secs * rate).round() as u64;
    // In smoke mode (no warm-up) each participant's first answer may precede its peers' joins.
    let joined_after = warm.max(n as u64);
    let pad = "x".repeat(p.state_bytes.saturating_sub(60));
    let pad: Arc<str> = Arc::from(pad.as_str());
    let new_histogram =
        || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    let tally = Arc::new(Mutex::new(Tally {
        round_trip: new_histogram(),
        age: new_histogram(),
        sent: 0,
        ok: 0,
        errors: 0,
        timeouts: 0,
        non_2xx: 0,
        status_429: 0,
        not_applied: 0,
        peers_wrong: 0,
        peers_min: usize::MAX,
        peers_max: 0,
        first_problem: None,
        last_done: None,
    }));
    let skipped = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(50);
    let window_start = start + Duration::from_secs_f64(warm as f64 / rate);
    let window_end = start + Duration::from_secs_f64(total as f64 / rate);

    // CPU at the edges of the measured window.
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(window_start.into()).await;
        let before = (
            Instant::now(),
            pid.and_then(|p| cpu_seconds(Some(p))),
            cpu_seconds(None),
        );
        tokio::time::sleep_until(window_end.into()).await;
        let after = (
            Instant::now(),
            pid.and_then(|p| cpu_seconds(Some(p))),
            cpu_seconds(None),
        );
        (before, after)
    });

    let runtime = tokio::runtime::Handle::current();
    let dispatch = {
        let (client, participants, tally, skipped, pad) = (
            client.clone(),
            participants.clone(),
            tally.clone(),
            skipped.clone(),
            pad.clone(),
        );
        let (expected_peers, max_in_flight, ttl_ms, timeout) = (
            p.participants - 1,
            p.max_in_flight.max(1),
            p.ttl_ms,
            Duration::from_secs_f64(p.timeout_secs),
        );
        tokio::task::spawn_blocking(move || {
            let mut handles = Vec::new();
            for i in 0..total {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let measured = i >= warm;
                let who = (i % n as u64) as usize;
                let round = i / n as u64;
                if participants[who].in_flight.fetch_add(1, Ordering::AcqRel) >= max_in_flight {
                    participants[who].in_flight.fetch_sub(1, Ordering::AcqRel);
                    if measured {
                        skipped.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                let (client, participants, tally, pad) = (
                    client.clone(),
                    participants.clone(),
                    tally.clone(),
                    pad.clone(),
                );
                let check_peers = i >= joined_after;
                handles.push(runtime.spawn(async move {
                    let me = &participants[who];
                    // Seqs rise across repetitions too, for the same participants.
                    let seq = rep as u64 * 1_000_000_000 + round + 1;
                    let exchange = async {
                        let _slot = client.slots.acquire().await.expect("never closed");
                        let body = format!(
                            r#"{{"client":"{}","client_seq":{seq},"state":{{"sent_ms":{},"counter":{round},"pad":"{pad}"}},"ttl_ms":{ttl_ms}}}"#,
                            me.client,
                            unix_ms()
                        );
                        let req = Request::builder()
                            .method(Method::POST)
                            .uri(me.uri.clone())
                            .header(AUTHORIZATION, me.auth.clone())
                            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                            .body(Full::new(Bytes::from(body)))
                            .context("building a request")?;
                        let response = client.client.request(req).await?;
                        let (parts, body) = response.into_parts();
                        let body = body.collect().await?.to_bytes();
                        Ok::<_, anyhow::Error>((parts.status, body))
                    };
                    let outcome = tokio::time::timeout_at((due + timeout).into(), exchange).await;
                    let done = Instant::now();
                    let received_us = unix_us();
                    me.in_flight.fetch_sub(1, Ordering::AcqRel);
                    let parsed = match &outcome {
                        Ok(Ok((status, body))) if status.is_success() => {
                            Some(serde_json::from_slice::<Answer>(body))
                        }
                        _ => None,
                    };
                    let mut t = tally.lock().expect("tally lock");
                    if !measured {
                        return;
                    }
                    t.sent += 1;
                    let micros = done.duration_since(due).as_micros() as u64;
                    match outcome {
                        Err(_) => {
                            t.errors += 1;
                            t.timeouts += 1;
                            t.round_trip.saturating_record(micros);
                            t.problem("no answer within the timeout".into());
                        }
                        Ok(Err(e)) => {
                            t.errors += 1;
                            t.problem(format!("{e:#}"));
                        }
                        Ok(Ok((status, body))) if !status.is_success() => {
                            t.non_2xx += 1;
                            t.status_429 += u64::from(status.as_u16() == 429);
                            let excerpt: String =
                                String::from_utf8_lossy(&body).chars().take(300).collect();
                            t.problem(format!("answered {status}: {excerpt}"));
                        }
                        Ok(Ok(_)) => {
                            t.round_trip.saturating_record(micros);
                            t.last_done = Some(t.last_done.map_or(done, |l| l.max(done)));
                            match parsed.expect("parsed for a 2xx") {
                                Err(e) => {
                                    t.errors += 1;
                                    t.problem(format!("an answer did not parse: {e}"));
                                }
                                Ok(answer) => {
                                    t.ok += 1;
                                    if !answer.applied {
                                        t.not_applied += 1;
                                        t.problem("a write was not applied".into());
                                    }
                                    let peers = answer.peers.len();
                                    t.peers_min = t.peers_min.min(peers);
                                    t.peers_max = t.peers_max.max(peers);
                                    let me_listed = answer
                                        .peers
                                        .iter()
                                        .any(|peer| peer.client == me.client && peer.user == me.user);
                                    if check_peers && (peers != expected_peers || me_listed) {
                                        t.peers_wrong += 1;
                                        t.problem(format!(
                                            "an answer had {peers} peers, not {expected_peers}"
                                        ));
                                    }
                                    for peer in &answer.peers {
                                        let age = received_us
                                            .saturating_sub(peer.state.sent_ms * 1000);
                                        t.age.saturating_record(age.max(1));
                                    }
                                }
                            }
                        }
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
    let ((t0, server0, client0), (t1, server1, client1)) =
        sampler.await.context("the CPU sampler failed")?;
    let wall = t1.duration_since(t0).as_secs_f64().max(1e-9);

    let t = tally.lock().expect("tally lock");
    if let Some(problem) = &t.first_problem {
        eprintln!("  presence rep={rep}: the first problem: {problem}");
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let window = t
        .last_done
        .map_or(0.0, |l| l.duration_since(window_start).as_secs_f64());
    let scheduled = total - warm;
    Ok(PresenceRun {
        scheduled,
        skipped: skipped.load(Ordering::Relaxed),
        sent: t.sent,
        ok: t.ok,
        errors: t.errors,
        timeouts: t.timeouts,
        non_2xx: t.non_2xx,
        status_429: t.status_429,
        not_applied: t.not_applied,
        peers_wrong: t.peers_wrong,
        peers_min: if t.peers_min == usize::MAX {
            0
        } else {
            t.peers_min
        },
        peers_max: t.peers_max,
        achieved_rate: if window > 0.0 {
            t.ok as f64 / window
        } else {
            0.0
        },
        p50_ms: ms(&t.round_trip, 0.5),
        p99_ms: ms(&t.round_trip, 0.99),
        p999_ms: ms(&t.round_trip, 0.999),
        max_ms: t.round_trip.max() as f64 / 1000.0,
        age_p50_ms: ms(&t.age, 0.5),
        age_p99_ms: ms(&t.age, 0.99),
        server_cores: match (server0, server1) {
            (Some(a), Some(b)) => Some((b - a) / wall),
            _ => None,
        },
        client_cores: match (client0, client1) {
            (Some(a), Some(b)) => (b - a) / wall,
            _ => f64::NAN,
        },
    })
}

/// The results as a Markdown table, one row per repetition and a median row.
pub fn render(r: &PresenceResult, p: &PresenceParams) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{} channels × {} participants (one user each) × {} Hz = {:.0} requests/s scheduled \
         (open loop), ~{} B states, keep-alive pool of at most {} requests/connections, at \
         most {} in flight per participant; {} repetition(s) of {} s after {} s of warm-up. \
         Round trip = due time to last byte.\n\n",
        p.channels,
        p.participants,
        p.hz,
        r.scheduled_rate,
        p.state_bytes,
        p.connections,
        p.max_in_flight,
        p.reps,
        p.secs,
        p.warmup_secs
    ));
    s.push_str(
        "| rep | answered/s | p50 ms | p99 ms | p99.9 ms | max ms | sent | skipped | errors | \
         non-2xx (429) | peers ≠ N−1 | peers | state age p50 / p99 ms | server cores | client cores |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let cores = |c: Option<f64>| c.map_or("?".to_string(), |c| format!("{c:.2}"));
    for (i, run) in r.runs.iter().enumerate() {
        s.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} ({}) | {} | {}–{} | {:.1} / {:.1} | {} | {:.2} |\n",
            i + 1,
            run.achieved_rate,
            run.p50_ms,
            run.p99_ms,
            run.p999_ms,
            run.max_ms,
            run.sent,
            run.skipped,
            run.errors,
            run.non_2xx,
            run.status_429,
            run.peers_wrong,
            run.peers_min,
            run.peers_max,
            run.age_p50_ms,
            run.age_p99_ms,
            cores(run.server_cores),
            run.client_cores
        ));
    }
    s.push_str(&format!(
        "| **median** | **{:.0}** | **{:.2}** | **{:.2}** | **{:.2}** | | | | | | | | | **{}** | |\n\n",
        r.median_achieved_rate,
        r.median_p50_ms,
        r.median_p99_ms,
        r.median_p999_ms,
        cores(r.median_server_cores)
    ));
    let mem = |m: Option<Memory>| {
        m.map_or("?".to_string(), |m| {
            format!(
                "VmRSS {:.1} MiB, VmHWM {:.1} MiB",
                m.rss_kib as f64 / 1024.0,
                m.hwm_kib as f64 / 1024.0
            )
        })
    };
    s.push_str(&format!(
        "Server memory: before {}; after {}.\n",
        mem(r.memory_before),
        mem(r.memory_after)
    ));
    s
}
