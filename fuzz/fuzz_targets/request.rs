//! See `sync_fuzz::request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sync_fuzz::request::check(data));
