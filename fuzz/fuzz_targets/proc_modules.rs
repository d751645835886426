//! /proc/modules and the /sys/module attribute parsers.
//! Input: one length byte, that many bytes of module name, then the file.
#![no_main]

use kmod_rs_fuzz::split_head;
use libfuzzer_sys::fuzz_target;
use modcore::procfs;

fuzz_target!(|data: &[u8]| {
    let (name, text) = split_head(data);
    if let Ok(mods) = procfs::parse_proc_modules(text) {
        for m in &mods {
            let _ = m.to_line();
        }
    }
    let _ = procfs::loaded_names(text);
    let _ = procfs::proc_modules_size(text, name);
    let _ = procfs::parse_initstate(text);
    let _ = procfs::parse_sysfs_long(text);
    let _ = procfs::parse_kernel_compression(text);
});
