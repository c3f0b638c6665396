//! The server's configuration: command-line flags, each also an environment variable.

use clap::parser::ValueSource;
use clap::{CommandFactory, Parser, ValueEnum};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use sync_core::quota::Quota;
use sync_core::Limits;

use crate::mirror::MirrorSpec;
use crate::presence::PresenceLimits;

/// Tidemark's sync server.
#[derive(Debug, Clone, Parser)]
#[command(name = "sync-server", version, about)]
pub struct Config {
    /// A TOML file of settings, keyed by flag name (`listen = "0.0.0.0:8080"`,
    /// `cors-origin = ["https://app.example"]`). Flags and environment variables win over it.
    #[arg(long, env = "TIDEMARK_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on. Port 0 picks a free port; the chosen address is printed on stdout.
    #[arg(long, env = "TIDEMARK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory of the embedded SQLite database (created if missing).
    #[arg(long, env = "TIDEMARK_DATA", default_value = "./tidemark-data")]
    pub data: PathBuf,

    /// A PostgreSQL URL (`postgres://user@host:5432/db`). With it, the server keeps its data
    /// there instead of in `--data`, and many nodes can share one database.
    #[arg(long, env = "TIDEMARK_DATABASE", hide_env_values = true)]
    pub database: Option<String>,

    /// The PostgreSQL schema to use (created if missing); lets several deployments or test
    /// runs share one database.
    #[arg(long, env = "TIDEMARK_DATABASE_SCHEMA", default_value = "public")]
    pub database_schema: String,

    /// Connections per node to PostgreSQL.
    #[arg(long, env = "TIDEMARK_DATABASE_POOL", default_value_t = 16)]
    pub database_pool: usize,

    /// How callers authenticate. `dev`: the bearer token is the user id itself (allowed only
    /// on a loopback address, and the default there). `jwt`: JSON Web Tokens (HS256 with
    /// `--jwt-secret`, RS256/ES256 with `--jwks`); `sub` is the user.
    #[arg(long, env = "TIDEMARK_AUTH", value_enum)]
    pub auth: Option<AuthMode>,

    /// The HS256 secret for `--auth jwt`.
    #[arg(long, env = "TIDEMARK_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Public keys for RS256/ES256 tokens: a JWKS file, or an http(s) URL serving one. Keys are
    /// chosen by the token's `kid`; an unknown `kid` makes the server read the set again.
    #[arg(long, env = "TIDEMARK_JWKS")]
    pub jwks: Option<String>,

    /// The algorithms tokens may use (comma-separated: HS256, RS256, ES256). Default: HS256
    /// if a secret is given, plus RS256 and ES256 if a JWKS is given. Anything else, `none`
    /// included, is refused.
    #[arg(long, env = "TIDEMARK_JWT_ALGORITHMS", value_delimiter = ',')]
    pub jwt_algorithms: Vec<String>,

    /// If set, a token's `iss` must be this.
    #[arg(long, env = "TIDEMARK_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// If set, a token's `aud` must contain this.
    #[arg(long, env = "TIDEMARK_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew allowed when checking `exp` and `nbf` (at most 5 minutes).
    #[arg(long, env = "TIDEMARK_JWT_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,

    /// An origin allowed to call the API from a browser (repeatable), or `*` for any.
    #[arg(
        long = "cors-origin",
        env = "TIDEMARK_CORS_ORIGINS",
        value_delimiter = ','
    )]
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

    /// The most bytes of `data` one user may keep in the collections they own, across apps
    /// (live objects only: tombstones cost nothing). Unlimited if unset. A push over it is
    /// answered 507 and writes nothing.
    #[arg(long, env = "TIDEMARK_QUOTA_BYTES")]
    pub quota_bytes: Option<u64>,

    /// The most live objects one user may keep in the collections they own, across apps.
    /// Unlimited if unset.
    #[arg(long, env = "TIDEMARK_QUOTA_OBJECTS")]
    pub quota_objects: Option<u64>,

    /// Requests per minute one authenticated user may make, on average (0: no limit, the
    /// default). Over it, requests are answered 429 with `Retry-After`.
    #[arg(long, env = "TIDEMARK_RATE_LIMIT_USER", default_value_t = 0)]
    pub rate_limit_user: u32,

    /// Requests one user may make at once before the per-minute rate applies (default: the
    /// per-minute rate).
    #[arg(long, env = "TIDEMARK_RATE_LIMIT_USER_BURST")]
    pub rate_limit_user_burst: Option<u32>,

    /// Requests per minute from one client IP address, authenticated or not (0: no limit, the
    /// default). `/healthz`, `/readyz` and `/metrics` are not counted.
    #[arg(long, env = "TIDEMARK_RATE_LIMIT_IP", default_value_t = 0)]
    pub rate_limit_ip: u32,

    /// Requests one IP address may make at once before the per-minute rate applies (default:
    /// the per-minute rate).
    #[arg(long, env = "TIDEMARK_RATE_LIMIT_IP_BURST")]
    pub rate_limit_ip_burst: Option<u32>,

    /// Take the client's IP address from the last entry of `X-Forwarded-For` (the one the
    /// proxy added) instead of the connection's peer. Only behind a reverse proxy that sets
    /// the header: otherwise any client could pick its own address.
    #[arg(long, env = "TIDEMARK_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// The largest blob (`PUT …/blobs/{sha256}`), in bytes; larger uploads get 413.
    #[arg(long, env = "TIDEMARK_MAX_BLOB_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_blob_bytes: usize,

    /// How long a blob that no live object refers to is kept before the sweeper deletes it
    /// (time for the object that will refer to a fresh upload to be pushed, and for clients
    /// still holding an older version to fetch it).
    #[arg(long, env = "TIDEMARK_BLOB_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub blob_retention: Duration,

    /// A collection to follow on an upstream server (repeatable; comma-separated in the
    /// environment variable): `upstream=<base URL>;app=<app>;owner=<owner>;collection=<name>`
    /// and optionally `;token=<bearer token>`. The copy keeps the upstream's seqs and
    /// `collection_id` and is read-only here.
    #[arg(
        long = "mirror",
        env = "TIDEMARK_MIRRORS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub mirrors: Vec<MirrorSpec>,

    /// How often a mirror polls an upstream that offers no live events (or whose event stream
    /// cannot be opened), and how long it waits before retrying a failed pull.
    #[arg(long, env = "TIDEMARK_MIRROR_POLL_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub mirror_poll_interval: Duration,

    /// How often a mirror compares its whole copy with the upstream's (ids, seqs and hashes)
    /// and repairs any drift.
    #[arg(long, env = "TIDEMARK_MIRROR_RECONCILE_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub mirror_reconcile_interval: Duration,

    /// A request that takes longer than this is answered 408.
    #[arg(long, env = "TIDEMARK_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// A client must send a request's whole head (request line and headers) within this, or
    /// its connection is closed (slowloris). Also how long an idle keep-alive connection stays
    /// open. hyper's timer also runs while an answer is stuck on a client that does not
    /// read, so such a client is cut off after this or `--write-timeout`, whichever is shorter.
    #[arg(long, env = "TIDEMARK_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// The longest wait for the next piece of a request body; a body that stalls for longer
    /// is answered 408.
    #[arg(long, env = "TIDEMARK_BODY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,

    /// The longest a write to a client may wait for it to read (a full socket buffer); the
    /// connection is then dropped. Cuts off a reader that never reads a big answer or an event
    /// stream.
    #[arg(long, env = "TIDEMARK_WRITE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,

    /// The polling interval suggested to clients in `X-Sync-Poll-Time`.
    #[arg(long, env = "TIDEMARK_POLL_TIME", default_value = "60s", value_parser = humantime::parse_duration)]
    pub poll_time: Duration,

    /// How often an idle event stream gets a heartbeat comment.
    #[arg(long, env = "TIDEMARK_SSE_HEARTBEAT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub sse_heartbeat: Duration,

    /// Events each watched collection keeps for its live subscribers; one that falls further
    /// behind is disconnected and resumes from its last seq.
    #[arg(long, env = "TIDEMARK_LIVE_BUFFER", default_value_t = 1024)]
    pub live_buffer: usize,

    /// The most event streams open at once on this node (each costs a connection).
    #[arg(long, env = "TIDEMARK_MAX_EVENT_STREAMS", default_value_t = 20_000)]
    pub max_event_streams: usize,

    /// Log lines as JSON instead of text.
    #[arg(long, env = "TIDEMARK_LOG_JSON")]
    pub log_json: bool,

    /// Presence channels with participants, at most, on this node (each node holds every
    /// channel of a cluster).
    #[arg(long, env = "TIDEMARK_PRESENCE_MAX_CHANNELS", default_value_t = PresenceLimits::default().max_channels)]
    pub presence_max_channels: usize,

    /// Participants in one presence channel, at most.
    #[arg(long, env = "TIDEMARK_PRESENCE_MAX_PARTICIPANTS", default_value_t = PresenceLimits::default().max_participants)]
    pub presence_max_participants: usize,

    /// Participants in all presence channels together, at most.
    #[arg(long, env = "TIDEMARK_PRESENCE_MAX_PARTICIPANTS_TOTAL", default_value_t = PresenceLimits::default().max_participants_total)]
    pub presence_max_participants_total: usize,

    /// The largest `state` of one presence participant, in bytes of JSON (at most 6144 with
    /// `--database`).
    #[arg(long, env = "TIDEMARK_PRESENCE_MAX_STATE_BYTES", default_value_t = PresenceLimits::default().max_state_bytes)]
    pub presence_max_state_bytes: usize,

    /// How long a presence participant stays without writing, when its write has no `ttl_ms`.
    #[arg(long, env = "TIDEMARK_PRESENCE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub presence_ttl: Duration,

    /// The shortest `ttl_ms` a presence write may ask for.
    #[arg(long, env = "TIDEMARK_PRESENCE_MIN_TTL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub presence_min_ttl: Duration,

    /// The longest `ttl_ms` a presence write may ask for.
    #[arg(long, env = "TIDEMARK_PRESENCE_MAX_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub presence_max_ttl: Duration,

    /// The app of the collection that holds the resolve catalog (see `GET /v1/resolve`).
    #[arg(long, env = "TIDEMARK_CATALOG_APP", default_value = "tidemark")]
    pub catalog_app: String,

    /// The owner of the catalog collection: the user who writes it (or shares it with
    /// writers).
    #[arg(long, env = "TIDEMARK_CATALOG_OWNER", default_value = "catalog")]
    pub catalog_owner: String,

    /// The name of the catalog collection.
    #[arg(long, env = "TIDEMARK_CATALOG_COLLECTION", default_value = "bundles")]
    pub catalog_collection: String,

    /// Another Tidemark server to ask, by base URL, when a triple is not in the catalog
    /// (repeatable). Peers are asked in parallel; the first that knows the triple wins.
    #[arg(
        long = "resolve-peer",
        env = "TIDEMARK_RESOLVE_PEERS",
        value_delimiter = ','
    )]
    pub resolve_peers: Vec<String>,

    /// This server's base URL as its peers know it. It goes into the visited list of the
    /// searches this server joins, so that none comes back to it. Default: `http://` and the
    /// address it listens on.
    #[arg(long, env = "TIDEMARK_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// How many servers deep a search may go from here (the hop limit of the searches this
    /// server starts, and the most it accepts from a peer). 0: never ask peers.
    #[arg(long, env = "TIDEMARK_RESOLVE_HOPS", default_value_t = 4)]
    pub resolve_hops: u32,

    /// How long to wait for a peer's answer (the search below it included).
    #[arg(long, env = "TIDEMARK_RESOLVE_PEER_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub resolve_peer_timeout: Duration,

    /// How long "no peer knows this triple" is remembered before peers are asked again.
    #[arg(long, env = "TIDEMARK_RESOLVE_NEGATIVE_TTL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub resolve_negative_ttl: Duration,

    /// The memory, in bytes, for answers learned from peers (kept until evicted, least
    /// recently used first: versions are immutable, so they never go stale).
    #[arg(long, env = "TIDEMARK_RESOLVE_CACHE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub resolve_cache_bytes: u64,
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

    /// The per-owner quota, as configured.
    pub fn quota(&self) -> Quota {
        Quota {
            max_bytes: self.quota_bytes,
            max_objects: self.quota_objects,
        }
    }

    /// The auth mode in force: the flag if given, else `dev` on loopback. Refuses `dev` on any
    /// other address, and `jwt` without a secret.
    pub fn auth_mode(&self) -> Result<AuthMode, String> {
        let mode = match self.auth {
            Some(mode) => mode,
            None if self.listen.ip().is_loopback() => AuthMode::Dev,
            None => {
                return Err("--auth is required when listening on a non-loopback address".into())
            }
        };
        match mode {
            AuthMode::Dev if !self.listen.ip().is_loopback() => Err(
                "--auth dev trusts any token as a user id; it is refused on a non-loopback address"
                    .into(),
            ),
            AuthMode::Jwt
                if self.jwt_secret.as_deref().is_none_or(str::is_empty) && self.jwks.is_none() =>
            {
                Err("--auth jwt needs --jwt-secret (HS256) or --jwks (RS256/ES256)".into())
            }
            AuthMode::Jwt if self.jwt_leeway > Duration::from_secs(300) => {
                Err("--jwt-leeway is at most 5 minutes".into())
            }
            mode => Ok(mode),
        }
    }
}

impl Config {
    /// The configuration from the process's arguments, environment and `--config` file.
    pub fn load() -> anyhow::Result<Config> {
        Config::load_from(std::env::args_os().collect())
    }

    /// The configuration from `args` (the first is the program name). Precedence: flags, then
    /// environment variables, then the `--config` file, then defaults.
    pub fn load_from(args: Vec<OsString>) -> anyhow::Result<Config> {
        let command = Config::command();
        let matches = command.clone().try_get_matches_from(args.clone())?;
        let Some(path) = matches.get_one::<PathBuf>("config") else {
            return Ok(Config::parse_from(args));
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading --config {}: {e}", path.display()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
        let mut args = args;
        for (key, value) in table {
            let long = key.replace('_', "-");
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()) && long != "config")
                .ok_or_else(|| {
                    anyhow::anyhow!("--config {}: unknown setting {key:?}", path.display())
                })?;
            let given = matches!(
                matches.value_source(arg.get_id().as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if given {
                continue;
            }
            let values = match value {
                toml::Value::Array(items) => items,
                single => vec![single],
            };
            for value in values {
                let text = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Boolean(true) => {
                        args.push(format!("--{long}").into());
                        continue;
                    }
                    toml::Value::Boolean(false) => continue,
                    other => anyhow::bail!("--config {}: {key} cannot be {other}", path.display()),
                };
                args.push(format!("--{long}={text}").into());
            }
        }
        Ok(Config::try_parse_from(args)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> anyhow::Result<Config> {
        Config::load_from(
            std::iter::once("sync-server")
                .chain(args.iter().copied())
                .map(OsString::from)
                .collect(),
        )
    }

    #[test]
    fn a_config_file_fills_in_what_flags_do_not_say() {
        let dir = std::env::temp_dir().join(format!("tidemark-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tidemark.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9999\"\nmax_batch = 7\ncors-origin = [\"http://a.example\", \"http://b.example\"]\nlog-json = true\ntombstone-retention = \"2d\"\n",
        )
        .unwrap();
        let config = load(&["--config", file.to_str().unwrap(), "--max-batch", "9"]).unwrap();
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.max_batch, 9, "a flag wins over the file");
        assert_eq!(
            config.cors_origins,
            ["http://a.example", "http://b.example"]
        );
        assert!(config.log_json);
        assert_eq!(config.tombstone_retention, Duration::from_secs(2 * 86400));

        std::fs::write(&file, "no_such_setting = 1\n").unwrap();
        let error = load(&["--config", file.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(error.contains("no_such_setting"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mirrors_come_from_flags_or_the_config_file() {
        let dir = std::env::temp_dir().join(format!("tidemark-mirrors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tidemark.toml");
        std::fs::write(
            &file,
            "mirror = [\"upstream=http://a:1;app=x;owner=o;collection=c;token=t\", \"upstream=http://b:2;app=x;owner=o;collection=d\"]\nmirror-poll-interval = \"5s\"\n",
        )
        .unwrap();
        let config = load(&["--config", file.to_str().unwrap()]).unwrap();
        assert_eq!(config.mirrors.len(), 2);
        assert_eq!(
            config.mirrors[0].collection_url(),
            "http://a:1/v1/data/x/o/c"
        );
        assert_eq!(config.mirrors[1].token, None);
        assert_eq!(config.mirror_poll_interval, Duration::from_secs(5));
        assert!(load(&["--mirror", "upstream=http://a;app=x"]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dev_auth_is_refused_off_loopback() {
        let config = load(&["--listen", "0.0.0.0:8080", "--auth", "dev"]).unwrap();
        assert!(config.auth_mode().is_err());
        let config = load(&["--listen", "0.0.0.0:8080"]).unwrap();
        assert!(config.auth_mode().is_err(), "no default auth off loopback");
        assert_eq!(load(&[]).unwrap().auth_mode(), Ok(AuthMode::Dev));
    }
}
