//! Presence between nodes that share one PostgreSQL database: LISTEN/NOTIFY.
//!
//! Every node keeps a full replica of every channel. A write or a leave taken by a node's API
//! is applied locally, then sent on the channel `tidemark_presence_<schema>`; every other node
//! applies it as is (the bounds were checked by the node that took it). Evictions are not
//! sent: each node evicts on its own clock, from the TTL the write carried.
//!
//! # Why this is enough
//!
//! Operations on a participant form a maximum (see [`super`]): a node may receive them late,
//! in any order, or twice, and still ends where every other node ends. A lost message (the
//! queue was full, a connection dropped) heals by itself: presence clients write at least once
//! per TTL, so the next write carries the whole state again, and a participant whose leave
//! was lost is evicted at the end of its TTL.
//!
//! A node that (re)connects says `hello`; every node answers by sending again the
//! participants whose latest write it took itself, with what is left of their TTL. A node
//! that starts, or that was cut off, is therefore complete as soon as those messages arrive,
//! without waiting for the participants' next writes.
//!
//! # Wire
//!
//! One notification: `{"node": "<id>", "hello": true}` or `{"node": "<id>", "ops": [op, …]}`,
//! where an op is `{"app", "channel", "user", "client", "seq", "state", "ttl_ms", "left_ms",
//! "updated_ms"}` or `{"app", "channel", "user", "client", "seq", "leave": true}`. Ops are
//! packed into notifications of under 8000 bytes (PostgreSQL's limit), which is why a state is
//! at most [`MAX_STATE_BYTES`] with a database. A node ignores its own notifications.
//!
//! Two connections per node, apart from the store's pool: one that listens, one that sends
//! (a task that drains a bounded queue, so that handlers never wait for the database).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{ChannelKey, Op, ParticipantKey, Presence, RemoteOp};

/// The largest state a participant may have when there are several nodes: one op, with its
/// ids (up to 256 bytes each, maybe escaped) and framing, must fit in one notification.
pub const MAX_STATE_BYTES: usize = 6 * 1024;
/// PostgreSQL refuses notification payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7_900;
/// Operations waiting to be sent; past this, new ones are dropped (and heal within a TTL).
const QUEUE: usize = 65_536;
/// Notifications received and waiting to be applied; past this, they are dropped.
const RECEIVED_QUEUE: usize = 65_536;
/// How long to wait before connecting again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// What the sending task sends.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// One operation.
    Op(RemoteOp),
    /// "I just connected: send me what you have."
    Hello,
}

/// Queues an operation without waiting; drops it if the queue is full.
pub(crate) fn send(bus: &mpsc::Sender<Outgoing>, op: RemoteOp) {
    static DROPPED: AtomicU64 = AtomicU64::new(0);
    if bus.try_send(Outgoing::Op(op)).is_err() {
        let dropped = DROPPED.fetch_add(1, Ordering::Relaxed);
        if dropped.is_multiple_of(1000) {
            tracing::warn!(
                dropped = dropped + 1,
                "the presence bus is backed up; dropping operations (they heal within a TTL)"
            );
        }
    }
}

#[derive(Serialize)]
struct OpOut<'a> {
    app: &'a str,
    channel: &'a str,
    user: &'a str,
    client: &'a str,
    seq: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    leave: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    left_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_ms: Option<u64>,
}

#[derive(Deserialize)]
struct OpIn {
    app: String,
    channel: String,
    user: String,
    client: String,
    seq: u64,
    #[serde(default)]
    leave: bool,
    #[serde(default)]
    state: Option<Box<RawValue>>,
    #[serde(default)]
    ttl_ms: u64,
    #[serde(default)]
    left_ms: u64,
    #[serde(default)]
    updated_ms: u64,
}

#[derive(Deserialize)]
struct Message {
    node: String,
    #[serde(default)]
    hello: bool,
    #[serde(default)]
    ops: Vec<OpIn>,
}

fn op_json(remote: &RemoteOp) -> String {
    let out = match &remote.op {
        Op::Set {
            seq,
            state,
            ttl,
            left,
            updated_ms,
        } => OpOut {
            app: &remote.channel.app,
            channel: &remote.channel.name,
            user: &remote.who.user,
            client: &remote.who.client,
            seq: *seq,
            leave: false,
            state: Some(state),
            ttl_ms: Some(ttl.as_millis() as u64),
            left_ms: Some(left.as_millis() as u64),
            updated_ms: Some(*updated_ms),
        },
        Op::Leave { seq } => OpOut {
            app: &remote.channel.app,
            channel: &remote.channel.name,
            user: &remote.who.user,
            client: &remote.who.client,
            seq: *seq,
            leave: true,
            state: None,
            ttl_ms: None,
            left_ms: None,
            updated_ms: None,
        },
    };
    serde_json::to_string(&out).expect("strings, numbers and valid raw JSON serialise")
}

fn from_wire(op: OpIn) -> Option<RemoteOp> {
    let channel = ChannelKey {
        app: op.app,
        name: op.channel,
    };
    let who = ParticipantKey {
        user: op.user,
        client: op.client,
    };
    let op = if op.leave {
        Op::Leave { seq: op.seq }
    } else {
        Op::Set {
            seq: op.seq,
            state: Arc::from(op.state?),
            ttl: Duration::from_millis(op.ttl_ms),
            left: Duration::from_millis(op.left_ms),
            updated_ms: op.updated_ms,
        }
    };
    Some(RemoteOp { channel, who, op })
}

/// The notification channel of a schema (PostgreSQL truncates names to 63 bytes; we do it
/// first so that LISTEN and pg_notify agree).
fn channel_name(schema: &str) -> String {
    let mut name = format!("tidemark_presence_{schema}");
    name.truncate(63);
    name
}

/// A random id for this process, to recognise our own notifications.
fn node_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).expect("the OS random source is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Attaches the bus to `presence` and starts its two tasks (sending and listening).
pub fn start(
    presence: Arc<Presence>,
    url: &str,
    schema: &str,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| anyhow::anyhow!("--database: {e}"))?;
    config.connect_timeout(Duration::from_secs(5));
    let channel = channel_name(schema);
    let node = node_id();
    let (outgoing, queue) = mpsc::channel(QUEUE);
    presence.attach_bus(outgoing.clone());
    tracing::info!(%channel, %node, "presence bus: PostgreSQL LISTEN/NOTIFY");
    let sender = tokio::spawn(run_sender(
        config.clone(),
        channel.clone(),
        node.clone(),
        queue,
    ));
    let listener = tokio::spawn(run_listener(config, channel, node, presence, outgoing));
    Ok(vec![sender, listener])
}

/// What the sender still has to send after filling a notification.
enum Carried {
    Hello,
    Op(String),
}

/// Sends queued operations, packed into as few notifications as fit, forever.
async fn run_sender(
    config: tokio_postgres::Config,
    channel: String,
    node: String,
    mut queue: mpsc::Receiver<Outgoing>,
) {
    let node_json = serde_json::to_string(&node).expect("hex serialises");
    let mut client: Option<tokio_postgres::Client> = None;
    let mut carried: Option<Carried> = None;
    loop {
        let first = match carried.take() {
            Some(item) => item,
            None => match queue.recv().await {
                Some(Outgoing::Hello) => Carried::Hello,
                Some(Outgoing::Op(op)) => Carried::Op(op_json(&op)),
                None => return,
            },
        };
        let payload = match first {
            Carried::Hello => format!("{{\"node\":{node_json},\"hello\":true}}"),
            Carried::Op(first) => {
                let mut ops = vec![first];
                let mut len = node_json.len() + 20 + ops[0].len();
                while let Ok(next) = queue.try_recv() {
                    let next = match next {
                        Outgoing::Hello => {
                            carried = Some(Carried::Hello);
                            break;
                        }
                        Outgoing::Op(op) => op_json(&op),
                    };
                    if len + 1 + next.len() > MAX_PAYLOAD {
                        carried = Some(Carried::Op(next));
                        break;
                    }
                    len += 1 + next.len();
                    ops.push(next);
                }
                format!("{{\"node\":{node_json},\"ops\":[{}]}}", ops.join(","))
            }
        };
        if payload.len() > MAX_PAYLOAD {
            tracing::error!(
                bytes = payload.len(),
                "a presence operation is too large for the bus; dropped"
            );
            continue;
        }
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = match config.connect(NoTls).await {
                Ok((c, connection)) => {
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::warn!(error = %e, "the presence bus sender lost its connection");
                        }
                    });
                    Some(c)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "presence bus: cannot connect to send; dropping a notification");
                    tokio::time::sleep(RECONNECT_AFTER).await;
                    continue;
                }
            };
        }
        let sent = client
            .as_ref()
            .expect("connected just now")
            .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "presence bus: a notification was not sent");
            client = None;
        }
    }
}

/// Listens for the other nodes' operations, reconnecting forever.
async fn run_listener(
    config: tokio_postgres::Config,
    channel: String,
    node: String,
    presence: Arc<Presence>,
    outgoing: mpsc::Sender<Outgoing>,
) {
    loop {
        if let Err(error) = listen_once(&config, &channel, &node, &presence, &outgoing).await {
            tracing::warn!(%error, "the presence listener lost its connection; reconnecting");
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    channel: &str,
    node: &str,
    presence: &Presence,
    outgoing: &mpsc::Sender<Outgoing>,
) -> Result<(), String> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    let (received_tx, mut received) = mpsc::channel::<String>(RECEIVED_QUEUE);
    let pump = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if received_tx.try_send(n.payload().to_string()).is_err() {
                        tracing::warn!("presence listener is behind; dropping a notification");
                    }
                }
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
        }
        "the connection closed".to_string()
    });
    client
        .batch_execute(&format!("LISTEN \"{channel}\""))
        .await
        .map_err(|e| e.to_string())?;
    // Ask the others for what they have, and tell them what we have (they may have missed it
    // while we were away).
    let _ = outgoing.send(Outgoing::Hello).await;
    republish(presence, outgoing).await;
    while let Some(payload) = received.recv().await {
        let message: Message = match serde_json::from_str(&payload) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed presence notification");
                continue;
            }
        };
        if message.node == node {
            continue;
        }
        if message.hello {
            republish(presence, outgoing).await;
        }
        let now = Instant::now();
        for op in message.ops {
            match from_wire(op) {
                Some(op) => presence.apply_remote(op, now),
                None => tracing::warn!("ignoring a presence operation without a state"),
            }
        }
    }
    drop(client);
    Err(pump.await.unwrap_or_else(|e| e.to_string()))
}

/// Sends again the participants whose latest write this node took.
async fn republish(presence: &Presence, outgoing: &mpsc::Sender<Outgoing>) {
    for op in presence.local_ops(Instant::now()) {
        if outgoing.send(Outgoing::Op(op)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_survive_the_wire() {
        let state: Box<RawValue> = RawValue::from_string(r#"{"x":1,"é":"\"q\""}"#.into()).unwrap();
        let set = RemoteOp {
            channel: ChannelKey {
                app: "a".into(),
                name: "c".into(),
            },
            who: ParticipantKey {
                user: "u\"1".into(),
                client: "tab".into(),
            },
            op: Op::Set {
                seq: 9,
                state: Arc::from(state),
                ttl: Duration::from_secs(30),
                left: Duration::from_millis(12_345),
                updated_ms: 77,
            },
        };
        let leave = RemoteOp {
            op: Op::Leave { seq: 10 },
            ..set.clone()
        };
        let payload = format!(
            "{{\"node\":\"n\",\"ops\":[{},{}]}}",
            op_json(&set),
            op_json(&leave)
        );
        let message: Message = serde_json::from_str(&payload).unwrap();
        assert_eq!(message.node, "n");
        assert!(!message.hello);
        let ops: Vec<RemoteOp> = message
            .ops
            .into_iter()
            .map(|op| from_wire(op).unwrap())
            .collect();
        assert_eq!(ops[0].who, set.who);
        assert_eq!(ops[0].channel, set.channel);
        match &ops[0].op {
            Op::Set {
                seq,
                state,
                ttl,
                left,
                updated_ms,
            } => {
                assert_eq!(
                    (*seq, state.get(), *ttl, *left, *updated_ms),
                    (
                        9,
                        r#"{"x":1,"é":"\"q\""}"#,
                        Duration::from_secs(30),
                        Duration::from_millis(12_345),
                        77
                    )
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(ops[1].op, Op::Leave { seq: 10 }));
    }

    #[test]
    fn the_largest_state_fits_one_notification_with_the_longest_ids() {
        let state = format!("{{\"s\":\"{}\"}}", "x".repeat(MAX_STATE_BYTES - 8));
        assert_eq!(state.len(), MAX_STATE_BYTES);
        // Quotes and backslashes double in JSON; 256 bytes of them is the worst id.
        let id = "\"\\".repeat(128);
        let op = RemoteOp {
            channel: ChannelKey {
                app: "a".repeat(64),
                name: "c".repeat(64),
            },
            who: ParticipantKey {
                user: id.clone(),
                client: id,
            },
            op: Op::Set {
                seq: u64::MAX,
                state: Arc::from(RawValue::from_string(state).unwrap()),
                ttl: Duration::from_secs(3600),
                left: Duration::from_secs(3600),
                updated_ms: u64::MAX,
            },
        };
        let payload = format!(
            "{{\"node\":\"0123456789abcdef\",\"ops\":[{}]}}",
            op_json(&op)
        );
        assert!(payload.len() <= MAX_PAYLOAD, "{}", payload.len());
    }

    #[test]
    fn long_schema_names_give_channel_names_postgres_accepts() {
        assert_eq!(channel_name("t_1_2_abc"), "tidemark_presence_t_1_2_abc");
        assert_eq!(channel_name(&"s".repeat(100)).len(), 63);
    }
}
