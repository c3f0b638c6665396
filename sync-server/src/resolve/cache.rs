//! What this server has learned from its peers: answers for good, "nobody knows" for a while.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;
use quick_cache::Weighter;
use sync_core::resolve::{BundleFile, Triple};

/// The most triples remembered as unknown. Each entry is a triple (at most ~220 bytes) and an
/// instant, so this bounds the negative cache to a few MiB.
const NEGATIVE_ENTRIES: usize = 16_384;

/// Files as they are cached and shared with every request that reads them.
pub type Files = Arc<[BundleFile]>;

/// Both caches. `quick_cache` evicts the least recently used entries (CLOCK-Pro) once a cache
/// is full, so memory stays bounded however many triples are asked for.
pub struct Caches {
    /// Triples peers knew. Versions are immutable, so an entry never goes stale; it only
    /// leaves when the cache needs the room. Weighed in bytes (see [`AnswerBytes`]).
    found: Cache<Triple, Files, AnswerBytes>,
    /// Triples no peer knew, with when that stops being believed.
    unknown: Cache<Triple, Instant>,
    /// How long a negative answer is believed.
    negative_ttl: Duration,
}

/// The weight of a cached answer: roughly the bytes it occupies.
#[derive(Clone)]
pub struct AnswerBytes;

impl Weighter<Triple, Files> for AnswerBytes {
    fn weight(&self, triple: &Triple, files: &Files) -> u64 {
        let per_file = std::mem::size_of::<BundleFile>();
        let bytes = triple.identifier.len()
            + files
                .iter()
                .map(|f| per_file + f.url.len() + f.sha256.len())
                .sum::<usize>();
        bytes as u64
    }
}

impl Caches {
    /// Empty caches: `found_bytes` for answers, negative answers kept for `negative_ttl`.
    pub fn new(found_bytes: u64, negative_ttl: Duration) -> Caches {
        // An estimate for sizing the hash table: answers of a few files, ~200 bytes each.
        let estimated = usize::try_from(found_bytes / 1024)
            .unwrap_or(usize::MAX)
            .max(16);
        Caches {
            found: Cache::with_weighter(estimated, found_bytes, AnswerBytes),
            unknown: Cache::new(NEGATIVE_ENTRIES),
            negative_ttl,
        }
    }

    /// The files a peer gave for `triple`, if remembered.
    pub fn found(&self, triple: &Triple) -> Option<Files> {
        self.found.get(triple)
    }

    /// Remembers a peer's answer.
    pub fn remember_found(&self, triple: Triple, files: Files) {
        self.unknown.remove(&triple);
        self.found.insert(triple, files);
    }

    /// Whether `triple` was unknown to every peer less than the TTL ago (at `now`).
    pub fn is_unknown(&self, triple: &Triple, now: Instant) -> bool {
        match self.unknown.get(triple) {
            Some(until) if until > now => true,
            Some(_) => {
                self.unknown.remove(triple);
                false
            }
            None => false,
        }
    }

    /// Remembers that no peer knew `triple` (at `now`).
    pub fn remember_unknown(&self, triple: Triple, now: Instant) {
        if !self.negative_ttl.is_zero() {
            self.unknown.insert(triple, now + self.negative_ttl);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triple(n: u32) -> Triple {
        Triple {
            identifier: "stars".into(),
            file_version: n,
            application_version: 1,
        }
    }

    fn files() -> Files {
        Arc::from(vec![BundleFile {
            url: "http://example.org/a".into(),
            size: 1,
            sha256: "0".repeat(64),
        }])
    }

    #[test]
    fn negative_answers_expire_and_positive_ones_replace_them() {
        let caches = Caches::new(1 << 20, Duration::from_secs(60));
        let now = Instant::now();
        caches.remember_unknown(triple(1), now);
        assert!(caches.is_unknown(&triple(1), now + Duration::from_secs(59)));
        assert!(!caches.is_unknown(&triple(1), now + Duration::from_secs(61)));
        caches.remember_unknown(triple(2), now);
        caches.remember_found(triple(2), files());
        assert!(!caches.is_unknown(&triple(2), now));
        assert_eq!(caches.found(&triple(2)), Some(files()));
    }

    #[test]
    fn the_answer_cache_stays_within_its_bytes() {
        let caches = Caches::new(10_000, Duration::from_secs(60));
        for n in 0..10_000 {
            caches.remember_found(triple(n), files());
        }
        assert!(caches.found.weight() <= 10_000, "{}", caches.found.weight());
        assert!(caches.found.len() < 10_000);
    }
}
