//! See `sync_fuzz::commit`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sync_fuzz::commit::check(data));
