//! Fuzz target `signature`: see `kmod_rs_fuzz::targets::signature`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmod_rs_fuzz::targets::signature(data));
