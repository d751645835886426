//! Fuzz target `depmod_inputs`: see `kmod_rs_fuzz::targets::depmod_inputs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmod_rs_fuzz::targets::depmod_inputs(data));
