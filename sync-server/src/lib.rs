//! Tidemark's sync server: the wire contract over HTTP, on embedded SQLite.
//!
//! # Layout
//!
//! - [`config`]: flags and environment variables ([`config::Config`]).
//! - [`connections`]: the accept loop, with the timeouts that cut off slow or dead clients.
//! - [`auth`]: bearer tokens to user ids ([`auth::Caller`]).
//! - [`error`]: [`error::ApiError`], the one error type, and the middleware that gives every
//!   error answer the contract's JSON shape.
//! - [`routes`]: one module per resource (`info`, `data`), merged in [`app`].
//! - [`store`]: the [`store::Store`] trait and its SQLite backend (group commit, WAL).
//! - [`sweeper`]: the background task that expires objects and purges old tombstones.
//! - [`metrics`]: Prometheus metrics and the middleware that records requests.
//! - [`live`]: the per-collection broadcast hub that event streams subscribe to.
//! - [`presence`]: presence channels, in memory, and their bus between nodes.
//! - [`resolve`]: bundle triples to files: the catalog collection, the caches, and the
//!   parallel search of peers behind `GET /v1/resolve`.
//! - [`rate_limit`]: the per-user and per-IP rate limits (429 with `Retry-After`).
//! - [`mirror`]: collections copied from an upstream server (`--mirror`), read-only here.
//!
//! `main.rs` only parses the configuration and calls [`serve`]. Tests call [`app`] directly
//! where a socket is not the point, and otherwise run the real binary.

pub mod auth;
pub mod config;
pub mod connections;
pub mod error;
pub mod live;
pub mod metrics;
pub mod mirror;
pub mod presence;
pub mod rate_limit;
pub mod resolve;
pub mod routes;
pub mod store;
pub mod sweeper;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use sync_core::Limits;
use tokio::sync::{watch, Semaphore};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::live::Hub;
use crate::mirror::Mirrors;
use crate::presence::{Presence, PresenceLimits};
use crate::rate_limit::RateLimits;
use crate::resolve::Resolver;
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Where collections live.
    pub store: Arc<dyn Store>,
    /// The configuration the server started with.
    pub config: Arc<Config>,
    /// How tokens are checked.
    pub auth: Arc<Authenticator>,
    /// The size limits, as the core enforces them.
    pub limits: Limits,
    /// Where commits are announced to event streams.
    pub hub: Arc<Hub>,
    /// One permit per open event stream.
    pub stream_slots: Arc<Semaphore>,
    /// Turns true when the server begins to shut down, so that event streams (which would
    /// otherwise never end) close and let the graceful shutdown finish.
    pub shutting_down: watch::Receiver<bool>,
    /// The presence channels (memory only).
    pub presence: Arc<Presence>,
    /// Bundle lookups: the catalog, the caches and the peers.
    pub resolver: Arc<Resolver>,
    /// The per-user and per-IP rate limiters.
    pub rate_limits: Arc<RateLimits>,
    /// The collections copied from an upstream, which refuse writes.
    pub mirrors: Arc<Mirrors>,
}

impl AppState {
    /// Builds the state from a configuration and an open store.
    pub async fn new(
        config: Config,
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        shutting_down: watch::Receiver<bool>,
    ) -> anyhow::Result<AppState> {
        let auth = Authenticator::from_config(&config).await?;
        let presence = Arc::new(Presence::new(PresenceLimits::from_config(&config)?));
        let resolver = Arc::new(Resolver::from_config(&config)?);
        let mirrors = Arc::new(Mirrors::from_config(&config)?);
        Ok(AppState {
            rate_limits: Arc::new(RateLimits::from_config(&config)),
            mirrors,
            presence,
            resolver,
            store,
            limits: config.limits(),
            auth: Arc::new(auth),
            hub,
            stream_slots: Arc::new(Semaphore::new(config.max_event_streams)),
            shutting_down,
            config: Arc::new(config),
        })
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    routes::router(state)
}

/// Opens the store, serves until `shutdown` resolves, lets in-flight requests finish, then
/// closes the database cleanly.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let hub = Arc::new(Hub::new(config.live_buffer));
    let store: Arc<dyn Store> = match &config.database {
        Some(url) => Arc::new(
            store::postgres::PostgresStore::open(
                url,
                &config.database_schema,
                config.database_pool,
                hub.clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("opening PostgreSQL: {e:?}"))?,
        ),
        None => Arc::new(
            store::sqlite::SqliteStore::open(&config.data, hub.clone()).map_err(|e| {
                anyhow::anyhow!("opening the database in {}: {e:?}", config.data.display())
            })?,
        ),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let mut config = config;
    // Resolve searches name this server by its URL; without --public-url, the one it is
    // listening on (known only now, with port 0).
    config
        .public_url
        .get_or_insert_with(|| format!("http://{addr}"));
    let (begin_shutdown, shutting_down) = watch::channel(false);
    let state = AppState::new(config.clone(), store.clone(), hub, shutting_down).await?;
    // Tests and scripts read this line to find an ephemeral port.
    println!("tidemark listening on http://{addr}");
    let storage = match &config.database {
        Some(_) => format!("postgresql schema {}", config.database_schema),
        None => format!("sqlite in {}", config.data.display()),
    };
    tracing::info!(%addr, %storage, auth = ?state.config.auth_mode(), "serving");

    let presence_tasks = presence::start(&state.presence, &config)?;
    let sweeper = tokio::spawn(sweeper::run(
        store.clone(),
        config.sweep_interval,
        config.tombstone_retention,
        config.blob_retention,
    ));
    let forget_idle = tokio::spawn(rate_limit::forget_idle_keys(state.rate_limits.clone()));
    let mirror_tasks = mirror::start(&config, &store)?;
    let shutdown = async move {
        shutdown.await;
        let _ = begin_shutdown.send(true);
    };
    // The peer address is what the per-IP rate limit counts (without a trusted proxy):
    // `connections::serve` gives every request its `ConnectInfo<SocketAddr>`.
    let timeouts = connections::Timeouts {
        header_read: config.header_read_timeout,
        write: config.write_timeout,
    };
    connections::serve(listener, app(state), timeouts, shutdown).await;
    sweeper.abort();
    forget_idle.abort();
    presence_tasks.iter().for_each(|task| task.abort());
    mirror_tasks.iter().for_each(|task| task.abort());
    store.close().await;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
