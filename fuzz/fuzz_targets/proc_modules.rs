//! Fuzz target `proc_modules`: see `kmod_rs_fuzz::targets::proc_modules`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmod_rs_fuzz::targets::proc_modules(data));
