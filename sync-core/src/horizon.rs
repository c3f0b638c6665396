//! Expiry, tombstone retention and the horizon.
//!
//! A tombstone must be kept while some client may still need to hear about the delete. After
//! the retention window it is purged, and from then on a client whose cursor is older than that
//! tombstone cannot be brought up to date incrementally: the horizon moves up to the purged
//! seq, and such a client is told to reset.
//!
//! The sweeper that applies these rules is the store's; the rules are here so that every store
//! (and the reference store) applies the same ones.

/// Whether an object with this `expires` is expired at `now_ms`.
pub fn is_expired(expires: Option<u64>, now_ms: u64) -> bool {
    expires.is_some_and(|at| at <= now_ms)
}

/// Tombstones last modified before this instant may be purged.
pub fn purge_before(now_ms: u64, retention_ms: u64) -> u64 {
    now_ms.saturating_sub(retention_ms)
}

/// The horizon after purging tombstones whose highest seq was `max_purged_seq`.
///
/// A client whose cursor is at `max_purged_seq` has seen that tombstone and can go on; one
/// below it may have missed a purged delete.
pub fn horizon_after_purge(horizon: u64, max_purged_seq: Option<u64>) -> u64 {
    max_purged_seq.map_or(horizon, |seq| horizon.max(seq))
}

/// Whether a request with this `since` can be answered incrementally.
///
/// `since = 0` always can: a client that starts from nothing needs no tombstones.
pub fn since_is_answerable(since: u64, horizon: u64, last_seq: u64) -> bool {
    since == 0 || (since >= horizon && since <= last_seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(is_expired(Some(10), 10));
        assert!(!is_expired(Some(11), 10));
        assert!(!is_expired(None, u64::MAX));
        assert_eq!(purge_before(100, 30), 70);
        assert_eq!(purge_before(10, 30), 0);
        assert_eq!(horizon_after_purge(5, Some(9)), 9);
        assert_eq!(horizon_after_purge(5, Some(3)), 5);
        assert_eq!(horizon_after_purge(5, None), 5);
        assert!(since_is_answerable(0, 9, 20));
        assert!(!since_is_answerable(8, 9, 20));
        assert!(since_is_answerable(9, 9, 20));
        assert!(
            !since_is_answerable(21, 9, 20),
            "a cursor from the future is from another epoch"
        );
    }
}
