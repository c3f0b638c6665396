//! Durability: what the server acknowledged survives `kill -9` and SIGTERM, seqs stay
//! gap-free, and batches stay whole. Both backends; on SQLite the SIGTERM test also checks
//! that the write-ahead log was checkpointed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidemark_tests::{pull_all, Backend, Client, Server};

const WRITERS: usize = 4;
const BATCH: usize = 20;

/// One object the server acknowledged with a 200.
#[derive(Debug, Clone)]
struct Acked {
    id: String,
    seq: u64,
    data: Value,
}

/// What one writer thread saw.
struct WriterLog {
    acked: Vec<Acked>,
    /// The batch whose answer never came (the server died under it), to retry after restart.
    in_flight: Option<Value>,
    /// Statuses other than 200 that the server answered with.
    unexpected: Vec<(u16, String)>,
    /// When the last 200 arrived.
    last_ack: Option<Instant>,
}

fn batch(round: usize, writer: usize, n: usize) -> Value {
    let prefix = format!("r{round}-w{writer}-b{n}");
    let objects: Vec<Value> = (0..BATCH)
        .map(|i| json!({"id": format!("{prefix}-o{i}"), "type": "crash", "data": {"writer": writer, "batch": n, "i": i, "pad": "p".repeat(48)}}))
        .collect();
    json!({"push_id": prefix, "objects": objects})
}

/// Records the objects of a committed batch under the seqs the server gave them.
fn record(acked: &mut Vec<Acked>, batch: &Value, answer: &Value) {
    let seqs: Vec<u64> = answer["seqs"]
        .as_array()
        .expect("seqs is a list")
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    let objects = batch["objects"].as_array().unwrap();
    assert_eq!(seqs.len(), objects.len(), "one seq per object: {answer}");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "a batch takes consecutive seqs: {answer}"
    );
    for (object, seq) in objects.iter().zip(seqs) {
        acked.push(Acked {
            id: object["id"].as_str().unwrap().to_string(),
            seq,
            data: object["data"].clone(),
        });
    }
}

/// Starts a writer that pushes batches until the server stops answering or `stop` is set.
fn spawn_writer(
    url: &str,
    round: usize,
    writer: usize,
    stop: Arc<AtomicBool>,
) -> JoinHandle<WriterLog> {
    let client = Client::with_timeout(url, Some("alice"), Duration::from_secs(10));
    std::thread::spawn(move || {
        let mut log = WriterLog {
            acked: Vec::new(),
            in_flight: None,
            unexpected: Vec::new(),
            last_ack: None,
        };
        for n in 0.. {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let body = batch(round, writer, n);
            let request = client
                .request(reqwest::Method::POST, "/v1/data/notes/~/crash")
                .header("content-type", "application/json")
                .body(body.to_string());
            match client.try_send(request) {
                Ok(reply) if reply.status == 200 => {
                    record(&mut log.acked, &body, &reply.json());
                    log.last_ack = Some(Instant::now());
                }
                Ok(reply) => {
                    log.unexpected.push((reply.status, reply.text()));
                    log.in_flight = Some(body);
                    break;
                }
                Err(_) => {
                    log.in_flight = Some(body);
                    break;
                }
            }
        }
        log
    })
}

/// Checks, on a freshly restarted server, that every acknowledged object is there with its
/// seq and data, that seqs 1..=last_seq are all present, and that every batch is whole.
fn verify(server: &Server, acked: &[Acked]) {
    let alice = server.client("alice");
    let (objects, last) = pull_all(&alice, "notes", "crash");
    let by_id: HashMap<&str, &Value> = objects
        .iter()
        .map(|o| (o["id"].as_str().unwrap(), o))
        .collect();
    assert_eq!(
        by_id.len(),
        objects.len(),
        "an id appears once in a pull from 0"
    );
    for a in acked {
        let stored = by_id
            .get(a.id.as_str())
            .unwrap_or_else(|| panic!("acknowledged object {} is lost", a.id));
        assert_eq!(
            stored["seq"].as_u64(),
            Some(a.seq),
            "acknowledged object {} changed seq",
            a.id
        );
        assert_eq!(
            stored["data"], a.data,
            "acknowledged object {} changed data",
            a.id
        );
    }
    // Ids are unique and never overwritten, so every seq ever given out is still there.
    let last_seq = last["until"].as_u64().unwrap();
    let mut seqs: Vec<u64> = objects.iter().map(|o| o["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=last_seq).collect::<Vec<_>>(),
        "seqs are gap-free up to last_seq"
    );
    let list = alice.get("/v1/data/notes/~").expect(200);
    assert_eq!(list["collections"][0]["last_seq"].as_u64(), Some(last_seq));
    // Atomicity: a batch is there whole, at consecutive seqs, or not at all.
    let mut batches: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for o in &objects {
        let id = o["id"].as_str().unwrap();
        let prefix = &id[..id.rfind("-o").expect("ids end in -o<i>")];
        batches
            .entry(prefix.to_string())
            .or_default()
            .push(o["seq"].as_u64().unwrap());
    }
    for (prefix, mut seqs) in batches {
        seqs.sort_unstable();
        assert_eq!(seqs.len(), BATCH, "batch {prefix} is torn: {seqs:?}");
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "batch {prefix} is not contiguous: {seqs:?}"
        );
    }
}

/// After a restart, retries each writer's unanswered batch with its push_id, as a client
/// would: it either replays (it had committed) or commits now. Either way it is acknowledged.
fn retry_in_flight(server: &Server, logs: &[WriterLog], acked: &mut Vec<Acked>) {
    let alice = server.client("alice");
    for body in logs.iter().filter_map(|l| l.in_flight.as_ref()) {
        let answer = alice.push("notes", "crash", body).expect(200);
        record(acked, body, &answer);
    }
}

/// A pseudo-random delay in `lo..hi` ms: varied between runs without a global RNG.
fn jitter_ms(lo: u64, hi: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    lo + (nanos / 1000) % (hi - lo)
}

#[test]
fn acknowledged_pushes_survive_kill_9_with_gap_free_seqs_and_whole_batches() {
    let mut server = Server::start(&[]);
    let mut acked: Vec<Acked> = Vec::new();
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| spawn_writer(server.url(), round, w, stop.clone()))
            .collect();
        std::thread::sleep(Duration::from_millis(jitter_ms(200, 800)));
        server.kill9();
        let logs: Vec<WriterLog> = writers
            .into_iter()
            .map(|w| w.join().expect("a writer thread panicked"))
            .collect();
        for log in &logs {
            assert!(
                log.unexpected.is_empty(),
                "round {round}: the server answered {:?}",
                log.unexpected
            );
        }
        let this_round: usize = logs.iter().map(|l| l.acked.len()).sum();
        assert!(
            this_round > 0,
            "round {round}: no push was acknowledged before the kill; the test proved nothing"
        );
        let unanswered = logs.iter().filter(|l| l.in_flight.is_some()).count();
        eprintln!("round {round}: {this_round} objects acknowledged, {unanswered} batches unanswered at the kill");
        acked.extend(logs.iter().flat_map(|l| l.acked.iter().cloned()));

        server.restart();
        verify(&server, &acked);
        retry_in_flight(&server, &logs, &mut acked);
        verify(&server, &acked);
    }
}

#[test]
fn sigterm_lets_in_flight_pushes_finish_exits_0_and_keeps_every_acknowledged_write() {
    let mut server = Server::start(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| spawn_writer(server.url(), 0, w, stop.clone()))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    let status = server.terminate();
    stop.store(true, Ordering::Relaxed);
    let logs: Vec<WriterLog> = writers
        .into_iter()
        .map(|w| w.join().expect("a writer thread panicked"))
        .collect();
    assert!(
        status.success(),
        "SIGTERM is a clean shutdown, got {status}\n{}",
        server.log()
    );
    for log in &logs {
        // A request the server took in before it stopped is answered in full; later ones find
        // the port closed. A 503 ("shutting down, retry") would also be honest; nothing else.
        for (status, body) in &log.unexpected {
            assert_eq!(
                *status, 503,
                "during shutdown the server answered {status}: {body}"
            );
        }
    }
    let mut acked: Vec<Acked> = logs.iter().flat_map(|l| l.acked.iter().cloned()).collect();
    assert!(
        !acked.is_empty(),
        "no push was acknowledged before SIGTERM; the test proved nothing"
    );
    // Requests in flight when the signal came were finished, not dropped.
    let answered_after_signal = logs
        .iter()
        .filter(|l| l.last_ack.is_some_and(|t| t > signalled))
        .count();
    eprintln!("sigterm: {} objects acknowledged, {answered_after_signal} writers answered after the signal", acked.len());
    assert!(
        answered_after_signal > 0,
        "no request in flight at SIGTERM was answered; in-flight requests must finish"
    );

    // The store was closed, not abandoned.
    assert!(
        server.log().contains("shut down cleanly"),
        "the server did not close its store\n{}",
        server.log()
    );
    // SQLite only: the database was checkpointed, so no write-ahead log is left to replay.
    // (PostgreSQL keeps its own WAL; a node has nothing of its own to flush.)
    if server.backend() == Backend::Sqlite {
        for entry in std::fs::read_dir(server.data_dir()).expect("the data directory exists") {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with("-wal") {
                assert_eq!(
                    entry.metadata().unwrap().len(),
                    0,
                    "{name} still holds frames after a clean shutdown"
                );
            }
        }
    }

    server.restart();
    verify(&server, &acked);
    retry_in_flight(&server, &logs, &mut acked);
    verify(&server, &acked);
}
