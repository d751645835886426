//! /proc/cmdline parsing and its merge into the modprobe configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modcore::cmdline;
use modcore::modprobe_conf::ModprobeConfig;

fuzz_target!(|data: &[u8]| {
    let c = cmdline::parse(data);
    for e in &c.errors {
        let _ = (e.to_string(), e.libkmod_function());
    }
    let _ = c.options().count();
    let _ = c.blacklist().count();
    let mut cfg = ModprobeConfig::new();
    cfg.add_cmdline(&c);
    let _ = cfg.show_config();
});
