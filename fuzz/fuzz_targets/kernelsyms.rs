//! depmod -F System.map and -E Module.symvers parsing, with and without a prefix.
#![no_main]

use kmod_rs_fuzz::Discard;
use libfuzzer_sys::fuzz_target;
use modcore::depmod::kernelsyms;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let mut sink = Discard::default();
    for prefix in [None, Some(b'_')] {
        let _ = kernelsyms::parse_system_map(Path::new("System.map"), data, prefix, &mut sink);
        let _ = kernelsyms::parse_symvers(Path::new("Module.symvers"), data, prefix, &mut sink);
    }
});
