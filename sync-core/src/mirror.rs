//! What a mirror decides: whether a page pulled from its upstream continues its copy or
//! replaces it, and whether its copy has drifted from the upstream's.
//!
//! A mirror keeps the upstream's `collection_id`, seqs and horizon unchanged, so that a client
//! can move between the primary and any mirror of a chain with the same cursor. Its local head
//! is therefore also its cursor on the upstream: a page continues the copy only if it starts
//! exactly there, in the same epoch.

use alloc::vec::Vec;

use crate::commit::Head;
use crate::object::Object;
use crate::pull::PullAnswer;

/// What to do with a page pulled from the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Step {
    /// The page starts at the local cursor in the same epoch: write its objects verbatim and
    /// move the head to its `until`.
    Append,
    /// The upstream has never been written: there is nothing to copy yet.
    Nothing,
    /// The upstream's epoch is not ours (it was reset, or we never copied it), or the page does
    /// not start at our cursor: copy the whole collection again from `since=0` and replace
    /// ours with it.
    Resync,
}

/// Decides what a page pulled with `since = local.last_seq` means for the local copy.
pub fn next_step(local: &Head, page: &PullAnswer) -> Step {
    match (&page.collection_id, &local.collection_id) {
        (None, None) => Step::Nothing,
        // The upstream forgot a collection we hold (restored from an older backup): start over.
        (None, Some(_)) => Step::Resync,
        (Some(upstream), Some(ours)) if upstream == ours && page.since == local.last_seq => {
            Step::Append
        }
        _ => Step::Resync,
    }
}

/// Whether two full copies of a collection (every stored object and tombstone, in seq order)
/// hold the same versions: the same ids at the same seqs with the same content hashes. The
/// periodic reconciliation of a mirror compares its copy with the upstream's this way.
pub fn same_versions(ours: &[Object], theirs: &[Object]) -> bool {
    fn key(o: &Object) -> (&str, u64, bool, Option<&str>) {
        (o.id.as_str(), o.seq, o.deleted, o.hash.as_deref())
    }
    let mut a: Vec<_> = ours.iter().map(key).collect();
    let mut b: Vec<_> = theirs.iter().map(key).collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::{String, ToString};
    use alloc::vec;

    fn head(epoch: Option<&str>, last_seq: u64) -> Head {
        Head {
            collection_id: epoch.map(str::to_string),
            last_seq,
            horizon: 0,
        }
    }

    fn page(epoch: Option<&str>, since: u64) -> PullAnswer {
        PullAnswer {
            collection_id: epoch.map(str::to_string),
            since,
            until: since + 1,
            more: false,
            horizon: 0,
            objects: vec![],
        }
    }

    #[test]
    fn a_page_at_the_cursor_in_the_same_epoch_is_appended() {
        assert_eq!(
            next_step(&head(Some("e"), 5), &page(Some("e"), 5)),
            Step::Append
        );
    }

    #[test]
    fn a_new_epoch_or_a_page_elsewhere_means_resync() {
        assert_eq!(
            next_step(&head(Some("e"), 5), &page(Some("f"), 5)),
            Step::Resync
        );
        assert_eq!(next_step(&head(None, 0), &page(Some("f"), 0)), Step::Resync);
        assert_eq!(
            next_step(&head(Some("e"), 5), &page(Some("e"), 3)),
            Step::Resync
        );
        assert_eq!(next_step(&head(Some("e"), 5), &page(None, 5)), Step::Resync);
        assert_eq!(next_step(&head(None, 0), &page(None, 0)), Step::Nothing);
    }

    #[test]
    fn versions_compare_by_id_seq_and_hash() {
        let object = |id: &str, seq: u64, hash: &str| Object {
            id: id.to_string(),
            kind: String::new(),
            seq,
            deleted: false,
            data: None,
            expires: None,
            hash: Some(hash.to_string()),
            author: None,
        };
        let ours = [object("a", 1, "h1"), object("b", 2, "h2")];
        let theirs = [object("b", 2, "h2"), object("a", 1, "h1")];
        assert!(same_versions(&ours, &theirs));
        assert!(!same_versions(
            &ours,
            &[object("a", 1, "h1"), object("b", 2, "XX")]
        ));
        assert!(!same_versions(&ours, &[object("a", 1, "h1")]));
    }
}
