//! Fuzz target `decompress`: see `kmod_rs_fuzz::targets::decompress`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmod_rs_fuzz::targets::decompress(data));
