//! The server's configuration: command-line flags, each also an environment variable.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use sync_core::Limits;

/// Tidemark's sync server.
#[derive(Debug, Clone, Parser)]
#[command(name = "sync-server", version, about)]
pub struct Config {
    /// Address to listen on. Port 0 picks a free port; the chosen address is printed on stdout.
    #[arg(long, env = "TIDEMARK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory of the embedded SQLite database (created if missing).
    #[arg(long, env = "TIDEMARK_DATA", default_value = "./tidemark-data")]
    pub data: PathBuf,

    /// How callers authenticate. `dev`: the bearer token is the user id itself (allowed only
    /// on a loopback address, and the default there). `jwt`: HS256 tokens signed with
    /// `--jwt-secret`, `sub` is the user.
    #[arg(long, env = "TIDEMARK_AUTH", value_enum)]
    pub auth: Option<AuthMode>,

    /// The HS256 secret for `--auth jwt`.
    #[arg(long, env = "TIDEMARK_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// An origin allowed to call the API from a browser (repeatable), or `*` for any.
    #[arg(long = "cors-origin", env = "TIDEMARK_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// How long tombstones are kept before they are purged and the horizon moves up.
    #[arg(long, env = "TIDEMARK_TOMBSTONE_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub tombstone_retention: Duration,

    /// How often the sweeper expires objects and purges old tombstones.
    #[arg(long, env = "TIDEMARK_SWEEP_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,

    /// The largest request body, in bytes.
    #[arg(long, env = "TIDEMARK_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,

    /// The most objects in one push.
    #[arg(long, env = "TIDEMARK_MAX_BATCH", default_value_t = Limits::default().max_batch)]
    pub max_batch: usize,

    /// The largest `data` of one object, in bytes.
    #[arg(long, env = "TIDEMARK_MAX_OBJECT_BYTES", default_value_t = Limits::default().max_object_bytes)]
    pub max_object_bytes: usize,

    /// The most objects in one pull page.
    #[arg(long, env = "TIDEMARK_MAX_PULL_LIMIT", default_value_t = Limits::default().max_pull_limit)]
    pub max_pull_limit: usize,

    /// A request that takes longer than this is answered 408.
    #[arg(long, env = "TIDEMARK_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// The polling interval suggested to clients in `X-Sync-Poll-Time`.
    #[arg(long, env = "TIDEMARK_POLL_TIME", default_value = "60s", value_parser = humantime::parse_duration)]
    pub poll_time: Duration,

    /// Log lines as JSON instead of text.
    #[arg(long, env = "TIDEMARK_LOG_JSON")]
    pub log_json: bool,
}

/// How callers authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// The bearer token is the user id. For development on loopback only.
    Dev,
    /// HS256 JSON Web Tokens.
    Jwt,
}

impl Config {
    /// The limits the core enforces, as configured.
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            max_batch: self.max_batch,
            max_object_bytes: self.max_object_bytes,
            max_pull_limit: self.max_pull_limit,
        }
    }

    /// The auth mode in force: the flag if given, else `dev` on loopback. Refuses `dev` on any
    /// other address, and `jwt` without a secret.
    pub fn auth_mode(&self) -> Result<AuthMode, String> {
        let mode = match self.auth {
            Some(mode) => mode,
            None if self.listen.ip().is_loopback() => AuthMode::Dev,
            None => return Err("--auth is required when listening on a non-loopback address".into()),
        };
        match mode {
            AuthMode::Dev if !self.listen.ip().is_loopback() => Err(
                "--auth dev trusts any token as a user id; it is refused on a non-loopback address".into(),
            ),
            AuthMode::Jwt if self.jwt_secret.as_deref().is_none_or(str::is_empty) => {
                Err("--auth jwt needs --jwt-secret".into())
            }
            mode => Ok(mode),
        }
    }
}
