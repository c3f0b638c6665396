//! Who is calling: the bearer token becomes a user id.

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::AuthMode;
use crate::error::ApiError;
use crate::AppState;

/// How tokens are checked.
pub enum Authenticator {
    /// The token is the user id (development only; see [`crate::config::Config::auth_mode`]).
    Dev,
    /// HS256 JWTs; `sub` is the user id and `exp` is required.
    Jwt {
        /// The shared secret.
        key: DecodingKey,
        /// Algorithm (HS256 only) and claim checks (boxed: it is large and read-only).
        validation: Box<Validation>,
    },
}

impl Authenticator {
    /// Builds the authenticator for a mode.
    pub fn new(mode: AuthMode, jwt_secret: Option<&str>) -> Authenticator {
        match mode {
            AuthMode::Dev => Authenticator::Dev,
            AuthMode::Jwt => {
                let mut validation = Validation::new(Algorithm::HS256);
                validation.set_required_spec_claims(&["exp", "sub"]);
                Authenticator::Jwt {
                    key: DecodingKey::from_secret(jwt_secret.unwrap_or_default().as_bytes()),
                    validation: Box::new(validation),
                }
            }
        }
    }

    /// The user id a token stands for.
    pub fn user_of(&self, token: &str) -> Result<String, ApiError> {
        let user = match self {
            Authenticator::Dev => token.to_string(),
            Authenticator::Jwt { key, validation } => {
                #[derive(Deserialize)]
                struct Claims {
                    sub: String,
                }
                jsonwebtoken::decode::<Claims>(token, key, validation)
                    .map_err(|e| {
                        tracing::debug!(error = %e, "token refused");
                        ApiError::Unauthorized("the bearer token is invalid or expired")
                    })?
                    .claims
                    .sub
            }
        };
        sync_core::names::check_id(&user)
            .map_err(|_| ApiError::Unauthorized("the token's user id is not a valid id"))?;
        Ok(user)
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
            .ok_or(ApiError::Unauthorized("an Authorization: Bearer token is required"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized("the Authorization header must be `Bearer <token>`"))?;
        state.auth.user_of(token).map(Caller)
    }
}
