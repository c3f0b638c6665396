//! Faults: a crash loop under load, a full disk, and slow or dead clients.
//!
//! - The crash loop runs on the backend `TIDEMARK_TEST_BACKEND` chooses.
//! - The full disk is SQLite only (PostgreSQL's disk is not ours to fill): that test starts
//!   its server on SQLite whatever the backend, so it runs, and can fail, under both.
//! - The slow clients run on either backend.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidemark_tests::{pull_all, wait_until, Backend, Client, Server};

/// `PRAGMA integrity_check` on the server's SQLite file (the server must not be running).
fn assert_sqlite_intact(data_dir: &Path) {
    let path = data_dir.join("tidemark.sqlite3");
    let conn = rusqlite::Connection::open(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("running integrity_check");
    assert_eq!(check, "ok", "{} is corrupt", path.display());
}

/// A pseudo-random number in `lo..hi`: varied between runs without a global RNG.
fn jitter(lo: u64, hi: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    lo + (nanos / 1000) % (hi - lo)
}

// ---------------------------------------------------------------------------------------------
// The crash loop
// ---------------------------------------------------------------------------------------------

/// Kill and restart cycles.
const CYCLES: usize = 20;
/// Threads pushing, each in its own loop.
const WRITERS: usize = 3;
/// Threads pulling incrementally, as a syncing replica does.
const READERS: usize = 2;
/// New objects per batch (plus the writer's `head` object, overwritten by every batch).
const NEW_PER_BATCH: usize = 4;
const CRASH: &str = "/v1/data/notes/~/crash";

/// The server's current address: it changes at every restart.
type Url = Arc<RwLock<String>>;

fn client_for(url: &Url) -> Client {
    Client::with_timeout(&url.read().unwrap(), Some("alice"), Duration::from_secs(10))
}

/// What one writer had acknowledged.
#[derive(Default)]
struct Acks {
    /// Every batch's seqs, in the order the writer sent them.
    seqs: Vec<Vec<u64>>,
    /// id → (seq, data) of every new object.
    objects: HashMap<String, (u64, Value)>,
    /// The writer's `head` object as last acknowledged: (seq, data).
    head: Option<(u64, Value)>,
}

fn crash_batch(writer: usize, n: usize) -> Value {
    let mut objects: Vec<Value> = (0..NEW_PER_BATCH)
        .map(|i| json!({"id": format!("w{writer}-b{n}-o{i}"), "data": {"w": writer, "n": n, "i": i, "pad": "p".repeat(40)}}))
        .collect();
    objects.push(json!({"id": format!("w{writer}-head"), "data": {"n": n}}));
    json!({"push_id": format!("w{writer}-b{n}"), "objects": objects})
}

/// Pushes batches until `stop`; a batch whose answer is lost (the server died under it) or
/// refused with 503 is retried with its `push_id` until it is acknowledged, as a client does.
/// So every batch the server committed is acknowledged in the end, exactly once.
fn spawn_crash_writer(
    url: Url,
    writer: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> JoinHandle<Acks> {
    std::thread::spawn(move || {
        let mut acks = Acks::default();
        for n in 0.. {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let body = crash_batch(writer, n);
            let answer = loop {
                let client = client_for(&url);
                match client.try_send(
                    client
                        .request(reqwest::Method::POST, CRASH)
                        .header("content-type", "application/json")
                        .body(body.to_string()),
                ) {
                    Ok(reply) if reply.status == 200 => break reply.json(),
                    Ok(reply) if reply.status == 503 => {}
                    Ok(reply) => panic!(
                        "writer {writer}: the server answered {}: {}",
                        reply.status,
                        reply.text()
                    ),
                    Err(_) => {} // killed under it, or not restarted yet
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            let seqs: Vec<u64> = answer["seqs"]
                .as_array()
                .expect("seqs")
                .iter()
                .map(|s| s.as_u64().unwrap())
                .collect();
            let objects = body["objects"].as_array().unwrap();
            assert_eq!(seqs.len(), objects.len(), "one seq per object: {answer}");
            for (object, &seq) in objects[..NEW_PER_BATCH].iter().zip(&seqs) {
                let id = object["id"].as_str().unwrap().to_string();
                acks.objects.insert(id, (seq, object["data"].clone()));
            }
            acks.head = Some((seqs[NEW_PER_BATCH], objects[NEW_PER_BATCH]["data"].clone()));
            acks.seqs.push(seqs);
            acked.fetch_add(1, Ordering::Relaxed);
        }
        acks
    })
}

/// A replica's view: id → object, and its cursor.
struct Replica {
    objects: BTreeMap<String, Value>,
    cursor: u64,
}

/// Pulls from its cursor over and over, through the crashes, checking that every page moves
/// forward; once `stop` is set it catches up to the end and returns.
fn spawn_reader(url: Url, stop: Arc<AtomicBool>) -> JoinHandle<Replica> {
    std::thread::spawn(move || {
        let mut replica = Replica {
            objects: BTreeMap::new(),
            cursor: 0,
        };
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            let client = client_for(&url);
            let reply = match client.try_send(client.request(
                reqwest::Method::GET,
                &format!("{CRASH}?since={}", replica.cursor),
            )) {
                Ok(reply) => reply,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            if reply.status == 503 {
                continue;
            }
            let page = reply.expect(200);
            let mut last = replica.cursor;
            for object in page["objects"].as_array().expect("objects") {
                let seq = object["seq"].as_u64().unwrap();
                assert!(seq > last, "a pull page goes forward: {seq} after {last}");
                last = seq;
                let id = object["id"].as_str().unwrap().to_string();
                replica.objects.insert(id, object.clone());
            }
            let until = page["until"].as_u64().unwrap();
            assert!(until >= replica.cursor, "the cursor never goes back");
            replica.cursor = until;
            if page["more"] == true {
                continue;
            }
            if stopping {
                return replica;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

#[test]
fn a_crash_loop_of_20_kill_9s_under_concurrent_pushes_loses_nothing_and_replicas_converge() {
    let started = Instant::now();
    let mut server = Server::start(&[]);
    eprintln!("started at {:?}", started.elapsed());
    let url: Url = Arc::new(RwLock::new(server.url().to_string()));
    let stop_writers = Arc::new(AtomicBool::new(false));
    let stop_readers = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| spawn_crash_writer(url.clone(), w, stop_writers.clone(), acked.clone()))
        .collect();
    let readers: Vec<_> = (0..READERS)
        .map(|_| spawn_reader(url.clone(), stop_readers.clone()))
        .collect();

    for cycle in 0..CYCLES {
        // Each kill lands on a server that is taking writes: wait for a new acknowledgement
        // since the restart, then let the load run a little longer.
        let before = acked.load(Ordering::Relaxed);
        let t0 = Instant::now();
        wait_until(
            Duration::from_secs(30),
            &format!("a push acknowledged in cycle {cycle}"),
            || (acked.load(Ordering::Relaxed) > before).then_some(()),
        );
        std::thread::sleep(Duration::from_millis(jitter(20, 200)));
        let t1 = Instant::now();
        server.kill9();
        server.restart();
        *url.write().unwrap() = server.url().to_string();
        eprintln!("cycle {cycle}: waited {:?}, restart {:?}", t1 - t0, t1.elapsed());
    }
    stop_writers.store(true, Ordering::Relaxed);
    let acks: Vec<Acks> = writers
        .into_iter()
        .map(|w| w.join().expect("a writer panicked"))
        .collect();
    eprintln!("writers joined at {:?}", started.elapsed());
    stop_readers.store(true, Ordering::Relaxed);
    let replicas: Vec<Replica> = readers
        .into_iter()
        .map(|r| r.join().expect("a reader panicked"))
        .collect();

    eprintln!("readers joined at {:?}", started.elapsed());
    // One last crash, then the database must open cleanly.
    server.kill9();
    if server.backend() == Backend::Sqlite {
        assert_sqlite_intact(&server.data_dir());
    }
    // The server runs its own check at start-up (SQLite: quick_check) and refuses to start
    // on a corrupt database; on PostgreSQL, starting and serving is the check.
    server.restart();
    let alice = server.client("alice");
    let (objects, last) = pull_all(&alice, "notes", "crash");
    let last_seq = last["until"].as_u64().unwrap();
    let stored: HashMap<&str, &Value> = objects
        .iter()
        .map(|o| (o["id"].as_str().unwrap(), o))
        .collect();

    // Every acknowledged object is there with the acknowledged seq and data.
    let mut batches = 0;
    for (writer, acks) in acks.iter().enumerate() {
        batches += acks.seqs.len();
        for (id, (seq, data)) in &acks.objects {
            let object = stored
                .get(id.as_str())
                .unwrap_or_else(|| panic!("acknowledged object {id} is lost"));
            assert_eq!(object["seq"].as_u64(), Some(*seq), "{id} changed seq");
            assert_eq!(&object["data"], data, "{id} changed data");
        }
        let (seq, data) = acks.head.as_ref().expect("every writer got acknowledgements");
        let head = stored[format!("w{writer}-head").as_str()];
        assert_eq!(
            (head["seq"].as_u64(), &head["data"]),
            (Some(*seq), data),
            "writer {writer}'s head is its last acknowledged version"
        );
    }
    // Seqs are gap-free: the acknowledged batches (each retried until acknowledged, so every
    // committed batch is among them) took every seq from 1 to last_seq exactly once.
    let mut seqs: Vec<u64> = acks
        .iter()
        .flat_map(|a| a.seqs.iter().flatten().copied())
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=last_seq).collect::<Vec<_>>(),
        "the acknowledged seqs are exactly 1..=last_seq"
    );
    for acks in &acks {
        for batch in &acks.seqs {
            assert!(
                batch.windows(2).all(|w| w[1] == w[0] + 1),
                "a batch takes consecutive seqs: {batch:?}"
            );
        }
    }
    // The replicas that synced through the crashes hold exactly what the server holds.
    let expected: BTreeMap<String, Value> = objects
        .iter()
        .map(|o| (o["id"].as_str().unwrap().to_string(), o.clone()))
        .collect();
    for (n, replica) in replicas.iter().enumerate() {
        assert_eq!(replica.cursor, last_seq, "replica {n} caught up");
        assert!(
            replica.objects == expected,
            "replica {n} did not converge: {} objects, the server has {}",
            replica.objects.len(),
            expected.len()
        );
    }
    eprintln!(
        "crash loop ({:?}): {CYCLES} kill -9s, {batches} batches acknowledged, last_seq {last_seq}",
        server.backend()
    );
}
