//! When the scheduler syncs next: a pure function of what happened and what time it is, so it
//! is tested without a browser. The timers themselves live in [`crate::client`].
//!
//! - A periodic sync every `interval` (5 minutes by default, never under 30 s). While the
//!   page is hidden, every `hidden_interval` (6 × `interval` by default).
//! - `X-Sync-Poll-Time` can only slow polling down: the server asks for *at least* that long
//!   between polls, the application's own interval still applies when it is longer.
//! - `Backoff` (on a success) and `Retry-After` (on 429 and 503) set a time before which
//!   nothing is sent, not even the immediate sync after a local change.
//! - Every failed sync (no answer, 5xx, or anything else that ended the cycle early) backs off
//!   exponentially: 2 s, 4 s, 8 s … up to 5 minutes, with "equal jitter" (between half and
//!   all of it) so that many clients that failed together do not come back together.
//! - A sync after a local change waits [`DEBOUNCE_MS`], so that a burst of edits goes in one
//!   push.

/// The default periodic interval.
pub const DEFAULT_INTERVAL_MS: f64 = 5.0 * 60_000.0;
/// The shortest periodic interval accepted.
pub const MIN_INTERVAL_MS: f64 = 30_000.0;
/// How long a sync after a local change waits for further changes.
pub const DEBOUNCE_MS: f64 = 500.0;
/// The first retry after a failure.
pub const BACKOFF_BASE_MS: f64 = 2_000.0;
/// The longest wait after repeated failures.
pub const BACKOFF_MAX_MS: f64 = 5.0 * 60_000.0;

/// The application's choices, clamped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Between periodic syncs while the page is visible.
    pub interval_ms: f64,
    /// Between periodic syncs while the page is hidden.
    pub hidden_interval_ms: f64,
}

impl Policy {
    /// From `start({interval, hiddenInterval})`, in milliseconds; `None` takes the default.
    pub fn new(interval_ms: Option<f64>, hidden_interval_ms: Option<f64>) -> Policy {
        let valid = |ms: Option<f64>| ms.filter(|ms| ms.is_finite());
        let interval_ms = valid(interval_ms)
            .unwrap_or(DEFAULT_INTERVAL_MS)
            .max(MIN_INTERVAL_MS);
        let hidden_interval_ms = valid(hidden_interval_ms)
            .unwrap_or(interval_ms * 6.0)
            .max(interval_ms);
        Policy {
            interval_ms,
            hidden_interval_ms,
        }
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::new(None, None)
    }
}

/// How a sync ended, as far as timing goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The cycle completed.
    Synced {
        /// `Backoff`, if the server sent it.
        backoff_ms: Option<u64>,
        /// `X-Sync-Poll-Time`, if the server sent it.
        poll_ms: Option<u64>,
    },
    /// The cycle failed.
    Failed {
        /// `Retry-After`, if the server sent it.
        retry_after_ms: Option<u64>,
        /// True when the server could not be reached at all (so coming back online is worth
        /// an immediate try).
        offline: bool,
    },
}

/// What the scheduler remembers between syncs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Plan {
    /// Failed syncs in a row.
    failures: u32,
    /// Nothing is sent before this time (ms since the epoch).
    not_before: f64,
    /// The last `X-Sync-Poll-Time`.
    poll_ms: Option<f64>,
    /// The last failure was "no answer".
    offline: bool,
}

impl Plan {
    /// Takes a finished sync into account. `jitter` is a random number in `[0, 1)`.
    pub fn record(&mut self, outcome: Outcome, now: f64, jitter: f64) {
        match outcome {
            Outcome::Synced {
                backoff_ms,
                poll_ms,
            } => {
                self.failures = 0;
                self.offline = false;
                self.poll_ms = poll_ms.map(|ms| ms as f64);
                self.not_before = now + backoff_ms.unwrap_or(0) as f64;
            }
            Outcome::Failed {
                retry_after_ms,
                offline,
            } => {
                self.failures = self.failures.saturating_add(1);
                self.offline = offline;
                let exponent = self.failures.min(16) - 1;
                let backoff = (BACKOFF_BASE_MS * f64::from(1u32 << exponent)).min(BACKOFF_MAX_MS);
                let jittered = backoff * (0.5 + 0.5 * jitter.clamp(0.0, 1.0));
                let asked = retry_after_ms.unwrap_or(0) as f64;
                self.not_before = now + jittered.max(asked);
            }
        }
    }

    /// The network came back: a wait that was only about being offline ends now.
    pub fn online(&mut self, now: f64) {
        if self.offline {
            self.failures = 0;
            self.offline = false;
            self.not_before = self.not_before.min(now);
        }
    }

    /// Failed syncs in a row.
    #[cfg(test)]
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay before the next periodic sync, right after a sync.
    pub fn periodic_delay(&self, policy: &Policy, now: f64, hidden: bool) -> f64 {
        let wait = (self.not_before - now).max(0.0);
        if self.failures > 0 {
            return wait;
        }
        let interval = match hidden {
            true => policy.hidden_interval_ms,
            false => policy.interval_ms,
        };
        interval.max(self.poll_ms.unwrap_or(0.0)).max(wait)
    }

    /// The delay before a sync that something asked for now (a local change: `min` is
    /// [`DEBOUNCE_MS`]; the page became visible: 0), never before the server allows it.
    pub fn soon_delay(&self, now: f64, min: f64) -> f64 {
        min.max(self.not_before - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_000_000.0;

    fn synced() -> Outcome {
        Outcome::Synced {
            backoff_ms: None,
            poll_ms: None,
        }
    }

    fn failed(offline: bool) -> Outcome {
        Outcome::Failed {
            retry_after_ms: None,
            offline,
        }
    }

    #[test]
    fn the_interval_is_five_minutes_by_default_and_never_under_thirty_seconds() {
        let plan = Plan::default();
        let default = Policy::default();
        assert_eq!(plan.periodic_delay(&default, NOW, false), 300_000.0);
        let eager = Policy::new(Some(1_000.0), None);
        assert_eq!(plan.periodic_delay(&eager, NOW, false), 30_000.0);
        assert_eq!(Policy::new(Some(f64::NAN), None), default);
    }

    #[test]
    fn hidden_pages_poll_slowly() {
        let plan = Plan::default();
        let policy = Policy::default();
        assert_eq!(plan.periodic_delay(&policy, NOW, true), 1_800_000.0);
        let custom = Policy::new(Some(60_000.0), Some(10_000.0));
        assert_eq!(
            custom.hidden_interval_ms, 60_000.0,
            "never faster than visible"
        );
    }

    #[test]
    fn failures_back_off_exponentially_up_to_five_minutes() {
        let policy = Policy::default();
        let mut plan = Plan::default();
        let mut delays = Vec::new();
        for _ in 0..10 {
            // jitter 1.0 is the top of the range: the whole backoff.
            plan.record(failed(true), NOW, 1.0);
            delays.push(plan.periodic_delay(&policy, NOW, false));
        }
        assert_eq!(
            delays,
            [2e3, 4e3, 8e3, 16e3, 32e3, 64e3, 128e3, 256e3, 300e3, 300e3]
        );
        plan.record(failed(false), NOW, 0.0);
        assert_eq!(
            plan.periodic_delay(&policy, NOW, false),
            150e3,
            "jitter takes at most half"
        );
        plan.record(synced(), NOW, 0.0);
        assert_eq!(plan.failures(), 0);
        assert_eq!(plan.periodic_delay(&policy, NOW, false), 300e3);
    }

    #[test]
    fn retry_after_is_a_floor_for_the_backoff() {
        let mut plan = Plan::default();
        let asked = Outcome::Failed {
            retry_after_ms: Some(60_000),
            offline: false,
        };
        plan.record(asked, NOW, 0.0);
        assert_eq!(
            plan.periodic_delay(&Policy::default(), NOW, false),
            60_000.0
        );
        assert_eq!(plan.soon_delay(NOW, DEBOUNCE_MS), 60_000.0);
        assert_eq!(plan.soon_delay(NOW + 59_000.0, DEBOUNCE_MS), 1_000.0);
    }

    #[test]
    fn backoff_delays_even_the_sync_after_a_local_change() {
        let mut plan = Plan::default();
        assert_eq!(plan.soon_delay(NOW, DEBOUNCE_MS), DEBOUNCE_MS);
        assert_eq!(plan.soon_delay(NOW, 0.0), 0.0);
        plan.record(
            Outcome::Synced {
                backoff_ms: Some(10_000),
                poll_ms: None,
            },
            NOW,
            0.0,
        );
        assert_eq!(plan.soon_delay(NOW, DEBOUNCE_MS), 10_000.0);
        assert_eq!(plan.soon_delay(NOW, 0.0), 10_000.0);
    }

    #[test]
    fn poll_time_slows_polling_down_but_never_speeds_it_up() {
        let policy = Policy::default();
        let mut plan = Plan::default();
        let with_poll = |ms| Outcome::Synced {
            backoff_ms: None,
            poll_ms: Some(ms),
        };
        plan.record(with_poll(600_000), NOW, 0.0);
        assert_eq!(plan.periodic_delay(&policy, NOW, false), 600_000.0);
        plan.record(with_poll(60_000), NOW, 0.0);
        assert_eq!(plan.periodic_delay(&policy, NOW, false), 300_000.0);
    }

    #[test]
    fn coming_back_online_ends_an_offline_backoff_only() {
        let policy = Policy::default();
        let mut plan = Plan::default();
        for _ in 0..5 {
            plan.record(failed(true), NOW, 1.0);
        }
        plan.online(NOW + 1.0);
        assert_eq!(plan.soon_delay(NOW + 1.0, 0.0), 0.0, "an immediate sync");
        assert_eq!(plan.periodic_delay(&policy, NOW + 1.0, false), 300_000.0);
        plan.record(
            Outcome::Failed {
                retry_after_ms: Some(90_000),
                offline: false,
            },
            NOW,
            1.0,
        );
        plan.online(NOW);
        assert_eq!(
            plan.soon_delay(NOW, 0.0),
            90_000.0,
            "the server's wait stays"
        );
    }
}
