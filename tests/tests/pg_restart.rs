//! PostgreSQL restarts under load: the nodes answer 503 with `Retry-After` while it is down
//! (and nothing worse), report themselves unready, and recover by themselves when it is back;
//! clients that retry with the same `push_id` end up with every acknowledged write exactly
//! once, at gap-free seqs; live streams miss nothing.
//!
//! **Run it alone.** It stops and starts the machine's PostgreSQL cluster (see
//! `tidemark_tests::pg::Cluster`), which would break any other test using the database at the
//! time. So it is not in `cargo test`'s default run (`test = false` in `Cargo.toml`); the test
//! script runs it on its own, after the rest:
//!
//! ```text
//! cargo test -p tidemark-tests --test pg_restart
//! ```
//!
//! Whatever happens, the cluster is started again before the test ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidemark_tests::pg::Cluster;
use tidemark_tests::{follow_changes, pull_all, wait_until, Backend, Client, Metrics, Server};

const WRITERS: usize = 4;
const BATCH: usize = 10;
/// How long PostgreSQL stays down.
const DOWNTIME: Duration = Duration::from_secs(3);
/// How long a writer keeps retrying one batch before the test gives up on the node.
const RETRY_FOR: Duration = Duration::from_secs(60);

/// Starts the cluster again when dropped, even while a failed test unwinds.
struct Restore(Cluster);

impl Drop for Restore {
    fn drop(&mut self) {
        self.0.ensure_up();
    }
}

/// One object the server acknowledged.
#[derive(Debug, Clone)]
struct Acked {
    id: String,
    seq: u64,
    data: Value,
}

#[derive(Default)]
struct WriterLog {
    acked: Vec<Acked>,
    /// Batches whose answer said `replayed`: a retry of one that had committed.
    replays: usize,
    /// Pushes answered 200 / 503.
    ok: usize,
    unavailable: usize,
    /// 503s without a usable `Retry-After`.
    without_retry_after: usize,
    /// Transport errors (each retried; the node never dies, so there should be none).
    transport_errors: Vec<String>,
    /// Any other status.
    unexpected: Vec<(u16, String)>,
    /// A batch never acknowledged within RETRY_FOR.
    gave_up: Option<String>,
}

fn batch(writer: usize, n: usize) -> Value {
    let prefix = format!("w{writer}-b{n}");
    let objects: Vec<Value> = (0..BATCH)
        .map(|i| json!({"id": format!("{prefix}-o{i}"), "type": "load", "data": {"w": writer, "b": n, "i": i}}))
        .collect();
    json!({"push_id": prefix, "objects": objects})
}

/// Pushes batches of new ids until `stop`; retries each batch with its push_id (after
/// `Retry-After`) until it is acknowledged, as a client does.
fn spawn_writer(url: String, writer: usize, stop: Arc<AtomicBool>) -> JoinHandle<WriterLog> {
    thread::spawn(move || {
        let client = Client::with_timeout(&url, Some("alice"), Duration::from_secs(15));
        let mut log = WriterLog::default();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let body = batch(writer, n);
            let first_try = Instant::now();
            loop {
                if first_try.elapsed() > RETRY_FOR {
                    log.gave_up = Some(body["push_id"].to_string());
                    return log;
                }
                let request = client
                    .request(reqwest::Method::POST, "/v1/data/notes/~/load")
                    .header("content-type", "application/json")
                    .body(body.to_string());
                match client.try_send(request) {
                    Ok(reply) if reply.status == 200 => {
                        log.ok += 1;
                        let answer = reply.json();
                        if answer["replayed"] == true {
                            log.replays += 1;
                        }
                        record(&mut log.acked, &body, &answer);
                        break;
                    }
                    Ok(reply) if reply.status == 503 => {
                        log.unavailable += 1;
                        let wait = reply
                            .header("retry-after")
                            .and_then(|s| s.parse::<u64>().ok());
                        if wait.is_none_or(|s| s == 0) {
                            log.without_retry_after += 1;
                        }
                        thread::sleep(Duration::from_secs(wait.unwrap_or(1).clamp(1, 5)));
                    }
                    Ok(reply) => {
                        log.unexpected.push((reply.status, reply.text()));
                        thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => {
                        log.transport_errors.push(e.to_string());
                        thread::sleep(Duration::from_millis(200));
                    }
                }
            }
            n += 1;
        }
        log
    })
}

fn record(acked: &mut Vec<Acked>, batch: &Value, answer: &Value) {
    let seqs: Vec<u64> = answer["seqs"]
        .as_array()
        .unwrap_or_else(|| panic!("no seqs in {answer}"))
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    let objects = batch["objects"].as_array().unwrap();
    assert_eq!(seqs.len(), objects.len(), "one seq per object: {answer}");
    for (object, seq) in objects.iter().zip(seqs) {
        acked.push(Acked {
            id: object["id"].as_str().unwrap().to_string(),
            seq,
            data: object["data"].clone(),
        });
    }
}

fn push_count(metrics: &Metrics, status: &str) -> f64 {
    metrics
        .value(
            "tidemark_http_requests_total",
            &[("op", "push"), ("status", status)],
        )
        .unwrap_or(0.0)
}

#[test]
fn nodes_ride_out_a_postgresql_restart_and_every_acknowledged_write_is_kept_once() {
    let cluster = Cluster::local();
    assert!(
        cluster.is_up(),
        "PostgreSQL must be running when the test starts"
    );
    let one = Server::start_on(Backend::Postgres, &["--sse-heartbeat", "500ms"]);
    let two = Server::start_node_of(&one, &["--sse-heartbeat", "500ms"]);
    // Declared after the servers, so dropped before them: the cluster is up again before
    // their schema is dropped.
    let _restore = Restore(cluster.clone());
    let nodes = [&one, &two];
    // The counters are compared with this scrape, taken before the load.
    let before: Vec<Metrics> = nodes.iter().map(|n| n.anonymous().metrics()).collect();

    let path = "/v1/data/notes/~/load/events?since=0";
    let subscriber = two.client("alice");
    let stream = subscriber.events(path, None);

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| spawn_writer(nodes[w % 2].url().to_string(), w, stop.clone()))
        .collect();
    thread::sleep(Duration::from_secs(1));

    let stopped = Instant::now();
    cluster.stop();
    for node in nodes {
        let ready = wait_until(Duration::from_secs(10), "/readyz to turn 503", || {
            let reply = node.anonymous().get("/readyz");
            (reply.status != 200).then_some(reply)
        });
        ready.expect_error(503, "unavailable");
        assert_eq!(node.anonymous().get("/healthz").status, 200);
        let pull = node.client("alice").pull("notes", "load", 0, "");
        pull.expect_error(503, "unavailable");
        assert!(pull.header("retry-after").is_some(), "{:?}", pull.headers);
    }
    thread::sleep(DOWNTIME.saturating_sub(stopped.elapsed()));
    cluster.start();
    let restarted = Instant::now();
    for node in nodes {
        wait_until(
            Duration::from_secs(30),
            "the node to be ready again",
            || (node.anonymous().get("/readyz").status == 200).then_some(()),
        );
    }
    eprintln!(
        "PostgreSQL was down {:?}; the nodes were ready {:?} after it was back",
        restarted - stopped,
        restarted.elapsed()
    );
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let logs: Vec<WriterLog> = writers
        .into_iter()
        .map(|w| w.join().expect("a writer panicked"))
        .collect();

    // While it was down: 503 with Retry-After, and nothing else.
    let unavailable: usize = logs.iter().map(|l| l.unavailable).sum();
    let replays: usize = logs.iter().map(|l| l.replays).sum();
    let acked: Vec<Acked> = logs.iter().flat_map(|l| l.acked.iter().cloned()).collect();
    eprintln!(
        "{} objects acknowledged; {unavailable} answers 503; {replays} retries replayed a commit; transport errors: {:?}",
        acked.len(),
        logs.iter().flat_map(|l| &l.transport_errors).collect::<Vec<_>>()
    );
    for log in &logs {
        assert_eq!(log.gave_up, None, "a batch was never acknowledged");
        assert!(
            log.unexpected.is_empty(),
            "answers other than 200 and 503: {:?}",
            log.unexpected
        );
        assert_eq!(log.without_retry_after, 0, "every 503 carries Retry-After");
        assert!(
            log.transport_errors.is_empty(),
            "the node dropped requests: {:?}",
            log.transport_errors
        );
    }
    assert!(
        unavailable > 0,
        "no push saw the outage; the test proved nothing"
    );
    assert!(
        logs.iter().all(|l| l.ok > 1),
        "every writer had pushes acknowledged before and after the restart"
    );

    // Every acknowledged write is there once, at its seq; seqs are gap-free; batches whole.
    let alice = one.client("alice");
    let (objects, last) = pull_all(&alice, "notes", "load");
    let last_seq = last["until"].as_u64().unwrap();
    let by_id: HashMap<&str, &Value> = objects
        .iter()
        .map(|o| (o["id"].as_str().unwrap(), o))
        .collect();
    assert_eq!(by_id.len(), objects.len(), "an id appears once");
    for a in &acked {
        let stored = by_id
            .get(a.id.as_str())
            .unwrap_or_else(|| panic!("acknowledged {} is lost", a.id));
        assert_eq!(
            stored["seq"].as_u64(),
            Some(a.seq),
            "{} moved: written twice?",
            a.id
        );
        assert_eq!(stored["data"], a.data, "{}", a.id);
    }
    assert_eq!(
        objects.len(),
        acked.len(),
        "nothing unacknowledged was written"
    );
    let mut seqs: Vec<u64> = acked.iter().map(|a| a.seq).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=last_seq).collect::<Vec<_>>(),
        "each seq given out once, no gap"
    );
    let mut batches: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for a in &acked {
        batches
            .entry(&a.id[..a.id.rfind("-o").unwrap()])
            .or_default()
            .push(a.seq);
    }
    for (prefix, mut seqs) in batches {
        seqs.sort_unstable();
        assert_eq!(seqs.len(), BATCH, "{prefix} is torn");
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "{prefix}: {seqs:?}"
        );
    }

    // The subscriber, reconnecting with Last-Event-ID if its stream was ended, saw every
    // write once and in order.
    let (events, reconnects) =
        follow_changes(&subscriber, path, stream, last_seq, Duration::from_secs(30));
    eprintln!("the subscriber reconnected {reconnects} times");
    let seen: Vec<u64> = events.iter().map(|e| e.seq()).collect();
    assert_eq!(
        seen,
        (1..=last_seq).collect::<Vec<_>>(),
        "every change once, in order"
    );

    // The nodes counted what the writers saw.
    let after: Vec<Metrics> = nodes.iter().map(|n| n.anonymous().metrics()).collect();
    let delta = |status: &str| -> f64 {
        after
            .iter()
            .zip(&before)
            .map(|(a, b)| push_count(a, status) - push_count(b, status))
            .sum()
    };
    let ok: usize = logs.iter().map(|l| l.ok).sum();
    assert_eq!(delta("200"), ok as f64, "push 200s counted");
    assert_eq!(delta("503"), unavailable as f64, "push 503s counted");
}
