//! Fuzz target `modprobe_conf`: see `kmod_rs_fuzz::targets::modprobe_conf`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kmod_rs_fuzz::targets::modprobe_conf(data));
