//! depmod.d parsing (logical lines, directives, kernel-version regexes).
#![no_main]

use kmod_rs_fuzz::Discard;
use libfuzzer_sys::fuzz_target;
use modcore::depmod::config::{self, DepmodConfig};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let lines = config::logical_lines(data);
    assert!(lines.iter().map(|(_, l)| l.len()).sum::<usize>() <= data.len());
    let mut cfg = DepmodConfig::new();
    let mut sink = Discard::default();
    config::parse(
        &mut cfg,
        Path::new("/etc/depmod.d/fuzz.conf"),
        data,
        "6.1.0-fuzz",
        &mut sink,
    );
    let _ = cfg.effective_search();
});
