//! Fuzz target `depmod_config`: see `kmod_rs_fuzz::targets::depmod_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmod_rs_fuzz::targets::depmod_config(data));
