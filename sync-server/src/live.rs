//! The live hub: one broadcast channel per watched collection, inside one node.
//!
//! Whoever learns of a commit publishes it here: the SQLite writer right after its `COMMIT`,
//! and (with several nodes on one PostgreSQL) the task that listens for other nodes'
//! notifications. Event streams subscribe *before* they read the backlog from the store and
//! drop what they already sent by seq, so nothing is lost or doubled at the seam.
//!
//! Memory is bounded by design: a channel is a ring of `capacity` events shared by all its
//! subscribers, and a subscriber that falls a whole ring behind is told so and disconnected
//! (it resumes from its last seq when it reconnects). A channel with no subscribers is
//! dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::store::CollectionKey;

/// Something a subscriber of a collection should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveEvent {
    /// An object was written (or deleted) at `seq`; `json` is the object as pulls show it.
    Change {
        /// The object's seq.
        seq: u64,
        /// The object's JSON.
        json: String,
    },
    /// The collection was reset: a new epoch, starting after `horizon`.
    Reset {
        /// The new epoch.
        collection_id: String,
        /// The new horizon (the old `last_seq`).
        horizon: u64,
    },
    /// Who may read the collection changed: every stream re-checks its caller.
    AccessChanged,
    /// Events may have been missed (the feed from other nodes was interrupted): every stream
    /// catches up from the store, from the seq it has reached.
    Gap,
}

/// The hub of one node.
pub struct Hub {
    /// A std mutex: nothing awaits while holding it, and every critical section is a map
    /// lookup.
    channels: Mutex<HashMap<CollectionKey, broadcast::Sender<Arc<LiveEvent>>>>,
    capacity: usize,
    /// Counts ACL changes (of any collection). Streams compare it before every event they
    /// send, so that a revocation stops even a stream that is still catching up, at the cost
    /// of one atomic load per event.
    access_generation: AtomicU64,
}

impl Hub {
    /// A hub whose channels each hold up to `capacity` events.
    pub fn new(capacity: usize) -> Hub {
        Hub {
            channels: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            access_generation: AtomicU64::new(0),
        }
    }

    /// Starts receiving a collection's events.
    pub fn subscribe(&self, key: &CollectionKey) -> broadcast::Receiver<Arc<LiveEvent>> {
        let mut channels = self.channels.lock().expect("hub lock");
        match channels.get(key) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = broadcast::channel(self.capacity);
                channels.insert(key.clone(), sender);
                receiver
            }
        }
    }

    /// Whether anyone listens to `key` (so that publishers can skip building events).
    pub fn is_watched(&self, key: &CollectionKey) -> bool {
        self.channels
            .lock()
            .expect("hub lock")
            .get(key)
            .is_some_and(|s| s.receiver_count() > 0)
    }

    /// Delivers events, in order, to the collection's subscribers (if any).
    pub fn publish(&self, key: &CollectionKey, events: impl IntoIterator<Item = LiveEvent>) {
        let mut channels = self.channels.lock().expect("hub lock");
        let Some(sender) = channels.get(key) else {
            return;
        };
        if sender.receiver_count() == 0 {
            channels.remove(key);
            return;
        }
        for event in events {
            if event == LiveEvent::AccessChanged {
                self.access_generation.fetch_add(1, Ordering::SeqCst);
            }
            // An error only means the last subscriber left meanwhile.
            let _ = sender.send(Arc::new(event));
        }
    }

    /// Sends `event` to every watched collection.
    pub fn publish_everywhere(&self, event: LiveEvent) {
        let mut channels = self.channels.lock().expect("hub lock");
        channels.retain(|_, sender| sender.receiver_count() > 0);
        for sender in channels.values() {
            let _ = sender.send(Arc::new(event.clone()));
        }
    }

    /// Tells every subscriber of every collection matching `key` to re-check access.
    pub fn access_changed(&self, key: &CollectionKey) {
        self.publish(key, [LiveEvent::AccessChanged]);
    }

    /// How many ACL changes this node has heard of; see [`Hub::access_changed`].
    pub fn access_generation(&self) -> u64 {
        self.access_generation.load(Ordering::SeqCst)
    }

    /// Open subscriptions across all collections.
    pub fn subscriber_count(&self) -> usize {
        self.channels
            .lock()
            .expect("hub lock")
            .values()
            .map(|s| s.receiver_count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> CollectionKey {
        CollectionKey {
            app: "a".into(),
            owner: "o".into(),
            name: name.into(),
        }
    }

    #[tokio::test]
    async fn events_reach_subscribers_in_order_and_only_theirs() {
        let hub = Hub::new(8);
        let mut a = hub.subscribe(&key("a"));
        let mut b = hub.subscribe(&key("b"));
        hub.publish(
            &key("a"),
            (1..=3).map(|seq| LiveEvent::Change {
                seq,
                json: seq.to_string(),
            }),
        );
        for seq in 1..=3 {
            assert_eq!(
                *a.recv().await.unwrap(),
                LiveEvent::Change {
                    seq,
                    json: seq.to_string()
                }
            );
        }
        assert!(b.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_subscriber_a_whole_ring_behind_is_told_it_lagged() {
        let hub = Hub::new(4);
        let mut slow = hub.subscribe(&key("a"));
        hub.publish(
            &key("a"),
            (1..=10).map(|seq| LiveEvent::Change {
                seq,
                json: String::new(),
            }),
        );
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(6))
        ));
    }

    #[test]
    fn channels_without_subscribers_are_dropped() {
        let hub = Hub::new(4);
        let rx = hub.subscribe(&key("a"));
        assert!(hub.is_watched(&key("a")));
        drop(rx);
        assert!(!hub.is_watched(&key("a")));
        hub.publish(&key("a"), [LiveEvent::AccessChanged]);
        assert!(hub.channels.lock().unwrap().is_empty());
        assert_eq!(hub.subscriber_count(), 0);
    }
}
