//! Fuzz target `kernelsyms`: see `kmod_rs_fuzz::targets::kernelsyms`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmod_rs_fuzz::targets::kernelsyms(data));
