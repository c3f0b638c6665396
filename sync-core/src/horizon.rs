//! Expiry, tombstone retention and the horizon.
//!
//! A tombstone must be kept while some client may still need to hear about the delete. After
//! the retention window it is purged, and from then on a client whose cursor is older than that
//! tombstone cannot be brought up to date incrementally: the horizon moves up to the purged
//! seq, and such a client is told to reset.
//!
//! One client below the horizon may go on: one paging through a full sync from `since = 0`
//! that echoes the horizon its first page carried, while that is still the horizon (see
//! [`since_is_answerable`]). For that to be safe every purge must move the horizon, which is
//! what [`purge_up_to`] ensures.
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

/// The highest seq to purge up to, given the seqs of the tombstones written before the
/// retention cutoff ([`purge_before`]): the sweeper then purges **every** tombstone with
/// `seq <= S`, including younger ones, and the horizon becomes `S`. `None`: purge nothing.
///
/// Purging only the tombstones older than the cutoff would be enough for retention, but a
/// tombstone whose timestamp is skewed (a clock step, a restored backup) could then be left
/// below the horizon and purged later *without the horizon moving*. With this rule no
/// tombstone is ever left at or below the horizon (new tombstones always take seqs above
/// `last_seq >= horizon`), so every purge moves the horizon strictly up. That makes "the
/// horizon is still `H`" a perfect signal that nothing was purged since a client saw `H`,
/// which [`since_is_answerable`] relies on to let a client page past the horizon.
pub fn purge_up_to(old_tombstone_seqs: impl IntoIterator<Item = u64>) -> Option<u64> {
    old_tombstone_seqs.into_iter().max()
}

/// The horizon after purging tombstones whose highest seq was `max_purged_seq`.
///
/// A client whose cursor is at `max_purged_seq` has seen that tombstone and can go on; one
/// below it may have missed a purged delete.
pub fn horizon_after_purge(horizon: u64, max_purged_seq: Option<u64>) -> u64 {
    max_purged_seq.map_or(horizon, |seq| horizon.max(seq))
}

/// Whether a request with this `since` can be answered incrementally. `client_horizon` is the
/// `horizon` a paging client echoes: the one its first page (from `since = 0`) carried.
///
/// - `since = 0` always can: a client that starts from nothing needs no tombstones.
/// - `since > last_seq` never can: the cursor belongs to another epoch, or to a server
///   restored from a backup.
/// - `since >= horizon` can: every delete after `since` is still there as a tombstone.
/// - `since < horizon` can only while the client pages through a full sync that started
///   when the horizon was already what it is now (`client_horizon == Some(horizon)`). Its
///   first page needed no tombstones, and since every purge moves the horizon up
///   ([`purge_up_to`]), nothing it could have missed has been purged since.
pub fn since_is_answerable(
    since: u64,
    horizon: u64,
    last_seq: u64,
    client_horizon: Option<u64>,
) -> bool {
    since == 0 || (since <= last_seq && (since >= horizon || client_horizon == Some(horizon)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_retention_cutoff() {
        assert!(is_expired(Some(10), 10));
        assert!(!is_expired(Some(11), 10));
        assert!(!is_expired(None, u64::MAX));
        assert_eq!(purge_before(100, 30), 70);
        assert_eq!(purge_before(10, 30), 0);
    }

    #[test]
    fn the_horizon_only_moves_up() {
        assert_eq!(horizon_after_purge(5, Some(9)), 9);
        assert_eq!(horizon_after_purge(5, Some(3)), 5);
        assert_eq!(horizon_after_purge(5, None), 5);
    }

    #[test]
    fn purge_reaches_up_to_the_highest_old_tombstone() {
        assert_eq!(purge_up_to([4, 9, 7]), Some(9));
        assert_eq!(purge_up_to([]), None);
    }

    #[test]
    fn cursors_below_the_horizon_need_the_matching_client_horizon() {
        assert!(since_is_answerable(0, 9, 20, None));
        assert!(!since_is_answerable(8, 9, 20, None));
        assert!(since_is_answerable(9, 9, 20, None));
        assert!(since_is_answerable(20, 9, 20, None));
        assert!(
            since_is_answerable(3, 9, 20, Some(9)),
            "a full sync that saw horizon 9 pages on while it is still 9"
        );
        assert!(
            !since_is_answerable(3, 12, 20, Some(9)),
            "a purge since the first page may have removed a delete the client needs"
        );
        assert!(
            !since_is_answerable(3, 9, 20, Some(12)),
            "a client horizon other than the server's proves nothing"
        );
        assert!(
            since_is_answerable(10, 9, 20, Some(4)),
            "above the horizon anyway"
        );
    }

    #[test]
    fn a_cursor_from_the_future_is_from_another_epoch() {
        assert!(!since_is_answerable(21, 9, 20, None));
        assert!(!since_is_answerable(21, 9, 20, Some(9)));
    }
}
