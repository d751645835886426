//! modprobe.d parsing in both dialects, then the lookups and the `-c` dump.
//! Input: one length byte, that many bytes of module name, then the file.
#![no_main]

use kmod_rs_fuzz::split_head;
use libfuzzer_sys::fuzz_target;
use modcore::modprobe_conf::{logical_lines, Dialect, ModprobeConfig};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let (name, text) = split_head(data);
    let _ = logical_lines(text);
    for dialect in [Dialect::KMOD30, Dialect::KMOD34] {
        let mut c = ModprobeConfig::new();
        let errors = c.parse_file(Path::new("/etc/modprobe.d/fuzz.conf"), text, dialect);
        for e in &errors {
            let _ = (e.to_string(), e.libkmod_function());
        }
        let _ = c.aliases_matching(name).count();
        let _ = c.options_matching(name, None).count();
        let _ = c.module_options(name, Some(name));
        let _ = c.install_command(name);
        let _ = c.remove_command(name);
        let _ = c.command_named(name);
        let _ = c.is_blacklisted(name);
        let _ = c.softdep(name);
        let _ = c.weakdep(name);
        let _ = c.show_config();
    }
});
