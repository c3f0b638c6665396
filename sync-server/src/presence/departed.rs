//! The participants who recently left or were evicted, with the `client_seq` they left at.
//!
//! A late write from before a leave (a retried request, or a bus message that a leave on
//! another node overtook) must not bring the participant back. Remembering the seq a
//! participant left at for a while makes such a write stale, on every node alike. The memory
//! is bounded twice: each entry is forgotten after `keep`, and past `cap` entries the oldest
//! are forgotten early (which only re-opens that narrow race for them).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{ChannelKey, ParticipantKey};

/// Departed participants by channel.
pub(super) struct Departed {
    /// The seq each one left at, and the stamp of its latest entry in `order`.
    by_channel: HashMap<ChannelKey, HashMap<Arc<ParticipantKey>, (u64, u64)>>,
    /// `(until, stamp, channel, who)` in the order departures were (last) remembered, which
    /// with a fixed `keep` is the order they expire in. A departure remembered again leaves a
    /// stale copy behind here, recognised by its stamp and skipped.
    order: VecDeque<(Instant, u64, ChannelKey, Arc<ParticipantKey>)>,
    /// Entries in `by_channel`.
    len: usize,
    /// The next stamp.
    stamp: u64,
    keep: Duration,
    cap: usize,
}

impl Departed {
    /// Remembers each departure for `keep`, and at most `cap` of them.
    pub(super) fn new(keep: Duration, cap: usize) -> Departed {
        Departed {
            by_channel: HashMap::new(),
            order: VecDeque::new(),
            len: 0,
            stamp: 0,
            keep,
            cap: cap.max(1),
        }
    }

    /// The seq `who` left `channel` at, if remembered.
    pub(super) fn seq(&self, channel: &ChannelKey, who: &ParticipantKey) -> Option<u64> {
        self.by_channel.get(channel)?.get(who).map(|&(seq, _)| seq)
    }

    /// Records that `who` left at `seq` (keeping the higher seq if one is already known).
    pub(super) fn remember(
        &mut self,
        channel: &ChannelKey,
        who: &Arc<ParticipantKey>,
        seq: u64,
        now: Instant,
    ) {
        self.stamp += 1;
        let stamp = self.stamp;
        let entries = self.by_channel.entry(channel.clone()).or_default();
        match entries.get_mut(who) {
            Some(entry) => *entry = (entry.0.max(seq), stamp),
            None => {
                entries.insert(who.clone(), (seq, stamp));
                self.len += 1;
            }
        }
        self.order
            .push_back((now + self.keep, stamp, channel.clone(), who.clone()));
        while self.len > self.cap {
            self.pop_oldest();
        }
        if self.order.len() > 2 * self.cap + 64 {
            self.compact();
        }
    }

    /// Forgets `who` (it joined again above the remembered seq).
    pub(super) fn forget(&mut self, channel: &ChannelKey, who: &ParticipantKey) {
        if let Some(entries) = self.by_channel.get_mut(channel) {
            if entries.remove(who).is_some() {
                self.len -= 1;
            }
            if entries.is_empty() {
                self.by_channel.remove(channel);
            }
        }
    }

    /// Forgets everything remembered until `now` or earlier.
    pub(super) fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(until, ..)| *until <= now) {
            self.pop_oldest();
        }
    }

    /// How many departures are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Removes the oldest entry of `order`, and its departure if the entry is not stale.
    fn pop_oldest(&mut self) {
        let Some((_, stamp, channel, who)) = self.order.pop_front() else {
            return;
        };
        if self.is_current(stamp, &channel, &who) {
            self.forget(&channel, &who);
        }
    }

    /// Whether an entry of `order` is the latest for its departure.
    fn is_current(&self, stamp: u64, channel: &ChannelKey, who: &ParticipantKey) -> bool {
        self.by_channel
            .get(channel)
            .and_then(|entries| entries.get(who))
            .is_some_and(|&(_, s)| s == stamp)
    }

    /// Drops the stale copies from `order`.
    fn compact(&mut self) {
        let order = std::mem::take(&mut self.order);
        self.order = order
            .into_iter()
            .filter(|(_, stamp, channel, who)| self.is_current(*stamp, channel, who))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> ChannelKey {
        ChannelKey {
            app: "a".into(),
            name: "c".into(),
        }
    }

    fn who(client: &str) -> Arc<ParticipantKey> {
        Arc::new(ParticipantKey {
            user: "u".into(),
            client: client.into(),
        })
    }

    #[test]
    fn a_departure_is_remembered_for_keep_then_forgotten() {
        let t0 = Instant::now();
        let mut departed = Departed::new(Duration::from_secs(10), 100);
        departed.remember(&channel(), &who("x"), 7, t0);
        departed.remember(&channel(), &who("x"), 5, t0 + Duration::from_secs(5));
        assert_eq!(
            departed.seq(&channel(), &who("x")),
            Some(7),
            "the higher seq wins"
        );
        departed.expire(t0 + Duration::from_secs(11));
        assert_eq!(
            departed.seq(&channel(), &who("x")),
            Some(7),
            "remembering again extends the time kept"
        );
        departed.expire(t0 + Duration::from_secs(15));
        assert_eq!(departed.seq(&channel(), &who("x")), None);
        assert_eq!(departed.len(), 0);
        assert!(departed.by_channel.is_empty() && departed.order.is_empty());
    }

    #[test]
    fn past_the_cap_the_oldest_departures_are_forgotten() {
        let t0 = Instant::now();
        let mut departed = Departed::new(Duration::from_secs(10), 3);
        for (i, client) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            departed.remember(
                &channel(),
                &who(client),
                1,
                t0 + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(departed.len(), 3);
        assert_eq!(departed.seq(&channel(), &who("a")), None);
        assert_eq!(departed.seq(&channel(), &who("b")), None);
        assert_eq!(departed.seq(&channel(), &who("e")), Some(1));
        // Churn on one participant does not grow `order` without bound.
        for i in 0..1000 {
            departed.remember(&channel(), &who("e"), i, t0);
        }
        assert!(
            departed.order.len() <= 2 * 3 + 64 + 1,
            "{}",
            departed.order.len()
        );
    }
}
