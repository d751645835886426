//! Fuzz target `cache`: see `kmod_rs_fuzz::targets::cache`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmod_rs_fuzz::targets::cache(data));
