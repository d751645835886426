//! Fuzz target `module`: see `kmod_rs_fuzz::targets::module`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmod_rs_fuzz::targets::module(data));
