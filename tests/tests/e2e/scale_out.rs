//! Scale-out: many stateless nodes on one PostgreSQL database, and what operators watch.
//!
//! Every test here runs on PostgreSQL whatever `TIDEMARK_TEST_BACKEND` says, and fails if the
//! database is unreachable. Nodes share a schema of their own (see `Server::start_node_of`).
//!
//! - a write through one node is read, replayed, conflicted and reset through another;
//! - nodes starting at once on a fresh schema migrate it once;
//! - writers spread over two nodes (compare-and-set and blind) lose no update and leave no gap;
//! - a subscriber on one node sees every write of the other, in order;
//! - a node cut off from the database is unready, answers 503 with `Retry-After`, and recovers
//!   by itself, its event streams missing nothing;
//! - `/healthz` and `/readyz` answer on every node; `/metrics` is valid Prometheus text whose
//!   counters move with the traffic;
//! - schema names the server cannot use are refused at start-up, and so is a database it
//!   cannot reach; nodes of different schemas share nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidemark_tests::pg::DbProxy;
use tidemark_tests::{
    core_objects, follow_changes, pg, pull_all, run_to_exit, wait_until, Backend, Client,
    EventStream, Metrics, Schema, Server,
};

/// Two nodes on one fresh schema.
fn two_nodes(args: &[&str]) -> (Server, Server) {
    let first = Server::start_on(Backend::Postgres, args);
    let second = Server::start_node_of(&first, args);
    (first, second)
}

fn seqs_of(answer: &Value) -> Vec<u64> {
    answer["seqs"]
        .as_array()
        .unwrap_or_else(|| panic!("no seqs in {answer}"))
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect()
}

fn last_seq(client: &Client, collection: &str) -> u64 {
    let list = client.get("/v1/data/notes/~").expect(200);
    list["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == collection)
        .map_or(0, |c| c["last_seq"].as_u64().unwrap())
}

#[test]
fn a_write_through_one_node_is_read_replayed_conflicted_and_reset_through_another() {
    let (one, two) = two_nodes(&[]);
    let (alice1, alice2) = (one.client("alice"), two.client("alice"));

    let batch = json!({"push_id": "phone:1", "objects": [
        {"id": "a", "type": "todo", "data": {"title": "milk"}},
        {"id": "b", "type": "todo", "data": {"title": "eggs"}},
        {"id": "c", "type": "note", "data": [1, 2, 3]},
    ]});
    let first = alice1.push("notes", "todos", &batch).expect(200);
    assert_eq!(seqs_of(&first), [1, 2, 3]);

    // Node 2 reads what node 1 committed, exactly.
    let (objects2, page2) = pull_all(&alice2, "notes", "todos");
    let (objects1, page1) = pull_all(&alice1, "notes", "todos");
    assert_eq!(
        core_objects(&json!(objects2)),
        core_objects(&json!(objects1))
    );
    assert_eq!(objects2.len(), 3);
    assert_eq!(objects2[1]["data"], json!({"title": "eggs"}));
    assert_eq!(page2["collection_id"], first["collection_id"]);
    assert_eq!(
        (page1["until"].clone(), page2["until"].clone()),
        (json!(3), json!(3))
    );
    let list = alice2.get("/v1/data/notes/~").expect(200);
    assert_eq!(
        list["collections"],
        json!([{"name": "todos", "collection_id": first["collection_id"], "last_seq": 3}])
    );

    // The ETag describes the collection, not the node: node 2 answers 304 to node 1's tag.
    let tagged = alice1.pull("notes", "todos", 0, "");
    let etag = tagged.header("etag").expect("a pull has an ETag");
    let not_modified = alice2.send(
        alice2
            .request(reqwest::Method::GET, "/v1/data/notes/~/todos?since=0")
            .header("if-none-match", &etag),
    );
    assert_eq!(not_modified.status, 304, "{}", not_modified.text());

    // A retry of the same push through the other node replays the first answer.
    let replay = alice2.push("notes", "todos", &batch).expect(200);
    assert_eq!(replay["replayed"], true, "{replay}");
    assert_eq!(seqs_of(&replay), [1, 2, 3]);
    assert_eq!(last_seq(&alice1, "todos"), 3, "a replay writes nothing");

    // Compare-and-set across nodes: node 2 moves `a`, node 1's stale base is refused.
    let moved = alice2
        .push("notes", "todos", &json!({"objects": [{"id": "a", "type": "todo", "base_seq": 1, "data": {"title": "oat milk"}}]}))
        .expect(200);
    assert_eq!(seqs_of(&moved), [4]);
    let conflict = alice1
        .push("notes", "todos", &json!({"since": 3, "objects": [{"id": "a", "type": "todo", "base_seq": 1, "data": {"title": "soy milk"}}]}))
        .expect_error(409, "conflict");
    assert_eq!(conflict["conflicts"][0]["reason"], "stale_base");
    assert_eq!(conflict["conflicts"][0]["server"]["seq"], 4);
    assert_eq!(
        conflict["conflicts"][0]["server"]["data"],
        json!({"title": "oat milk"})
    );
    assert_eq!(conflict["until"], 4);
    assert_eq!(conflict["changes"].as_array().map(Vec::len), Some(1));

    // A reset through node 1 invalidates node 2's cursors: one behind gets 410, one caught
    // up sees the new epoch.
    let reset = alice1.delete("/v1/data/notes/~/todos").expect(200);
    assert_ne!(reset["collection_id"], first["collection_id"]);
    alice2
        .pull("notes", "todos", 3, "")
        .expect_error(410, "reset_required");
    let caught_up = alice2.pull("notes", "todos", 4, "").expect(200);
    assert_eq!(caught_up["collection_id"], reset["collection_id"]);
    let fresh = alice2.pull("notes", "todos", 0, "").expect(200);
    assert_eq!(fresh["collection_id"], reset["collection_id"]);
    assert_eq!(fresh["objects"], json!([]));
    // The old push_id went with the old epoch: the batch commits afresh.
    let again = alice2.push("notes", "todos", &batch).expect(200);
    assert_ne!(again["replayed"], true, "{again}");
    assert_eq!(seqs_of(&again), [5, 6, 7]);
}

/// Starts `n` nodes on `schema` at the same moment.
fn start_at_once(schema: &Arc<Schema>, n: usize) -> Vec<Server> {
    let gate = Arc::new(Barrier::new(n));
    let starting: Vec<_> = (0..n)
        .map(|_| {
            let (schema, gate) = (schema.clone(), gate.clone());
            thread::spawn(move || {
                gate.wait();
                Server::start_in_schema(schema, &[])
            })
        })
        .collect();
    // Join every thread before judging, so that no node outlives the test.
    let started: Vec<thread::Result<Server>> = starting.into_iter().map(|t| t.join()).collect();
    started
        .into_iter()
        .map(|r| r.unwrap_or_else(|_| panic!("a node failed to start (its log is above)")))
        .collect()
}

#[test]
fn nodes_starting_at_once_on_a_fresh_schema_migrate_it_once_and_all_serve() {
    // The race is narrow: a few rounds, each on a fresh schema.
    const ROUNDS: usize = 6;
    const NODES: usize = 4;
    for round in 0..ROUNDS {
        let nodes = start_at_once(&Schema::new(), NODES);
        for (n, node) in nodes.iter().enumerate() {
            node.anonymous().get("/readyz").expect(200);
            node.client("alice")
                .push(
                    "notes",
                    &format!("from-{n}"),
                    &json!({"objects": [{"id": "x", "data": n}]}),
                )
                .expect(200);
        }
        let expected: Vec<String> = (0..NODES).map(|n| format!("from-{n}")).collect();
        for node in &nodes {
            let list = node.client("alice").get("/v1/data/notes/~").expect(200);
            let names: Vec<&str> = list["collections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            assert_eq!(
                names, expected,
                "round {round}: every node sees every node's write"
            );
        }
        let migrations = nodes
            .iter()
            .filter(|n| n.log().contains("migrating"))
            .count();
        assert_eq!(
            migrations, 1,
            "round {round}: exactly one node migrates a fresh schema"
        );
    }
}

/// One acknowledged compare-and-set increment.
#[derive(Debug, Clone)]
struct CasAck {
    id: String,
    base: u64,
    seq: u64,
    n: u64,
    writer: usize,
}

/// One acknowledged blind write.
#[derive(Debug, Clone)]
struct BlindAck {
    id: String,
    seq: u64,
    data: Value,
}

#[derive(Default)]
struct WriterLog {
    cas: Vec<CasAck>,
    blind: Vec<BlindAck>,
    conflicts: usize,
    unexpected: Vec<(u16, String)>,
}

const COUNTERS: usize = 3;

/// Increments counters by compare-and-set until `increments` have been acknowledged,
/// alternating nodes request by request; on 409 it rebases on the server version it was sent.
fn cas_writer(urls: [String; 2], writer: usize, increments: usize) -> WriterLog {
    let clients = urls.map(|url| Client::new(&url, Some("alice")));
    let mut log = WriterLog::default();
    // What this writer last saw of each counter: (seq, n).
    let mut known: HashMap<String, (u64, u64)> = HashMap::new();
    let mut request = 0usize;
    for k in 0..increments {
        let id = format!("counter-{}", (writer + k) % COUNTERS);
        loop {
            request += 1;
            let client = &clients[(writer + request) % 2];
            let (base, n) = known.get(&id).copied().unwrap_or((0, 0));
            let body = json!({"objects": [{"id": id, "type": "counter", "base_seq": base,
                "data": {"n": n + 1, "writer": writer, "k": k}}]});
            let reply = client.push("notes", "contended", &body);
            match reply.status {
                200 => {
                    let seq = seqs_of(&reply.json())[0];
                    log.cas.push(CasAck {
                        id: id.clone(),
                        base,
                        seq,
                        n: n + 1,
                        writer,
                    });
                    known.insert(id.clone(), (seq, n + 1));
                    break;
                }
                409 => {
                    log.conflicts += 1;
                    let conflict = reply.json();
                    let c = &conflict["conflicts"][0];
                    assert_eq!(c["reason"], "stale_base", "{conflict}");
                    let server = &c["server"];
                    let seq = server["seq"].as_u64().unwrap_or(0);
                    let n = server["data"]["n"].as_u64().unwrap_or(0);
                    known.insert(id.clone(), (seq, n));
                }
                status => {
                    log.unexpected.push((status, reply.text()));
                    return log;
                }
            }
        }
    }
    log
}

const BLIND_BATCH: usize = 5;

/// Pushes `batches` batches of new, unique ids, alternating nodes.
fn blind_writer(urls: [String; 2], writer: usize, batches: usize) -> WriterLog {
    let clients = urls.map(|url| Client::new(&url, Some("alice")));
    let mut log = WriterLog::default();
    for b in 0..batches {
        let objects: Vec<Value> = (0..BLIND_BATCH)
            .map(|i| json!({"id": format!("w{writer}-b{b}-o{i}"), "type": "blind", "data": {"w": writer, "b": b, "i": i}}))
            .collect();
        let body = json!({"push_id": format!("w{writer}-b{b}"), "objects": objects});
        let reply = clients[(writer + b) % 2].push("notes", "contended", &body);
        if reply.status != 200 {
            log.unexpected.push((reply.status, reply.text()));
            return log;
        }
        let seqs = seqs_of(&reply.json());
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "a batch takes consecutive seqs: {seqs:?}"
        );
        for (object, seq) in objects.iter().zip(seqs) {
            log.blind.push(BlindAck {
                id: object["id"].as_str().unwrap().to_string(),
                seq,
                data: object["data"].clone(),
            });
        }
    }
    log
}

#[test]
fn writers_on_two_nodes_lose_no_update_and_leave_no_gap() {
    const CAS_WRITERS: usize = 4;
    const INCREMENTS: usize = 20;
    const BLIND_WRITERS: usize = 4;
    const BATCHES: usize = 12;
    let (one, two) = two_nodes(&[]);
    let urls = [one.url().to_string(), two.url().to_string()];
    let started = Instant::now();
    let mut threads = Vec::new();
    for w in 0..CAS_WRITERS {
        let urls = urls.clone();
        threads.push(thread::spawn(move || cas_writer(urls, w, INCREMENTS)));
    }
    for w in 0..BLIND_WRITERS {
        let urls = urls.clone();
        threads.push(thread::spawn(move || blind_writer(urls, w, BATCHES)));
    }
    let logs: Vec<WriterLog> = threads
        .into_iter()
        .map(|t| t.join().expect("a writer panicked"))
        .collect();
    for log in &logs {
        assert!(
            log.unexpected.is_empty(),
            "unexpected answers: {:?}",
            log.unexpected
        );
    }
    let cas: Vec<&CasAck> = logs.iter().flat_map(|l| &l.cas).collect();
    let blind: Vec<&BlindAck> = logs.iter().flat_map(|l| &l.blind).collect();
    let conflicts: usize = logs.iter().map(|l| l.conflicts).sum();
    eprintln!(
        "{} increments ({conflicts} conflicts on the way) and {} blind writes in {:?}",
        cas.len(),
        blind.len(),
        started.elapsed()
    );
    assert_eq!(cas.len(), CAS_WRITERS * INCREMENTS);
    assert_eq!(blind.len(), BLIND_WRITERS * BATCHES * BLIND_BATCH);
    assert!(
        conflicts > 0,
        "the writers never collided; the test proved nothing"
    );

    // Every seq given out was acknowledged to exactly one write, and there is no gap.
    let alice = one.client("alice");
    let last = last_seq(&alice, "contended");
    assert_eq!(
        last_seq(&two.client("alice"), "contended"),
        last,
        "both nodes agree"
    );
    let mut seqs: Vec<u64> = cas
        .iter()
        .map(|a| a.seq)
        .chain(blind.iter().map(|a| a.seq))
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "acknowledged seqs are exactly 1..=last_seq"
    );

    // No lost update: per counter, each acknowledged increment was based on the one before.
    let mut by_counter: BTreeMap<&str, Vec<&CasAck>> = BTreeMap::new();
    for ack in &cas {
        by_counter.entry(ack.id.as_str()).or_default().push(ack);
    }
    let (objects, _) = pull_all(&alice, "notes", "contended");
    let stored: HashMap<&str, &Value> = objects
        .iter()
        .map(|o| (o["id"].as_str().unwrap(), o))
        .collect();
    for (id, mut acks) in by_counter {
        acks.sort_by_key(|a| a.seq);
        let mut previous = 0;
        for (i, ack) in acks.iter().enumerate() {
            assert_eq!(
                ack.base, previous,
                "{id}: increment {ack:?} was not based on the previous version"
            );
            assert_eq!(
                ack.n,
                i as u64 + 1,
                "{id}: increment {ack:?} is out of step"
            );
            previous = ack.seq;
        }
        let object = stored[id];
        let newest = acks.last().unwrap();
        assert_eq!(object["seq"].as_u64(), Some(newest.seq), "{id}: {object}");
        assert_eq!(
            object["data"]["n"].as_u64(),
            Some(acks.len() as u64),
            "{id}: {object}"
        );
        assert_eq!(
            object["data"]["writer"].as_u64(),
            Some(newest.writer as u64),
            "{id}: {object}"
        );
    }
    for ack in &blind {
        let object = stored
            .get(ack.id.as_str())
            .unwrap_or_else(|| panic!("acknowledged {} is lost", ack.id));
        assert_eq!(object["seq"].as_u64(), Some(ack.seq), "{}", ack.id);
        assert_eq!(object["data"], ack.data, "{}", ack.id);
    }
    assert_eq!(
        objects.len(),
        COUNTERS + blind.len(),
        "nothing else was written"
    );
    // Both nodes serve the same collection.
    let (objects2, _) = pull_all(&two.client("alice"), "notes", "contended");
    assert_eq!(
        core_objects(&json!(objects2)),
        core_objects(&json!(objects))
    );
}

/// Reads `change` events until `last` has been seen; returns them. Fails on anything else.
fn read_changes_until(stream: &mut EventStream, last: u64, timeout: Duration) -> Vec<(u64, Value)> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while seen.last().map(|(seq, _)| *seq) != Some(last) {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = stream.next_within(left).unwrap_or_else(|| {
            panic!(
                "no event up to seq {last} within {timeout:?} (stream closed: {:?}); got {} events, last {:?}",
                stream.closed(),
                seen.len(),
                seen.last().map(|(seq, _)| seq)
            )
        });
        assert_eq!(event.event, "change", "{event:?}");
        let object = event.json();
        assert_eq!(
            object["seq"].as_u64(),
            Some(event.seq()),
            "id: is the seq: {event:?}"
        );
        seen.push((event.seq(), object));
    }
    seen
}

#[test]
fn a_subscriber_on_one_node_sees_every_write_of_the_other_in_order() {
    const WRITERS: usize = 3;
    const BATCHES: usize = 15;
    const BATCH: usize = 4;
    let (one, two) = two_nodes(&[]);
    let path = "/v1/data/notes/~/feed/events?since=0";
    let mut on_two = two.client("alice").events(path, None);
    let mut on_one = one.client("alice").events(path, None);
    // Someone else's collection of the same name: none of alice's events may reach it.
    let mut bob_on_two = two.client("bob").events(path, None);

    // Two writers on node 1, one on node 2; unique ids, so every seq stays visible.
    let urls = [
        one.url().to_string(),
        one.url().to_string(),
        two.url().to_string(),
    ];
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let url = urls[w].clone();
            thread::spawn(move || {
                let alice = Client::new(&url, Some("alice"));
                for b in 0..BATCHES {
                    let objects: Vec<Value> = (0..BATCH)
                        .map(|i| json!({"id": format!("w{w}-{b}-{i}"), "data": {"w": w, "b": b, "i": i}}))
                        .collect();
                    alice.push("notes", "feed", &json!({"objects": objects})).expect(200);
                }
            })
        })
        .collect();
    // A late subscriber on node 2 catches up from the database while commits keep arriving.
    thread::sleep(Duration::from_millis(150));
    let mut late = two.client("alice").events(path, None);
    for w in writers {
        w.join().expect("a writer panicked");
    }
    let total = (WRITERS * BATCHES * BATCH) as u64;
    let (stored, _) = pull_all(&one.client("alice"), "notes", "feed");
    assert_eq!(stored.len() as u64, total);
    let expected: Vec<(u64, Value)> = stored
        .iter()
        .map(|o| (o["seq"].as_u64().unwrap(), o.clone()))
        .collect();
    assert_eq!(
        expected.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    for (name, stream) in [
        ("node 2", &mut on_two),
        ("node 1", &mut on_one),
        ("late, node 2", &mut late),
    ] {
        let seen = read_changes_until(stream, total, Duration::from_secs(20));
        assert_eq!(
            seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (1..=total).collect::<Vec<_>>(),
            "{name}: every seq once, in order"
        );
        assert_eq!(
            core_objects(&json!(seen.iter().map(|(_, o)| o).collect::<Vec<_>>())),
            core_objects(&json!(stored)),
            "{name}"
        );
    }
    assert_eq!(
        bob_on_two.next_within(Duration::from_millis(300)),
        None,
        "bob sees none of alice's events"
    );
}

#[test]
fn health_and_readiness_answer_200_on_every_node() {
    let (one, two) = two_nodes(&[]);
    for node in [&one, &two] {
        let health = node.anonymous().get("/healthz");
        assert_eq!(health.expect(200), json!({"status": "ok"}));
        let ready = node.anonymous().get("/readyz");
        assert_eq!(ready.expect(200), json!({"status": "ready"}));
    }
}

#[test]
fn a_node_cut_off_from_the_database_is_unready_answers_503_and_recovers_by_itself() {
    let proxy = DbProxy::start();
    let direct = Server::start_on(Backend::Postgres, &["--sse-heartbeat", "200ms"]);
    let cut = Server::start_node_via(&direct, &proxy.url(), &["--sse-heartbeat", "200ms"]);
    let (alice_direct, alice_cut) = (direct.client("alice"), cut.client("alice"));
    let path = "/v1/data/notes/~/outage/events?since=0";
    let stream = alice_cut.events(path, None);
    let two = json!({"objects": [{"id": "a", "data": 1}, {"id": "b", "data": 2}]});
    alice_cut.push("notes", "outage", &two).expect(200);

    proxy.cut();
    let ready = wait_until(Duration::from_secs(10), "/readyz to turn 503", || {
        let reply = cut.anonymous().get("/readyz");
        (reply.status != 200).then_some(reply)
    });
    ready.expect_error(503, "unavailable");
    assert_eq!(
        cut.anonymous().get("/healthz").status,
        200,
        "the process itself is fine"
    );
    for reply in [
        alice_cut.push(
            "notes",
            "outage",
            &json!({"objects": [{"id": "c", "data": 3}]}),
        ),
        alice_cut.pull("notes", "outage", 0, ""),
        alice_cut.get("/v1/data/notes/~"),
    ] {
        reply.expect_error(503, "unavailable");
        assert!(
            reply
                .header("retry-after")
                .is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s > 0)),
            "a 503 says when to retry: {:?}",
            reply.headers
        );
    }
    cut.anonymous().metrics();
    // The other node does not care.
    alice_direct.get("/readyz").expect(200);
    let during = json!({"objects": [{"id": "d", "data": 4}, {"id": "e", "data": 5}, {"id": "f", "data": 6}]});
    assert_eq!(
        seqs_of(&alice_direct.push("notes", "outage", &during).expect(200)),
        [3, 4, 5]
    );

    proxy.restore();
    wait_until(Duration::from_secs(15), "/readyz to turn 200 again", || {
        (cut.anonymous().get("/readyz").status == 200).then_some(())
    });
    let after = alice_cut.push(
        "notes",
        "outage",
        &json!({"objects": [{"id": "g", "data": 7}]}),
    );
    assert_eq!(seqs_of(&after.expect(200)), [6]);
    let (objects, _) = pull_all(&alice_cut, "notes", "outage");
    assert_eq!(objects.len(), 6);

    // The stream on the node that was cut off misses nothing: what was committed elsewhere
    // meanwhile arrives, directly or after a reconnect with Last-Event-ID.
    let (events, reconnects) = follow_changes(&alice_cut, path, stream, 6, Duration::from_secs(30));
    eprintln!("outage: the stream needed {reconnects} reconnects");
    let seqs: Vec<u64> = events.iter().map(|e| e.seq()).collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>());
}

/// A counter's value, 0 if the series does not exist yet.
fn count(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics.value(name, labels).unwrap_or(0.0)
}

#[test]
fn metrics_count_requests_made_before_the_first_scrape() {
    let server = Server::start_on(Backend::Postgres, &[]);
    let alice = server.client("alice");
    alice
        .push("notes", "m", &json!({"objects": [{"id": "a", "data": 1}]}))
        .expect(200);
    let metrics = server.anonymous().metrics();
    assert_eq!(
        metrics.value(
            "tidemark_http_requests_total",
            &[("op", "push"), ("status", "200")]
        ),
        Some(1.0),
        "the push before the first scrape is counted"
    );
    assert_eq!(
        metrics.value("tidemark_records_written_total", &[]),
        Some(1.0)
    );
    assert!(
        metrics.value("tidemark_event_streams_open", &[]).is_some(),
        "the first scrape already has the gauges"
    );
}

#[test]
fn metrics_are_prometheus_text_and_move_with_the_traffic() {
    let server = Server::start_on(
        Backend::Postgres,
        &["--sse-heartbeat", "100ms", "--database-pool", "4"],
    );
    let (alice, ops) = (server.client("alice"), server.anonymous());
    // Everything is measured as a difference from this scrape.
    let before = ops.metrics();

    for p in 0..3 {
        let objects: Vec<Value> = (0..4)
            .map(|i| json!({"id": format!("p{p}-{i}"), "data": i}))
            .collect();
        alice
            .push(
                "notes",
                "m",
                &json!({"push_id": format!("push-{p}"), "objects": objects}),
            )
            .expect(200);
    }
    let replay = json!({"push_id": "push-0", "objects": [{"id": "p0-0", "data": 0}]});
    assert_eq!(
        alice.push("notes", "m", &replay).expect(200)["replayed"],
        true
    );
    let stale = json!({"objects": [{"id": "p0-0", "base_seq": 0, "data": 1}, {"id": "p0-1", "base_seq": 99, "data": 1}]});
    alice
        .push("notes", "m", &stale)
        .expect_error(409, "conflict");
    alice.pull("notes", "m", 0, "").expect(200);
    alice.pull("notes", "m", 0, "").expect(200);

    let after = ops.metrics();
    let delta = |name: &str, labels: &[(&str, &str)]| {
        count(&after, name, labels) - count(&before, name, labels)
    };
    let requests = "tidemark_http_requests_total";
    assert_eq!(
        delta(requests, &[("op", "push"), ("status", "200")]),
        4.0,
        "three pushes and a replay"
    );
    assert_eq!(delta(requests, &[("op", "push"), ("status", "409")]), 1.0);
    assert_eq!(delta(requests, &[("op", "pull"), ("status", "200")]), 2.0);
    assert_eq!(
        delta("tidemark_records_written_total", &[]),
        12.0,
        "a replay writes nothing"
    );
    assert_eq!(
        delta("tidemark_conflicts_total", &[]),
        2.0,
        "one per conflicting object"
    );
    let pushes = [("op", "push")];
    assert_eq!(
        delta("tidemark_request_duration_seconds_count", &pushes),
        5.0
    );
    assert_eq!(
        delta(
            "tidemark_request_duration_seconds_bucket",
            &[("op", "push"), ("le", "+Inf")]
        ),
        5.0
    );
    assert!(delta("tidemark_request_duration_seconds_sum", &pushes) > 0.0);
    let buckets = after.series("tidemark_request_duration_seconds_bucket");
    assert!(
        buckets
            .iter()
            .filter(|s| s.labels.get("op").map(String::as_str) == Some("push"))
            .count()
            > 2,
        "push latency has buckets besides +Inf"
    );
    for (name, kind) in [
        (requests, "counter"),
        ("tidemark_records_written_total", "counter"),
        ("tidemark_conflicts_total", "counter"),
        ("tidemark_request_duration_seconds", "histogram"),
        ("tidemark_event_streams_open", "gauge"),
        ("tidemark_db_pool_connections", "gauge"),
    ] {
        assert_eq!(
            after.types.get(name).map(String::as_str),
            Some(kind),
            "# TYPE of {name}"
        );
    }
    let idle = after.value("tidemark_db_pool_connections", &[("state", "idle")]);
    let in_use = after.value("tidemark_db_pool_connections", &[("state", "in_use")]);
    let (Some(idle), Some(in_use)) = (idle, in_use) else {
        panic!(
            "the pool gauge has idle and in_use: {:?}",
            after.series("tidemark_db_pool_connections")
        );
    };
    assert!(
        idle + in_use >= 1.0 && idle + in_use <= 4.0,
        "pool of 4: {idle} idle, {in_use} in use"
    );

    // The open-streams gauge follows streams as they open and close.
    let streams = |n: f64| {
        wait_until(
            Duration::from_secs(10),
            &format!("{n} open streams"),
            || (ops.metrics().value("tidemark_event_streams_open", &[]) == Some(n)).then_some(()),
        )
    };
    streams(0.0);
    let first = alice.events("/v1/data/notes/~/m/events?since=0", None);
    let second = alice.events("/v1/data/notes/~/m/events?since=12", None);
    streams(2.0);
    drop(first);
    streams(1.0);
    drop(second);
    streams(0.0);
    let last = ops.metrics();
    assert!(count(&last, requests, &[("op", "events"), ("status", "200")]) >= 2.0);
}

#[test]
fn a_schema_name_the_server_cannot_use_is_refused_at_start_up() {
    let database = pg::database_url();
    for bad in ["Upper", "semi;colon", "with-dash", ""] {
        let args = [
            "--listen",
            "127.0.0.1:0",
            "--database",
            &database,
            "--database-schema",
            bad,
        ];
        let (status, log) = run_to_exit(&args, Duration::from_secs(15))
            .unwrap_or_else(|| panic!("the server started with --database-schema {bad:?}"));
        assert!(!status.success(), "{bad:?}: {status}");
        assert!(
            log.contains("schema"),
            "{bad:?}: the error names the schema: {log}"
        );
    }
}

#[test]
fn a_schema_name_is_refused_at_start_up_or_works_whatever_its_length() {
    // `tidemark_<schema>` is the notification channel, and PostgreSQL names are at most 63
    // bytes: the channel of a schema longer than 54 bytes does not fit. Whatever limit the
    // server sets, a name it accepts must work, live events included.
    for length in [20, 40, 41, 54, 55, 63, 64, 100] {
        let prefix = format!("t_{}_len{length}_", std::process::id());
        let name = format!("{prefix}{}", "x".repeat(length - prefix.len()));
        match Server::try_start_in_schema(Schema::named(&name), &[]) {
            Err(why) => assert!(
                why.contains("exited") && why.contains("schema"),
                "{length} bytes: refused, but not clearly: {why}"
            ),
            Ok(server) => {
                let alice = server.client("alice");
                let mut stream = alice.events("/v1/data/notes/~/long/events?since=0", None);
                alice
                    .push(
                        "notes",
                        "long",
                        &json!({"objects": [{"id": "a", "data": 1}]}),
                    )
                    .expect(200);
                let event = stream
                    .next_within(Duration::from_secs(5))
                    .unwrap_or_else(|| panic!("{length} bytes: the change is not announced"));
                assert_eq!(event.seq(), 1, "{length} bytes");
            }
        }
    }
}

#[test]
fn a_node_that_cannot_reach_its_database_at_start_up_exits_with_an_error() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let database = format!("postgres://postgres@127.0.0.1:{port}/test");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--database",
        &database,
        "--database-schema",
        "nowhere",
    ];
    let (status, log) = run_to_exit(&args, Duration::from_secs(30)).expect("the server gives up");
    assert!(!status.success(), "{status}: {log}");
    assert!(
        log.to_lowercase().contains("postgres"),
        "the error says what failed: {log}"
    );
}

#[test]
fn nodes_of_different_schemas_share_nothing() {
    let a = Server::start_on(Backend::Postgres, &[]);
    let b = Server::start_on(Backend::Postgres, &[]);
    assert_ne!(a.schema(), b.schema());
    let mut on_b = b
        .client("alice")
        .events("/v1/data/notes/~/x/events?since=0", None);
    a.client("alice")
        .push("notes", "x", &json!({"objects": [{"id": "a", "data": 1}]}))
        .expect(200);
    assert_eq!(
        b.client("alice").pull("notes", "x", 0, "").expect(200)["objects"],
        json!([])
    );
    assert_eq!(
        on_b.next_within(Duration::from_millis(500)),
        None,
        "no event crosses schemas"
    );
}

#[test]
fn a_schema_from_before_per_collection_usage_gets_each_owners_usage_back() {
    // Version 4 moved usage from one row per owner (`usage`) onto each collection's row.
    // Writes made, then the schema put back as version 3 left it: the migration must count
    // the live objects again, whatever the old table said.
    let quota = ["--quota-objects", "100", "--quota-bytes", "100000"];
    let mut server = Server::start_on(Backend::Postgres, &quota);
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    let put = |id: &str, data: Value| json!({"id": id, "data": data});
    alice
        .push(
            "notes",
            "one",
            &json!({"objects": [put("a", json!("xx")), put("b", json!({"k": [1, 2]}))]}),
        )
        .expect(200);
    alice
        .push(
            "notes",
            "two",
            &json!({"objects": [put("c", json!(1)), put("d", json!(2))]}),
        )
        .expect(200);
    alice
        .push(
            "notes",
            "two",
            &json!({"objects": [{"id": "d", "deleted": true}]}),
        )
        .expect(200);
    bob.push("notes", "one", &json!({"objects": [put("e", json!(true))]}))
        .expect(200);
    let quota_of = |client: &Client| client.get("/v1/info").expect(200)["quota"].clone();
    let before = (quota_of(&alice), quota_of(&bob));
    assert_eq!(before.0["objects"]["used"], 3, "{before:?}");
    assert_eq!(before.1["objects"]["used"], 1, "{before:?}");
    server.terminate();

    let schema = server.schema().expect("a PostgreSQL server").to_string();
    pg::connect()
        .batch_execute(&format!(
            "SET search_path = {schema};
             ALTER TABLE collections DROP COLUMN live_bytes, DROP COLUMN live_objects;
             DROP INDEX collections_by_owner;
             DROP TABLE quota_locks;
             CREATE TABLE usage (owner TEXT PRIMARY KEY, bytes BIGINT NOT NULL, objects BIGINT NOT NULL);
             INSERT INTO usage VALUES ('alice', 999, 999);
             UPDATE tidemark_schema SET version = 3;"
        ))
        .unwrap();
    server.restart();
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    assert_eq!((quota_of(&alice), quota_of(&bob)), before);
    // And the counters keep moving from there.
    alice
        .push(
            "notes",
            "one",
            &json!({"objects": [{"id": "a", "deleted": true}]}),
        )
        .expect(200);
    assert_eq!(quota_of(&alice)["objects"]["used"], 2);
}
