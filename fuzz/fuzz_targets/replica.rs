//! See `sync_fuzz::replica`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sync_fuzz::replica::check(data));
