//! End-to-end tests: each one starts the real `sync-server` binary on loopback with its own
//! storage (see the `tidemark_tests` harness) and talks to it over HTTP. No mocks.
//!
//! The same tests run on SQLite (the default) and on PostgreSQL with
//! `TIDEMARK_TEST_BACKEND=postgres`. Backend-specific: `scale_out` always runs on PostgreSQL;
//! `durability`'s SIGTERM test checks the SQLite write-ahead log only on SQLite; `faults`'
//! full-disk test always runs on SQLite. Restarting
//! PostgreSQL itself is a separate binary (`tests/pg_restart.rs`), run alone.
//!
//! One test binary with a module per concern, so that the suite links once:
//!
//! - `contract`: every endpoint and every error code of the core contract.
//! - `concurrency_control`: conflicts at both levels, atomic batches, idempotent replays.
//! - `lifecycle`: tombstones, resets, expiry, purge and the horizon.
//! - `bad_input`: broken and hostile bodies get a clear 4xx and change nothing.
//! - `auth`: JWT mode and the dev mode's loopback guard.
//! - `cors`: preflights, the allow-list and `*`.
//! - `durability`: `kill -9` and SIGTERM under concurrent writers.
//! - `faults`: a crash loop of 20 `kill -9`s under load, a full disk (SQLite only, always
//!   on SQLite), and slow or dead clients cut off by timeouts.
//! - `hostile_input`: hostile JSON, names, sizes and lying headers, each a clear 4xx with
//!   the data intact and the server's memory bounded.
//! - `model`: random histories, the server against `sync_core`'s reference store.
//! - `live`: event streams: catch-up, resume, heartbeats, resets, reconnects, back-pressure.
//! - `jwks`: RS256/ES256 tokens from a JWKS file or URL, and every way a token is refused.
//! - `sharing`: the ACL roles against every operation, and revocation of open streams.
//! - `scale_out`: many nodes on one PostgreSQL database (always PostgreSQL), health,
//!   readiness and metrics.
//! - `fetch`: the `tidemark fetch` binary: resume after `kill -9`, completion by hash,
//!   corrupt transfers, falling back to the next repository.
//! - `resolve`: `GET /v1/resolve` over OpenSpace's example graph of three servers: every
//!   server finds every triple, unknown ones end after a bounded search, hops, visited lists,
//!   caches, and bad queries.
//! - `config_file`: `--config file.toml`, and flags over it.
//! - `openapi`: the published OpenAPI document against the routes and real answers.
//! - `limits`: rate limits per user and per address (429), quotas per owner (507).
//! - `blobs`: content-addressed blobs: hash check, Range, caching, limits, ACL, collection.
//! - `mirrors`: chains of read-only mirrors: propagation by hash, switching servers without a
//!   reset, an upstream that dies and comes back, resets, drift repair.
//! - `sse`: a small event-stream client for the tests above (not a test module).

mod auth;
mod bad_input;
mod blobs;
mod concurrency_control;
mod config_file;
mod contract;
mod cors;
mod durability;
mod faults;
mod fetch;
mod hostile_input;
mod jwks;
mod lifecycle;
mod limits;
mod live;
mod mirrors;
mod model;
mod openapi;
mod presence;
mod resolve;
mod scale_out;
mod sharing;
mod sse;
