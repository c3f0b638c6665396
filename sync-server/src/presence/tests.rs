//! The channel logic without HTTP: time is passed in, so TTLs are tested exactly.

use super::*;

fn limits() -> PresenceLimits {
    PresenceLimits {
        max_channels: 3,
        max_participants: 3,
        max_participants_total: 5,
        max_state_bytes: 64,
        default_ttl: Duration::from_secs(10),
        min_ttl: Duration::from_secs(1),
        max_ttl: Duration::from_secs(60),
    }
}

fn channel(name: &str) -> ChannelKey {
    ChannelKey {
        app: "app".into(),
        name: name.into(),
    }
}

fn who(user: &str, client: &str) -> ParticipantKey {
    ParticipantKey {
        user: user.into(),
        client: client.into(),
    }
}

fn state(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.into()).unwrap()
}

/// A clock that starts now and moves only when told.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn new() -> Clock {
        Clock(Instant::now())
    }
    fn at(self, ms: u64) -> Now {
        Now {
            at: self.0 + Duration::from_millis(ms),
            ms: 1_000_000 + ms,
        }
    }
}

fn write(
    presence: &Presence,
    ch: &str,
    user: &str,
    client: &str,
    seq: u64,
    text: &str,
    now: Now,
) -> Answer {
    let write = presence.limits().write(seq, state(text), None).unwrap();
    presence
        .exchange(&channel(ch), who(user, client), write, now)
        .unwrap()
}

fn write_ttl(presence: &Presence, ch: &str, user: &str, seq: u64, ttl_ms: u64, now: Now) -> Answer {
    let write = presence
        .limits()
        .write(seq, state("{}"), Some(ttl_ms))
        .unwrap();
    presence
        .exchange(&channel(ch), who(user, "c"), write, now)
        .unwrap()
}

/// `(user, client, seq, state)` of every participant.
fn view(presence: &Presence, ch: &str, now: Now) -> Vec<(String, String, u64, String)> {
    presence
        .participants(&channel(ch), now)
        .into_iter()
        .map(|p| {
            (
                p.key.user.clone(),
                p.key.client.clone(),
                p.seq,
                p.state.get().to_string(),
            )
        })
        .collect()
}

fn names(peers: &[Peer]) -> Vec<String> {
    peers
        .iter()
        .map(|p| format!("{}/{}", p.key.user, p.key.client))
        .collect()
}

impl Presence {
    /// Channels in the shards (with participants or watchers).
    fn channel_objects(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

#[test]
fn a_write_is_answered_with_everyone_but_the_writer() {
    let clock = Clock::new();
    let presence = Presence::new(limits());
    let first = write(
        &presence,
        "room",
        "alice",
        "tab1",
        1,
        r#"{"x":1}"#,
        clock.at(0),
    );
    assert_eq!(first.outcome, Applied::Joined);
    assert!(first.peers.is_empty());
    assert_eq!(first.client_seq, Some(1));
    assert_eq!(first.ttl, Some(Duration::from_secs(10)), "the default TTL");

    write(
        &presence,
        "room",
        "bob",
        "tab1",
        1,
        r#"{"y":2}"#,
        clock.at(1),
    );
    let third = write(&presence, "room", "alice", "tab2", 1, "{}", clock.at(2));
    assert_eq!(
        names(&third.peers),
        ["alice/tab1", "bob/tab1"],
        "sorted, without me"
    );
    assert_eq!(third.peers[1].state.get(), r#"{"y":2}"#);
    assert_eq!(third.peers[1].updated_ms, 1_000_001);

    let again = write(
        &presence,
        "room",
        "alice",
        "tab1",
        2,
        r#"{"x":2}"#,
        clock.at(3),
    );
    assert_eq!(again.outcome, Applied::Updated);
    assert_eq!(names(&again.peers), ["alice/tab2", "bob/tab1"]);
    assert_eq!(
        view(&presence, "room", clock.at(4)).len(),
        3,
        "observers see everyone"
    );
    assert_eq!(presence.counts(), (1, 3));
}

#[test]
fn users_cannot_overwrite_each_others_participants() {
    let clock = Clock::new();
    let presence = Presence::new(limits());
    write(
        &presence,
        "room",
        "alice",
        "tab",
        5,
        r#"{"me":"alice"}"#,
        clock.at(0),
    );
    let bob = write(
        &presence,
        "room",
        "bob",
        "tab",
        1,
        r#"{"me":"bob"}"#,
        clock.at(1),
    );
    assert_eq!(
        bob.outcome,
        Applied::Joined,
        "same client id, another user: another participant"
    );
    assert_eq!(
        view(&presence, "room", clock.at(2)),
        [
            ("alice".into(), "tab".into(), 5, r#"{"me":"alice"}"#.into()),
            ("bob".into(), "tab".into(), 1, r#"{"me":"bob"}"#.into()),
        ]
    );
    let left = presence.leave(&channel("room"), who("bob", "tab"), None, clock.at(3));
    assert_eq!(left.outcome, Applied::Left);
    assert_eq!(
        view(&presence, "room", clock.at(4)).len(),
        1,
        "bob's leave took only bob's"
    );
}

#[test]
fn a_stale_write_is_ignored_and_says_which_seq_is_in_force() {
    let clock = Clock::new();
    let presence = Presence::new(limits());
    write(
        &presence,
        "room",
        "alice",
        "tab",
        5,
        r#"{"v":5}"#,
        clock.at(0),
    );
    write(&presence, "room", "bob", "tab", 1, "{}", clock.at(0));
    for seq in [5, 4, 0] {
        let stale = write(
            &presence,
            "room",
            "alice",
            "tab",
            seq,
            r#"{"v":"old"}"#,
            clock.at(1),
        );
        assert_eq!(stale.outcome, Applied::Stale, "seq {seq}");
        assert_eq!(stale.outcome.reason(), Some("stale"));
        assert_eq!(stale.client_seq, Some(5));
        assert_eq!(
            names(&stale.peers),
            ["bob/tab"],
            "a stale write still gets the peers"
        );
    }
    assert_eq!(view(&presence, "room", clock.at(2))[0].3, r#"{"v":5}"#);
}

#[test]
fn a_stale_write_does_not_extend_the_ttl() {
    let clock = Clock::new();
    let presence = Presence::new(limits());
    write_ttl(&presence, "room", "alice", 2, 1000, clock.at(0));
    let stale = write_ttl(&presence, "room", "alice", 2, 1000, clock.at(900));
    assert_eq!(stale.outcome, Applied::Stale);
    assert_eq!(presence.sweep(clock.at(1000).at), 1);
}

#[test]
fn a_silent_participant_is_evicted_when_its_ttl_ends_and_the_empty_channel_goes() {
    let clock = Clock::new();
    let presence = Arc::new(Presence::new(limits()));
    let mut watcher = presence.watch(&channel("other"), clock.at(0));
    write_ttl(&presence, "room", "alice", 1, 1000, clock.at(0));
    write_ttl(&presence, "room", "bob", 1, 5000, clock.at(0));
    write_ttl(&presence, "other", "carol", 1, 1000, clock.at(0));
    assert_eq!(
        presence.sweep(clock.at(999).at),
        0,
        "not a millisecond early"
    );
    assert_eq!(presence.sweep(clock.at(1000).at), 2);
    assert_eq!(view(&presence, "room", clock.at(1000)).len(), 1);
    assert_eq!(
        presence.counts(),
        (1, 1),
        "`other` has no participants left"
    );
    assert_eq!(presence.channel_objects(), 2, "but `other` has a watcher");

    let event = watcher.recv().now_or_never().unwrap().unwrap();
    assert_eq!(event.kind, "join");
    let event = watcher.recv().now_or_never().unwrap().unwrap();
    assert_eq!(event.kind, "leave");
    let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(
        data,
        serde_json::json!({"user": "carol", "client": "c", "client_seq": 1, "reason": "timeout"})
    );
    drop(watcher);
    assert_eq!(
        presence.channel_objects(),
        1,
        "unwatched, the empty channel goes"
    );

    assert_eq!(presence.sweep(clock.at(5000).at), 1);
    assert_eq!(presence.counts(), (0, 0));
    assert_eq!(presence.channel_objects(), 0);
}

#[test]
fn reads_never_show_a_participant_whose_ttl_has_ended() {
    let clock = Clock::new();
    let presence = Presence::new(limits());
    write_ttl(&presence, "room", "alice", 1, 1000, clock.at(0));
    write_ttl(&presence, "room", "bob", 1, 3000, clock.at(0));
    // No sweep: reads and writes evict on their own.
    assert_eq!(view(&presence, "room", clock.at(999)).len(), 2);
    assert_eq!(view(&presence, "room", clock.at(1000)).len(), 1);
    let answer = write_ttl(&presence, "room", "carol", 1, 1000, clock.at(3000));
    assert!(
        answer.peers.is_empty(),
        "bob expired too: {:?}",
        names(&answer.peers)
    );
    assert_eq!(presence.counts(), (1, 1));
}

#[test]
fn every_write_extends_the_ttl() {
    let clock = Clock::new();
    let presence = Presence::new(limits());
    for (seq, at) in [(1, 0), (2, 800), (3, 1600), (4, 2400)] {
        write_ttl(&presence, "room", "alice", seq, 1000, clock.at(at));
        assert_eq!(presence.sweep(clock.at(at + 999).at), 0);
    }
    assert_eq!(presence.sweep(clock.at(3400).at), 1);
}

#[test]
fn a_write_at_the_moment_of_eviction_joins_again_with_its_own_state() {
    let clock = Clock::new();
    let presence = Presence::new(limits());
    write(
        &presence,
        "room",
        "alice",
        "tab",
        1,
        r#"{"v":1}"#,
        clock.at(0),
    );
    // The deadline has passed but no sweep ran: the write evicts first, then joins afresh.
    let answer = write(
        &presence,
        "room",
        "alice",
        "tab",
        2,
        r#"{"v":2}"#,
        clock.at(10_000),
    );
    assert_eq!(answer.outcome, Applied::Joined);
    assert_eq!(view(&presence, "room", clock.at(10_001))[0].2, 2);
    assert_eq!(presence.counts(), (1, 1));
    assert_eq!(
        presence.sweep(clock.at(19_999).at),
        0,
        "the new write's TTL counts"
    );
}

#[test]
fn a_late_write_cannot_bring_back_a_participant_that_left() {
    let clock = Clock::new();
    let presence = Presence::new(limits());
    write(&presence, "room", "alice", "tab", 5, "{}", clock.at(0));
    let left = presence.leave(&channel("room"), who("alice", "tab"), Some(6), clock.at(1));
    assert_eq!(left.outcome, Applied::Left);
    let late = write(&presence, "room", "alice", "tab", 5, "{}", clock.at(2));
    assert_eq!(late.outcome, Applied::Stale);
    assert_eq!(late.client_seq, Some(6), "the seq it left at");
    assert!(view(&presence, "room", clock.at(3)).is_empty());
    assert_eq!(
        presence.channel_objects(),
        0,
        "the stale write left no empty channel behind"
    );

    // After an eviction too, at the seq in force.
    write(&presence, "room", "bob", "tab", 3, "{}", clock.at(0));
    presence.sweep(clock.at(10_000).at);
    let late = write(&presence, "room", "bob", "tab", 3, "{}", clock.at(10_001));
    assert_eq!(late.outcome, Applied::Stale);

    // A higher seq joins again, and is not stale afterwards.
    let back = write(&presence, "room", "alice", "tab", 7, "{}", clock.at(4));
    assert_eq!(back.outcome, Applied::Joined);
    // The departure is forgotten after DEPARTED_KEEP.
    presence.sweep(clock.at(10_000 + DEPARTED_KEEP.as_millis() as u64).at);
    let much_later = write(&presence, "room", "bob", "tab", 1, "{}", clock.at(41_000));
    assert_eq!(much_later.outcome, Applied::Joined);
}

#[test]
fn a_leave_at_the_seq_in_force_applies_and_a_lower_one_is_stale() {
    let clock = Clock::new();
    let presence = Presence::new(limits());
    write(&presence, "room", "alice", "tab", 5, "{}", clock.at(0));
    let stale = presence.leave(&channel("room"), who("alice", "tab"), Some(4), clock.at(1));
    assert_eq!((stale.outcome, stale.client_seq), (Applied::Stale, Some(5)));
    let left = presence.leave(&channel("room"), who("alice", "tab"), Some(5), clock.at(1));
    assert_eq!(left.outcome, Applied::Left);
    let absent = presence.leave(&channel("room"), who("alice", "tab"), None, clock.at(2));
    assert_eq!(
        (absent.outcome, absent.client_seq),
        (Applied::Absent, Some(5))
    );
    let never = presence.leave(&channel("room"), who("nobody", "tab"), None, clock.at(2));
    assert_eq!((never.outcome, never.client_seq), (Applied::Absent, None));
    assert_eq!(presence.counts(), (0, 0));
    assert_eq!(presence.channel_objects(), 0);
}

#[test]
fn each_bound_refuses_and_changes_nothing() {
    let clock = Clock::new();
    let presence = Presence::new(limits());
    let limits = presence.limits();
    assert_eq!(
        limits
            .write(1, state(&format!("{{\"s\":\"{}\"}}", "x".repeat(60))), None)
            .unwrap_err(),
        PresenceError::StateTooLarge { bytes: 68, max: 64 }
    );
    assert_eq!(
        limits.write(1, state("[1]"), None).unwrap_err(),
        PresenceError::StateNotObject
    );
    assert!(matches!(
        limits.write(1, state("{}"), Some(999)).unwrap_err(),
        PresenceError::TtlOutOfRange {
            ttl_ms: 999,
            min_ms: 1000,
            max_ms: 60_000
        }
    ));
    assert!(limits.write(1, state("{}"), Some(60_001)).is_err());
    assert!(limits.write(1, state("{}"), Some(60_000)).is_ok());

    for user in ["a", "b", "c"] {
        write(&presence, "one", user, "t", 1, "{}", clock.at(0));
    }
    let full = presence.limits().write(1, state("{}"), None).unwrap();
    assert_eq!(
        presence
            .exchange(&channel("one"), who("d", "t"), full.clone(), clock.at(1))
            .unwrap_err(),
        PresenceError::ChannelFull { max: 3 }
    );
    assert_eq!(
        write(&presence, "one", "a", "t", 2, "{}", clock.at(1)).outcome,
        Applied::Updated,
        "a full channel still takes its participants' writes"
    );
    write(&presence, "two", "a", "t", 1, "{}", clock.at(0));
    write(&presence, "three", "a", "t", 1, "{}", clock.at(0));
    assert_eq!(presence.counts(), (3, 5));
    assert_eq!(
        presence
            .exchange(&channel("four"), who("a", "t"), full.clone(), clock.at(1))
            .unwrap_err(),
        PresenceError::TooManyChannels { max: 3 }
    );
    assert_eq!(
        presence
            .exchange(&channel("two"), who("b", "t"), full.clone(), clock.at(1))
            .unwrap_err(),
        PresenceError::TooManyParticipants { max: 5 }
    );
    assert_eq!(presence.counts(), (3, 5), "refusals reserve nothing");
    assert_eq!(
        presence.channel_objects(),
        3,
        "nor leave an empty channel behind"
    );
    assert_eq!(view(&presence, "two", clock.at(2)).len(), 1);

    // A slot that frees up can be taken.
    presence.leave(&channel("three"), who("a", "t"), None, clock.at(2));
    presence
        .exchange(&channel("four"), who("a", "t"), full, clock.at(3))
        .unwrap();
    assert_eq!(presence.counts(), (3, 5));
}

#[test]
fn a_refused_join_into_a_new_channel_releases_its_channel_slot() {
    let clock = Clock::new();
    let presence = Presence::new(PresenceLimits {
        max_participants_total: 1,
        ..limits()
    });
    write(&presence, "one", "a", "t", 1, "{}", clock.at(0));
    let full = presence.limits().write(1, state("{}"), None).unwrap();
    assert_eq!(
        presence
            .exchange(&channel("two"), who("b", "t"), full, clock.at(0))
            .unwrap_err(),
        PresenceError::TooManyParticipants { max: 1 }
    );
    assert_eq!(presence.counts(), (1, 1));
    assert_eq!(presence.channel_objects(), 1);
}

#[test]
fn watchers_get_a_snapshot_then_every_join_update_and_leave() {
    let clock = Clock::new();
    let presence = Arc::new(Presence::new(limits()));
    write(
        &presence,
        "room",
        "alice",
        "tab",
        1,
        r#"{"v":1}"#,
        clock.at(0),
    );
    let mut watcher = presence.watch(&channel("room"), clock.at(1));
    assert_eq!(names(&watcher.snapshot), ["alice/tab"]);
    write(
        &presence,
        "room",
        "bob",
        "tab",
        1,
        r#"{"b":1}"#,
        clock.at(2),
    );
    write(
        &presence,
        "room",
        "alice",
        "tab",
        2,
        r#"{"v":2}"#,
        clock.at(3),
    );
    write(
        &presence,
        "room",
        "alice",
        "tab",
        2,
        r#"{"v":"stale"}"#,
        clock.at(3),
    );
    presence.leave(&channel("room"), who("bob", "tab"), None, clock.at(4));
    let mut seen = Vec::new();
    while let Some(Ok(event)) = watcher.recv().now_or_never() {
        seen.push((
            event.kind,
            serde_json::from_str::<serde_json::Value>(&event.data).unwrap(),
        ));
    }
    use serde_json::json;
    assert_eq!(
        seen,
        [
            (
                "join",
                json!({"user": "bob", "client": "tab", "client_seq": 1, "state": {"b": 1}, "updated_ms": 1_000_002})
            ),
            (
                "update",
                json!({"user": "alice", "client": "tab", "client_seq": 2, "state": {"v": 2}, "updated_ms": 1_000_003})
            ),
            (
                "leave",
                json!({"user": "bob", "client": "tab", "client_seq": 1, "reason": "left"})
            ),
        ]
    );
}

#[test]
fn operations_from_other_nodes_give_the_same_state_in_any_order() {
    let clock = Clock::new();
    let set = |user: &str, seq: u64, text: &str| RemoteOp {
        channel: channel("room"),
        who: who(user, "tab"),
        op: Op::Set {
            seq,
            state: Arc::from(state(text)),
            ttl: Duration::from_secs(10),
            left: Duration::from_secs(10),
            updated_ms: seq,
        },
    };
    let leave = |user: &str, seq: u64| RemoteOp {
        channel: channel("room"),
        who: who(user, "tab"),
        op: Op::Leave { seq },
    };
    let ops = [
        set("alice", 1, r#"{"v":1}"#),
        set("alice", 3, r#"{"v":3}"#),
        set("alice", 2, r#"{"v":2}"#),
        leave("bob", 4),
        set("bob", 3, r#"{"b":3}"#),
        set("bob", 4, r#"{"b":4}"#),
        set("carol", 2, r#"{"c":2}"#),
        leave("carol", 1),
        set("dave", 1, "{}"),
        leave("dave", 1),
        set("dave", 1, "{}"),
    ];
    let expected = [
        (
            "alice".to_string(),
            "tab".to_string(),
            3,
            r#"{"v":3}"#.to_string(),
        ),
        ("carol".into(), "tab".into(), 2, r#"{"c":2}"#.into()),
    ];
    // Every rotation and its reverse, and a few pseudo-random shuffles.
    let mut orders: Vec<Vec<usize>> = Vec::new();
    for start in 0..ops.len() {
        let rotated: Vec<usize> = (0..ops.len()).map(|i| (start + i) % ops.len()).collect();
        orders.push(rotated.iter().rev().copied().collect());
        orders.push(rotated);
    }
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..200 {
        let mut order: Vec<usize> = (0..ops.len()).collect();
        for i in (1..order.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        orders.push(order);
    }
    for order in orders {
        // The limits do not apply to other nodes' operations.
        let presence = Presence::new(PresenceLimits {
            max_participants: 1,
            ..limits()
        });
        for &i in &order {
            presence.apply_remote(ops[i].clone(), clock.at(0).at);
        }
        assert_eq!(
            view(&presence, "room", clock.at(1)),
            expected,
            "order {order:?}"
        );
        assert_eq!(presence.counts(), (1, 2));
    }
}

#[test]
fn only_this_nodes_participants_are_republished_with_what_is_left_of_their_ttl() {
    let clock = Clock::new();
    let presence = Presence::new(limits());
    write_ttl(&presence, "room", "alice", 1, 10_000, clock.at(0));
    presence.apply_remote(
        RemoteOp {
            channel: channel("room"),
            who: who("bob", "c"),
            op: Op::Set {
                seq: 1,
                state: Arc::from(state("{}")),
                ttl: Duration::from_secs(10),
                left: Duration::from_secs(10),
                updated_ms: 0,
            },
        },
        clock.at(0).at,
    );
    let ops = presence.local_ops(clock.at(4000).at);
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].who, who("alice", "c"));
    match &ops[0].op {
        Op::Set { left, ttl, .. } => {
            assert_eq!(
                (*left, *ttl),
                (Duration::from_secs(6), Duration::from_secs(10))
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn concurrent_writers_leavers_and_sweeps_keep_the_counts_and_lose_no_write() {
    let presence = Arc::new(Presence::new(PresenceLimits {
        max_channels: 100,
        max_participants: 100,
        max_participants_total: 1000,
        max_state_bytes: 100,
        default_ttl: Duration::from_millis(5),
        min_ttl: Duration::from_millis(1),
        max_ttl: Duration::from_secs(60),
    }));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let presence = presence.clone();
            std::thread::spawn(move || {
                for seq in 1..=2000u64 {
                    let ch = format!("c{}", seq % 3);
                    // Short TTLs, so that sweeps race the writes.
                    let ttl = if seq % 2 == 0 { 1 } else { 60_000 };
                    let text = format!(r#"{{"t":{t},"seq":{seq}}}"#);
                    let write = presence
                        .limits()
                        .write(seq, state(&text), Some(ttl))
                        .unwrap();
                    let answer = presence
                        .exchange(
                            &channel(&ch),
                            who(&format!("u{t}"), "c"),
                            write,
                            Now::read(),
                        )
                        .unwrap();
                    assert!(answer.outcome.changed(), "seqs only go up");
                    for peer in &answer.peers {
                        let v: serde_json::Value = serde_json::from_str(peer.state.get()).unwrap();
                        assert_eq!(v["seq"], peer.seq, "state and seq belong together");
                    }
                    if seq % 7 == 0 {
                        presence.leave(
                            &channel(&ch),
                            who(&format!("u{t}"), "c"),
                            None,
                            Now::read(),
                        );
                    }
                }
            })
        })
        .collect();
    let sweeper = {
        let presence = presence.clone();
        std::thread::spawn(move || {
            for _ in 0..500 {
                presence.sweep(Instant::now());
                std::thread::yield_now();
            }
        })
    };
    for thread in threads {
        thread.join().unwrap();
    }
    sweeper.join().unwrap();
    // Each user's last write (seq 2000, odd TTL? 2000 is even: 1 ms) may have expired;
    // what remains is consistent with the counters.
    let later = Now::read();
    for ch in ["c0", "c1", "c2"] {
        // One participant per user and channel at most (a user writes to all three channels,
        // so it may still be in several).
        let participants = presence.participants(&channel(ch), later);
        assert!(participants.len() <= 8, "{ch}: {}", participants.len());
    }
    presence.sweep(later.at + Duration::from_secs(120));
    assert_eq!(
        presence.counts(),
        (0, 0),
        "every admitted participant was counted out once"
    );
    assert_eq!(presence.channel_objects(), 0);
}

/// Polls a future once.
trait NowOrNever: std::future::Future + Sized {
    fn now_or_never(self) -> Option<Self::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut future = std::pin::pin!(self);
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        }
    }
}

impl<F: std::future::Future> NowOrNever for F {}
