//! Presence channels: shared live state, kept in memory only.
//!
//! A participant POSTs its whole state (a JSON object) to a channel and gets every other
//! participant's state back; observers read the channel or follow it as events. Nothing here
//! is ever written to disk.
//!
//! # Model
//!
//! - A **channel** is `(app, name)`. It comes into being with its first participant (or its
//!   first watcher) and disappears when it has neither.
//! - A **participant** is `(user, client)`: `user` is the caller's authenticated id, `client`
//!   the id the client chose (one per tab or device, say). Keying by both means that a user can
//!   only write, or leave, their own participants, and that two users may pick the same
//!   `client`.
//! - **Order.** Every write and leave carries the participant's `client_seq`. Per participant
//!   the server keeps the greatest operation it has seen, ordered by `client_seq` and, at equal
//!   seqs, a leave after a write: a write applies only above the seq in force (an equal one is
//!   stale), a leave at or above it. Because this is a maximum, the same operations applied in
//!   any order give the same result, on one node or on many (see [`bus`]).
//! - After a leave or an eviction the participant's last seq is remembered for
//!   [`DEPARTED_KEEP`] (see `departed`), so that a late write from before the leave cannot
//!   bring it back.
//! - **TTL.** Each write says how long the participant stays without writing again (`ttl_ms`,
//!   within the configured range; a default otherwise). A participant silent for its TTL is
//!   evicted: by the sweeper, which runs every [`SWEEP_EVERY`], and on any access to its
//!   channel, so a read never shows an expired participant. A stale write does not extend
//!   the TTL.
//!
//! # Concurrency
//!
//! Channels live in [`SHARDS`] maps, each behind a std mutex; each channel has its own std
//! mutex. Nothing awaits while holding either, and every critical section is a map lookup
//! or one channel's work. Lock order: shard, then channel, then the departed map. A channel is
//! removed from its shard with both locks held and marked `removed`, and whoever finds a
//! removed channel after locking it looks it up again, so a write racing the removal of an
//! empty channel lands in the new one rather than in the discarded one. A write and an
//! eviction of one participant are serialised by the channel lock, and the eviction
//! re-checks the deadline under it: the write either refreshes the participant first, or
//! joins again after the eviction.
//!
//! # Bounds
//!
//! [`PresenceLimits`]: channels with participants, participants per channel, participants in
//! all, bytes of one state, and the TTL range. Memory is therefore at most about
//! `max_participants_total × (max_state_bytes + the two ids)`, plus the departed map (at most
//! `max_participants_total` entries). Channels and participants are counted when they are
//! admitted; a write that would go over a bound changes nothing. With several nodes, each
//! checks the bounds against its full replica when it admits a participant, and applies what
//! the others admitted without checking again (a replica must not diverge), so joins admitted
//! at the same instant on different nodes can overshoot a bound by that many.

pub mod bus;
mod departed;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Config;
use departed::Departed;

/// How many maps the channels are spread over, so that unrelated channels rarely contend.
pub const SHARDS: usize = 16;
/// How often the sweeper looks for silent participants; eviction happens at most this late
/// (plus the time to sweep) after a TTL ends.
pub const SWEEP_EVERY: Duration = Duration::from_millis(200);
/// How long a departed participant's last seq is remembered.
pub const DEPARTED_KEEP: Duration = Duration::from_secs(30);
/// Events each watched channel buffers per watcher; one that falls further behind is
/// disconnected (it reconnects and gets a fresh snapshot).
pub const EVENT_BUFFER: usize = 1024;

/// Which channel: `(app, name)`, both validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelKey {
    /// The app name.
    pub app: String,
    /// The channel name.
    pub name: String,
}

/// Which participant: the authenticated user and the client id they chose.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantKey {
    /// The caller's user id.
    pub user: String,
    /// The participant id sent as `client`.
    pub client: String,
}

/// The bounds of this node's presence channels (`--presence-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PresenceLimits {
    /// Channels with at least one participant.
    pub max_channels: usize,
    /// Participants in one channel.
    pub max_participants: usize,
    /// Participants in all channels together.
    pub max_participants_total: usize,
    /// Bytes of one participant's `state` (its JSON text as sent).
    pub max_state_bytes: usize,
    /// The TTL of a write without `ttl_ms`.
    #[serde(rename = "default_ttl_ms", serialize_with = "as_ms")]
    pub default_ttl: Duration,
    /// The shortest `ttl_ms` allowed.
    #[serde(rename = "min_ttl_ms", serialize_with = "as_ms")]
    pub min_ttl: Duration,
    /// The longest `ttl_ms` allowed.
    #[serde(rename = "max_ttl_ms", serialize_with = "as_ms")]
    pub max_ttl: Duration,
}

fn as_ms<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(duration.as_millis() as u64)
}

impl Default for PresenceLimits {
    fn default() -> PresenceLimits {
        PresenceLimits {
            max_channels: 10_000,
            max_participants: 256,
            max_participants_total: 50_000,
            max_state_bytes: 4096,
            default_ttl: Duration::from_secs(30),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(300),
        }
    }
}

impl PresenceLimits {
    /// The limits the flags ask for; refuses inconsistent ones, and states too large for the
    /// bus between nodes when there is one (`--database`).
    pub fn from_config(config: &Config) -> anyhow::Result<PresenceLimits> {
        let limits = PresenceLimits {
            max_channels: config.presence_max_channels,
            max_participants: config.presence_max_participants,
            max_participants_total: config.presence_max_participants_total,
            max_state_bytes: config.presence_max_state_bytes,
            default_ttl: config.presence_ttl,
            min_ttl: config.presence_min_ttl,
            max_ttl: config.presence_max_ttl,
        };
        let positive = [
            ("--presence-max-channels", limits.max_channels),
            ("--presence-max-participants", limits.max_participants),
            (
                "--presence-max-participants-total",
                limits.max_participants_total,
            ),
            ("--presence-max-state-bytes", limits.max_state_bytes),
        ];
        for (flag, value) in positive {
            anyhow::ensure!(value > 0, "{flag} must be at least 1");
        }
        anyhow::ensure!(
            !limits.min_ttl.is_zero()
                && limits.min_ttl <= limits.default_ttl
                && limits.default_ttl <= limits.max_ttl,
            "presence TTLs must satisfy 0 < --presence-min-ttl <= --presence-ttl <= --presence-max-ttl"
        );
        if config.database.is_some() {
            anyhow::ensure!(
                limits.max_state_bytes <= bus::MAX_STATE_BYTES,
                "--presence-max-state-bytes is at most {} with --database: states travel between \
                 nodes in PostgreSQL notifications, which hold under 8000 bytes",
                bus::MAX_STATE_BYTES
            );
        }
        Ok(limits)
    }

    /// Checks a participant's write against the limits.
    pub fn write(
        &self,
        client_seq: u64,
        state: Box<RawValue>,
        ttl_ms: Option<u64>,
    ) -> Result<Write, PresenceError> {
        if !state.get().starts_with('{') {
            return Err(PresenceError::StateNotObject);
        }
        let bytes = state.get().len();
        if bytes > self.max_state_bytes {
            return Err(PresenceError::StateTooLarge {
                bytes,
                max: self.max_state_bytes,
            });
        }
        let ttl = match ttl_ms {
            None => self.default_ttl,
            Some(ms) => {
                let ttl = Duration::from_millis(ms);
                if ttl < self.min_ttl || ttl > self.max_ttl {
                    return Err(PresenceError::TtlOutOfRange {
                        ttl_ms: ms,
                        min_ms: self.min_ttl.as_millis() as u64,
                        max_ms: self.max_ttl.as_millis() as u64,
                    });
                }
                ttl
            }
        };
        Ok(Write {
            seq: client_seq,
            state: Arc::from(state),
            ttl,
        })
    }
}

/// A participant's checked write (see [`PresenceLimits::write`]).
#[derive(Debug, Clone)]
pub struct Write {
    seq: u64,
    state: Arc<RawValue>,
    ttl: Duration,
}

/// Why a write was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceError {
    /// `state` is not a JSON object (400).
    StateNotObject,
    /// `state` is over `max_state_bytes` (413).
    StateTooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// `ttl_ms` is outside the allowed range (400).
    TtlOutOfRange {
        /// What was asked.
        ttl_ms: u64,
        /// The shortest allowed.
        min_ms: u64,
        /// The longest allowed.
        max_ms: u64,
    },
    /// The channel has `max_participants` already (429).
    ChannelFull {
        /// The limit.
        max: usize,
    },
    /// The node has `max_channels` channels with participants already (429).
    TooManyChannels {
        /// The limit.
        max: usize,
    },
    /// The node has `max_participants_total` participants already (429).
    TooManyParticipants {
        /// The limit.
        max: usize,
    },
}

impl std::fmt::Display for PresenceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PresenceError::StateNotObject => write!(f, "state must be a JSON object"),
            PresenceError::StateTooLarge { bytes, max } => {
                write!(
                    f,
                    "state is {bytes} bytes; at most {max} are allowed; nothing was changed"
                )
            }
            PresenceError::TtlOutOfRange { min_ms, max_ms, .. } => {
                write!(f, "must be between {min_ms} and {max_ms}")
            }
            PresenceError::ChannelFull { max } => write!(
                f,
                "this channel has {max} participants, the most allowed; nothing was changed"
            ),
            PresenceError::TooManyChannels { max } => write!(
                f,
                "this server has {max} active presence channels, the most allowed; nothing was \
                 changed"
            ),
            PresenceError::TooManyParticipants { max } => write!(
                f,
                "this server has {max} presence participants, the most allowed; nothing was \
                 changed"
            ),
        }
    }
}

/// The clock, read once per request: the monotonic instant for TTLs, wall-clock ms for
/// `updated_ms` and `server_time_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// For deadlines.
    pub at: Instant,
    /// Milliseconds since the Unix epoch.
    pub ms: u64,
}

impl Now {
    /// Reads both clocks.
    pub fn read() -> Now {
        Now {
            at: Instant::now(),
            ms: crate::store::now_ms(),
        }
    }
}

/// What became of a write or a leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A new participant.
    Joined,
    /// A participant's new state.
    Updated,
    /// The participant left.
    Left,
    /// Ignored: the seq is not above the one in force (or the one the participant left at).
    Stale,
    /// A leave of a participant that was not there (its seq is remembered all the same).
    Absent,
}

impl Applied {
    /// Whether the channel changed.
    pub fn changed(self) -> bool {
        matches!(self, Applied::Joined | Applied::Updated | Applied::Left)
    }

    /// Why nothing changed, for the answer's `reason`.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Applied::Stale => Some("stale"),
            Applied::Absent => Some("absent"),
            _ => None,
        }
    }
}

/// One participant as others see it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Who.
    pub key: Arc<ParticipantKey>,
    /// Its seq in force.
    pub seq: u64,
    /// Its state (a JSON object).
    pub state: Arc<RawValue>,
    /// When the node that took the write took it (Unix ms).
    pub updated_ms: u64,
}

impl Serialize for Peer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        EventData {
            user: &self.key.user,
            client: &self.key.client,
            client_seq: self.seq,
            state: Some(&self.state),
            updated_ms: Some(self.updated_ms),
            reason: None,
        }
        .serialize(s)
    }
}

/// The answer to a write or a leave.
#[derive(Debug, Clone)]
pub struct Answer {
    /// What happened.
    pub outcome: Applied,
    /// The participant's seq in force after the request (or the seq it left at), so that a
    /// client whose write was stale can continue above it.
    pub client_seq: Option<u64>,
    /// The participant's TTL, if present.
    pub ttl: Option<Duration>,
    /// Everyone else, by `(user, client)`.
    pub peers: Vec<Peer>,
}

/// An event for the watchers of a channel: its SSE `event:` name and `data:` text, built once.
#[derive(Debug, Clone)]
pub struct PresenceEvent {
    /// `join`, `update` or `leave`.
    pub kind: &'static str,
    /// The JSON text.
    pub data: Arc<str>,
}

/// The JSON of a participant in answers and events.
#[derive(Serialize)]
struct EventData<'a> {
    user: &'a str,
    client: &'a str,
    client_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_ms: Option<u64>,
    /// Why a participant left: `left` or `timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// One operation on a participant, from this node's API or from another node.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// A new state.
    Set {
        seq: u64,
        state: Arc<RawValue>,
        /// The participant's TTL (for later writes' peers and republishing).
        ttl: Duration,
        /// How long from now until eviction: the TTL for a fresh write; what is left of it
        /// when another node republishes.
        left: Duration,
        updated_ms: u64,
    },
    /// A leave at `seq`.
    Leave { seq: u64 },
}

/// An operation and where it applies; what the bus carries.
#[derive(Debug, Clone)]
pub(crate) struct RemoteOp {
    pub channel: ChannelKey,
    pub who: ParticipantKey,
    pub op: Op,
}

/// Where an operation comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// This node's API: bounds apply, and the operation goes on the bus.
    Local,
    /// Another node, which admitted it already: applied as is.
    Bus,
}

struct Participant {
    seq: u64,
    state: Arc<RawValue>,
    updated_ms: u64,
    ttl: Duration,
    deadline: Instant,
    /// The latest write came through this node's API; this node republishes it when a node
    /// joins the bus.
    local: bool,
}

struct ChannelState {
    participants: HashMap<Arc<ParticipantKey>, Participant>,
    /// No later than the earliest deadline (writes only move deadlines later, so the sweeper
    /// recomputes it exactly when it finds nothing due).
    next_deadline: Option<Instant>,
    /// To the channel's watchers.
    events: broadcast::Sender<PresenceEvent>,
    /// Taken out of its shard: look the channel up again.
    removed: bool,
}

impl ChannelState {
    /// Neither participants nor watchers: the channel can go.
    fn is_idle(&self) -> bool {
        self.participants.is_empty() && self.events.receiver_count() == 0
    }

    fn peers(&self, except: Option<&ParticipantKey>) -> Vec<Peer> {
        self.participants
            .iter()
            .filter(|(key, _)| Some(&***key) != except)
            .map(|(key, p)| Peer {
                key: key.clone(),
                seq: p.seq,
                state: p.state.clone(),
                updated_ms: p.updated_ms,
            })
            .collect()
    }

    /// Tells the watchers, if any (the JSON is only built for them).
    fn publish(&self, kind: &'static str, data: EventData<'_>) {
        if self.events.receiver_count() == 0 {
            return;
        }
        match serde_json::to_string(&data) {
            Ok(text) => {
                // An error only means the last watcher left meanwhile.
                let _ = self.events.send(PresenceEvent {
                    kind,
                    data: text.into(),
                });
            }
            Err(e) => tracing::error!(error = %e, "serialising a presence event"),
        }
    }

    fn schedule(&mut self, deadline: Instant) {
        self.next_deadline = Some(self.next_deadline.map_or(deadline, |d| d.min(deadline)));
    }
}

/// Some of the channels, by key. A std mutex: nothing awaits while holding it.
type Shard = Mutex<HashMap<ChannelKey, Arc<Channel>>>;

struct Channel {
    key: ChannelKey,
    /// A std mutex: nothing awaits while holding it.
    state: Mutex<ChannelState>,
}

/// Every presence channel of this node, a full replica when there are several nodes.
pub struct Presence {
    limits: PresenceLimits,
    shards: Box<[Shard]>,
    hasher: RandomState,
    /// Channels with at least one participant.
    active_channels: AtomicUsize,
    /// Participants in all channels.
    participants: AtomicUsize,
    departed: Mutex<Departed>,
    /// Where this node's operations go to the others, once the bus is attached.
    bus: OnceLock<mpsc::Sender<bus::Outgoing>>,
}

impl Presence {
    /// No channels yet.
    pub fn new(limits: PresenceLimits) -> Presence {
        Presence {
            limits,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            active_channels: AtomicUsize::new(0),
            participants: AtomicUsize::new(0),
            departed: Mutex::new(Departed::new(DEPARTED_KEEP, limits.max_participants_total)),
            bus: OnceLock::new(),
        }
    }

    /// The bounds in force.
    pub fn limits(&self) -> &PresenceLimits {
        &self.limits
    }

    /// Channels with participants, and participants, on this node now.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.active_channels.load(Ordering::Relaxed),
            self.participants.load(Ordering::Relaxed),
        )
    }

    /// Sends this node's operations to `bus` from now on.
    pub(crate) fn attach_bus(&self, bus: mpsc::Sender<bus::Outgoing>) {
        if self.bus.set(bus).is_err() {
            tracing::error!("a presence bus was attached twice; keeping the first");
        }
    }

    /// A participant's write: applies it unless it is stale, and answers with everyone else.
    pub fn exchange(
        &self,
        channel: &ChannelKey,
        who: ParticipantKey,
        write: Write,
        now: Now,
    ) -> Result<Answer, PresenceError> {
        let who = Arc::new(who);
        let op = Op::Set {
            seq: write.seq,
            state: write.state,
            ttl: write.ttl,
            left: write.ttl,
            updated_ms: now.ms,
        };
        let announce = self.bus.get().is_some().then(|| op.clone());
        let answer = self
            .with_channel(channel, true, |ch| {
                self.evict_due(channel, ch, now.at);
                let outcome = self.apply(channel, ch, &who, op, Origin::Local, now.at)?;
                let me = ch.participants.get(&*who);
                Ok(Answer {
                    outcome,
                    client_seq: me.map(|p| p.seq),
                    ttl: me.map(|p| p.ttl),
                    peers: ch.peers(Some(&*who)),
                })
            })
            .expect("created if missing");
        let mut answer = answer?;
        if answer.outcome == Applied::Stale && answer.client_seq.is_none() {
            answer.client_seq = self.departed_seq(channel, &who);
        }
        if let Some(op) = announce.filter(|_| answer.outcome.changed()) {
            self.announce(channel, &who, op);
        }
        answer.peers.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(answer)
    }

    /// A participant leaves at `seq`, or (`None`) at the seq in force. Answers with everyone
    /// else.
    pub fn leave(
        &self,
        channel: &ChannelKey,
        who: ParticipantKey,
        seq: Option<u64>,
        now: Now,
    ) -> Answer {
        let who = Arc::new(who);
        // With a seq, the channel is created if need be, so that the departure is recorded
        // under its lock, ordered with any write that creates the participant meanwhile.
        let answer = self.with_channel(channel, seq.is_some(), |ch| {
            self.evict_due(channel, ch, now.at);
            let (outcome, seq) = match seq.or_else(|| ch.participants.get(&*who).map(|p| p.seq)) {
                Some(seq) => {
                    let op = Op::Leave { seq };
                    let outcome = self
                        .apply(channel, ch, &who, op, Origin::Local, now.at)
                        .expect("leaving is never refused");
                    (outcome, Some(seq))
                }
                None => (Applied::Absent, None),
            };
            let me = ch.participants.get(&*who);
            let answer = Answer {
                outcome,
                client_seq: me.map(|p| p.seq),
                ttl: me.map(|p| p.ttl),
                peers: ch.peers(Some(&*who)),
            };
            (answer, seq)
        });
        let (mut answer, seq) = answer.unwrap_or_else(|| {
            let answer = Answer {
                outcome: Applied::Absent,
                client_seq: None,
                ttl: None,
                peers: Vec::new(),
            };
            (answer, None)
        });
        if answer.client_seq.is_none() {
            answer.client_seq = self.departed_seq(channel, &who);
        }
        if let Some(seq) = seq.filter(|_| answer.outcome != Applied::Stale) {
            // An absent participant's leave goes out too: another node may have it.
            self.announce(channel, &who, Op::Leave { seq });
        }
        answer.peers.sort_by(|a, b| a.key.cmp(&b.key));
        answer
    }

    /// Every participant of a channel, by `(user, client)`.
    pub fn participants(&self, channel: &ChannelKey, now: Now) -> Vec<Peer> {
        let mut peers = self
            .with_channel(channel, false, |ch| {
                self.evict_due(channel, ch, now.at);
                ch.peers(None)
            })
            .unwrap_or_default();
        peers.sort_by(|a, b| a.key.cmp(&b.key));
        peers
    }

    /// Starts watching a channel: its participants now, and every change after them, with
    /// nothing lost or doubled in between (both are taken under the channel's lock).
    pub fn watch(self: &Arc<Self>, channel: &ChannelKey, now: Now) -> Subscription {
        let mut shard = self.shard(channel);
        let entry = shard
            .entry(channel.clone())
            .or_insert_with(|| Arc::new(Channel::new(channel.clone())))
            .clone();
        let mut ch = entry.state.lock().expect("channel lock");
        drop(shard);
        // Not removed: removal happens under the shard lock, which we held while locking.
        self.evict_due(channel, &mut ch, now.at);
        let receiver = ch.events.subscribe();
        let mut snapshot = ch.peers(None);
        drop(ch);
        snapshot.sort_by(|a, b| a.key.cmp(&b.key));
        Subscription {
            presence: self.clone(),
            channel: entry,
            receiver: Some(receiver),
            snapshot,
        }
    }

    /// Evicts every participant whose TTL has ended, and forgets old departures. Returns how
    /// many were evicted.
    pub fn sweep(&self, now: Instant) -> usize {
        let channels: Vec<Arc<Channel>> = self
            .shards
            .iter()
            .flat_map(|shard| {
                shard
                    .lock()
                    .expect("shard lock")
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut evicted = 0;
        for channel in channels {
            let mut ch = channel.state.lock().expect("channel lock");
            if ch.removed {
                continue;
            }
            evicted += self.evict_due(&channel.key, &mut ch, now);
            let idle = ch.is_idle();
            drop(ch);
            if idle {
                self.tidy(&channel);
            }
        }
        self.departed.lock().expect("departed lock").expire(now);
        evicted
    }

    /// Applies another node's operation (no bounds: that node admitted it).
    pub(crate) fn apply_remote(&self, remote: RemoteOp, now: Instant) {
        let who = Arc::new(remote.who);
        self.with_channel(&remote.channel, true, |ch| {
            self.evict_due(&remote.channel, ch, now);
            let _ = self.apply(&remote.channel, ch, &who, remote.op, Origin::Bus, now);
        });
    }

    /// The participants whose latest write came through this node, as operations for the
    /// bus (to bring a node that just joined up to date).
    pub(crate) fn local_ops(&self, now: Instant) -> Vec<RemoteOp> {
        let channels: Vec<Arc<Channel>> = self
            .shards
            .iter()
            .flat_map(|shard| {
                shard
                    .lock()
                    .expect("shard lock")
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut ops = Vec::new();
        for channel in channels {
            let ch = channel.state.lock().expect("channel lock");
            for (who, p) in ch
                .participants
                .iter()
                .filter(|(_, p)| p.local && p.deadline > now)
            {
                ops.push(RemoteOp {
                    channel: channel.key.clone(),
                    who: (**who).clone(),
                    op: Op::Set {
                        seq: p.seq,
                        state: p.state.clone(),
                        ttl: p.ttl,
                        left: p.deadline - now,
                        updated_ms: p.updated_ms,
                    },
                });
            }
        }
        ops
    }

    fn shard(&self, channel: &ChannelKey) -> MutexGuard<'_, HashMap<ChannelKey, Arc<Channel>>> {
        let index = (self.hasher.hash_one(channel) % SHARDS as u64) as usize;
        self.shards[index].lock().expect("shard lock")
    }

    /// Runs `f` on a channel under its lock (creating the channel if `create`), then removes
    /// the channel if it is left idle. `None` if the channel does not exist and `create` is
    /// false.
    fn with_channel<R>(
        &self,
        channel: &ChannelKey,
        create: bool,
        f: impl FnOnce(&mut ChannelState) -> R,
    ) -> Option<R> {
        loop {
            let entry = {
                let mut shard = self.shard(channel);
                match shard.get(channel) {
                    Some(entry) => entry.clone(),
                    None if create => {
                        let entry = Arc::new(Channel::new(channel.clone()));
                        shard.insert(channel.clone(), entry.clone());
                        entry
                    }
                    None => return None,
                }
            };
            let mut ch = entry.state.lock().expect("channel lock");
            if ch.removed {
                // Emptied and taken out between our lookup and our lock: look again.
                continue;
            }
            let result = f(&mut ch);
            let idle = ch.is_idle();
            drop(ch);
            if idle {
                self.tidy(&entry);
            }
            return Some(result);
        }
    }

    /// Removes a channel that has neither participants nor watchers.
    fn tidy(&self, channel: &Arc<Channel>) {
        let mut shard = self.shard(&channel.key);
        let mut ch = channel.state.lock().expect("channel lock");
        if ch.removed || !ch.is_idle() {
            return;
        }
        ch.removed = true;
        if shard
            .get(&channel.key)
            .is_some_and(|c| Arc::ptr_eq(c, channel))
        {
            shard.remove(&channel.key);
        }
    }

    /// Applies one operation to a participant, under its channel's lock.
    fn apply(
        &self,
        channel: &ChannelKey,
        ch: &mut ChannelState,
        who: &Arc<ParticipantKey>,
        op: Op,
        origin: Origin,
        now: Instant,
    ) -> Result<Applied, PresenceError> {
        match op {
            Op::Set {
                seq,
                state,
                ttl,
                left,
                updated_ms,
            } => {
                let existing = ch.participants.get(&**who).map(|p| p.seq);
                let joining = existing.is_none();
                let floor = existing.or_else(|| self.departed_seq(channel, who));
                if floor.is_some_and(|floor| seq <= floor) {
                    return Ok(Applied::Stale);
                }
                if joining {
                    match origin {
                        Origin::Local => self.admit(ch)?,
                        Origin::Bus => self.count_in(ch),
                    }
                    self.departed
                        .lock()
                        .expect("departed lock")
                        .forget(channel, who);
                }
                let deadline = now + left;
                ch.publish(
                    if joining { "join" } else { "update" },
                    EventData {
                        user: &who.user,
                        client: &who.client,
                        client_seq: seq,
                        state: Some(&state),
                        updated_ms: Some(updated_ms),
                        reason: None,
                    },
                );
                ch.participants.insert(
                    who.clone(),
                    Participant {
                        seq,
                        state,
                        updated_ms,
                        ttl,
                        deadline,
                        local: origin == Origin::Local,
                    },
                );
                ch.schedule(deadline);
                Ok(if joining {
                    Applied::Joined
                } else {
                    Applied::Updated
                })
            }
            Op::Leave { seq } => match ch.participants.get(&**who).map(|p| p.seq) {
                Some(current) if seq < current => Ok(Applied::Stale),
                Some(_) => {
                    ch.participants.remove(&**who);
                    self.count_out(ch, 1);
                    self.remember_departed(channel, who, seq, now);
                    ch.publish("leave", leave_data(who, seq, "left"));
                    Ok(Applied::Left)
                }
                None if self.departed_seq(channel, who).is_some_and(|d| seq <= d) => {
                    Ok(Applied::Stale)
                }
                None => {
                    self.remember_departed(channel, who, seq, now);
                    Ok(Applied::Absent)
                }
            },
        }
    }

    /// Evicts the participants of one channel whose deadline has passed (under its lock).
    fn evict_due(&self, channel: &ChannelKey, ch: &mut ChannelState, now: Instant) -> usize {
        if ch.next_deadline.is_none_or(|d| d > now) {
            return 0;
        }
        let due: Vec<Arc<ParticipantKey>> = ch
            .participants
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for who in &due {
            let gone = ch.participants.remove(&**who).expect("listed just now");
            self.remember_departed(channel, who, gone.seq, now);
            ch.publish("leave", leave_data(who, gone.seq, "timeout"));
        }
        self.count_out(ch, due.len());
        ch.next_deadline = ch.participants.values().map(|p| p.deadline).min();
        due.len()
    }

    /// Counts a local join in, if the bounds allow it.
    fn admit(&self, ch: &ChannelState) -> Result<(), PresenceError> {
        let limits = &self.limits;
        if ch.participants.len() >= limits.max_participants {
            return Err(PresenceError::ChannelFull {
                max: limits.max_participants,
            });
        }
        let opens = ch.participants.is_empty();
        if opens && !reserve(&self.active_channels, limits.max_channels) {
            return Err(PresenceError::TooManyChannels {
                max: limits.max_channels,
            });
        }
        if !reserve(&self.participants, limits.max_participants_total) {
            if opens {
                self.active_channels.fetch_sub(1, Ordering::Relaxed);
            }
            return Err(PresenceError::TooManyParticipants {
                max: limits.max_participants_total,
            });
        }
        Ok(())
    }

    /// Counts a join from another node in, whatever the bounds.
    fn count_in(&self, ch: &ChannelState) {
        if ch.participants.is_empty() {
            self.active_channels.fetch_add(1, Ordering::Relaxed);
        }
        self.participants.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `gone` participants out, after they were removed from `ch`.
    fn count_out(&self, ch: &ChannelState, gone: usize) {
        if gone == 0 {
            return;
        }
        self.participants.fetch_sub(gone, Ordering::Relaxed);
        if ch.participants.is_empty() {
            self.active_channels.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn departed_seq(&self, channel: &ChannelKey, who: &ParticipantKey) -> Option<u64> {
        self.departed
            .lock()
            .expect("departed lock")
            .seq(channel, who)
    }

    fn remember_departed(
        &self,
        channel: &ChannelKey,
        who: &Arc<ParticipantKey>,
        seq: u64,
        now: Instant,
    ) {
        self.departed
            .lock()
            .expect("departed lock")
            .remember(channel, who, seq, now);
    }

    /// Puts a local operation on the bus, if there is one.
    fn announce(&self, channel: &ChannelKey, who: &ParticipantKey, op: Op) {
        if let Some(bus) = self.bus.get() {
            bus::send(
                bus,
                RemoteOp {
                    channel: channel.clone(),
                    who: who.clone(),
                    op,
                },
            );
        }
    }
}

impl Channel {
    fn new(key: ChannelKey) -> Channel {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Channel {
            key,
            state: Mutex::new(ChannelState {
                participants: HashMap::new(),
                next_deadline: None,
                events,
                removed: false,
            }),
        }
    }
}

fn leave_data<'a>(who: &'a ParticipantKey, seq: u64, reason: &'a str) -> EventData<'a> {
    EventData {
        user: &who.user,
        client: &who.client,
        client_seq: seq,
        state: None,
        updated_ms: None,
        reason: Some(reason),
    }
}

/// Adds one to `counter` unless it is at `max` already.
fn reserve(counter: &AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// A watcher of one channel. Dropping it removes the channel if nothing else keeps it.
pub struct Subscription {
    presence: Arc<Presence>,
    channel: Arc<Channel>,
    /// Taken out in `drop`, so that the channel sees one watcher fewer before it is tidied.
    receiver: Option<broadcast::Receiver<PresenceEvent>>,
    /// The participants when the watch began.
    pub snapshot: Vec<Peer>,
}

impl Subscription {
    /// The next change.
    pub async fn recv(&mut self) -> Result<PresenceEvent, broadcast::error::RecvError> {
        self.receiver
            .as_mut()
            .expect("present until dropped")
            .recv()
            .await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.receiver.take());
        self.presence.tidy(&self.channel);
    }
}

/// Starts the sweeper and, with `--database`, the bus to the other nodes. The caller aborts
/// the tasks at shutdown.
pub fn start(presence: &Arc<Presence>, config: &Config) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let sweeper = {
        let presence = presence.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SWEEP_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let now = ticks.tick().await;
                let evicted = presence.sweep(now);
                if evicted > 0 {
                    tracing::debug!(evicted, "evicted silent presence participants");
                }
            }
        })
    };
    let mut tasks = vec![sweeper];
    if let Some(url) = &config.database {
        tasks.extend(bus::start(presence.clone(), url, &config.database_schema)?);
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests;
