//! Presence channels over HTTP: the exchange, stale seqs, TTL eviction, leaving, the bounds,
//! auth, event streams, many concurrent writers, and several nodes on one PostgreSQL.

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidemark_tests::{wait_until, Backend, Client, EventStream, Reply, Server, SseEvent};

/// How long anything that should happen at once may take.
const WAIT: Duration = Duration::from_secs(10);

fn channel(name: &str) -> String {
    format!("/v1/channels/notes/{name}")
}

fn post(client: &Client, name: &str, body: Value) -> Reply {
    client.post_json(&channel(name), &body)
}

/// Writes `state` as participant `id` at `seq`; expects it to apply; returns the answer.
fn write(client: &Client, name: &str, id: &str, seq: u64, state: Value) -> Value {
    let answer = post(
        client,
        name,
        json!({"client": id, "client_seq": seq, "state": state}),
    )
    .expect(200);
    assert_eq!(answer["applied"], true, "{answer}");
    answer
}

fn write_ttl(client: &Client, name: &str, id: &str, seq: u64, ttl_ms: u64) -> Value {
    let body = json!({"client": id, "client_seq": seq, "state": {"seq": seq}, "ttl_ms": ttl_ms});
    let answer = post(client, name, body).expect(200);
    assert_eq!(answer["applied"], true, "{answer}");
    answer
}

/// `user/client` of each entry of a list of participants.
fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["user"].as_str().unwrap(),
                p["client"].as_str().unwrap()
            )
        })
        .collect()
}

fn participants(client: &Client, name: &str) -> Value {
    client.get(&channel(name)).expect(200)["participants"].clone()
}

/// The participant `user/client` in a list, if there.
fn find<'a>(list: &'a Value, who: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|p| {
        format!(
            "{}/{}",
            p["user"].as_str().unwrap(),
            p["client"].as_str().unwrap()
        ) == who
    })
}

fn watch(server: &Server, user: &str, name: &str) -> EventStream {
    let stream = server
        .client(user)
        .events(&format!("{}/events", channel(name)), None);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "{:?}",
        stream.headers()
    );
    stream
}

/// The next event that is not a heartbeat, within `WAIT`.
fn next_event(stream: &mut EventStream) -> SseEvent {
    stream
        .next(WAIT)
        .unwrap_or_else(|| panic!("no event within {WAIT:?} (closed: {:?})", stream.closed()))
}

/// The next event for which `wanted` holds, within `WAIT`, skipping others.
fn next_matching(stream: &mut EventStream, wanted: impl Fn(&SseEvent) -> bool) -> SseEvent {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = stream.next(left).unwrap_or_else(|| {
            panic!(
                "no such event within {WAIT:?} (closed: {:?})",
                stream.closed()
            )
        });
        if wanted(&event) {
            return event;
        }
    }
}

#[test]
fn a_write_is_answered_with_every_other_participant() {
    let server = Server::start(&[]);
    let (alice, bob) = (server.client("alice"), server.client("bob"));

    let first = write(&alice, "room", "tab1", 1, json!({"cursor": [1, 2]}));
    assert_eq!(first["peers"], json!([]), "alone: no peers");
    assert_eq!(first["client_seq"], 1);
    assert_eq!(first["ttl_ms"], 30_000, "the default TTL");
    let before = tidemark_tests::now_ms();
    assert!(
        first["server_time_ms"]
            .as_u64()
            .is_some_and(|t| t.abs_diff(before) < 5_000),
        "{first}"
    );

    let second = write(&bob, "room", "tab1", 7, json!({"name": "Bob"}));
    assert_eq!(names(&second["peers"]), ["alice/tab1"]);
    let peer = &second["peers"][0];
    assert_eq!(peer["state"], json!({"cursor": [1, 2]}));
    assert_eq!(peer["client_seq"], 1);
    assert!(
        peer["updated_ms"]
            .as_u64()
            .is_some_and(|t| t.abs_diff(before) < 5_000),
        "{peer}"
    );

    // Another client of the same user is a peer like any other.
    let third = write(&alice, "room", "tab2", 1, json!({}));
    assert_eq!(names(&third["peers"]), ["alice/tab1", "bob/tab1"]);
    let again = write(&alice, "room", "tab1", 2, json!({"cursor": [3, 4]}));
    assert_eq!(names(&again["peers"]), ["alice/tab2", "bob/tab1"]);

    // Observers (any user of the app, a participant or not) see everyone.
    let everyone = server.client("carol").get(&channel("room")).expect(200);
    assert_eq!(
        names(&everyone["participants"]),
        ["alice/tab1", "alice/tab2", "bob/tab1"]
    );
    assert_eq!(
        find(&everyone["participants"], "alice/tab1").unwrap()["state"],
        json!({"cursor": [3, 4]})
    );
    assert!(everyone["server_time_ms"].is_u64());

    // A channel nobody joined reads as empty; channels are per app.
    assert_eq!(participants(&alice, "elsewhere"), json!([]));
    assert_eq!(
        alice.get("/v1/channels/other-app/room").expect(200)["participants"],
        json!([])
    );

    let info = server.anonymous().get("/v1/info").expect(200);
    assert!(
        info["features"]
            .as_array()
            .unwrap()
            .contains(&json!("presence")),
        "{info}"
    );
    assert_eq!(
        info["presence"],
        json!({
            "max_channels": 10_000, "max_participants": 256, "max_participants_total": 50_000,
            "max_state_bytes": 4096, "default_ttl_ms": 30_000, "min_ttl_ms": 1000, "max_ttl_ms": 300_000
        })
    );
}

#[test]
fn a_participant_is_keyed_by_its_user_so_no_one_overwrites_anothers_state() {
    let server = Server::start(&[]);
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    write(&alice, "room", "tab", 50, json!({"me": "alice"}));
    // Bob picks the same client id, with a lower seq: it is his own participant, not stale.
    let answer = write(&bob, "room", "tab", 1, json!({"me": "bob"}));
    assert_eq!(names(&answer["peers"]), ["alice/tab"]);
    assert_eq!(answer["peers"][0]["state"], json!({"me": "alice"}));

    let left = bob
        .delete(&format!("{}/participants/tab", channel("room")))
        .expect(200);
    assert_eq!(left["applied"], true);
    let everyone = participants(&alice, "room");
    assert_eq!(
        names(&everyone),
        ["alice/tab"],
        "bob's leave took only his own"
    );
    assert_eq!(everyone[0]["state"], json!({"me": "alice"}));
}

#[test]
fn a_stale_client_seq_is_ignored_and_the_answer_still_has_the_peers() {
    let server = Server::start(&[]);
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    write(&bob, "room", "b", 1, json!({"b": 1}));
    write(&alice, "room", "a", 5, json!({"v": 5}));
    for seq in [5, 4, 0] {
        let stale = post(
            &alice,
            "room",
            json!({"client": "a", "client_seq": seq, "state": {"v": "old"}}),
        )
        .expect(200);
        assert_eq!(stale["applied"], false, "seq {seq}: {stale}");
        assert_eq!(stale["reason"], "stale");
        assert_eq!(
            stale["client_seq"], 5,
            "the seq in force, to continue above"
        );
        assert_eq!(names(&stale["peers"]), ["bob/b"]);
        assert_eq!(stale["peers"][0]["state"], json!({"b": 1}));
    }
    let now = participants(&bob, "room");
    assert_eq!(
        find(&now, "alice/a").unwrap()["state"],
        json!({"v": 5}),
        "nothing changed"
    );
    assert_eq!(find(&now, "alice/a").unwrap()["client_seq"], 5);
    write(&alice, "room", "a", 6, json!({"v": 6}));
    assert_eq!(
        find(&participants(&bob, "room"), "alice/a").unwrap()["state"],
        json!({"v": 6})
    );
}

#[test]
fn a_silent_participant_is_evicted_within_its_ttl_plus_one_second() {
    let server = Server::start(&[]);
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    write_ttl(&bob, "room", "b", 1, 60_000);
    let mut stream = watch(&server, "carol", "room");
    assert_eq!(next_event(&mut stream).event, "snapshot");

    const TTL: u64 = 1500;
    // A few writes, each extending the TTL.
    let mut sent = Instant::now();
    let mut answered = sent;
    for seq in 1..=3 {
        sent = Instant::now();
        write_ttl(&alice, "room", "a", seq, TTL);
        answered = Instant::now();
        std::thread::sleep(Duration::from_millis(TTL / 2));
    }
    // Half a TTL has passed since the last write: still there.
    assert!(find(&participants(&bob, "room"), "alice/a").is_some());
    let mut left = None;
    while left.is_none() {
        let event = next_event(&mut stream);
        if event.event == "leave" {
            left = Some((Instant::now(), event.json()));
        }
    }
    let (at, data) = left.unwrap();
    assert_eq!(
        data,
        json!({"user": "alice", "client": "a", "client_seq": 3, "reason": "timeout"})
    );
    let ttl = Duration::from_millis(TTL);
    assert!(
        at.duration_since(sent) >= ttl - Duration::from_millis(20),
        "evicted early: {:?}",
        at.duration_since(sent)
    );
    assert!(
        at.duration_since(answered) <= ttl + Duration::from_secs(1),
        "evicted {:?} after the last write, TTL {ttl:?}",
        at.duration_since(answered)
    );
    assert_eq!(names(&participants(&bob, "room")), ["bob/b"]);
    assert!(find(&write_ttl(&bob, "room", "b", 2, 60_000)["peers"], "alice/a").is_none());
}

#[test]
fn an_empty_channel_disappears_after_a_leave_or_an_eviction() {
    // One active channel at most: the next channel can only open once the last one is gone.
    let server = Server::start(&["--presence-max-channels", "1"]);
    let alice = server.client("alice");
    write_ttl(&alice, "first", "a", 1, 60_000);
    post(
        &alice,
        "second",
        json!({"client": "a", "client_seq": 1, "state": {}}),
    )
    .expect_error(429, "rate_limited");
    let left = post(
        &alice,
        "first",
        json!({"client": "a", "client_seq": 2, "leave": true}),
    )
    .expect(200);
    assert_eq!(
        (&left["applied"], &left["peers"]),
        (&json!(true), &json!([]))
    );

    write_ttl(&alice, "second", "a", 1, 1000);
    let started = Instant::now();
    // No reads meanwhile: the sweeper alone must empty the channel.
    std::thread::sleep(Duration::from_millis(1000));
    wait_until(
        Duration::from_secs(2),
        "the evicted channel to free its slot",
        || {
            let reply = post(
                &alice,
                "third",
                json!({"client": "a", "client_seq": 1, "state": {}}),
            );
            (reply.status == 200).then_some(())
        },
    );
    assert!(started.elapsed() <= Duration::from_secs(2) + Duration::from_millis(500));
    assert_eq!(participants(&alice, "second"), json!([]));
}

#[test]
fn leaving_by_post_or_by_delete_and_a_late_write_does_not_come_back() {
    let server = Server::start(&[]);
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    write(&alice, "room", "a", 1, json!({}));
    write(&bob, "room", "b", 1, json!({}));

    let left = post(
        &alice,
        "room",
        json!({"client": "a", "client_seq": 2, "leave": true}),
    )
    .expect(200);
    assert_eq!(left["applied"], true);
    assert_eq!(names(&left["peers"]), ["bob/b"]);
    assert_eq!(names(&participants(&bob, "room")), ["bob/b"]);
    // A write sent before the leave, arriving after it (a retry), stays out.
    let late = post(
        &alice,
        "room",
        json!({"client": "a", "client_seq": 1, "state": {"late": true}}),
    )
    .expect(200);
    assert_eq!(
        (&late["applied"], &late["reason"], &late["client_seq"]),
        (&json!(false), &json!("stale"), &json!(2))
    );
    assert_eq!(names(&participants(&bob, "room")), ["bob/b"]);
    write(&alice, "room", "a", 3, json!({"back": true}));

    let path = format!("{}/participants/b", channel("room"));
    let gone = bob.delete(&path).expect(200);
    assert_eq!(gone["applied"], true);
    assert_eq!(names(&gone["peers"]), ["alice/a"]);
    let again = bob.delete(&path).expect(200);
    assert_eq!(
        (&again["applied"], &again["reason"]),
        (&json!(false), &json!("absent"))
    );
    assert_eq!(names(&participants(&alice, "room")), ["alice/a"]);
}

#[test]
fn each_bound_answers_429_or_413_and_changes_nothing() {
    let server = Server::start(&[
        "--presence-max-channels",
        "2",
        "--presence-max-participants",
        "2",
        "--presence-max-participants-total",
        "3",
        "--presence-max-state-bytes",
        "100",
        "--presence-min-ttl",
        "500ms",
        "--presence-max-ttl",
        "10s",
        "--presence-ttl",
        "5s",
    ]);
    let alice = server.client("alice");
    let info = server.anonymous().get("/v1/info").expect(200);
    assert_eq!(
        info["presence"],
        json!({
            "max_channels": 2, "max_participants": 2, "max_participants_total": 3,
            "max_state_bytes": 100, "default_ttl_ms": 5000, "min_ttl_ms": 500, "max_ttl_ms": 10_000
        })
    );
    let snapshot = |alice: &Client| ["one", "two", "three"].map(|c| participants(alice, c));

    write(&alice, "one", "p1", 1, json!({"v": 1}));
    write(&alice, "one", "p2", 1, json!({"v": 1}));
    let before = snapshot(&alice);

    // State bytes: 413, for a join and for an update alike.
    let big = json!({"s": "x".repeat(100)});
    for id in ["p1", "p9"] {
        let refused = post(
            &alice,
            "one",
            json!({"client": id, "client_seq": 2, "state": big}),
        )
        .expect_error(413, "too_large");
        assert!(
            refused["message"].as_str().unwrap().contains("100"),
            "{refused}"
        );
    }
    // A body far over the limit is refused before it is read to the end (on a client of its
    // own: the server closes that connection rather than read the rest).
    let huge = json!({"client": "p1", "client_seq": 2, "state": {"s": "x".repeat(1 << 20)}});
    post(&server.client("alice"), "one", huge).expect_error(413, "too_large");
    // Exactly at the limit is fine (an update of p1).
    let exact = json!({"s": "x".repeat(92)});
    assert_eq!(exact.to_string().len(), 100);
    write(&alice, "one", "p1", 2, exact.clone());
    write(&alice, "one", "p1", 3, json!({"v": 1}));
    let at_limit = snapshot(&alice);
    assert_eq!(at_limit[0][0]["client_seq"], 3);

    // Participants per channel: 429 with Retry-After.
    let full = post(
        &alice,
        "one",
        json!({"client": "p3", "client_seq": 1, "state": {}}),
    );
    let body = full.expect_error(429, "rate_limited");
    assert!(
        body["message"].as_str().unwrap().contains("channel"),
        "{body}"
    );
    assert!(full.header("retry-after").is_some());

    // Participants in all: 429.
    write(&alice, "two", "p4", 1, json!({}));
    let body = post(
        &alice,
        "two",
        json!({"client": "p5", "client_seq": 1, "state": {}}),
    )
    .expect_error(429, "rate_limited");
    assert!(
        body["message"].as_str().unwrap().contains("participants"),
        "{body}"
    );

    // Channels: 429 (a slot in all is free again, but no third channel may open).
    server
        .client("alice")
        .delete(&format!("{}/participants/p4", channel("two")))
        .expect(200);
    write(&alice, "two", "p4", 2, json!({}));
    alice
        .delete(&format!("{}/participants/p2", channel("one")))
        .expect(200);
    let body = post(
        &alice,
        "three",
        json!({"client": "p6", "client_seq": 1, "state": {}}),
    )
    .expect_error(429, "rate_limited");
    assert!(
        body["message"].as_str().unwrap().contains("channels"),
        "{body}"
    );

    // TTL range: 400, naming the field.
    for ttl in [499, 10_001] {
        let refused = post(
            &alice,
            "two",
            json!({"client": "p4", "client_seq": 9, "state": {}, "ttl_ms": ttl}),
        );
        let body = refused.expect_error(400, "invalid_request");
        assert_eq!(
            refused.detail_fields(),
            [(None, "ttl_ms".to_string())],
            "{body}"
        );
    }
    let now = snapshot(&alice);
    assert_eq!(names(&now[0]), ["alice/p1"]);
    assert_eq!(now[0][0], at_limit[0][0], "p1 unchanged");
    assert_eq!(names(&now[1]), ["alice/p4"]);
    assert_eq!(
        now[1][0]["client_seq"], 2,
        "the refused TTLs changed nothing"
    );
    assert_eq!(now[2], json!([]));
    assert_eq!(before[2], json!([]));
}

#[test]
fn bad_requests_get_a_clear_400() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    let cases = [
        (json!({"client_seq": 1, "state": {}}), None),
        (json!({"client": "a", "state": {}}), None),
        (json!({"client": "a", "client_seq": -1, "state": {}}), None),
        (json!({"client": "a", "client_seq": 1}), Some("state")),
        (
            json!({"client": "a", "client_seq": 1, "state": [1]}),
            Some("state"),
        ),
        (
            json!({"client": "a", "client_seq": 1, "state": "x"}),
            Some("state"),
        ),
        (
            json!({"client": "", "client_seq": 1, "state": {}}),
            Some("client"),
        ),
        (
            json!({"client": "x".repeat(257), "client_seq": 1, "state": {}}),
            Some("client"),
        ),
        (
            json!({"client": "a\u{7}", "client_seq": 1, "state": {}}),
            Some("client"),
        ),
    ];
    for (body, field) in cases {
        let reply = post(&alice, "room", body.clone());
        reply.expect_error(400, "invalid_request");
        if let Some(field) = field {
            assert_eq!(reply.detail_fields(), [(None, field.to_string())], "{body}");
        }
    }
    alice
        .post_raw(&channel("room"), b"{not json".to_vec())
        .expect_error(400, "invalid_request");
    alice
        .get("/v1/channels/Notes/room")
        .expect_error(400, "invalid_request");
    alice
        .get("/v1/channels/notes/a%20b")
        .expect_error(400, "invalid_request");
    alice
        .get(&format!("/v1/channels/notes/{}", "c".repeat(65)))
        .expect_error(400, "invalid_request");
    assert_eq!(
        participants(&alice, "room"),
        json!([]),
        "nothing was created"
    );
    // A client id is up to 256 bytes, any characters but control ones.
    write(&alice, "room", &"é".repeat(128), 1, json!({}));
}

#[test]
fn channels_need_an_authenticated_user() {
    let server = Server::start(&[]);
    let anonymous = server.anonymous();
    let body = json!({"client": "a", "client_seq": 1, "state": {}});
    anonymous
        .post_json(&channel("room"), &body)
        .expect_error(401, "unauthorized");
    anonymous
        .get(&channel("room"))
        .expect_error(401, "unauthorized");
    anonymous
        .delete(&format!("{}/participants/a", channel("room")))
        .expect_error(401, "unauthorized");
    let refused = server
        .anonymous()
        .try_events(&format!("{}/events", channel("room")), &[])
        .err()
        .expect("no token, no stream");
    refused.expect_error(401, "unauthorized");
    assert_eq!(participants(&server.client("alice"), "room"), json!([]));
    // A token in the query is for event streams only.
    anonymous
        .get(&format!("{}?access_token=alice", channel("room")))
        .expect_error(401, "unauthorized");
}

#[test]
fn watchers_see_the_snapshot_then_joins_updates_and_leaves() {
    let server = Server::start(&["--sse-heartbeat", "300ms"]);
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    write(&alice, "room", "a", 1, json!({"v": 1}));
    // Browsers' EventSource sends the token in the query.
    let mut stream = server
        .anonymous()
        .try_events(
            &format!("{}/events?access_token=carol", channel("room")),
            &[],
        )
        .unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    let snapshot = next_event(&mut stream);
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(names(&snapshot.json()["participants"]), ["alice/a"]);
    assert_eq!(snapshot.json()["participants"][0]["state"], json!({"v": 1}));

    write(&bob, "room", "b", 1, json!({"b": true}));
    write(&alice, "room", "a", 2, json!({"v": 2}));
    post(
        &alice,
        "room",
        json!({"client": "a", "client_seq": 2, "state": {"v": "stale"}}),
    )
    .expect(200);
    bob.delete(&format!("{}/participants/b", channel("room")))
        .expect(200);
    write_ttl(&alice, "room", "a", 3, 1000);

    let mut seen = Vec::new();
    while seen.len() < 5 {
        let event = next_event(&mut stream);
        let mut data = event.json();
        data.as_object_mut().unwrap().remove("updated_ms");
        seen.push((event.event, data));
    }
    assert_eq!(
        seen,
        [
            (
                "join".to_string(),
                json!({"user": "bob", "client": "b", "client_seq": 1, "state": {"b": true}})
            ),
            (
                "update".into(),
                json!({"user": "alice", "client": "a", "client_seq": 2, "state": {"v": 2}})
            ),
            (
                "leave".into(),
                json!({"user": "bob", "client": "b", "client_seq": 1, "reason": "left"})
            ),
            (
                "update".into(),
                json!({"user": "alice", "client": "a", "client_seq": 3, "state": {"seq": 3}})
            ),
            (
                "leave".into(),
                json!({"user": "alice", "client": "a", "client_seq": 3, "reason": "timeout"})
            ),
        ]
    );
    // Idle now: heartbeats keep the stream open.
    assert!(stream.next(Duration::from_millis(700)).is_none());
    assert!(stream.comments() >= 1, "heartbeats");
    assert!(stream.closed().is_none());
}

#[test]
fn event_streams_close_when_the_server_shuts_down() {
    let mut server = Server::start(&[]);
    let mut stream = watch(&server, "carol", "room");
    assert_eq!(next_event(&mut stream).event, "snapshot");
    let started = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let event = next_event(&mut stream);
    assert_eq!(
        (event.event.as_str(), &event.json()["error"]),
        ("error", &json!("shutting_down"))
    );
}

#[test]
fn fifty_clients_at_20_hz_for_10_s_lose_no_state_and_tear_none() {
    const CLIENTS: usize = 50;
    const PERIOD: Duration = Duration::from_millis(50);
    const RUN: Duration = Duration::from_secs(10);
    let server = Server::start(&[]);
    let start = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let client = Client::new(server.url(), Some(&format!("user{}", k % 5)));
            let start = start.clone();
            std::thread::spawn(move || {
                let id = format!("c{k}");
                let mut last_seen: HashMap<String, u64> = HashMap::new();
                start.wait();
                let began = Instant::now();
                let mut seq = 0;
                while began.elapsed() < RUN {
                    seq += 1;
                    let state = json!({"n": seq, "check": seq * 7, "who": id, "pad": format!("{id}-{seq}")});
                    let answer = write(&client, "busy", &id, seq, state);
                    for peer in answer["peers"].as_array().unwrap() {
                        let s = &peer["state"];
                        let n = s["n"].as_u64().unwrap();
                        let who = s["who"].as_str().unwrap().to_string();
                        // Torn state would mix fields of two writes.
                        assert_eq!(s["check"], n * 7, "{peer}");
                        assert_eq!(peer["client_seq"], n, "{peer}");
                        assert_eq!(s["pad"], format!("{who}-{n}"), "{peer}");
                        assert_eq!(peer["client"], who.as_str());
                        // Nobody's state goes back in time.
                        let seen = last_seen.entry(who).or_default();
                        assert!(n >= *seen, "{peer} after {seen}");
                        *seen = n;
                    }
                    let next = began + PERIOD * seq as u32;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                (format!("user{}/{id}", k % 5), seq)
            })
        })
        .collect();
    let last: HashMap<String, u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let writes: u64 = last.values().sum();
    let rate = writes as f64 / RUN.as_secs_f64() / CLIENTS as f64;
    eprintln!("presence: {writes} writes by {CLIENTS} clients in {RUN:?}: {rate:.1} Hz each");
    // The clients aim at 20 Hz; how close they get depends on the machine (speed is for the
    // benchmark, not this test). What matters here is that the writes really overlap: every
    // client wrote many times while all the others did.
    assert!(
        last.values().all(|&n| n >= 10),
        "each client should have written at least 10 times: {last:?}"
    );

    let everyone = participants(&server.client("observer"), "busy");
    assert_eq!(everyone.as_array().unwrap().len(), CLIENTS);
    for (who, seq) in &last {
        let p = find(&everyone, who).unwrap_or_else(|| panic!("{who} is missing"));
        let id = who.split('/').nth(1).unwrap();
        assert_eq!(
            p["state"],
            json!({"n": seq, "check": seq * 7, "who": id, "pad": format!("{id}-{seq}")}),
            "{who}'s final state is its last write"
        );
        assert_eq!(p["client_seq"], *seq);
    }
}

#[test]
fn nodes_on_one_database_see_each_others_participants_leaves_and_evictions() {
    let a = Server::start_on(Backend::Postgres, &[]);
    let b = Server::start_node_of(&a, &[]);
    let (alice_a, alice_b) = (a.client("alice"), b.client("alice"));
    let (bob_a, bob_b) = (a.client("bob"), b.client("bob"));
    let mut stream_a = watch(&a, "carol", "room");
    assert_eq!(next_event(&mut stream_a).event, "snapshot");

    let started = Instant::now();
    write_ttl(&alice_a, "room", "a", 1, 60_000);
    write_ttl(&bob_b, "room", "b", 1, 60_000);
    wait_until(WAIT, "node B to see alice", || {
        find(&participants(&bob_b, "room"), "alice/a").map(|_| ())
    });
    // B's participant learns of A's in its own next answer.
    wait_until(WAIT, "bob's answer to hold alice", || {
        let answer = post(
            &bob_b,
            "room",
            json!({"client": "b", "client_seq": tidemark_tests::now_ms(), "state": {}}),
        )
        .expect(200);
        find(&answer["peers"], "alice/a").map(|_| ())
    });
    let join = next_matching(&mut stream_a, |e| {
        e.event == "join" && e.json()["user"] == "bob"
    });
    assert_eq!(
        join.json()["client"],
        "b",
        "A's watchers hear of B's participant"
    );
    eprintln!("nodes see each other after {:?}", started.elapsed());

    // Ordering by client_seq holds across nodes.
    write_ttl(&alice_a, "room", "a", 10, 60_000);
    wait_until(WAIT, "node B to see seq 10", || {
        (find(&participants(&bob_b, "room"), "alice/a")?["client_seq"] == 10).then_some(())
    });
    let stale = post(
        &alice_b,
        "room",
        json!({"client": "a", "client_seq": 9, "state": {"old": true}}),
    )
    .expect(200);
    assert_eq!(
        (&stale["applied"], &stale["client_seq"]),
        (&json!(false), &json!(10))
    );
    write(&alice_b, "room", "a", 11, json!({"via": "b"}));
    wait_until(WAIT, "node A to see seq 11", || {
        (find(&participants(&bob_a, "room"), "alice/a")?["state"] == json!({"via": "b"}))
            .then_some(())
    });

    // A leave on B reaches A.
    bob_b
        .delete(&format!("{}/participants/b", channel("room")))
        .expect(200);
    let left = Instant::now();
    wait_until(WAIT, "node A to drop bob", || {
        find(&participants(&alice_a, "room"), "bob/b")
            .is_none()
            .then_some(())
    });
    eprintln!("a leave reached the other node after {:?}", left.elapsed());

    // Eviction: alice, last written through B, falls silent; both nodes drop her in time.
    const TTL: u64 = 1500;
    write_ttl(&alice_b, "room", "a", 12, TTL);
    let written = Instant::now();
    wait_until(WAIT, "node A to see seq 12", || {
        (find(&participants(&bob_a, "room"), "alice/a")?["client_seq"] == 12).then_some(())
    });
    let mut gone = [None, None];
    while gone.iter().any(Option::is_none) {
        for (i, client) in [&bob_a, &bob_b].into_iter().enumerate() {
            if gone[i].is_none() && find(&participants(client, "room"), "alice/a").is_none() {
                gone[i] = Some(written.elapsed());
            }
        }
        assert!(
            written.elapsed() < Duration::from_millis(TTL) + WAIT,
            "alice was never evicted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for (node, after) in ["A", "B"].iter().zip(gone) {
        let after = after.unwrap();
        assert!(
            after >= Duration::from_millis(TTL - 100) && after <= Duration::from_millis(TTL + 1000),
            "node {node} evicted alice {after:?} after her last write (TTL {TTL} ms)"
        );
    }
    let leave = next_matching(&mut stream_a, |e| {
        e.event == "leave" && e.json()["user"] == "alice"
    });
    assert_eq!(leave.json()["reason"], "timeout");
}

#[test]
fn a_node_that_starts_later_learns_the_participants_without_waiting_for_their_writes() {
    let a = Server::start_on(Backend::Postgres, &[]);
    let alice = a.client("alice");
    write_ttl(&alice, "room", "a", 1, 120_000);
    write_ttl(&a.client("bob"), "room", "b", 1, 120_000);
    let c = Server::start_node_of(&a, &[]);
    let started = Instant::now();
    let seen = wait_until(WAIT, "the new node to hear of the participants", || {
        let now = participants(&c.client("carol"), "room");
        (now.as_array()?.len() == 2).then_some(now)
    });
    eprintln!(
        "a new node was complete {:?} after it started",
        started.elapsed()
    );
    assert_eq!(names(&seen), ["alice/a", "bob/b"]);
    assert_eq!(seen[0]["state"], json!({"seq": 1}));
    assert_eq!(seen[0]["client_seq"], 1);
}
