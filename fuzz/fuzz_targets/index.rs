//! Fuzz target `index`: see `kmod_rs_fuzz::targets::index`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmod_rs_fuzz::targets::index(data));
