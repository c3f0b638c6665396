//! Who is calling: the bearer token becomes a user id.
//!
//! - `dev`: the token *is* the user id. Only on loopback (see [`Config::auth_mode`]).
//! - `jwt`: HS256 with a shared secret, RS256/ES256 with public keys from a JWKS file or URL.
//!   The algorithm must be one the configuration names (so `alg: none` and algorithm
//!   confusion are refused before any signature check); `exp` and `sub` are required; `nbf`,
//!   `iss` and `aud` are checked, with a bounded clock skew.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::{header, request::Parts};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::{AuthMode, Config};
use crate::error::ApiError;
use crate::AppState;

/// An unknown `kid` re-reads the JWKS at most this often, so random kids cannot make us hammer
/// the identity provider.
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(5);

/// How tokens are checked.
pub enum Authenticator {
    /// The token is the user id.
    Dev,
    /// JSON Web Tokens.
    Jwt(Box<JwtAuth>),
}

/// The JWT checks.
pub struct JwtAuth {
    algorithms: Vec<Algorithm>,
    secret: Option<DecodingKey>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_s: u64,
}

/// Public keys by `kid`, re-read when an unknown `kid` arrives.
struct Jwks {
    source: String,
    /// A tokio mutex: the refresh awaits a file read or an HTTP fetch while holding it, so that
    /// concurrent requests with a new `kid` cause one fetch, not many.
    cache: Mutex<KeyCache>,
}

struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Authenticator {
    /// Builds the authenticator the configuration asks for. Reads the JWKS once, so that a
    /// wrong path or URL fails at start-up rather than on the first request.
    pub async fn from_config(config: &Config) -> anyhow::Result<Authenticator> {
        let mode = config.auth_mode().map_err(anyhow::Error::msg)?;
        if mode == AuthMode::Dev {
            return Ok(Authenticator::Dev);
        }
        let secret = config.jwt_secret.as_deref().filter(|s| !s.is_empty());
        let algorithms = if config.jwt_algorithms.is_empty() {
            let mut default = Vec::new();
            if secret.is_some() {
                default.push(Algorithm::HS256);
            }
            if config.jwks.is_some() {
                default.extend([Algorithm::RS256, Algorithm::ES256]);
            }
            default
        } else {
            config
                .jwt_algorithms
                .iter()
                .map(|name| match name.trim() {
                    "HS256" => Ok(Algorithm::HS256),
                    "RS256" => Ok(Algorithm::RS256),
                    "ES256" => Ok(Algorithm::ES256),
                    other => Err(anyhow::anyhow!("unsupported JWT algorithm {other:?}")),
                })
                .collect::<anyhow::Result<_>>()?
        };
        let jwks = match &config.jwks {
            Some(source) => {
                let jwks = Jwks {
                    source: source.clone(),
                    cache: Mutex::new(KeyCache {
                        keys: HashMap::new(),
                        fetched: None,
                    }),
                };
                jwks.refresh(&mut *jwks.cache.lock().await).await?;
                Some(jwks)
            }
            None => None,
        };
        Ok(Authenticator::Jwt(Box::new(JwtAuth {
            algorithms,
            secret: secret.map(|s| DecodingKey::from_secret(s.as_bytes())),
            jwks,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            leeway_s: config.jwt_leeway.as_secs(),
        })))
    }

    /// The user id a token stands for.
    pub async fn user_of(&self, token: &str) -> Result<String, ApiError> {
        let user = match self {
            Authenticator::Dev => token.to_string(),
            Authenticator::Jwt(jwt) => jwt.check(token).await.map_err(|reason| {
                tracing::debug!(%reason, "token refused");
                ApiError::Unauthorized("the bearer token is invalid or expired")
            })?,
        };
        sync_core::names::check_id(&user)
            .map_err(|_| ApiError::Unauthorized("the token's user id is not a valid id"))?;
        Ok(user)
    }
}

impl JwtAuth {
    async fn check(&self, token: &str) -> Result<String, String> {
        // An unknown `alg` (including "none") fails to parse here.
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(format!("algorithm {:?} is not allowed", header.alg));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway_s;
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let decode = |key: &DecodingKey| {
            jsonwebtoken::decode::<Claims>(token, key, &validation)
                .map(|data| data.claims.sub)
                .map_err(|e| format!("{e}"))
        };
        if header.alg == Algorithm::HS256 {
            return decode(
                self.secret
                    .as_ref()
                    .ok_or("no HS256 secret is configured")?,
            );
        }
        let jwks = self.jwks.as_ref().ok_or("no JWKS is configured")?;
        let kid = header.kid.ok_or("the token has no kid")?;
        let mut cache = jwks.cache.lock().await;
        if !cache.keys.contains_key(&kid)
            && cache
                .fetched
                .is_none_or(|t| t.elapsed() >= JWKS_MIN_REFRESH)
        {
            jwks.refresh(&mut cache)
                .await
                .map_err(|e| format!("re-reading the JWKS: {e}"))?;
        }
        let key = cache
            .keys
            .get(&kid)
            .ok_or_else(|| format!("unknown kid {kid:?}"))?
            .clone();
        drop(cache);
        decode(&key)
    }
}

impl Jwks {
    async fn refresh(&self, cache: &mut KeyCache) -> anyhow::Result<()> {
        let text = if self.source.starts_with("http://") || self.source.starts_with("https://") {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?
                .get(&self.source)
                .send()
                .await?
                .error_for_status()?
                .text()
                .await?
        } else {
            tokio::fs::read_to_string(&self.source).await?
        };
        let set: JwkSet = serde_json::from_str(&text)?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid.clone(), key);
                }
                Err(e) => tracing::warn!(%kid, error = %e, "skipping a JWKS key"),
            }
        }
        tracing::info!(source = %self.source, keys = keys.len(), "read the JWKS");
        cache.keys = keys;
        cache.fetched = Some(Instant::now());
        Ok(())
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized(
                "an Authorization: Bearer token is required",
            ))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized(
                "the Authorization header must be `Bearer <token>`",
            ))?;
        authenticated(state, token).await
    }
}

/// `/v1/info` and other routes that anyone may call, but that say more to a known caller:
/// no `Authorization` header is `None`; a bad one is still `401`.
impl OptionalFromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Caller>, ApiError> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(None);
        }
        <Caller as FromRequestParts<AppState>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

/// The user a token stands for, counted against the per-user rate limit.
async fn authenticated(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let user = state.auth.user_of(token).await?;
    state.rate_limits.check_user(&user)?;
    Ok(Caller(user))
}

/// The caller of an event stream: like [`Caller`], but the token may also come as
/// `?access_token=`, because browsers' `EventSource` cannot send headers.
///
/// Only event streams accept it: a token in a URL can end up in proxy logs and browser
/// history, so everything that can send a header must.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCaller(pub Caller);

impl FromRequestParts<AppState> for StreamCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<StreamCaller, ApiError> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            return <Caller as FromRequestParts<AppState>>::from_request_parts(parts, state)
                .await
                .map(StreamCaller);
        }
        let query = parts.uri.query().unwrap_or("");
        let token = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized(
                "a Bearer token or ?access_token= is required",
            ))?;
        authenticated(state, &token).await.map(StreamCaller)
    }
}
