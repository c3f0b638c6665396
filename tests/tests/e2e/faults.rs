//! Faults: a crash loop under load, a full disk, and slow or dead clients.
//!
//! - The crash loop runs on the backend `TIDEMARK_TEST_BACKEND` chooses.
//! - The full disk is SQLite only (PostgreSQL's disk is not ours to fill): that test starts
//!   its server on SQLite whatever the backend, so it runs, and can fail, under both.
//! - The slow clients run on either backend.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidemark_tests::{pull_all, raw, wait_until, Backend, Client, Server};

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
    let mut server = Server::start(&[]);
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
        wait_until(
            Duration::from_secs(30),
            &format!("a push acknowledged in cycle {cycle}"),
            || (acked.load(Ordering::Relaxed) > before).then_some(()),
        );
        std::thread::sleep(Duration::from_millis(jitter(20, 200)));
        server.kill9();
        server.restart();
        *url.write().unwrap() = server.url().to_string();
    }
    stop_writers.store(true, Ordering::Relaxed);
    let acks: Vec<Acks> = writers
        .into_iter()
        .map(|w| w.join().expect("a writer panicked"))
        .collect();
    stop_readers.store(true, Ordering::Relaxed);
    let replicas: Vec<Replica> = readers
        .into_iter()
        .map(|r| r.join().expect("a reader panicked"))
        .collect();

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
        let (seq, data) = acks
            .head
            .as_ref()
            .expect("every writer got acknowledgements");
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

// ---------------------------------------------------------------------------------------------
// A full disk (SQLite only)
// ---------------------------------------------------------------------------------------------

/// A tmpfs of a fixed size, mounted for one test (the tests run as root) and unmounted when
/// dropped, even when the test fails.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("tidemark-tmpfs-")
            .tempdir()
            .expect("creating a mount point");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            output.status.success(),
            "mounting a {size} tmpfs failed (the full-disk test needs root): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds a file open: detach it now, it goes when released.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Fills the file at `path` with incompressible-looking bytes until the file system is full.
fn fill(path: &Path, most: usize) -> usize {
    let mut file = std::fs::File::create(path).expect("creating a ballast file");
    let chunk: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7919 % 251) as u8).collect();
    let mut written = 0;
    while written < most {
        match file.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n,
        }
    }
    let _ = file.sync_all();
    written
}

/// A batch of `n` objects with about `bytes` of data each, ids `{prefix}-{i}`.
fn big_batch(prefix: &str, n: usize, bytes: usize) -> Value {
    let objects: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("{prefix}-{i}"), "data": {"fill": format!("{prefix}-{i}-").repeat(bytes / 12)}}))
        .collect();
    json!({ "objects": objects })
}

#[test]
fn a_full_disk_sqlite_only_is_507_reads_keep_working_and_writes_resume_when_space_is_freed() {
    // The mount goes first so that it is dropped (unmounted) after the server.
    let disk = Tmpfs::mount("4m");
    let data = disk.path().join("data");
    let mut server = Server::start_sqlite_in(&data, &[]);
    let alice = server.client("alice");
    let mut acked: HashMap<String, Value> = HashMap::new();
    let record = |acked: &mut HashMap<String, Value>, batch: &Value| {
        for object in batch["objects"].as_array().unwrap() {
            acked.insert(
                object["id"].as_str().unwrap().to_string(),
                object["data"].clone(),
            );
        }
    };
    let first = big_batch("before", 4, 1000);
    alice.push("notes", "disk", &first).expect(200);
    record(&mut acked, &first);

    // Leave about 256 KiB free, then write until the database hits the wall.
    let ballast = disk.path().join("ballast");
    let free = fs_free(disk.path());
    fill(&ballast, free.saturating_sub(256 * 1024) as usize);
    let mut full = None;
    for n in 0..64 {
        let batch = big_batch(&format!("fill{n}"), 8, 8 * 1024);
        let reply = alice.push("notes", "disk", &batch);
        if reply.status == 200 {
            record(&mut acked, &batch);
        } else {
            full = Some(reply);
            break;
        }
    }
    let full = full.expect("64 pushes of 64 KiB never filled 256 KiB");
    full.expect_error(507, "insufficient_storage");
    eprintln!("full disk after {} acknowledged objects", acked.len());

    // Reads keep working, and show everything acknowledged.
    let check = |alice: &Client, acked: &HashMap<String, Value>| {
        let (objects, _) = pull_all(alice, "notes", "disk");
        let stored: HashMap<&str, &Value> = objects
            .iter()
            .map(|o| (o["id"].as_str().unwrap(), &o["data"]))
            .collect();
        for (id, data) in acked {
            assert_eq!(stored.get(id.as_str()), Some(&data), "acknowledged {id}");
        }
        assert_eq!(
            stored.len(),
            acked.len(),
            "a refused write left something behind"
        );
    };
    check(&alice, &acked);
    alice.get("/v1/data/notes/~").expect(200);
    // Still full: still a clean 507, nothing half-written.
    alice
        .push("notes", "disk", &big_batch("still-full", 8, 8 * 1024))
        .expect_error(507, "insufficient_storage");
    check(&alice, &acked);

    // Space comes back: writes work again, without a restart.
    std::fs::remove_file(&ballast).expect("removing the ballast");
    let after = big_batch("after", 8, 8 * 1024);
    alice.push("notes", "disk", &after).expect(200);
    record(&mut acked, &after);
    check(&alice, &acked);

    // Nothing is corrupted: a crash now, an integrity check, and every write is still there.
    server.kill9();
    assert_sqlite_intact(&data);
    server.restart();
    check(&server.client("alice"), &acked);
}

/// Free bytes on the file system holding `path`.
fn fs_free(path: &Path) -> u64 {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs fills the struct we pass; the path is a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    assert_eq!(rc, 0, "statvfs {}", path.display());
    stat.f_bavail as u64 * stat.f_frsize as u64
}

// ---------------------------------------------------------------------------------------------
// Slow and dead clients
// ---------------------------------------------------------------------------------------------

/// What the server does to a connection that stopped making progress.
#[derive(Debug)]
struct CutOff {
    /// The status it answered, if it answered before closing.
    status: Option<u16>,
    /// The answer's body, if any.
    body: Vec<u8>,
}

/// Slowloris: a request line, then one more header line every 200 ms, for ever. Returns once
/// the server has closed the connection, or panics after `limit`.
fn spawn_slowloris(url: String, n: usize, limit: Duration) -> JoinHandle<CutOff> {
    std::thread::spawn(move || {
        let mut stream = raw::send(
            &url,
            format!(
                "GET /v1/info HTTP/1.1\r\nHost: {}\r\n",
                raw::authority(&url)
            )
            .as_bytes(),
        );
        let deadline = Instant::now() + limit;
        for line in 0.. {
            assert!(
                Instant::now() < deadline,
                "slowloris {n} was still connected after {limit:?}"
            );
            if stream
                .write_all(format!("X-Slow-{line}: {n}\r\n").as_bytes())
                .is_err()
            {
                return CutOff {
                    status: None,
                    body: Vec::new(),
                };
            }
            let reply = raw::read_reply(&mut stream, Duration::from_millis(200));
            if reply.closed || reply.status.is_some() {
                return CutOff {
                    status: reply.status,
                    body: reply.body,
                };
            }
        }
        unreachable!()
    })
}

/// A request body sent one byte every 300 ms: never idle for long, never finished.
fn spawn_trickling_body(url: String, limit: Duration) -> JoinHandle<CutOff> {
    std::thread::spawn(move || {
        let mut stream = raw::send(&url, stalled_push_head(&url).as_bytes());
        let deadline = Instant::now() + limit;
        loop {
            assert!(
                Instant::now() < deadline,
                "a trickling body was still being read after {limit:?}"
            );
            if stream.write_all(b" ").is_err() {
                return CutOff {
                    status: None,
                    body: Vec::new(),
                };
            }
            let reply = raw::read_reply(&mut stream, Duration::from_millis(300));
            if reply.closed || reply.status.is_some() {
                return CutOff {
                    status: reply.status,
                    body: reply.body,
                };
            }
        }
    })
}

/// A push that announces 100 kB of body and sends the first bytes of it.
fn stalled_push_head(url: &str) -> String {
    format!(
        "POST /v1/data/notes/~/small HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer alice\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"objects\": [",
        raw::authority(url)
    )
}

/// A GET whose answer is never read.
///
/// (The receive buffer is left as it is: made much smaller than a loopback segment, the
/// window would stay shut even once we read, and we could not see the server close.)
fn never_read(url: &str, path: &str) -> TcpStream {
    raw::send(
        url,
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer alice\r\n\r\n",
            raw::authority(url)
        )
        .as_bytes(),
    )
}

#[test]
fn slow_and_dead_clients_are_cut_off_by_timeouts_while_everyone_else_is_served() {
    const TIMEOUT: &str = "2s";
    let server = Server::start(&[
        "--header-read-timeout",
        TIMEOUT,
        "--body-timeout",
        TIMEOUT,
        "--write-timeout",
        TIMEOUT,
        "--request-timeout",
        "4s",
    ]);
    let url = server.url().to_string();
    let alice = server.client("alice");
    // About 9 MB to pull at once: far more than the socket buffers between us hold.
    let mut big_bytes = 0;
    for b in 0..6 {
        let batch = big_batch(&format!("big{b}"), 10, 150 * 1024);
        big_bytes += batch.to_string().len();
        alice.push("notes", "big", &batch).expect(200);
    }
    alice
        .push(
            "notes",
            "small",
            &json!({"objects": [{"id": "a", "data": 1}]}),
        )
        .expect(200);

    // 56 connections that stop making progress, each in its own way.
    let limit = Duration::from_secs(30);
    let slowloris: Vec<_> = (0..25)
        .map(|n| spawn_slowloris(url.clone(), n, limit))
        .collect();
    let tricklers: Vec<_> = (0..5)
        .map(|_| spawn_trickling_body(url.clone(), limit))
        .collect();
    let mut stalled: Vec<TcpStream> = (0..20)
        .map(|_| raw::send(&url, stalled_push_head(&url).as_bytes()))
        .collect();
    let mut pulls: Vec<TcpStream> = (0..4)
        .map(|_| never_read(&url, "/v1/data/notes/~/big?since=0"))
        .collect();
    let mut streams: Vec<TcpStream> = (0..2)
        .map(|_| never_read(&url, "/v1/data/notes/~/big/events?since=0"))
        .collect();

    // Meanwhile everyone else is served as usual.
    let bob = Client::new(&url, Some("bob"));
    bob.get("/v1/info").expect(200);
    bob.push(
        "notes",
        "mine",
        &json!({"objects": [{"id": "x", "data": 2}]}),
    )
    .expect(200);
    assert_eq!(
        bob.pull("notes", "mine", 0, "").expect(200)["objects"][0]["data"],
        2
    );

    // Slowloris: the head never completes, and the connection is closed.
    for (n, thread) in slowloris.into_iter().enumerate() {
        let cut = thread.join().expect("a slowloris thread panicked");
        assert!(
            cut.status.is_none_or(|s| s == 408),
            "slowloris {n} got {cut:?}"
        );
    }
    // A stalled body is answered 408 (JSON), and nothing is written.
    for stream in &mut stalled {
        let reply = raw::read_reply(stream, limit);
        assert_eq!(reply.status, Some(408), "{reply:?}");
        assert_eq!(reply.json()["error"], "unavailable", "{reply:?}");
    }
    // A body that trickles in is cut off by the request timeout: 408 too.
    for thread in tricklers {
        let cut = thread.join().expect("a trickling thread panicked");
        assert_eq!(cut.status, Some(408), "{cut:?}");
        let body: Value = serde_json::from_slice(&cut.body).expect("a JSON error body");
        assert_eq!(body["error"], "unavailable");
    }
    // A reader that never reads: its answer stops short, and the connection is closed. By
    // now well over the write timeout has passed; what it can still read is what the kernels
    // had buffered before the server gave up.
    for stream in &mut pulls {
        let reply = raw::read_reply(stream, limit);
        let length: usize = reply
            .header("content-length")
            .expect("a pull has a length")
            .parse()
            .unwrap();
        assert!(length > big_bytes / 2, "the whole page was being sent");
        assert!(
            reply.closed && reply.body.len() < length,
            "a reader that never read got {} of {length} bytes (closed: {})",
            reply.body.len(),
            reply.closed
        );
    }
    for stream in &mut streams {
        let reply = raw::read_reply(stream, limit);
        assert_eq!(reply.status, Some(200), "{}", reply.head);
        assert!(
            reply.closed,
            "an event stream that was never read is closed"
        );
        assert!(
            reply.body.len() < big_bytes,
            "it did not get the whole backlog"
        );
    }
    assert_eq!(
        alice.pull("notes", "small", 0, "").expect(200)["objects"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "no stalled push wrote anything"
    );
    bob.get("/v1/info").expect(200);
}
