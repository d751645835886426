//! Fuzz target `index_writer`: see `kmod_rs_fuzz::targets::index_writer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmod_rs_fuzz::targets::index_writer(data));
