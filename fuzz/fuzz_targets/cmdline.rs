//! Fuzz target `cmdline`: see `kmod_rs_fuzz::targets::cmdline`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmod_rs_fuzz::targets::cmdline(data));
