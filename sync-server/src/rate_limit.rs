//! Rate limits per user and per client IP address, with the `governor` crate (GCRA).
//!
//! - **Per IP**: a middleware counts every request but the operators' probes (`/healthz`,
//!   `/readyz`, `/metrics`), before anything else is done with it, so that anonymous floods
//!   and floods of bad tokens are slowed down too. The address is the connection's peer, or,
//!   with `--trust-forwarded-for`, the last entry of `X-Forwarded-For` (the one our proxy
//!   added; earlier entries are whatever the client sent).
//! - **Per user**: the [`crate::auth::Caller`] extractors count each request once its token
//!   has been checked, so a user is limited however many addresses they come from.
//!
//! Over a limit, the answer is `429 rate_limited` with `Retry-After` (whole seconds, at least
//! 1). Both limits are off by default. The limiters keep one small state per key seen; a
//! background task forgets the keys that are back to a full allowance
//! ([`RateLimits::forget_idle`]), so memory follows the active clients, not every client ever.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Serialize;

use crate::config::Config;
use crate::error::ApiError;
use crate::AppState;

/// Paths that are never counted per IP: load balancers and Prometheus poll them.
const UNCOUNTED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// How often idle keys are forgotten.
pub const FORGET_INTERVAL: Duration = Duration::from_secs(60);

/// The configured limiters (each `None` when off).
pub struct RateLimits {
    per_user: Option<DefaultKeyedRateLimiter<String>>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    trust_forwarded_for: bool,
    settings: Settings,
}

/// The limits as `/v1/info` shows them (0: no limit).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Settings {
    /// Requests per minute per user.
    pub user_per_minute: u32,
    /// Burst per user.
    pub user_burst: u32,
    /// Requests per minute per IP address.
    pub ip_per_minute: u32,
    /// Burst per IP address.
    pub ip_burst: u32,
}

/// A GCRA limiter allowing `per_minute` on average and `burst` at once; `None` if
/// `per_minute` is 0.
fn keyed<K>(per_minute: u32, burst: Option<u32>) -> Option<DefaultKeyedRateLimiter<K>>
where
    K: std::hash::Hash + Eq + Clone,
{
    let rate = NonZeroU32::new(per_minute)?;
    let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_minute(rate).allow_burst(burst),
    ))
}

impl RateLimits {
    /// The limiters `config` asks for.
    pub fn from_config(config: &Config) -> RateLimits {
        let burst_of =
            |rate: u32, burst: Option<u32>| if rate == 0 { 0 } else { burst.unwrap_or(rate) };
        RateLimits {
            per_user: keyed(config.rate_limit_user, config.rate_limit_user_burst),
            per_ip: keyed(config.rate_limit_ip, config.rate_limit_ip_burst),
            trust_forwarded_for: config.trust_forwarded_for,
            settings: Settings {
                user_per_minute: config.rate_limit_user,
                user_burst: burst_of(config.rate_limit_user, config.rate_limit_user_burst),
                ip_per_minute: config.rate_limit_ip,
                ip_burst: burst_of(config.rate_limit_ip, config.rate_limit_ip_burst),
            },
        }
    }

    /// The limits in force.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Counts one request of `user`.
    pub fn check_user(&self, user: &str) -> Result<(), ApiError> {
        match &self.per_user {
            Some(limiter) => limiter
                .check_key(&user.to_string())
                .map_err(|wait| too_many("you", &wait)),
            None => Ok(()),
        }
    }

    /// Counts one request from `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        match &self.per_ip {
            Some(limiter) => limiter
                .check_key(&ip)
                .map_err(|wait| too_many("your address", &wait)),
            None => Ok(()),
        }
    }

    /// Forgets the keys whose allowance is full again (they would start from scratch anyway).
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_user {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.per_ip {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// The client's address: the last `X-Forwarded-For` entry if trusted and valid, else the
    /// connection's peer (if known: tests that call the router directly have none).
    pub fn client_ip(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        if self.trust_forwarded_for {
            let forwarded = headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|last| last.trim().parse().ok());
            if forwarded.is_some() {
                return forwarded;
            }
        }
        peer
    }
}

/// The 429 for a limiter's "not until".
fn too_many(who: &str, wait: &governor::NotUntil<governor::clock::QuantaInstant>) -> ApiError {
    let wait = wait.wait_time_from(DefaultClock::default().now());
    // Whole seconds, rounded up, and never 0 (which would invite an immediate retry).
    let retry_after_s = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::RateLimited {
        message: format!("{who} sent too many requests; retry in {retry_after_s} s"),
        retry_after_s: retry_after_s.max(1),
    }
}

/// Middleware: the per-IP limit.
pub async fn per_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.rate_limits.per_ip.is_some() && !UNCOUNTED.contains(&request.uri().path()) {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        if let Some(ip) = state.rate_limits.client_ip(request.headers(), peer) {
            if let Err(e) = state.rate_limits.check_ip(ip) {
                return e.into_response();
            }
        }
    }
    next.run(request).await
}

/// Forgets idle keys every [`FORGET_INTERVAL`], until aborted.
pub async fn forget_idle_keys(limits: std::sync::Arc<RateLimits>) {
    let mut tick = tokio::time::interval(FORGET_INTERVAL);
    loop {
        tick.tick().await;
        limits.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn limits(args: &[&str]) -> RateLimits {
        let config = Config::parse_from(std::iter::once("sync-server").chain(args.iter().copied()));
        RateLimits::from_config(&config)
    }

    #[test]
    fn off_by_default() {
        let limits = limits(&[]);
        for _ in 0..1000 {
            assert!(limits.check_user("alice").is_ok());
            assert!(limits.check_ip([127, 0, 0, 1].into()).is_ok());
        }
    }

    #[test]
    fn forwarded_for_is_read_only_when_trusted() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "6.6.6.6, 10.0.0.7".parse().unwrap());
        let peer = Some(IpAddr::from([127, 0, 0, 1]));
        assert_eq!(limits(&[]).client_ip(&headers, peer), peer);
        let trusting = limits(&["--trust-forwarded-for"]);
        assert_eq!(
            trusting.client_ip(&headers, peer),
            Some(IpAddr::from([10, 0, 0, 7])),
            "the entry our proxy added, not the one the client wrote"
        );
        headers.insert("x-forwarded-for", "not an address".parse().unwrap());
        assert_eq!(trusting.client_ip(&headers, peer), peer);
    }
}
