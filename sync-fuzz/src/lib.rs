//! The checks behind Tidemark's fuzz targets.
//!
//! Each check takes the fuzzer's raw bytes, turns them into an input (a request body, a stored
//! state and a batch, a run of server answers), runs `sync-core` on it and **panics** when an
//! answer breaks one of the crate's promises. A panic inside `sync-core` itself is a finding
//! too. The fuzz targets in `fuzz/` call these functions and nothing else, and so do the
//! stable-Rust tests of this crate (`tests/corpus.rs` replays every file of `fuzz/corpus/`,
//! `tests/proptest.rs` feeds random bytes), so a corpus file means the same input everywhere.
//!
//! # Layout
//!
//! - [`request`]: decoding and validation of what arrives over the wire: push bodies, pull
//!   query strings, names, object data, and the server answers a client decodes.
//! - [`commit`]: the commit decision (`decide_push`, `plan_push`, `check_pull`) against
//!   arbitrary stored states and requests.
//! - [`replica`]: the client state machine fed arbitrary server answers, checked against what
//!   it handed to the application through `poll_event`.
//! - [`input`]: the small vocabularies (ids, seqs, data) the structured checks draw from, so
//!   that generated inputs collide often enough to reach the interesting branches.
#![warn(missing_docs)]

pub mod commit;
pub mod input;
pub mod replica;
pub mod request;

/// A check: runs one input, panics if a promise is broken.
pub type Check = fn(&[u8]);

/// The fuzz targets, by the name of their directory under `fuzz/corpus/`, with their check.
pub const TARGETS: [(&str, Check); 3] = [
    ("request", request::check),
    ("commit", commit::check),
    ("replica", replica::check),
];
