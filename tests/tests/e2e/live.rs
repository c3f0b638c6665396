//! Live events: catch-up then tail, `Last-Event-ID`, heartbeats, resets, shutdown, many
//! subscribers reconnecting under writes, and a subscriber that stops reading.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidemark_tests::{pull_all, wait_until, Client, Server};

use crate::sse::{EventStream, Item, Request};

/// How long any single event may take to arrive.
const WAIT: Duration = Duration::from_secs(15);

fn events_path(collection: &str, since: u64) -> String {
    format!("/v1/data/notes/~/{collection}/events?since={since}")
}

fn push_ids(client: &Client, collection: &str, ids: &[&str]) -> Value {
    let objects: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "type": "todo", "data": {"title": id}}))
        .collect();
    client
        .push("notes", collection, &json!({ "objects": objects }))
        .expect(200)
}

/// Opens a stream as `user`, resuming after `last` with `Last-Event-ID` (and a `since` in the
/// query that the header must override).
fn resume(server: &Server, user: &str, collection: &str, last: u64) -> EventStream {
    let last = last.to_string();
    let request = Request {
        bearer: Some(user),
        last_event_id: Some(&last),
    };
    EventStream::open(server.url(), &events_path(collection, 0), request)
        .unwrap_or_else(|r| panic!("resuming after {last}: {} {}", r.status, r.body))
}

#[test]
fn a_stream_catches_up_from_since_then_follows_live_writes() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    push_ids(&alice, "todos", &["a", "b", "c"]);
    let (stored, _) = pull_all(&alice, "notes", "todos");

    let stream = EventStream::subscribe(server.url(), &events_path("todos", 0), "alice");
    assert!(
        stream
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream")),
        "{:?}",
        stream.headers
    );
    for expected in &stored {
        let (seq, object) = stream.next_change(WAIT);
        assert_eq!(
            &object, expected,
            "a change carries the object as pulls show it"
        );
        assert_eq!(Some(seq), expected["seq"].as_u64(), "`id:` is the seq");
    }

    push_ids(&alice, "todos", &["d", "e"]);
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "deleted": true}]}),
        )
        .expect(200);
    let (stored, _) = pull_all(&alice, "notes", "todos");
    for seq in 4..=6 {
        let (got, object) = stream.next_change(WAIT);
        assert_eq!(got, seq, "live changes follow in seq order");
        let expected = stored.iter().find(|o| o["seq"] == seq).expect("stored");
        assert_eq!(&object, expected);
    }
    assert_eq!(
        stored.iter().find(|o| o["id"] == "a").expect("a")["deleted"],
        true,
        "the delete was streamed as the tombstone pulls show"
    );
    stream.expect_quiet(Duration::from_millis(300));

    // `since` skips what the client has: seqs 2 and 3 were superseded or kept, 4.. follow.
    let later = EventStream::subscribe(server.url(), &events_path("todos", 4), "alice");
    assert_eq!(later.next_change(WAIT).0, 5);
    assert_eq!(later.next_change(WAIT).0, 6);
    later.expect_quiet(Duration::from_millis(200));

    // A collection nobody wrote yet can be watched; its first write is seq 1.
    let empty = EventStream::subscribe(server.url(), &events_path("fresh", 0), "alice");
    empty.expect_quiet(Duration::from_millis(200));
    push_ids(&alice, "fresh", &["x"]);
    let (seq, object) = empty.next_change(WAIT);
    assert_eq!((seq, &object["id"]), (1, &json!("x")));
}

#[test]
fn last_event_id_overrides_since_and_a_reconnect_misses_nothing() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    push_ids(&alice, "todos", &["a", "b", "c", "d"]);

    let first = resume(&server, "alice", "todos", 2);
    assert_eq!(
        first.next_change(WAIT).0,
        3,
        "Last-Event-ID: 2 wins over since=0"
    );
    assert_eq!(first.next_change(WAIT).0, 4);
    first.close();

    // Written while nobody listened.
    push_ids(&alice, "todos", &["e", "f"]);
    let second = resume(&server, "alice", "todos", 4);
    assert_eq!(second.next_change(WAIT).0, 5);
    assert_eq!(second.next_change(WAIT).0, 6);
    push_ids(&alice, "todos", &["g"]);
    assert_eq!(second.next_change(WAIT).0, 7);
    second.expect_quiet(Duration::from_millis(200));

    let open = |last: &str| {
        let request = Request {
            bearer: Some("alice"),
            last_event_id: Some(last),
        };
        EventStream::open(server.url(), &events_path("todos", 0), request)
    };
    let refused = open("seven").err().expect("a non-numeric Last-Event-ID");
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.json()["error"], "invalid_request");
    let refused = EventStream::open(
        server.url(),
        "/v1/data/notes/~/todos/events?since=-1",
        Request {
            bearer: Some("alice"),
            ..Request::default()
        },
    )
    .err()
    .expect("a negative since");
    assert_eq!(refused.status, 400, "{}", refused.body);
    let refused = open("99").err().expect("a Last-Event-ID from the future");
    assert_eq!(refused.status, 410, "{}", refused.body);
    assert_eq!(refused.json()["error"], "reset_required");
}

#[test]
fn access_token_in_the_query_authenticates_event_streams_only() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    push_ids(&alice, "todos", &["a"]);

    let path = "/v1/data/notes/alice/todos/events?since=0&access_token=alice";
    let stream = EventStream::open(server.url(), path, Request::default())
        .unwrap_or_else(|r| panic!("{} {}", r.status, r.body));
    assert_eq!(stream.next_change(WAIT).0, 1);

    let refused = EventStream::open(
        server.url(),
        "/v1/data/notes/alice/todos/events?since=0",
        Request::default(),
    )
    .err()
    .expect("no token at all");
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused
        .header("www-authenticate")
        .is_some_and(|c| c.starts_with("Bearer")));

    // Everything else must send a header: a token in a URL ends up in logs.
    let anonymous = server.anonymous();
    anonymous
        .get("/v1/data/notes/alice/todos?since=0&access_token=alice")
        .expect_error(401, "unauthorized");
    anonymous
        .get("/v1/data/notes/alice?access_token=alice")
        .expect_error(401, "unauthorized");
}

#[test]
fn idle_streams_get_heartbeat_comments() {
    let server = Server::start(&["--sse-heartbeat", "200ms"]);
    let stream = EventStream::subscribe(server.url(), &events_path("todos", 0), "alice");
    let started = Instant::now();
    let mut comments = 0;
    while comments < 3 {
        match stream.next_item(Duration::from_secs(5)) {
            Some(Item::Comment) => comments += 1,
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "3 heartbeats every 200 ms took {elapsed:?}"
    );
}

#[test]
fn a_reset_is_announced_once_and_the_stream_follows_the_new_epoch() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    push_ids(&alice, "todos", &["a", "b", "c"]);
    let stream = EventStream::subscribe(server.url(), &events_path("todos", 0), "alice");
    for seq in 1..=3 {
        assert_eq!(stream.next_change(WAIT).0, seq);
    }

    let reset = alice.delete("/v1/data/notes/~/todos").expect(200);
    let event = stream.next_event(WAIT).expect("a reset event");
    assert_eq!(event.event, "reset", "{event:?}");
    assert_eq!(
        event.seq(),
        3,
        "the reset's id is the new horizon, so a reconnect resumes at the new epoch"
    );
    assert_eq!(
        event.json(),
        json!({"collection_id": reset["collection_id"], "horizon": 3})
    );
    assert_ne!(reset["collection_id"], Value::Null);

    push_ids(&alice, "todos", &["new"]);
    let (seq, object) = stream.next_change(WAIT);
    assert_eq!((seq, &object["id"]), (4, &json!("new")));
    stream.expect_quiet(Duration::from_millis(200));

    // Resuming from the reset's id is the new epoch from its start.
    let resumed = resume(&server, "alice", "todos", 3);
    assert_eq!(resumed.next_change(WAIT).0, 4);
    // A cursor of the old epoch cannot resume: it must resync.
    let stale = EventStream::open(
        server.url(),
        &events_path("todos", 2),
        Request {
            bearer: Some("alice"),
            ..Request::default()
        },
    )
    .err()
    .expect("a cursor from before the reset");
    assert_eq!(stale.status, 410, "{}", stale.body);
    assert_eq!(stale.json()["error"], "reset_required");
    assert_eq!(stale.json()["collection_id"], reset["collection_id"]);
}

#[test]
fn sigterm_closes_open_streams_with_shutting_down() {
    let mut server = Server::start(&[]);
    push_ids(&server.client("alice"), "todos", &["a"]);
    let stream = EventStream::subscribe(server.url(), &events_path("todos", 0), "alice");
    assert_eq!(stream.next_change(WAIT).0, 1);
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    let events = stream.until_closed(WAIT);
    let last = events.last().expect("an event before the close");
    assert_eq!(last.event, "error", "{events:?}");
    assert_eq!(last.json()["error"], "shutting_down");
}

#[test]
fn streams_beyond_max_event_streams_get_503_until_one_closes() {
    let server = Server::start(&["--max-event-streams", "2", "--sse-heartbeat", "200ms"]);
    let first = EventStream::subscribe(server.url(), &events_path("todos", 0), "alice");
    let _second = EventStream::subscribe(server.url(), &events_path("other", 0), "bob");
    let open = || {
        let request = Request {
            bearer: Some("carol"),
            ..Request::default()
        };
        EventStream::open(server.url(), &events_path("todos", 0), request)
    };
    let refused = open().err().expect("a third stream");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.json()["error"], "unavailable");
    assert!(
        refused.header("retry-after").is_some(),
        "{:?}",
        refused.headers
    );

    // A client that goes away frees its slot (the server notices at the latest when its next
    // heartbeat cannot be written).
    first.close();
    let third = wait_until(WAIT, "a slot to be freed", || open().ok());
    push_ids(&server.client("carol"), "todos", &["a"]);
    assert_eq!(third.next_change(WAIT).0, 1);
}

/// Writes in total in the reconnect test.
const WRITES: u64 = 1000;

#[test]
fn three_subscribers_reconnecting_during_1000_writes_see_every_seq_once_in_order() {
    let server = Server::start(&[]);
    let committed = Arc::new(AtomicU64::new(0));
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..3).map(|_| AtomicU64::new(0)).collect());

    std::thread::scope(|scope| {
        // Two writers, one object per push, every id unique so that every seq survives. They
        // never run more than 200 writes ahead of the slowest subscriber, so that the
        // subscribers' reconnects fall during the writes however fast the server is.
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (server, committed, progress) = (&server, &committed, &progress);
                scope.spawn(move || {
                    let client = server.client("alice");
                    for i in 0..WRITES / 2 {
                        wait_until(WAIT, "the subscribers to keep up", || {
                            let slowest = progress
                                .iter()
                                .map(|p| p.load(Ordering::SeqCst))
                                .min()
                                .unwrap_or(0);
                            (committed.load(Ordering::SeqCst) < slowest + 200).then_some(())
                        });
                        let id = format!("w{w}-{i}");
                        push_ids(&client, "feed", &[&id]);
                        committed.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();

        let subscribers: Vec<_> = (0..3usize)
            .map(|k| {
                let (server, committed, progress) = (&server, &committed, &progress);
                scope.spawn(move || {
                    let period = 90 + 30 * k;
                    let mut next_break = period;
                    let mut seqs: Vec<u64> = Vec::new();
                    let mut ids: Vec<String> = Vec::new();
                    let mut during_writes = 0;
                    let mut stream = Some(EventStream::subscribe(
                        server.url(),
                        &events_path("feed", 0),
                        "alice",
                    ));
                    while (seqs.len() as u64) < WRITES {
                        let current = stream.as_ref().expect("connected");
                        let event = current.next_event(WAIT).unwrap_or_else(|| {
                            panic!("subscriber {k}: the server closed the stream")
                        });
                        assert_eq!(event.event, "change", "subscriber {k}: {event:?}");
                        let object = event.json();
                        assert_eq!(object["seq"], event.seq(), "subscriber {k}");
                        seqs.push(event.seq());
                        ids.push(object["id"].as_str().expect("id").to_string());
                        progress[k].store(seqs.len() as u64, Ordering::SeqCst);
                        if seqs.len() == next_break && (seqs.len() as u64) < WRITES {
                            next_break += period;
                            // Disconnect, let some writes happen, come back.
                            stream.take().expect("connected").close();
                            let target = (seqs.len() as u64 + 25).min(WRITES);
                            wait_until(WAIT, "writes while disconnected", || {
                                (committed.load(Ordering::SeqCst) >= target).then_some(())
                            });
                            if committed.load(Ordering::SeqCst) < WRITES {
                                during_writes += 1;
                            }
                            let last = *seqs.last().expect("seen one");
                            stream = Some(resume(server, "alice", "feed", last));
                        }
                    }
                    (seqs, ids, during_writes)
                })
            })
            .collect();

        for writer in writers {
            writer.join().expect("a writer panicked");
        }
        let mut expected_ids: Vec<String> = (0..2)
            .flat_map(|w| (0..WRITES / 2).map(move |i| format!("w{w}-{i}")))
            .collect();
        expected_ids.sort();
        for (k, subscriber) in subscribers.into_iter().enumerate() {
            let (seqs, mut ids, during_writes) = subscriber.join().expect("a subscriber panicked");
            assert!(
                seqs.iter().copied().eq(1..=WRITES),
                "subscriber {k} must see 1..={WRITES} once each, in order; \
                 first difference at {:?}",
                seqs.iter().zip(1..).find(|(got, want)| **got != *want)
            );
            ids.sort();
            assert_eq!(ids, expected_ids, "subscriber {k} saw every write");
            assert!(
                during_writes >= 4,
                "subscriber {k} reconnected only {during_writes} times during the writes"
            );
        }
    });
}

/// Reads one field (in KiB) of `/proc/<pid>/status`.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc/<pid>/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Changes pushed while one subscriber reads nothing.
const FLOOD: u64 = 100_000;
/// Objects per push.
const FLOOD_BATCH: u64 = 1000;
/// The padding in each object, so that buffering every event would cost well over the bound.
const PAD: usize = 650;
/// How much the server's resident memory may grow while the subscriber is stuck.
const GROWTH_BOUND_KIB: u64 = 32 * 1024;
/// Pushes (of [`FILL_BATCH`] objects of [`FILL_BYTES`]) that fill the stuck subscriber's socket
/// buffers before the flood: 12 MiB, well over what they hold (the paused subscriber pins its
/// receive buffer, and the server's send buffer stops at `net.ipv4.tcp_wmem`'s 4 MiB).
const FILL_PUSHES: u64 = 48;
/// Fewer than the ring holds, so that a subscriber that is still reading keeps up.
const FILL_BATCH: u64 = 16;
const FILL_BYTES: usize = 16 * 1024;

/// The `tidemark_event_streams_open` gauge, if `/metrics` shows it.
fn scrape_open_streams(server: &Server) -> Option<f64> {
    let metrics = server.anonymous().get("/metrics");
    assert_eq!(metrics.status, 200, "{}", metrics.text());
    metrics
        .text()
        .lines()
        .find_map(|line| line.strip_prefix("tidemark_event_streams_open "))
        .and_then(|v| v.trim().parse().ok())
}

/// The `tidemark_event_streams_open` gauge. Scrapes twice if need be: the server installs its
/// metrics recorder during the first scrape, which therefore shows nothing (a server bug that
/// `scale_out` tests).
fn open_streams(server: &Server) -> f64 {
    scrape_open_streams(server)
        .or_else(|| scrape_open_streams(server))
        .expect("no tidemark_event_streams_open gauge in /metrics")
}

#[test]
fn a_subscriber_that_stops_reading_is_cut_off_and_server_memory_stays_bounded() {
    let started = Instant::now();
    // The connection timeouts would also cut the stuck subscriber off (`faults` tests that:
    // the write timeout, and hyper's header timer, which also runs while an answer is stuck
    // on a client that does not read); here they are made long, so that what is tested is
    // the live buffer's bound. So is the heartbeat: a heartbeat due makes the stream look at
    // its channel, find itself a ring behind and end early (good for the server, but then
    // the flood would not show the bound; on a fast machine the flood outlasts 15 s).
    let server = Server::start(&[
        "--live-buffer",
        "64",
        "--write-timeout",
        "10m",
        "--header-read-timeout",
        "10m",
        "--sse-heartbeat",
        "10m",
    ]);
    let alice = server.client("alice");

    // Reads the answer's head, then nothing.
    let mut stuck = EventStream::open_paused(
        server.url(),
        &events_path("flood", 0),
        Request {
            bearer: Some("alice"),
            ..Request::default()
        },
    )
    .unwrap_or_else(|r| panic!("{} {}", r.status, r.body));

    // Small batches of big objects fill the socket buffers until the server's writes to
    // this subscriber block; batches smaller than the ring, so that it is not cut off before.
    let big = "f".repeat(FILL_BYTES);
    for p in 0..FILL_PUSHES {
        let objects: Vec<Value> = (0..FILL_BATCH)
            .map(|i| json!({"id": format!("fill-{p}-{i}"), "data": big}))
            .collect();
        alice
            .push("notes", "flood", &json!({ "objects": objects }))
            .expect(200);
    }
    let filled = FILL_PUSHES * FILL_BATCH;
    assert_eq!(open_streams(&server), 1.0, "the stuck stream is open");

    let pid = server.pid();
    let baseline = proc_status_kib(pid, "VmRSS");
    let pad = "x".repeat(PAD);
    let mut event_bytes = 0;
    for b in 0..FLOOD / FLOOD_BATCH {
        let objects: Vec<Value> = (0..FLOOD_BATCH)
            .map(|i| json!({"id": format!("o{}", b * FLOOD_BATCH + i), "data": {"pad": pad}}))
            .collect();
        let body = json!({ "objects": objects });
        event_bytes += body.to_string().len() as u64;
        let answer = alice.push("notes", "flood", &body).expect(200);
        assert_eq!(answer["until"], filled + (b + 1) * FLOOD_BATCH);
    }
    let total = filled + FLOOD;
    let peak = proc_status_kib(pid, "VmHWM");
    let now = proc_status_kib(pid, "VmRSS");
    eprintln!(
        "flood: {FLOOD} changes ({} MiB of objects) in {:?}; RSS {baseline} KiB before, \
         {now} KiB after, peak {peak} KiB",
        event_bytes >> 20,
        started.elapsed()
    );
    assert!(
        event_bytes / 1024 > 2 * GROWTH_BOUND_KIB,
        "the flood must be big enough that buffering it would break the bound"
    );
    assert_eq!(
        open_streams(&server),
        1.0,
        "the stuck subscriber stayed subscribed through the flood (the bound is not from \
         dropping it early)"
    );
    assert!(
        peak.saturating_sub(baseline) < GROWTH_BOUND_KIB,
        "the server grew from {baseline} KiB to a peak of {peak} KiB with one stuck subscriber"
    );

    // The stuck subscriber reads again: what the socket held, then the verdict.
    stuck.resume();
    let events = stuck.until_closed(Duration::from_secs(60));
    let (last, changes) = events.split_last().expect("some events");
    assert_eq!(last.event, "error", "the stream ends with an error event");
    assert_eq!(last.json()["error"], "too_slow", "{last:?}");
    assert!(
        changes
            .iter()
            .map(|e| (e.event.as_str(), e.seq()))
            .eq((1..).take(changes.len()).map(|s| ("change", s))),
        "before being cut off it got a gap-free prefix"
    );
    let reached = changes.len() as u64;
    assert!(
        reached <= filled,
        "it was cut off before the flood ({reached} of {total})"
    );
    wait_until(WAIT, "the cut-off stream to be released", || {
        (open_streams(&server) == 0.0).then_some(())
    });

    // Reconnecting with Last-Event-ID catches up from the store.
    let again = resume(&server, "alice", "flood", reached);
    for seq in reached + 1..=total {
        let (got, _) = again.next_change(WAIT);
        assert_eq!(got, seq);
    }
    again.expect_quiet(Duration::from_millis(200));
    eprintln!("flood test took {:?}", started.elapsed());
}
