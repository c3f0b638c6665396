//! Tidemark's sync engine: everything that *decides* something about sync, and nothing that
//! does I/O.
//!
//! This crate performs no I/O whatsoever: no sockets, no files, no clock and no randomness of
//! its own. The caller passes time (`now_ms`) and fresh ids in. That is what lets the server
//! (`sync-server`), the browser SDK (`sync-wasm`) and the tests run the very same rules, and it
//! is why the crate is `#![no_std]` (with `alloc`) and builds for `wasm32-unknown-unknown`.
//!
//! # Layout
//!
//! - [`names`]: what a legal app, owner, collection, object id and type look like.
//! - [`json`]: [`JsonData`], an object's payload kept as validated JSON text, and its
//!   nesting-depth guard.
//! - [`object`]: [`Object`], the stored version of an object (or its tombstone) as it travels on
//!   the wire, and the fast JSON writer for pull pages.
//! - [`push`]: the push request, its strict parser and batch validation, and the answers.
//! - [`pull`]: the pull query and its answer.
//! - [`commit`]: the commit decision, a pure function of the collection head and the batch.
//! - [`horizon`]: expiry, tombstone retention and how the horizon moves.
//! - [`hash`]: the content hash of an object's data.
//! - [`blob`]: content-addressed blobs: their names, and how an object's data refers to them.
//! - [`mirror`]: what a mirror decides: append a pulled page, or resync; has its copy drifted.
//! - [`replica`]: [`Replica`], the client-side state machine: the cursor, the pending queue of
//!   local edits and the in-flight push; inputs are local edits, `start_sync`,
//!   `handle_response` and `resolve`, outputs are `poll_request` and `poll_event`.
//! - [`memory_store`]: an in-memory reference implementation of the server's contract, for tests
//!   and for anyone who wants to see the whole protocol in a few hundred lines.
//! - [`resolve`]: bundle triples, catalog entries and the resolve answer (OpenSpace's
//!   resources).
//! - [`acl`]: sharing: roles (owner, writer, creator, reader) and the creators' authorship rule.
//! - [`quota`]: per-owner quotas: what a batch adds to an owner's stored data, and whether
//!   the owner may have it.
//! - [`error`]: the error body every failed request answers with.
//!
//! # Invariants this crate enforces for every caller
//!
//! - Per collection, seqs are allocated gap-free and strictly increasing; a batch takes
//!   consecutive seqs or none at all ([`commit::decide_push`]).
//! - A `since` below the horizon can no longer be answered incrementally and gets
//!   `reset_required` ([`commit::check_pull`]), unless the client is paging through a full
//!   sync and echoes the horizon, still unchanged, that its first page carried.
//! - Every purge moves the horizon strictly up ([`horizon::purge_up_to`]).
//! - The replica never moves its cursor past data it has not handed to the application.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

pub mod acl;
pub mod blob;
pub mod commit;
pub mod error;
pub mod hash;
pub mod horizon;
pub mod json;
pub mod memory_store;
pub mod mirror;
pub mod names;
pub mod object;
pub mod pull;
pub mod push;
pub mod quota;
pub mod replica;
pub mod resolve;
pub mod sorted_map;

pub use commit::{check_pull, decide_push, Current, Decision, Head};
pub use error::{ErrorBody, ErrorCode};
pub use json::JsonData;
pub use object::{Object, ObjectRef};
pub use pull::{PullAnswer, PullQuery};
pub use push::{Conflict, ConflictReason, Limits, PushObject, PushOk, PushRequest};
pub use replica::{
    Config, ConflictOutcome, ConflictPolicy, Failure, PendingChange, Replica, ReplicaEvent,
    ReplicaState, Request, Resolution, Response, SavedObject,
};
